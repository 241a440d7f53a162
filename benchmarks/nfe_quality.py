"""Sample quality against the number of network evaluations (NFE) for every imgen sampler, diffusers' DDIM and
DPM-Solver++ schedulers on the same trained net, and the few-step models (reflow, progressive distillation).

Datasets: 8x8 digits (class-conditional flow, preset digits-flow; SVC accuracy via imgen.digits_check.digits_quality,
RBF-MMD^2 and sliced Wasserstein distance to the real digits in sklearn's 0..16 pixel space) and the 2D toys
8gaussians and moons (presets *-flow; MMD^2 / SW against fresh data points). Models are trained into --out, or
reused from there (and from --model for digits); a second run only evaluates.

NFE is counted, not assumed: every row wraps the denoiser in a counter, and each sampler's step count is the largest
whose counted NFE is <= the target (Heun: 2 per step, minus the last step to t = 0 and the first from t = 1 where the
flow's scaled ODE is singular; midpoint: 2 per step; Langevin: 1 per level + the final denoise). A target no step
count reaches (Heun/midpoint at NFE 1, ...) is left out. All rows share the same starting noise.

    python benchmarks/nfe_quality.py                      # trains every model it needs, then evaluates
    python benchmarks/nfe_quality.py --model runs/digits --datasets digits --n-digits 100     # reuse a digits flow
    python benchmarks/nfe_quality.py --out runs/all --resummarize a/nfe_quality.json b/nfe_quality.json
    python benchmarks/nfe_quality.py --quick              # every dataset and model, tiny budgets, OUT/quick
Cost is dominated by training the digits teacher (preset digits-flow at its steps) and the NFE-100 rows; pass
--model, --digits-steps, --n-digits/--n-toy or --nfes to trim it.
Writes OUT/nfe_quality.json, OUT/nfe_quality.png and OUT/grids/ (digits samples at 4 NFE); prints the summary.

--quick: the same datasets, models, samplers and JSON at tiny budgets (no shipped model is a digits or toy flow, so
all are trained, into OUT/quick, and reused from there on a rerun): teachers 300 steps, reflow 50 steps on 256 pairs,
distillation one round 8 -> 4 steps of 30, NFEs 1, 4, 16 (few-step models 1, 4), 50 digits / 200 toy points per row.
Time on a shared 2-core machine (OMP_NUM_THREADS=1): --quick measured 3 min 30 s from scratch (digits: 2 min 30 s).
The full run is an estimate from the quick run's per-step times, not a full run: digits teacher 1000 steps at
~0.28 s/step ~5 min, reflow and 3 distillation rounds ~5 min, the digits rows (200 samples, up to 100 NFE, 90 rows)
~5 min, each toy ~4 min: ~25 min.
"""
from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import numpy as np
import torch

import imgen
from imgen.data import load_dataset
from imgen.denoiser import Denoiser
from imgen.images import save_grid
from imgen.metrics import toy_distances
from imgen.recipes.distill import distill
from imgen.recipes.reflow import train_reflow
from imgen.samplers import SAMPLERS, STOCHASTIC
from imgen.schedules import make_grid

NFES = (1, 2, 4, 8, 16, 32, 100)
FEW_STEP_SAMPLERS = ("euler", "heun", "dpmpp_2m", "midpoint")  # deterministic ODE samplers, for reflow/distilled
DIFFUSERS = ("diffusers_ddim", "diffusers_dpmpp_2m")


# ---- distances between sample sets (2D points, or images flattened to vectors) ----------------------------------
def mmd_rbf(x: torch.Tensor, y: torch.Tensor) -> float:
    """Biased MMD^2 (V-statistic, never negative, so ratios between models mean something; imgen.metrics.toy_distances)
    with the bandwidth fixed by the real set y (its median pairwise distance): one scale for every row of a dataset."""
    y = y.double().flatten(1)
    d = torch.cdist(y, y)
    return toy_distances.mmd_rbf(x.double().flatten(1), y, bandwidth=float(d[d > 0].median()), biased=True)


def sliced_wasserstein(x: torch.Tensor, y: torch.Tensor) -> float:
    return toy_distances.sliced_wasserstein(x.double().flatten(1), y.double().flatten(1))


