"""`imgen demo`: train a small text-to-image model from scratch on the built-in shapes data and write an HTML
report: samples for held-out prompts, loss curve, forward-noising strip, sampling trajectory, and a metric table
(prompt adherence read by the shapes evaluator, with and without classifier-free guidance; FID[shapes-eval]).

Two stages, both from scratch: a small CLIP on the shapes captions, then latent flow matching conditioned on
its frozen text tower, in the latent space of the autoencoder shipped with imgen (shapes-ae)."""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch

from imgen.config import apply_overrides
from imgen.data.shapes import ShapesDataset, render_scenes
from imgen.methods.clip import CLIP, evaluate_clip
from imgen.metrics.adherence import adherence, adherence_prompts, attribute_table, score_images
from imgen.model import load
from imgen.plots import forward_noising_strip
from imgen.presets import get_preset
from imgen.recipes.clip import train_clip
from imgen.report import Report, loss_curve
from imgen.train import train

PRESET = "shapes-t2i-demo"
SHIPPED = "shapes-latent-t2i"
CLIP_STEPS = 600
SHOWCASE = ["a large red circle in the top left", "a small cyan circle at the bottom",
            "a green square in the center", "a big white box on the right",
            "a yellow triangle at the top", "a magenta triangle in the bottom right",
            "an orange star on the left", "a blue five-pointed star in the middle"]  # all held-out (shape, colour) pairs
SHOWCASE2 = ["a red circle on the left and a blue square on the right on a gray background",
             "navy background with a small yellow triangle in the top left and a large white star in the bottom "
             "right",
             "a cyan cross at the top and a green circle at the bottom",
             "a large magenta triangle in the center on a brown background"]


def _fid(model_images: torch.Tensor, real: torch.Tensor) -> float:
    from imgen.metrics.evaluators import load_evaluator
    from imgen.metrics.fid import fid

    ev = load_evaluator("shapes-eval")
    return fid(ev.features(model_images).double(), ev.features(real).double(), "shapes-eval")


