"""Every class-conditional digits preset, trained as shipped and judged the same way, against real digits.

For each digits preset in the registry (`imgen presets`: digits-flow, digits-ddpm, digits-ncsn, digits-edm,
digits-cold-blur, ...; read at run time, so the presets' current nets and step counts are what is measured) the
model is trained with imgen.train.train(get_preset(name), OUT/name) and scored with
imgen.digits_check.digits_quality at the preset's own sampler and steps (config.sample, what `imgen.load(dir).sample`
uses by default; cold diffusion's "improved" sampler included): scikit-learn's SVC accuracy on the requested labels
and the nearest-neighbour distance ratio (>= 0.5: not copies of the training set).

The peer, measured in the same run: the same SVC (rbf, gamma='scale') fitted on a random half of sklearn's digits
and scored on the other half (`real_digits.svc_accuracy`). Each preset's `ratio_to_real` is its SVC accuracy over
that one (1.0: the samples are as recognisable as held-out real digits).

    OMP_NUM_THREADS=1 python benchmarks/digits_presets.py                  # all presets; writes benchmarks/results/
    OMP_NUM_THREADS=1 python benchmarks/digits_presets.py --quick          # digits-flow, digits-ddpm: 300 steps, n=200
    OMP_NUM_THREADS=1 python benchmarks/digits_presets.py --only digits-edm,digits-ncsn

Trained models are cached in OUT/<name> (--quick: OUT/quick/<name>); a rerun only evaluates (a shorter run is
resumed to the preset's steps). train_seconds is the wall time of training, summed over resumed runs.

Time on this 2-core machine (OMP_NUM_THREADS=1, shared with other jobs):
  --quick   measured 3 min 0 s from scratch (2 x 300 training steps at ~0.28 s/step, 2 x 200 samples), 13 s cached.
  full      measured 17 min 32 s from scratch (5 presets x 1000 steps at ~0.2 s/step, 500 samples each), when
            digits-ddpm had 1000 steps; it now has 1500 (+~2.5 min). A rerun on the cache only evaluates (55 s).
            benchmarks/results/digits_presets.json: that run, digits-ddpm then resumed to 1500 steps (the constant LR
            schedule makes the resumed run the same as one of 1500 steps; train_seconds sums both).
Prints the JSON; without --quick also writes it to benchmarks/results/digits_presets.json (--json to change).
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split
from sklearn.svm import SVC

import imgen
from imgen.config import load_config
from imgen.digits_check import digits_quality
from imgen.presets import PRESETS, get_preset
from imgen.train import train

QUICK_PRESETS, QUICK_STEPS, QUICK_N = ("digits-flow", "digits-ddpm"), 300, 200
RESULTS = Path(__file__).resolve().parent / "results" / "digits_presets.json"


def digits_presets() -> list[str]:
    """The registry's class-conditional digits presets (data 'digits', a label per image)."""
    # unconditional likelihood models (digits-realnvp, digits-glow) are measured in benchmarks/likelihood.py
    # and GANs (digits-dcgan, digits-cgan, digits-wgan-gp) in benchmarks/gans.py
    return [name for name in PRESETS if get_preset(name).data.name == "digits"
            and get_preset(name).method.name not in ("normalizing_flow", "gan")]


def real_digits_accuracy(seed: int = 0) -> float:
    """The peer: digits_quality's SVC trained on a random half of the real digits, accuracy on the other half."""
    d = load_digits()
    x_tr, x_te, y_tr, y_te = train_test_split(d.data, d.target, test_size=0.5, random_state=seed, stratify=d.target)
    return float((SVC().fit(x_tr, y_tr).predict(x_te) == y_te).mean())


def _agrees(wanted, saved) -> bool:
    """Every setting of `wanted` is in `saved` with the same value (saved configs add resolved keys, e.g. image_size)."""
    if isinstance(wanted, dict):
        return isinstance(saved, dict) and all(k in saved and _agrees(v, saved[k]) for k, v in wanted.items())
    return wanted == saved


