"""Shapes data for image-to-image translation: pairs for pix2pix (Isola et al. 2017) and unpaired domains for
CycleGAN (Zhu et al. 2017).

shapes-pairs: each item is a scene's label map ("source") and its rendered image ("image"), both exact renders
of the same attributes.

The label map is the scene's layout with every object drawn as a flat code colour that states what the image
must show, so the translation is well posed (one right answer per map):

    R  the object's colour id c -> -0.6 + 1.6 c / 7     (-1 where no object is)
    G  the object's shape id s  -> -0.6 + 1.6 s / 4     (-1 where no object is)
    B  the scene's background id b -> -1 + 2 b / 3, on every pixel

Objects are rasterised with the image's own anti-aliased coverage (imgen.data.shapes.render_scenes with a code
palette), so each map lines up with its image to the sub-pixel. decode_label_map reads the codes back.

shapes-domains: two domains of scenes that differ in one attribute, the background (domain_a, domain_b: names
of imgen.data.shapes.BACKGROUNDS); "image" holds domain A scenes and "image_b" other, independent scenes of
domain B (unpaired: item i of B is not item i of A redrawn), "attrs" those of the A scenes.
"""
from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import torch

from imgen.data.shapes import BACKGROUNDS, COLORS, SHAPES, ShapesDataset, render_scenes
from imgen.data.base import as_index
from imgen.data.shapes import BACKGROUND_NAMES, sample_scene_attributes, scene_captions
from imgen.errors import ImgenError

COLOR_LEVELS = np.linspace(-0.6, 1.0, len(COLORS), dtype=np.float32)
SHAPE_LEVELS = np.linspace(-0.6, 1.0, len(SHAPES), dtype=np.float32)
BACKGROUND_LEVELS = np.linspace(-1.0, 1.0, len(BACKGROUNDS), dtype=np.float32)
# code palette indexed by shape * len(COLORS) + colour: (R, G, B) = (colour level, shape level, -1)
CODE_PALETTE = np.array([[COLOR_LEVELS[c], SHAPE_LEVELS[s], -1.0] for s in range(len(SHAPES))
                         for c in range(len(COLORS))], np.float32)


def label_maps(a: Mapping, image_size: int = 32, offsets=None, supersample: int = 4) -> torch.Tensor:
    """The label maps of scenes with attributes `a` (imgen.data.shapes.sample_scene_attributes) ->
    (B, 3, image_size, image_size) in [-1, 1], aligned with render_scenes(a, image_size, offsets, supersample)."""
    code = {k: np.atleast_1d(np.asarray(v)) for k, v in a.items() if k in ("shape", "color", "size", "pos",
                                                                             "n_objects", "shape2", "color2",
                                                                             "size2", "pos2")}
    code["color"] = code["shape"] * len(COLORS) + code["color"]
    if "color2" in code:
        code["color2"] = np.where(code["color2"] >= 0, np.maximum(code["shape2"], 0) * len(COLORS) + code["color2"],
                                  -1)
    code["bg"] = np.zeros_like(code["shape"])  # black: (-1, -1, -1) behind the objects
    maps = render_scenes(code, image_size, offsets, supersample, palette=CODE_PALETTE)
    bg = torch.from_numpy(BACKGROUND_LEVELS[np.atleast_1d(np.asarray(a.get("bg", 0)))])
    maps[:, 2] = bg[:, None, None].expand(len(maps), image_size, image_size)
    return maps


def decode_label_map(maps: torch.Tensor) -> dict[str, torch.Tensor]:
    """Per pixel, the nearest codes of label maps (B, 3, H, W): {"object": bool (B, H, W), "color", "shape"
    (B, H, W) ids where object, else -1, "bg" (B,) from the mean B channel}."""
    if maps.ndim != 4 or maps.shape[1] != 3:
        raise ImgenError(f"label maps are (B, 3, H, W), got {tuple(maps.shape)}")
    obj = maps[:, 0] > -0.8
    nearest = lambda v, levels: (v[..., None] - torch.from_numpy(levels)).abs().argmin(-1)  # noqa: E731
    color = torch.where(obj, nearest(maps[:, 0], COLOR_LEVELS), -1)
    shape = torch.where(obj, nearest(maps[:, 1], SHAPE_LEVELS), -1)
    return {"object": obj, "color": color, "shape": shape, "bg": nearest(maps[:, 2].mean((1, 2)), BACKGROUND_LEVELS)}