# ---- counting and the diffusers peers -----------------------------------------------------------------------------
class CountingDenoiser(Denoiser):
    """Passes calls through to a denoiser and counts them: one call on a batch = 1 NFE."""

    def __init__(self, inner: Denoiser):
        self.inner, self.schedule, self.calls = inner, inner.schedule, 0

    def __call__(self, x, t, cond=None):
        self.calls += 1
        return self.inner(x, t, cond)


def _diffusers_scheduler(name: str):
    """diffusers' own schedulers on a cosine ("squaredcos_cap_v2") discrete VP schedule, "trailing" spacing so the
    first step starts at the last (noisiest) training timestep; the model is given to them as an x0 ("sample")
    predictor, see `sample_diffusers`."""
    from diffusers import DDIMScheduler, DPMSolverMultistepScheduler

    common = dict(num_train_timesteps=1000, beta_schedule="squaredcos_cap_v2", prediction_type="sample",
                  timestep_spacing="trailing")
    if name == "diffusers_ddim":
        return DDIMScheduler(clip_sample=False, set_alpha_to_one=True, **common)
    return DPMSolverMultistepScheduler(algorithm_type="dpmsolver++", solver_order=2, final_sigmas_type="zero",
                                       lower_order_final=True, **common)


@torch.no_grad()
def sample_diffusers(name: str, denoiser: Denoiser, noise: torch.Tensor, steps: int, cond=None) -> torch.Tensor:
    """Run a diffusers scheduler on an imgen denoiser. The conversion is exact: the scheduler's VP variable
    x_vp = a x0 + s eps (a^2 = alpha_bar_k, s^2 = 1 - a^2) is the imgen path's x_t scaled by a / alpha(t) at the
    time t where sigma(t) / alpha(t) = s / a (both are the same Gaussian path up to a time change and a scale;
    Karras et al. 2022, eq. 4). On rectified flow: t = s / (a + s), x_t = x_vp / (a + s). The model's x0_hat at
    (x_t, t) is the scheduler's "sample" prediction, so no eps/v conversion (and no rounding of t) is involved."""
    sched = _diffusers_scheduler(name)
    sched.set_timesteps(steps)
    x = noise * sched.init_noise_sigma  # the imgen flow's prior N(0, I) at t = 1 ~ the VP prior at alpha_bar ~ 0
    for k in sched.timesteps:
        ab = sched.alphas_cumprod[int(k)].double()
        a, s = ab.sqrt(), (1 - ab).sqrt()
        t = denoiser.schedule.t_from_edm_sigma(s / a)
        x_t = x * (denoiser.schedule.alpha(t) / a).float()
        x0_hat = denoiser(x_t, t, cond)
        x = sched.step(x0_hat, k, x).prev_sample
    return x


# ---- one row: a model, a sampler, a target NFE ---------------------------------------------------------------------
class Probe:
    """Looks like imgen's Model to `digits_quality` (sample(n, labels, sampler, steps, cfg, seed)) but runs the
    sampler on a counting denoiser from fixed noise, keeping the samples and the NFE of the last call."""

    def __init__(self, model, noise: torch.Tensor, denoiser: Denoiser | None = None):
        self.model, self.noise, self.nfe, self.last = model, noise, None, None
        self.denoiser = model.method.denoiser(model.net) if denoiser is None else denoiser

    def sample(self, n, labels=None, sampler="euler", steps=25, cfg=1.0, seed=0):
        m = self.model
        den = CountingDenoiser(self.denoiser)
        label = m._labels(n, labels)
        cond = None if label is None else {"label": label, "drop": torch.zeros(n, dtype=torch.bool)}
        noise = self.noise[:n]
        with torch.no_grad():
            if sampler in DIFFUSERS:
                x = sample_diffusers(sampler, den, noise, steps, cond)
            else:
                # Langevin needs a finite noise level at its first time (karras grid), one step per level
                grid = "karras" if sampler == "langevin" else "uniform"
                opts = {"n_steps": 1} if sampler == "langevin" else {}
                ts = make_grid(den.schedule, steps, grid)
                x = SAMPLERS[sampler](den, noise.clone(), ts, cond, generator=torch.Generator().manual_seed(seed), **opts)
        self.nfe, self.last = den.calls, (x.clamp(-1, 1) if x.ndim == 4 else x)
        return self.last


