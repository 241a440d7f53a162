"""Latent arithmetic on shapes: a colour attribute vector applied to encoded test images, and how beta-VAE organises
its latent space (active units, MIG against the shapes' ground-truth factors).

attribute: v = mean posterior latent of 2,000 red one-object scenes - that of 2,000 blue ones (imgen.apps.latent,
           White 2016), both from a labelled stream (seed 500); applied (scale 1) to 500 blue test scenes (seed 1000,
           a stream training never saw) of shapes-latent-vae (a VAE on shapes-ae's latents with a spatial broadcast
           decoder); the shipped shapes-eval evaluator reads the edited images: J["attribute"]["target_color"] =
           fraction read as red, ["kept_shape"], ["kept_position"] = fraction whose shape / position is read as the
           source scene's (ground truth). ["reconstruction"] gives the same reads for plain reconstructions (scale
           0): the edit cannot keep what the autoencoder itself loses. J["attribute_pixel_vae"]: the same for the
           pixel VAE shapes-vae; J["targets"]: issue 11's attribute targets (colour >= 0.8, shape, position >= 0.9).
beta_vae:  for shapes-vae (beta 1) and shapes-beta-vae (beta 4): active units (Var of the posterior mean > 0.01,
           Burda et al. 2016) and MIG (Chen et al. 2018; 20-bin plug-in estimate, imgen.metrics.disentanglement)
           against shape, color, size, pos and bg on 2,000 test scenes.

    OMP_NUM_THREADS=1 python benchmarks/latent_arithmetic.py            # preset step budgets; writes benchmarks/results/
    OMP_NUM_THREADS=1 python benchmarks/latent_arithmetic.py --quick    # 150 steps each, fewer images

Trained models are cached in OUT/<name> (--quick: OUT/quick/<name>); a rerun only evaluates.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

import imgen
from imgen.apps.latent import apply_attribute, attribute_vector, scenes_with
from imgen.data.shapes import COLOR_NAMES, ShapesDataset
from imgen.metrics.disentanglement import active_units, mig
from imgen.metrics.evaluators import load_evaluator
from imgen.train import train_preset

QUICK_STEPS = 150
RESULTS = Path(__file__).resolve().parent / "results" / "latent_arithmetic.json"
FACTORS = ("shape", "color", "size", "pos", "bg")
SOURCE, TARGET = "blue", "red"


def trained(name: str, out: Path, steps: int | None) -> tuple[imgen.Model, float]:
    seconds = train_preset(name, out / name, steps)  # resumes / returns at once if already trained
    return imgen.load(out / name), seconds


def scenes_of(color: str, n: int, seed: int) -> dict:
    """The first n one-object scenes of the stream `seed` whose object has `color` (images + ground truth)."""
    return scenes_with(ShapesDataset(n=20000, image_size=32, seed=seed, split="all", max_objects=1), "color",
                       COLOR_NAMES.index(color), n)


def encode_batched(m, x: torch.Tensor, batch: int = 500) -> torch.Tensor:
    with torch.no_grad():
        return torch.cat([m.encode(x[i:i + batch]) for i in range(0, len(x), batch)])


def reads(evaluator, images: torch.Tensor, source: dict) -> dict:
    p = evaluator.predict(images)
    return {"target_color": (p["color"] == COLOR_NAMES.index(TARGET)).float().mean().item(),
            "kept_shape": (p["shape"] == source["attrs"]["shape"]).float().mean().item(),
            "kept_position": (p["pos"] == source["attrs"]["pos"]).float().mean().item()}


def attribute_edit(m, evaluator, n_vector: int, n_test: int) -> dict:
    red, blue = scenes_of(TARGET, n_vector, seed=500), scenes_of(SOURCE, n_vector, seed=500)
    with torch.no_grad():
        v = attribute_vector(m, red["image"], blue["image"])
        test = scenes_of(SOURCE, n_test, seed=1000)
        edited = apply_attribute(m, test["image"], v, scale=1.0)
        recon = m.reconstruct(test["image"])
    out = reads(evaluator, edited, test)
    out["reconstruction"] = reads(evaluator, recon, test)
    out.update({"source_color": SOURCE, "target": TARGET, "n_vector_images": n_vector, "n_test": n_test})
    return out


def latent_structure(m, n: int) -> dict:
    data = ShapesDataset(n=n, image_size=32, seed=1000, split="all", max_objects=1)
    batch = data.get(np.arange(n))
    means = encode_batched(m, batch["image"])
    r = mig(means, {k: batch["attrs"][k].numpy() for k in FACTORS})
    return {"active_units": active_units(means), "latent_dim": int(means.flatten(1).shape[1]), "mig": r["mig"],
            "mig_per_factor": r["per_factor"]}


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help=f"{QUICK_STEPS} training steps per model, fewer images (< 5 min)")
    p.add_argument("--out", default="runs/bench-latent-arithmetic", help="cache folder for the trained models")
    p.add_argument("--json", default=None, help=f"write the JSON here (default without --quick: {RESULTS})")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    tic = time.perf_counter()
    out = Path(args.out) / ("quick" if args.quick else "")
    steps = QUICK_STEPS if args.quick else None
    n_vector, n_test, n_mig = (300, 200, 1000) if args.quick else (2000, 500, 2000)
    evaluator = load_evaluator("shapes-eval")
    J = {"quick": args.quick, "evaluator": "shapes-eval", "train_seconds": {}, "steps": {}, "beta_vae": {}}
    for name, key in (("shapes-vae", "beta_1"), ("shapes-beta-vae", "beta_4")):
        m, seconds = trained(name, out, steps)
        J["train_seconds"][name], J["steps"][name] = round(seconds, 1), m.config.train.steps
        J["beta_vae"][key] = {"beta": m.config.method.options["beta"], **latent_structure(m, n_mig)}
        if name == "shapes-vae":
            J["attribute_pixel_vae"] = attribute_edit(m, evaluator, n_vector, n_test)
    m, seconds = trained("shapes-latent-vae", out, steps)
    J["train_seconds"]["shapes-latent-vae"], J["steps"]["shapes-latent-vae"] = round(seconds, 1), m.config.train.steps
    J["attribute"] = {"model": "shapes-latent-vae", **attribute_edit(m, evaluator, n_vector, n_test)}
    J["targets"] = {"attribute_target_color_ge_0.8": J["attribute"]["target_color"] >= 0.8,
                    "attribute_kept_shape_ge_0.9": J["attribute"]["kept_shape"] >= 0.9,
                    "attribute_kept_position_ge_0.9": J["attribute"]["kept_position"] >= 0.9}
    J["mig_ratio_beta4_to_beta1"] = J["beta_vae"]["beta_4"]["mig"] / max(J["beta_vae"]["beta_1"]["mig"], 1e-12)
    J["seconds"] = round(time.perf_counter() - tic, 1)
    text = json.dumps(J, indent=2)
    print(text)
    path = args.json or (None if args.quick else RESULTS)
    if path:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