class ShapesPairs(ShapesDataset):
    """The shapes stream (same options, same images) with each scene's label map as batch["source"]."""

    name = "shapes-pairs"

    def scenes(self, a: Mapping) -> dict:
        out = super().scenes(a)
        out["source"] = label_maps(a, self.image_size, a["offset"], self.supersample)
        return out


class ShapesControl(ShapesDataset):
    """The shapes stream with each scene's label map as batch["control"]: a ControlNet's layout condition
    (imgen.nn.controlnet; Zhang et al. 2023 train on (image, caption, control map) triples). A fraction
    `wrong_positions` of the captions name another cell than the scene's (image and map stay true), so the layout
    must come from the map even where a prompt says otherwise or says nothing."""

    name = "shapes-control"

    def __init__(self, n: int = 10000, image_size: int = 32, seed: int = 0, split: str = "train",
                 max_objects: int = 2, templates: str | None = None, supersample: int = 4,
                 wrong_positions: float = 0.0, bg_captions: float = 0.0):
        super().__init__(n=n, image_size=image_size, seed=seed, split=split, max_objects=max_objects,
                         templates=templates, supersample=supersample, bg_captions=bg_captions)
        if not 0.0 <= wrong_positions <= 1.0:
            raise ImgenError(f"shapes-control: wrong_positions must be in [0, 1], got {wrong_positions!r}")
        self.wrong_positions = wrong_positions

    def scenes(self, a: Mapping) -> dict:
        out = super().scenes(a)
        out["control"] = label_maps(a, self.image_size, a["offset"], self.supersample)
        if self.wrong_positions > 0:  # deterministic per scene: its caption variant picks both
            swap = (a["variant"] % 997) < self.wrong_positions * 997
            other = (a["pos"] + 1 + (a["variant"] // 997) % 8) % 9
            out["caption"] = scene_captions({**a, "pos": np.where(swap, other, a["pos"])})
        return out


class ShapesDomains(ShapesDataset):
    """Unpaired domains A and B of the shapes stream: the same scene distribution on background domain_a or
    domain_b. Item i: A's scene i and B's scene i of an independent stream (indices offset by 2**40)."""

    name = "shapes-domains"
    B_OFFSET = 1 << 40

    def __init__(self, n: int = 10000, image_size: int = 32, seed: int = 0, split: str = "train",
                 max_objects: int = 2, supersample: int = 4, domain_a: str = "black", domain_b: str = "gray"):
        super().__init__(n=n, image_size=image_size, seed=seed, split=split, max_objects=max_objects,
                         supersample=supersample)
        for d in (domain_a, domain_b):
            if d not in BACKGROUND_NAMES:
                raise ImgenError(f"shapes-domains: domain {d!r} is not a background; use one of "
                                 f"{', '.join(BACKGROUND_NAMES)}")
        if domain_a == domain_b:
            raise ImgenError(f"shapes-domains: domain_a and domain_b are both {domain_a!r}; give two backgrounds")
        self.domain_a, self.domain_b = domain_a, domain_b

    def domain_attributes(self, idx, domain: str) -> dict:
        """Attributes of scenes `idx` of domain "a" or "b" (the background set to that domain's)."""
        idx = as_index(idx, None, self.name) + (self.B_OFFSET if domain == "b" else 0)
        a = sample_scene_attributes(self.seed, idx, self.split, self.max_objects)
        a["bg"] = np.full_like(a["bg"], BACKGROUND_NAMES.index(self.domain_a if domain == "a" else self.domain_b))
        return a

    def get(self, idx) -> dict:
        out = self.scenes(self.domain_attributes(idx, "a"))
        out["image_b"] = self.scenes(self.domain_attributes(idx, "b"))["image"]
        return out