def steps_for_nfe(model, sampler: str, target: int) -> int | None:
    """The largest step count whose counted NFE is <= target (NFE grows with steps), by bisection. A sampler's
    control flow does not depend on the denoiser's values, so the count is taken on a zero denoiser of the model's
    schedule (the evaluation itself counts again on the real net and reports that count)."""
    from imgen.denoiser import FunctionDenoiser

    schedule = model.method.denoiser(model.net).schedule
    zero = FunctionDenoiser(lambda x, t, cond=None: torch.zeros_like(x), schedule)
    probe = Probe(model, torch.zeros(1, *model.shape), denoiser=zero)

    def nfe(steps):
        probe.sample(1, None if model.num_classes is None else [0], sampler, steps)
        return probe.nfe

    if nfe(1) > target:
        return None
    lo, hi = 1, target
    while lo < hi:
        mid = (lo + hi + 1) // 2
        lo, hi = (mid, hi) if nfe(mid) <= target else (lo, mid - 1)
    return lo


def evaluate(name: str, model, samplers, real: torch.Tensor, n: int, nfes, digits: bool, seed: int = 0,
             grids: Path | None = None) -> list[dict]:
    from imgen.digits_check import _to_digits_space, digits_quality

    noise = torch.randn((n, *model.shape), generator=torch.Generator().manual_seed(seed))
    probe, rows = Probe(model, noise), []
    for sampler in samplers:
        for target in nfes:
            steps = steps_for_nfe(model, sampler, target) if sampler not in DIFFUSERS else target
            if steps is None:
                continue
            tic = time.perf_counter()
            row = {"model": name, "sampler": sampler, "nfe_target": target, "steps": steps}
            if digits:
                row["svc_accuracy"] = digits_quality(probe, n, sampler, steps, seed=seed)["svc_accuracy"]
                x = torch.from_numpy(_to_digits_space(probe.last))
            else:
                x = probe.sample(n, None, sampler, steps, seed=seed)
            row.update(nfe=probe.nfe, mmd=mmd_rbf(x, real), sw=sliced_wasserstein(x, real),
                       seconds=round(time.perf_counter() - tic, 2))
            if digits and grids is not None and target == 4 and sampler in ("euler", "dpmpp_2m"):
                save_grid(probe.last[:40], grids / f"{name}_{sampler}_nfe{probe.nfe}.png", nrow=10, scale=4)
            rows.append(row)
            print(json.dumps(row), flush=True)
    return rows


# ---- models: train (or reuse) teacher, reflow, distilled ------------------------------------------------------------
def train_models(preset: str, out: Path, steps: int | None, teacher: Path | None, reflow_steps: int, distill_steps: int,
                 n_pairs: int, pair_steps: int, distill_start: int) -> dict[str, Path]:
    from imgen.presets import get_preset
    from imgen.train import train

    if teacher is None:
        cfg = get_preset(preset)
        if steps is not None:
            cfg.train.steps = steps
        teacher = out / preset / "teacher"
        train(cfg, teacher, progress=False)
    reflow = train_reflow(teacher, out / preset / "reflow", n_pairs=n_pairs, pair_steps=pair_steps, sampler="dpmpp_2m",
                          train_steps=reflow_steps, lr=1e-3)
    distilled = distill(teacher, out / preset / "distill", start_steps=distill_start, end_steps=4,
                        train_steps=distill_steps, lr=1e-3)
    return {"teacher": teacher, "reflow": reflow, "distilled": distilled}


def real_data(dataset: str, n: int) -> torch.Tensor:
    if dataset == "digits":
        from sklearn.datasets import load_digits

        return torch.from_numpy(load_digits().data.astype(np.float64))  # sklearn's 0..16 space, as _to_digits_space
    return load_dataset(dataset, seed=12345).get(np.arange(n))["x"]  # fresh points, not the training stream (seed 0)


