"""Editing measured exactly on the shapes world (imgen.apps.edit): rendered scenes, a source prompt stating every
attribute, and an edited prompt that swaps one word (the colour or the shape); shapes-eval reads the result.

    target_attribute   fraction of edits where the edited attribute is read as the edited prompt says
    kept_attributes    fraction where every other attribute (shape or colour, size, position, background) is
                       read as in the input scene
"""
from __future__ import annotations

import numpy as np
import torch

from imgen.data.shapes import COLORS, SHAPES, make_caption, render_scenes, sample_scene_attributes
from imgen.errors import ImgenError

EDIT_SEED = 2_000_003  # a stream no training run uses
EDIT_TEMPLATE = 8  # "{bg} background with a {size} {color} {shape} {pos}": states all five attributes
KEPT = ("shape", "color", "size", "pos", "bg")


def edit_tasks(n: int, attribute: str = "color", seed: int = EDIT_SEED, image_size: int = 32):
    """(images (n, 3, H, W), sources, targets, scenes, new_values): one-object scenes, their captions, the captions
    with `attribute` ("color" or "shape") swapped for another value (same synonym slot, one word for one), and
    the swapped-in value ids."""
    if attribute not in ("color", "shape"):
        raise ImgenError(f"edit tasks swap the 'color' or the 'shape', got {attribute!r}")
    a = sample_scene_attributes(seed, np.arange(n), "train", max_objects=1)
    k = len(COLORS) if attribute == "color" else len(SHAPES)
    new = (a[attribute] + 1 + np.arange(n) % (k - 1)) % k
    keys = ("shape", "color", "size", "pos", "bg")
    sources, targets = [], []
    for i in range(n):
        attrs = {key: int(a[key][i]) for key in keys}
        sources.append(make_caption(attrs, EDIT_TEMPLATE, 0))  # variant 0: the first synonym of every word
        targets.append(make_caption({**attrs, attribute: int(new[i])}, EDIT_TEMPLATE, 0))
    return render_scenes(a, image_size, offsets=a["offset"]), sources, targets, a, new


def edit_scores(images: torch.Tensor, scenes: dict, attribute: str, new_values, evaluator=None) -> dict[str, float]:
    """target_attribute and kept_attributes (see the module doc) of edited `images` of `scenes`."""
    from imgen.metrics.evaluators import load_evaluator

    ev = evaluator or load_evaluator("shapes-eval")
    pred = {k: v.numpy() for k, v in ev.predict(images).items()}
    n = len(images)
    target = pred[attribute] == np.asarray(new_values)[:n]
    kept = np.logical_and.reduce([pred[k] == np.asarray(scenes[k])[:n] for k in KEPT if k != attribute])
    return {"target_attribute": float(target.mean()), "kept_attributes": float(kept.mean())}