def run_demo(out: str | Path = "imgen-demo", steps: int | None = None, seed: int = 0, n_eval: int = 200,
             clip_steps: int = CLIP_STEPS) -> Path:
    out = Path(out)
    tic = time.perf_counter()
    if not (out / "clip" / "model.safetensors").is_file():  # 1. a CLIP from scratch: its text tower is the encoder
        print(f"training a CLIP on shapes captions ({clip_steps} steps) ...", flush=True)
        clip, _ = train_clip(steps=clip_steps, batch_size=128, image_size=16, max_objects=1, seed=seed,
                             out_dir=out / "clip-train")  # a model directory: a rerun resumes it
        clip.save(out / "clip")
    clip_s = time.perf_counter() - tic
    overrides = [f"train.seed={seed}", f"net.options.encoder_init={out / 'clip'}"]
    overrides += [f"train.steps={steps}"] if steps is not None else []
    config = apply_overrides(get_preset(PRESET), overrides)
    tic = time.perf_counter()
    train(config, out / "model")  # 2. latent flow matching conditioned on the frozen CLIP text tower
    train_s = time.perf_counter() - tic
    model = load(out / "model")
    s = config.sample
    print(f"trained {config.train.steps} steps in {train_s:.0f} s; evaluating ...", flush=True)

    rep = Report(out, "imgen demo: text-to-image latent flow matching on shapes")
    clip_eval = evaluate_clip(CLIP.load(out / "clip"), n=300)
    rep.text(f"Step 1: a CLIP (image and text encoders trained contrastively on shapes captions) in {clip_s:.0f} s; "
             f"zero-shot on held-out scenes: colour {clip_eval['color_acc']:.1%}, shape {clip_eval['shape_acc']:.1%}, "
             f"text-to-image recall@1 among 100: {clip_eval['recall@1']:.2f}. Its frozen text tower encodes the prompts.")
    rep.text(f"Step 2: preset {PRESET!r}: {config.description}; {config.train.steps} steps of batch "
             f"{config.data.batch_size} in {train_s:.0f} s, in the latent space of imgen's shipped autoencoder "
             f"(shapes-ae, frozen, as LDM's first stage). Model directory: {out / 'model'} — try "
             f"`imgen generate \"a red circle in the top left\" --model {out / 'model'} --n 8 --out red.png`.")
    rep.text("Every prompt below names a (shape, colour) pair the model never saw in training "
             "(e.g. no red circle was ever drawn for it), so drawing it needs composition, not recall.")

    rep.heading(f"Samples for held-out prompts ({s.sampler}, {s.steps} steps, guidance scale {s.cfg})")
    x = model.generate(SHOWCASE, n=6, seed=seed)
    rep.grid(x, "samples.png", nrow=6, scale=4)
    rep.code("\n".join(f"row {i + 1}: {p}" for i, p in enumerate(SHOWCASE)))

    rep.heading("Training loss")
    rep.figure(loss_curve(out / "model" / "log.jsonl"), "loss.png")

    rep.heading("Forward noising x_t = alpha(t) x0 + sigma(t) eps")
    real = ShapesDataset(image_size=config.data.options.get("image_size", 32), max_objects=1).get(np.arange(6))["image"]
    schedule = model.method.denoiser(model.net).schedule
    rep.figure(forward_noising_strip(real, schedule, seed=seed), "noising.png")
    if model.latent:
        rep.text("This model noises and denoises the autoencoder's 4x8x8 latents (latent diffusion); the strip shows "
                 "the same path on pixels for intuition. The trajectory below is decoded to pixels.")

    rep.heading("Sampling trajectory: the predicted x0 every few steps, noise (left) to image (right)")
    frames = []
    model.generate(SHOWCASE[:4], seed=seed, callback=lambda info: frames.append(info["x0_hat"])
                   if info["i"] % 4 == 0 else None)
    if model.latent:
        frames = [model.method.decode(f) for f in frames]
    strip = torch.stack(frames, 1).reshape(-1, *frames[0].shape[1:])  # one row per prompt
    rep.grid(strip.clamp(-1, 1), "trajectory.png", nrow=len(frames), scale=4)

    rep.heading(f"Prompt adherence on {n_eval} held-out prompts (held-out pairs and caption templates)")
    prompts, truth = adherence_prompts(n_eval)
    rows, images = [], {}
    for cfg in sorted({1.0, s.cfg}):
        t0 = time.perf_counter()
        images[cfg] = torch.cat([model.generate(prompts[i:i + 100], cfg=cfg, seed=seed + i)
                                 for i in range(0, n_eval, 100)])
        sc = score_images(images[cfg], truth)
        rows.append({"guidance scale": cfg, "NFE": s.steps * (1 if cfg == 1.0 else 2),
                     "shape+colour": sc["shape_color"], "position": sc["pos"], "shape+colour+position": sc["all3"],
                     "size": sc["size"], "background": sc.get("bg", float("nan")), "all stated": sc["all_stated"],
                     "s / image": (time.perf_counter() - t0) / n_eval})
    ref = ShapesDataset(image_size=config.data.options.get("image_size", 32), split="heldout", max_objects=1,
                        templates="heldout", seed=7).get(np.arange(n_eval))["image"]
    for r in rows:
        r["FID[shapes-eval]"] = _fid(images[r["guidance scale"]], ref)
    rep.table(rows, "read by the shapes-eval network (100% on real renders), each attribute over the prompts that "
                    "state it (size and position: all; background: a third); FID against real held-out scenes")
    real_fid = _fid(render_scenes(truth, ref.shape[-1]), ref)
    rep.text(f"For scale: FID[shapes-eval] of {n_eval} real renders of the same prompts is {real_fid:.2f}.")

    rep.heading(f"Every attribute a prompt states: the shipped {SHIPPED} ({n_eval} held-out prompts of each kind)")
    shipped = load(SHIPPED)
    rates = {k: adherence(shipped, n=n_eval, seed=seed, max_objects=k) for k in (1, 2)}
    rep.text(f"This demo's model saw one-object scenes for {config.train.steps} steps. The model shipped with imgen "
             f"trained {shipped.config.train.steps} steps on one- and two-object scenes, with a token per object "
             f"phrase; its samples for two-object and background prompts:")
    x = shipped.generate(SHOWCASE2, n=6, seed=seed)
    rep.grid(x, "samples_two_objects.png", nrow=6, scale=4)
    rep.code("\n".join(f"row {i + 1}: {p}" for i, p in enumerate(SHOWCASE2)))
    rep.table(attribute_table(rates, n_eval), "read by shapes-eval (one object) and shapes-cells (each object in "
              "the cell its prompt names; an attribute drawn on the wrong object is wrong); each attribute over "
              "the prompts that state it; default sampling")
    path = rep.write(data={"train_seconds": train_s, "clip_seconds": clip_s, "clip": clip_eval, "metrics": rows,
                           "real_fid": real_fid, "shipped_attributes": {SHIPPED: rates},
                           "config": config.to_dict()})
    return path