def summarize(rows: list[dict], digits: bool) -> dict:
    """Per metric (digits: SVC accuracy, higher is better, and MMD^2; toys: MMD^2, lower is better): the teacher's
    probability-flow ODE at the top NFE (best deterministic imgen sampler: the distribution reflow and distillation
    aim at) vs each model's best sampler at NFE 4 ("within 10%": accuracy >= 0.9x, MMD^2 <= 1.1x the reference);
    diffusers' schedulers vs the same algorithm in imgen and vs imgen's best sampler at equal NFE."""
    pick = lambda model, nfe: [r for r in rows if r["model"] == model and r["nfe_target"] == nfe]  # noqa: E731
    top = max(r["nfe_target"] for r in rows if r["model"] == "teacher")  # 100 by default
    same = {"diffusers_ddim": "ddim", "diffusers_dpmpp_2m": "dpmpp_2m"}
    out = {"reference_nfe": top}
    for key in ("svc_accuracy", "mmd") if digits else ("mmd",):
        higher = key == "svc_accuracy"
        best_of = lambda rs: (max if higher else min)(rs, key=lambda r: r[key])  # noqa: E731
        ref = best_of([r for r in pick("teacher", top) if r["sampler"] not in STOCHASTIC and r["sampler"] not in DIFFUSERS])
        any_best = best_of(pick("teacher", top))
        m = {"teacher_reference": {"sampler": ref["sampler"], key: ref[key]},
             "teacher_best_any_sampler": {"sampler": any_best["sampler"], key: any_best[key]}}
        for model in ("reflow", "distilled", "teacher"):
            if pick(model, 4):
                best = best_of(pick(model, 4))
                ratio = best[key] / ref[key]
                m[f"{model}_at_4"] = {"sampler": best["sampler"], key: best[key], "ratio_to_reference": ratio,
                                      "within_10pct": ratio >= 0.9 if higher else ratio <= 1.1}
        vs = {}
        for r in rows:
            if r["model"] == "teacher" and r["sampler"] in DIFFUSERS:
                ours = [o for o in pick("teacher", r["nfe_target"]) if o["sampler"] not in DIFFUSERS and o["nfe"] <= r["nfe"]]
                twin = [o for o in ours if o["sampler"] == same[r["sampler"]]]
                best = best_of(ours)
                vs.setdefault(r["sampler"], {})[r["nfe"]] = {
                    "diffusers": r[key], same[r["sampler"]]: twin[0][key] if twin else None,
                    "best_imgen": best[key], "best_imgen_sampler": best["sampler"]}
        m["imgen_vs_diffusers"] = vs
        out[key] = m
    return out


def plot(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [(d, m) for d in results for m in (("svc_accuracy", "mmd", "sw") if d == "digits" else ("mmd", "sw"))]
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 4), squeeze=False)
    for ax, (dataset, metric) in zip(axes[0], panels):
        rows = results[dataset]["rows"]
        colors = {name: f"C{i}" for i, name in enumerate(list(SAMPLERS) + list(DIFFUSERS))}  # color = sampler
        styles = {"teacher": "-", "reflow": ":", "distilled": "-."}  # line style = model; diffusers dashed
        for line in dict.fromkeys((r["model"], r["sampler"]) for r in rows):
            pts = sorted((r["nfe"], r[metric]) for r in rows if (r["model"], r["sampler"]) == line)
            style = "--" if line[1] in DIFFUSERS else styles.get(line[0], "-")
            ax.plot(*zip(*pts), style, color=colors[line[1]], marker="o", ms=3, label=f"{line[0]}/{line[1]}")
        ax.set_xscale("log")
        if metric != "svc_accuracy":
            ax.set_yscale("log")
        ax.set_xlabel("NFE")
        ax.set_title(f"{dataset}: {metric}")
    axes[0][0].legend(fontsize=6, ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default="runs/nfe_quality")
    p.add_argument("--model", default=None, help="a trained digits flow model directory to reuse (else digits-flow is trained)")
    p.add_argument("--datasets", default="digits,8gaussians,moons")
    p.add_argument("--nfes", default=",".join(map(str, NFES)))
    p.add_argument("--n-digits", type=int, default=200)
    p.add_argument("--n-toy", type=int, default=1000)
    p.add_argument("--digits-steps", type=int, default=None, help="override digits-flow's training steps")
    p.add_argument("--toy-steps", type=int, default=1500, help="training steps of the toy presets (theirs: 3000)")
    p.add_argument("--reflow-steps", type=int, default=400)
    p.add_argument("--distill-steps", type=int, default=150, help="training steps per halving round (32 -> 4: 3 rounds)")
    p.add_argument("--n-pairs", type=int, default=4000, help="reflow pairs for the toys (digits: at most 2000)")
    p.add_argument("--pair-steps", type=int, default=100, help="dpmpp_2m steps per reflow pair (toys; digits: 25)")
    p.add_argument("--distill-start", type=int, default=32, help="teacher steps of the first distillation round")
    p.add_argument("--few-step-nfes", default="1,2,4,8", help="NFEs at which the reflow/distilled models are evaluated")
    p.add_argument("--resummarize", nargs="+", default=None, metavar="JSON",
                   help="no runs: merge these result files into OUT, recomputing summaries and the plot")
    p.add_argument("--quick", action="store_true", help="tiny training budgets, NFEs 1,4,16, 50 digits / 200 toy "
                   "points per row; models in OUT/quick (--model still reused)")
    return p


