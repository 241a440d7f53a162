"""The families table (issue 13): every model family imgen has, on the same data and the same measurements, so the
generative trilemma (quality, diversity, sampling cost) reads as numbers.

Digits (8x8, imgen's built-in digits), one row per family preset, each trained with imgen.train.train_preset (or
reused from OUT/<preset>): `J["digits"][name]` =
  svc_accuracy   class-conditional rows: scikit-learn's SVC reading the requested label (imgen.digits_check);
                 None for an unconditional row
  fid, precision, recall   of n samples against the real digits in imgen's digits-eval features
                 (imgen.metrics.evaluate; precision/recall: Kynkaanniemi et al. 2019, k = 3)
  nfe            network calls per sample batch, counted with a forward hook on the model's net (a tokenizer's
                 decoder call is not counted; classifier-free guidance evaluates both halves in one call); 1 for
                 a GAN, VAE or normalizing flow, which sample in one pass outside net.forward
  ms_per_sample  wall time of sampling n images / n (2 cores, batch n)
  train_seconds  training wall seconds (summed over resumed runs; a reused model reports what it cost)
  params         parameters of what sampling runs (a GAN's generator; a token prior's transformer)
Shapes text-to-image (`J["shapes_t2i"][name]` = {shape_color, position, background, two_objects, nfe, rerank,
ms_per_sample}; rerank: candidates drawn per kept image, each of the nfe calls a batch of them) for the
text-conditional families: `latent_flow` (the shipped shapes-latent-t2i), `ar` and `maskgit` (shapes-ar-t2i /
shapes-maskgit-t2i on a shapes-vqgan tokenizer, as benchmarks/token_priors.py trains them) and `text_gan`
(shapes-text-gan, as benchmarks/gans.py trains it), each when its model directory is in OUT/<preset>; a row whose
model is not there is absent. The plot (benchmarks/results/families.png): FID against network calls, marker
size = recall.

    OMP_NUM_THREADS=2 python benchmarks/families.py           # trains every preset at its own budget (~1 h on 2 cores)
    OMP_NUM_THREADS=2 python benchmarks/families.py --quick   # QUICK_STEPS per preset, n=300; shapes t2i: the
                                                              # shipped model and each t2i row's model in OUT;
                                                              # 15 min with training, 4 min on cached models
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

import imgen
from imgen.digits_check import digits_quality
from imgen.metrics.adherence import adherence
from imgen.metrics.evaluate import evaluate, resolve_source, tensor_source
from imgen.pretrained import DEFAULT_TEXT_MODEL
from imgen.train import train_preset

# (row name, preset, needs the digits-vq tokenizer)
DIGITS = (("flow_matching", "digits-flow", False), ("ddpm", "digits-ddpm", False), ("edm", "digits-edm", False),
          ("score_ncsn", "digits-ncsn", False), ("cold_blur", "digits-cold-blur", False),
          ("vae", "digits-vae", False), ("realnvp", "digits-realnvp", False), ("glow", "digits-glow", False),
          ("dcgan", "digits-dcgan", False), ("cgan", "digits-cgan", False), ("wgan_gp", "digits-wgan-gp", False),
          ("ar", "digits-ar", True), ("maskgit", "digits-maskgit", True))
T2I_ROWS = (("ar", "shapes-ar-t2i"), ("maskgit", "shapes-maskgit-t2i"), ("text_gan", "shapes-text-gan"))
ONE_PASS = ("gan", "vae", "normalizing_flow")  # methods whose sample is one pass of the net, not net.forward
QUICK_STEPS, QUICK_N = 150, 300
RESULTS = Path(__file__).resolve().parent / "results"


def counted(model, fn):
    """(fn()'s result, network calls it made): a forward hook on model.net. A one-pass method samples through
    net.generator / net.decode / the flow's inverse, which the hook misses: it counts one call."""
    calls = []
    hook = model.net.register_forward_hook(lambda *_: calls.append(1))
    try:
        result = fn()
    finally:
        hook.remove()
    if not calls and model.config.method.name in ONE_PASS:
        calls.append(1)
    return result, len(calls)


def sampling_params(model) -> int:
    net = getattr(model.net, "generator", model.net)
    return sum(p.numel() for p in net.parameters())


def digits_row(model, n: int, seed: int, train_seconds: float) -> dict:
    conditional = model.num_classes is not None
    labels = torch.arange(n) % 10 if conditional else None
    model.sample(2, labels=None if labels is None else labels[:2], seed=seed)  # warm-up
    tic = time.perf_counter()
    x, nfe = counted(model, lambda: model.sample(n, labels=labels, seed=seed))
    ms = 1000 * (time.perf_counter() - tic) / n
    m = evaluate(tensor_source(x, "samples"), resolve_source("digits"), metrics=("fid", "pr"),
                 features="digits-eval", progress=False)["metrics"]
    row = {"svc_accuracy": None, "fid": round(m["fid[digits-eval]"], 3),
           "precision": round(m["precision[digits-eval]"], 4), "recall": round(m["recall[digits-eval]"], 4),
           "nfe": nfe, "ms_per_sample": round(ms, 3), "train_seconds": train_seconds,
           "params": sampling_params(model)}
    if conditional:
        c = model.config.sample  # each family at its own sampling settings (steps: MaskGIT's iterations too)
        row["svc_accuracy"] = digits_quality(model, n=n, sampler=c.sampler, steps=c.steps, cfg=c.cfg,
                                             seed=seed)["svc_accuracy"]
    return row


def shapes_row(model, n: int, seed: int) -> dict:
    one = adherence(model, n=n, seed=seed)
    two = adherence(model, n=max(n // 2, 1), seed=seed, max_objects=2)
    model.generate(["a red circle"], seed=seed)  # warm-up
    tic = time.perf_counter()
    _, nfe = counted(model, lambda: model.generate(["a red circle in the top left"] * 16, seed=seed))
    return {"shape_color": one["shape_color"], "position": one.get("pos"), "background": one.get("bg"),
            "two_objects": two["two_objects"], "nfe": nfe, "rerank": model.config.sample.rerank,  # nfe: batched calls
            "ms_per_sample": round(1000 * (time.perf_counter() - tic) / 16, 3)}


def plot(J: dict, path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for name, r in J["digits"].items():
        ax.scatter(r["nfe"], r["fid"], s=30 + 400 * r["recall"], alpha=0.6)
        ax.annotate(name, (r["nfe"], r["fid"]), fontsize=8, xytext=(4, 4), textcoords="offset points")
    ax.set(xscale="log", yscale="log", xlabel="network calls per sample batch (NFE)",
           ylabel="FID[digits-eval] (lower is better)",
           title="imgen's families on digits (marker size = recall)" + (" — quick" if J["quick"] else ""))
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help=f"{QUICK_STEPS} training steps per preset, n={QUICK_N}")
    p.add_argument("--out", default="runs/bench-families", help="model cache (--quick: OUT/quick)")
    p.add_argument("--n", type=int, help="samples per digits row (default 1000) and prompts per shapes row (200)")
    p.add_argument("--only", nargs="+", help="digits rows to run (names as in the table)")
    p.add_argument("--seed", type=int, default=0)
    return p


def main(argv=None) -> dict:
    args = build_parser().parse_args(argv)
    tic = time.perf_counter()
    out = Path(args.out) / ("quick" if args.quick else "")
    steps = QUICK_STEPS if args.quick else None
    n = args.n or (QUICK_N if args.quick else 1000)
    J: dict = {"quick": args.quick, "n": n, "steps": steps or "preset", "digits": {}, "shapes_t2i": {}}
    for name, preset, tokens in DIGITS:
        if args.only and name not in args.only:
            continue
        overrides = ()
        if tokens:  # a token prior over the digits-vq tokenizer, trained first (its time counts in the row)
            vq_seconds = train_preset("digits-vq", out / "digits-vq", steps)
            overrides = (f"method.options.tokenizer={out / 'digits-vq'}",)
        seconds = train_preset(preset, out / preset, steps, overrides=overrides)
        if tokens:
            seconds = round(seconds + vq_seconds, 1)
        J["digits"][name] = digits_row(imgen.load(out / preset), n, args.seed, seconds)
        print(name, J["digits"][name], flush=True)
    n_prompts = args.n or (100 if args.quick else 200)
    J["shapes_t2i"]["latent_flow"] = shapes_row(imgen.load(DEFAULT_TEXT_MODEL), n_prompts, args.seed)
    print("latent_flow", J["shapes_t2i"]["latent_flow"], flush=True)
    for name, preset in T2I_ROWS:  # trained by benchmarks/token_priors.py / gans.py into OUT/<preset>
        if (out / preset / "ema.safetensors").is_file():
            J["shapes_t2i"][name] = shapes_row(imgen.load(out / preset), n_prompts, args.seed)
            print(name, J["shapes_t2i"][name], flush=True)
    J["seconds"] = round(time.perf_counter() - tic, 1)
    stem = "families_quick" if args.quick else "families"
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{stem}.json").write_text(json.dumps(J, indent=2) + "\n")
    plot(J, RESULTS / f"{stem}.png")
    print(f"wrote {RESULTS / stem}.json/.png ({J['seconds']} s)")
    return J


if __name__ == "__main__":
    main()
