"""Prompt adherence of a text-to-image model on the shapes world, measured exactly.

Prompts describe one object whose (shape, colour) pair is held out of split="train" (HELDOUT_PAIRS), written with
the held-out caption templates; the shapes evaluator (imgen's `shapes-eval` net, 100% on real held-out scenes)
reads shape, colour, position, size and background of each generated image and they are compared with the
prompt's attributes. `adherence(model, n=...)` returns the rates; `adherence_prompts` the prompts and truths.
"""
from __future__ import annotations

import numpy as np
import torch

from imgen.data.shapes import sample_scene_attributes, scene_captions
from imgen.errors import ImgenError

HELDOUT_SEED = 1_000_003  # a stream no training run uses
READ = ("shape", "color", "pos", "size", "bg")


def adherence_prompts(n: int, seed: int = HELDOUT_SEED, split: str = "heldout",
                      templates: str = "heldout") -> tuple[list[str], dict[str, np.ndarray]]:
    """n one-object prompts (held-out (shape, colour) pairs and templates by default) and their attributes."""
    a = sample_scene_attributes(seed, np.arange(n), split, max_objects=1, templates=templates)
    return scene_captions(a), {k: a[k] for k in READ}


def score_images(images: torch.Tensor, truth: dict[str, np.ndarray], evaluator=None) -> dict[str, float]:
    """Rates at which the evaluator reads each attribute as the prompt says, plus shape_color (both right) and
    all3 (shape, colour and position right)."""
    from imgen.metrics.evaluators import load_evaluator

    ev = evaluator or load_evaluator("shapes-eval")
    pred = {k: v.numpy() for k, v in ev.predict(images).items()}
    hit = {k: pred[k] == np.asarray(truth[k]) for k in READ if k in truth}
    out = {k: float(v.mean()) for k, v in hit.items()}
    out["shape_color"] = float((hit["shape"] & hit["color"]).mean())
    out["all3"] = float((hit["shape"] & hit["color"] & hit["pos"]).mean())
    return out


def adherence(model, n: int = 200, batch: int = 100, seed: int = 0, prompt_seed: int = HELDOUT_SEED,
              split: str = "heldout", templates: str = "heldout", **sample_kwargs) -> dict[str, float]:
    """Adherence rates of `model` (an imgen.Model that is text-conditional) on n held-out prompts, one image
    each; `sample_kwargs` (sampler, steps, cfg, ...) go to model.generate."""
    if n < 1:
        raise ImgenError(f"adherence needs n >= 1 prompts, got {n}")
    prompts, truth = adherence_prompts(n, prompt_seed, split, templates)
    images = torch.cat([model.generate(prompts[i:i + batch], seed=seed + i, **sample_kwargs)
                        for i in range(0, n, batch)])
    return score_images(images, truth)
