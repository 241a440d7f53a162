"""Prompt adherence of a text-to-image model on the shapes world, measured exactly.

Prompts describe one object whose (shape, colour) pair is held out of split="train" (HELDOUT_PAIRS), written with
the held-out caption templates; the shapes evaluator (imgen's `shapes-eval` net, 100% on real held-out scenes)
reads shape, colour, position, size and background of each generated image and they are compared with the
attributes the prompt states (a template that names no background leaves the background free).
`adherence(model, n=...)` returns the rates; `adherence_prompts` the prompts and truths.
"""
from __future__ import annotations

import numpy as np
import torch

from imgen.data.shapes import sample_scene_attributes, scene_captions, stated_attributes
from imgen.errors import ImgenError

HELDOUT_SEED = 1_000_003  # a stream no training run uses
READ = ("shape", "color", "pos", "size", "bg")


def adherence_prompts(n: int, seed: int = HELDOUT_SEED, split: str = "heldout",
                      templates: str = "heldout") -> tuple[list[str], dict[str, np.ndarray]]:
    """n one-object prompts (held-out (shape, colour) pairs and templates by default) and their attributes, with
    `stated` (n, len(READ)) bool: which attributes each prompt names."""
    a = sample_scene_attributes(seed, np.arange(n), split, max_objects=1, templates=templates)
    stated = np.array([[k in stated_attributes(int(t)) for k in READ] for t in a["template"]], dtype=bool)
    return scene_captions(a), {**{k: a[k] for k in READ}, "stated": stated}


def score_images(images: torch.Tensor, truth: dict[str, np.ndarray], evaluator=None) -> dict[str, float]:
    """Rates at which the evaluator reads each attribute as the prompt says, over the prompts that state it (an
    attribute a prompt leaves out is free; truth["stated"] from adherence_prompts says which, and without it
    every attribute counts), plus shape_color (both right), all3 (shape, colour and position right) and
    all_stated (every attribute the prompt states right). An attribute no prompt states is left out."""
    from imgen.metrics.evaluators import load_evaluator

    ev = evaluator or load_evaluator("shapes-eval")
    pred = {k: v.numpy() for k, v in ev.predict(images).items()}
    keys = [k for k in READ if k in truth]
    stated = np.asarray(truth.get("stated", np.ones((len(images), len(READ)), dtype=bool)))
    stated = {k: stated[:, READ.index(k)] for k in keys}
    hit = {k: pred[k] == np.asarray(truth[k]) for k in keys}
    out = {k: float(hit[k][stated[k]].mean()) for k in keys if stated[k].any()}
    out["shape_color"] = float((hit["shape"] & hit["color"]).mean())
    out["all3"] = float((hit["shape"] & hit["color"] & hit["pos"]).mean())
    out["all_stated"] = float(np.logical_and.reduce([hit[k] | ~stated[k] for k in keys]).mean())
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
