"""Hole masks for training an inpainting model (imgen.methods.inpainting) on the shapes stream.

shapes-inpaint: the shapes stream (same options, same images and captions) with batch["mask"] (B, 1, H, W), 1 = the
hole, drawn per item from (seed, index) alone (exact resume). As LaMa (Suvorov et al. 2022, sec. 3.3) and Stable
Diffusion's inpainting model train on a mix of mask kinds, each item's kind is one of
    box      a random rectangle, each side 20-70 % of the image, anywhere;
    object   a square about the main object's centre, 0.5-1.0 cell either side (what a user paints to replace it);
    border   an outpainting band: one side's 15-50 % strip (the rest known);
    all      the whole image (nothing known: plain text-to-image, so the model still generates),
at the rates MASK_RATES. object_box_holes is also the inpainting benchmark's hole (imgen.metrics.adherence).
"""
from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import torch

from imgen.data.base import as_index, hash_uniform
from imgen.data.shapes import ShapesDataset

MASK_KINDS = ("box", "object", "border", "all")
MASK_RATES = (0.3, 0.35, 0.2, 0.15)
_STREAM = 100  # hash streams 100.. (the scene attributes use 0..15)


def object_box_holes(a: Mapping, image_size: int, half) -> np.ndarray:
    """Square holes (B, H, W) bool about the main object's centre of scenes `a` (sample_scene_attributes), `half`
    cells (a number or (B,)) either side of it."""
    cell = image_size / 3
    cx = (a["pos"] % 3 + 0.5 + a["offset"][:, 0, 0]) * cell
    cy = (a["pos"] // 3 + 0.5 + a["offset"][:, 0, 1]) * cell
    r = np.broadcast_to(np.asarray(half, np.float64), cx.shape) * cell
    grid = np.arange(image_size) + 0.5
    return (np.abs(grid[None, None, :] - cx[:, None, None]) <= r[:, None, None]) & \
        (np.abs(grid[None, :, None] - cy[:, None, None]) <= r[:, None, None])


def inpaint_masks(seed: int, idx, a: Mapping, image_size: int) -> torch.Tensor:
    """The holes (B, 1, H, W) float {0, 1} of items `idx` with scene attributes `a` (see the module docstring)."""
    idx = np.asarray(idx, np.int64)
    u = lambda k: hash_uniform(seed, idx, _STREAM + k)  # noqa: E731
    kind = np.minimum(np.searchsorted(np.cumsum(MASK_RATES), u(0), side="right"), len(MASK_KINDS) - 1)
    s = image_size
    grid = np.arange(s)
    # box: sides 20-70 % of the image, the corner uniform over where it fits
    bw, bh = (np.maximum(1, ((0.2 + 0.5 * u(k)) * s).astype(np.int64)) for k in (1, 2))
    x0, y0 = (np.floor(u(k) * (s - side + 1)).astype(np.int64) for k, side in ((3, bw), (4, bh)))
    box = ((grid[None, None, :] >= x0[:, None, None]) & (grid[None, None, :] < (x0 + bw)[:, None, None])
           & (grid[None, :, None] >= y0[:, None, None]) & (grid[None, :, None] < (y0 + bh)[:, None, None]))
    obj = object_box_holes(a, s, 0.5 + 0.5 * u(5))
    # border: one side's strip of 15-50 % of the image
    side, depth = np.minimum((u(6) * 4).astype(np.int64), 3), np.maximum(1, ((0.15 + 0.35 * u(7)) * s).astype(np.int64))
    xs, ys, d = grid[None, None, :], grid[None, :, None], depth[:, None, None]
    border = np.select([side[:, None, None] == k for k in range(4)], [xs < d, xs >= s - d, ys < d, ys >= s - d])
    holes = np.select([kind[:, None, None] == k for k in range(3)], [box, obj, border], np.ones_like(box))
    return torch.from_numpy(holes.astype(np.float32))[:, None]


class ShapesInpaint(ShapesDataset):
    """The shapes stream with a hole mask per item as batch["mask"] (B, 1, H, W), 1 = to fill (module docstring):
    an inpainting model's training data (imgen.recipes.inpaint)."""

    name = "shapes-inpaint"

    def __init__(self, n: int = 10000, image_size: int = 32, seed: int = 0, split: str = "train",
                 max_objects: int = 2, templates: str | None = None, supersample: int = 4, bg_captions: float = 0.0):
        super().__init__(n=n, image_size=image_size, seed=seed, split=split, max_objects=max_objects,
                         templates=templates, supersample=supersample, bg_captions=bg_captions)

    def get(self, idx) -> dict:
        idx = as_index(idx, None, self.name)
        a = self.attributes(idx)
        return {**self.scenes(a), "mask": inpaint_masks(self.seed, idx, a, self.image_size)}