def train_cached(name: str, steps: int | None, out: Path) -> dict:
    """Train preset `name` into `out` (or reuse / resume it there); its training seconds, images/s and steps."""
    cfg = get_preset(name)
    if steps is not None:
        cfg.train.steps = steps
        cfg.train.ckpt_every = min(cfg.train.ckpt_every, steps)
    state, record = out / "train_state.json", out / "wall_s.json"
    if (out / "config.json").is_file():  # a cache from an older version of the preset would be measured silently
        cached, wanted = load_config(out / "config.json").to_dict(), cfg.to_dict()
        if not all(_agrees(wanted[k], cached[k]) for k in ("data", "net", "method")):
            raise SystemExit(f"{out} holds a model of another {name} config (data/net/method differ from the "
                             "preset's now); delete it or give another --out")
    done = state.is_file() and json.loads(state.read_text())["step"] >= cfg.train.steps
    before = json.loads(record.read_text())["wall_s"] if record.is_file() and state.is_file() else 0.0
    if not done:
        tic = time.perf_counter()
        train(cfg, out, progress=False)
        record.write_text(json.dumps({"wall_s": before + time.perf_counter() - tic}) + "\n")
    log = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    wall = json.loads(record.read_text())["wall_s"] if record.is_file() else None
    return {"train_seconds": None if wall is None else round(wall, 1),
            "images_per_s": round(statistics.median(r["images_per_s"] for r in log), 1),
            "steps": json.loads(state.read_text())["step"], "batch_size": cfg.data.batch_size}


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default="runs/digits_presets", help="model cache (--quick: OUT/quick)")
    p.add_argument("--only", default=None, help="comma-separated preset names (default: every digits preset)")
    p.add_argument("--n", type=int, default=500, help="samples per preset for digits_quality")
    p.add_argument("--steps", type=int, default=None, help="override every preset's training steps")
    p.add_argument("--quick", action="store_true",
                   help=f"{', '.join(QUICK_PRESETS)} only, {QUICK_STEPS} training steps, n={QUICK_N} (~3 min)")
    p.add_argument("--json", default=None, help=f"where to write the result (default without --quick: {RESULTS})")
    p.add_argument("--seed", type=int, default=0)
    return p


def main(argv=None) -> dict:
    args = build_parser().parse_args(argv)
    available = digits_presets()
    names = args.only.split(",") if args.only else list(QUICK_PRESETS if args.quick else available)
    if unknown := [k for k in names if k not in available]:
        raise SystemExit(f"unknown digits preset(s) {unknown}; choose from {', '.join(available)}")
    steps, n, out = args.steps, args.n, Path(args.out)
    if args.quick:
        steps, n, out = steps or QUICK_STEPS, QUICK_N, out / "quick"

    tic = time.perf_counter()
    real = real_digits_accuracy(args.seed)
    result = {"benchmark": "digits_presets", "quick": args.quick, "n": n,
              "torch_threads": torch.get_num_threads(),
              "real_digits": {"svc_accuracy": round(real, 4),
                              "split": "sklearn digits, stratified 50/50, SVC(rbf, gamma='scale')"},
              "presets": {}}
    for name in names:
        row = train_cached(name, steps, out / name)
        model = imgen.load(out / name)
        sampler, sample_steps = model.config.sample.sampler, model.config.sample.steps
        t0 = time.perf_counter()
        q = digits_quality(model, n=n, sampler=sampler, steps=sample_steps, seed=args.seed)
        row.update(svc_accuracy=q["svc_accuracy"], nn_distance_ratio=round(q["nn_distance_ratio"], 4),
                   ratio_to_real=round(q["svc_accuracy"] / real, 4), sampler=sampler, sample_steps=sample_steps,
                   sample_seconds=round(time.perf_counter() - t0, 1), method=model.config.method.name,
                   params=sum(t.numel() for t in model.net.parameters()))
        result["presets"][name] = row
        print(json.dumps({name: row}), file=sys.stderr, flush=True)
    result["seconds"] = round(time.perf_counter() - tic, 1)
    path = Path(args.json) if args.json else (None if args.quick else RESULTS)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(result, indent=1))
    return result


if __name__ == "__main__":
    main()