def main(argv=None) -> dict:
    args = build_parser().parse_args(argv)
    if args.quick:
        args.out = str(Path(args.out) / "quick")
        args.nfes, args.few_step_nfes, args.n_digits, args.n_toy = "1,4,16", "1,4", 50, 200
        args.digits_steps, args.toy_steps = args.digits_steps or 300, 300
        args.reflow_steps, args.distill_steps, args.n_pairs, args.pair_steps, args.distill_start = 50, 30, 256, 20, 8
    out, nfes = Path(args.out), [int(v) for v in args.nfes.split(",")]
    if args.resummarize:
        results = {}
        for f in args.resummarize:
            results.update(json.loads(Path(f).read_text()))
        for k, v in results.items():
            if isinstance(v, dict):
                floor = {"data_vs_data": v["summary"]["data_vs_data"]} if "data_vs_data" in v["summary"] else {}
                v["summary"] = {**summarize(v["rows"], k == "digits"), **floor}
        return _write(results, out)
    results, tic = {}, time.perf_counter()
    for dataset in args.datasets.split(","):
        digits = dataset == "digits"
        t0 = time.perf_counter()
        dirs = train_models(f"{dataset}-flow", out, args.digits_steps if digits else args.toy_steps,
                            Path(args.model) if digits and args.model else None, args.reflow_steps, args.distill_steps,
                            min(args.n_pairs, 2000) if digits else args.n_pairs, 25 if digits else args.pair_steps,
                            args.distill_start)
        train_s = time.perf_counter() - t0
        n = args.n_digits if digits else args.n_toy
        real = real_data(dataset, n)
        rows = []
        for name, d in dirs.items():
            model = imgen.load(d)
            samplers = list(SAMPLERS) + list(DIFFUSERS) if name == "teacher" else FEW_STEP_SAMPLERS
            few = [int(v) for v in args.few_step_nfes.split(",")]
            rows += evaluate(name, model, samplers, real, n, nfes if name == "teacher" else few, digits,
                             grids=out / "grids")
        summary = summarize(rows, digits)
        if not digits:  # the estimators' floor: a second fresh data sample against the reference one
            again = load_dataset(dataset, seed=777).get(np.arange(n))["x"]
            summary["data_vs_data"] = {"mmd": mmd_rbf(again, real), "sw": sliced_wasserstein(again, real)}
        results[dataset] = {"models": {k: str(v) for k, v in dirs.items()}, "train_seconds": round(train_s, 1),
                            "n": n, "rows": rows, "summary": summary}
    results["seconds"], results["quick"] = round(time.perf_counter() - tic, 1), args.quick
    return _write(results, out)


def _write(results: dict, out: Path) -> dict:
    out.mkdir(parents=True, exist_ok=True)
    (out / "nfe_quality.json").write_text(json.dumps(results, indent=1) + "\n")
    plot({k: v for k, v in results.items() if isinstance(v, dict)}, out / "nfe_quality.png")
    print(json.dumps({k: v["summary"] if isinstance(v, dict) else v for k, v in results.items()}, indent=1))
    return results


if __name__ == "__main__":
    main()
