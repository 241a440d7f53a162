"""Latent vs pixel space for text-to-image on shapes, at the same training budget: prompt adherence and wall times.

Budget: the same number of optimizer steps at the same batch size, learning rate and schedule (the presets'
train settings, `--steps` overrides both), so the two sides see the same number of training images; wall-clock
time is measured and reported beside it. The autoencoder the latent model needs is trained first (preset shapes-ae,
or reused with --ae DIR) and its time is reported separately.

    pixel:  preset shapes-t2i         (flow matching on 24x24 pixels, U-Net cross-attention + text transformer)
    latent: preset shapes-latent-t2i  (the same method, text encoder and U-Net on the 4x8x8 latents of the
                                       32x32 autoencoder, decoded to 32x32 pixels)

Adherence is imgen.metrics.adherence.adherence (held-out (shape, colour) pairs and caption templates, read by the
shapes-eval evaluator) at the presets' sampler settings. The autoencoder's own ceiling is reported too: how often
the evaluator reads the reconstruction of a held-out scene as it reads the original.

    OMP_NUM_THREADS=1 python benchmarks/latent_vs_pixel.py --out runs/lvp                 # presets' budgets
    OMP_NUM_THREADS=1 python benchmarks/latent_vs_pixel.py --out runs/lvp --steps 300 --ae-steps 600 --n 100
    OMP_NUM_THREADS=1 python benchmarks/latent_vs_pixel.py --quick      # shipped AE, 30 steps each, n=50, OUT/quick
Writes OUT/latent_vs_pixel.json and OUT/latent_vs_pixel.png (rows: pixel, latent; the same held-out prompts) and
prints the JSON. Models already trained in OUT are reused (their recorded training time is kept). --ae accepts a
shipped model name (shapes-ae).

Time on a shared 2-core machine (OMP_NUM_THREADS=1): --quick (the shipped shapes-ae and shapes-clip, no autoencoder
training; both sides 30 steps at batch 64, 50 prompts at 10 sampler steps) measured 1 min 29 s from scratch. The full
run is an estimate from per-step times measured the same way, not a full run: shapes-ae 1000 steps at ~0.39 s/step
~6.5 min, shapes-t2i 1200 steps at ~1.7 s/step ~34 min, shapes-latent-t2i 1200 steps at ~0.58 s/step ~12 min,
adherence on 200 prompts at 25 sampler steps ~2 min: ~55 min (~48 min with --ae shapes-ae).
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

import imgen
from imgen.checkpoint import load_tensors
from imgen.data import load_dataset
from imgen.images import save_grid
from imgen.methods.autoencoder import load_autoencoder
from imgen.metrics.adherence import adherence, adherence_prompts
from imgen.metrics.evaluators import load_evaluator
from imgen.presets import get_preset
from imgen.pretrained import resolve_model_path
from imgen.train import train


def _train_timed(config, out: Path) -> float:
    """Train (or reuse) a model; the wall-clock seconds its training took (recorded in OUT/.../wall_s.json)."""
    record = out / "wall_s.json"
    done = (out / "train_state.json").is_file() and \
        json.loads((out / "train_state.json").read_text())["step"] >= config.train.steps
    if done and record.is_file():
        return json.loads(record.read_text())["wall_s"]
    tic = time.perf_counter()
    train(config, out, progress=True)
    wall = time.perf_counter() - tic
    record.write_text(json.dumps({"wall_s": wall}) + "\n")
    return wall


def logged_wall(model_dir: Path, upto_step: int | None) -> float | None:
    """Training seconds of a reused model up to `upto_step`, summed from its log.jsonl windows (None if no log)."""
    log, batch = model_dir / "log.jsonl", json.loads((model_dir / "config.json").read_text())["data"]["batch_size"]
    if not log.is_file():
        return None
    rows, wall, prev = [json.loads(line) for line in log.read_text().splitlines()], 0.0, 0
    for r in rows:
        if upto_step is None or r["step"] <= upto_step:
            wall += (r["step"] - prev) * batch / r["images_per_s"]
            prev = r["step"]
    return wall


@torch.no_grad()
def reconstruction_agreement(ae_dir: Path, n: int = 500) -> dict[str, float]:
    """How often shapes-eval reads shape, colour, position of the AE reconstruction of a held-out scene as it reads
    the original (the ceiling a latent model can reach); measured on the copy the latent model was trained with."""
    ae = load_autoencoder(ae_dir)
    x = load_dataset("shapes", image_size=ae.image_size, split="heldout", max_objects=1, seed=7).get(np.arange(n))["image"]
    ev = load_evaluator("shapes-eval")
    orig, rec = ev.predict(x), ev.predict(ae.decode(ae.encode(x).mean).clamp(-1, 1))
    return {k: float((orig[k] == rec[k]).float().mean()) for k in ("shape", "color", "pos")}


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default="runs/latent_vs_pixel")
    p.add_argument("--steps", type=int, default=None, help="training steps of both models (default: the presets')")
    p.add_argument("--ae", default=None, help="a trained shapes-ae directory to reuse (default: train one in OUT/ae)")
    p.add_argument("--ae-steps", type=int, default=None, help="autoencoder training steps (default: the preset's)")
    p.add_argument("--n", type=int, default=200, help="held-out prompts for adherence")
    p.add_argument("--sample-steps", type=int, default=None, help="sampler steps (default: the presets')")
    p.add_argument("--sides", default="pixel,latent", help="which models to train and score (comma-separated)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--quick", action="store_true",
                   help="shipped shapes-ae (unless --ae), 30 training steps each, 50 prompts, 10 sampler steps; "
                        "models in OUT/quick")
    return p


def main(argv=None) -> dict:
    args = build_parser().parse_args(argv)
    out = Path(args.out)
    if args.quick:
        out = out / "quick"
        args.ae, args.steps = args.ae or "shapes-ae", args.steps or 30
        args.n, args.sample_steps = min(args.n, 50), args.sample_steps or 10
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(args.seed)

    sides = [s for s in args.sides.split(",") if s]
    ae_dir, ae_wall = (resolve_model_path(args.ae), None) if args.ae else (out / "ae", None)
    if not args.ae and "latent" in sides:
        ae_cfg = get_preset("shapes-ae")
        if args.ae_steps:
            ae_cfg.train.steps = args.ae_steps
        ae_wall = _train_timed(ae_cfg, ae_dir)

    configs = {"pixel": get_preset("shapes-t2i"), "latent": get_preset("shapes-latent-t2i")}
    configs["latent"].method.options["autoencoder"] = str(ae_dir)
    rows, images = {}, {}
    prompts, _ = adherence_prompts(8)
    for name, cfg in configs.items():
        if name not in sides:
            continue
        if args.steps:
            cfg.train.steps = args.steps
            cfg.train.ckpt_every = min(cfg.train.ckpt_every, args.steps)
        wall = _train_timed(cfg, out / name)
        m = imgen.load(out / name)
        kw = {"steps": args.sample_steps} if args.sample_steps else {}
        scored = out / name / f"adherence_n{args.n}_steps{args.sample_steps}_seed{args.seed}.json"
        if scored.is_file():  # scored before (e.g. by a --sides run): reuse
            rates, sample_s = (lambda d: (d["rates"], d["sample_s"]))(json.loads(scored.read_text()))
        else:
            tic = time.perf_counter()
            rates = adherence(m, n=args.n, seed=args.seed, **kw)
            sample_s = time.perf_counter() - tic
            scored.write_text(json.dumps({"rates": rates, "sample_s": sample_s}) + "\n")
        log = [json.loads(line) for line in (out / name / "log.jsonl").read_text().splitlines()]
        rows[name] = {"preset": "shapes-t2i" if name == "pixel" else "shapes-latent-t2i",
                      "image_size": cfg.data.options["image_size"],
                      "net_input": list(m.shape), "params": sum(p.numel() for p in m.net.parameters()),
                      "train_steps": cfg.train.steps, "batch_size": cfg.data.batch_size,
                      "train_wall_s": round(wall, 1),
                      "train_images_per_s": round(cfg.train.steps * cfg.data.batch_size / wall, 1),
                      "final_loss": float(np.mean([r["loss"] for r in log[-5:]])),
                      "adherence": {k: round(v, 4) for k, v in rates.items()},
                      "sample_wall_s_per_image": round(sample_s / args.n, 4),
                      "sampler": m.config.sample.sampler, "sample_steps": args.sample_steps or m.config.sample.steps,
                      "cfg": m.config.sample.cfg}
        x = m.generate(prompts, seed=args.seed, **kw)
        images[name] = F.interpolate(x, size=(32, 32), mode="nearest") if x.shape[-1] != 32 else x

    if sides != ["pixel", "latent"]:
        print(json.dumps(rows, indent=2))
        return rows
    ae_steps = load_tensors(out / "latent" / "autoencoder" / "ema.safetensors", with_metadata=True)[1].get("step")
    if ae_wall is None:  # a reused autoencoder: its own training log says how long it took
        ae_wall = logged_wall(ae_dir, ae_steps)
    result = {
        "budget": "same optimizer steps, batch size and LR schedule for both; wall-clock reported beside it",
        "autoencoder": {"dir": str(ae_dir), "train_wall_s": None if ae_wall is None else round(ae_wall, 1),
                        "train_steps": ae_steps,
                        "reconstruction_agreement": reconstruction_agreement(out / "latent" / "autoencoder")},
        "pixel": rows["pixel"], "latent": rows["latent"],
        "latent_over_pixel": {"train_wall": round(rows["latent"]["train_wall_s"] / rows["pixel"]["train_wall_s"], 3),
                              "train_wall_incl_ae": None if ae_wall is None else
                              round((rows["latent"]["train_wall_s"] + ae_wall) / rows["pixel"]["train_wall_s"], 3),
                              "shape_color_minus_pixel": round(rows["latent"]["adherence"]["shape_color"]
                                                   - rows["pixel"]["adherence"]["shape_color"], 4)},
        "n_prompts": args.n, "torch_threads": torch.get_num_threads(), "quick": args.quick,
        "png_prompts": prompts,
    }
    (out / "latent_vs_pixel.json").write_text(json.dumps(result, indent=2) + "\n")
    save_grid(torch.cat([images["pixel"], images["latent"]]), out / "latent_vs_pixel.png", nrow=len(prompts), scale=3)
    print(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
