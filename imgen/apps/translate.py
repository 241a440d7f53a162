"""Image-to-image translation with a trained pix2pix or CycleGAN model (imgen.methods.translation): source images
in, translated images out, checked at the boundary.

    m = imgen.load("runs/p2p")
    y = translate(m, sources)                  # (B, 3, 32, 32) label maps in [-1, 1] -> images in [-1, 1]
    y = translate(m, read_sources(["map.png"], m))
    y = translate(imgen.load("runs/cycle"), images, direction="ba")   # CycleGAN: domain B -> A
"""
from __future__ import annotations

import torch

from imgen.apps.inputs import read_image_file
from imgen.errors import ImgenError


def source_shape(model) -> tuple[int, int, int]:
    """(C, H, W) of the sources a translation model takes; one clear error for any other model."""
    if not hasattr(model.method, "translate"):
        raise ImgenError(f"imgen translate needs an image-to-image translation model (e.g. `imgen train shapes-pix2pix "
                         f"--out DIR` or shapes-cyclegan); this is a {model.config.method.name!r} model")
    size = model.net.image_size
    return (model.net.source_channels, size, size)


def check_sources(model, sources) -> torch.Tensor:
    """(B, C, H, W) or one (C, H, W) source in [-1, 1] of the model's source shape -> (B, C, H, W) float32."""
    c, h, w = source_shape(model)
    x = torch.as_tensor(sources, dtype=torch.float32)
    x = x[None] if x.ndim == 3 else x
    if x.ndim != 4 or x.shape[1] != c or x.shape[0] == 0:
        raise ImgenError(f"expected sources shaped (B, {c}, {h}, {w}) in [-1, 1], got {tuple(x.shape)}")
    if tuple(x.shape[2:]) != (h, w):
        raise ImgenError(f"the source is {x.shape[3]}x{x.shape[2]} but the model translates {w}x{h} images; resize "
                         f"or crop it to {w}x{h}")
    if not bool(torch.isfinite(x).all()) or x.min() < -1 or x.max() > 1:
        raise ImgenError("source values must be finite and in [-1, 1] (imgen.images.from_uint8 converts 0..255)")
    return x


def read_sources(paths, model) -> torch.Tensor:
    """Image files (RGB for a 3-channel source, L for 1) at the model's size -> (B, C, H, W) in [-1, 1]."""
    shape = source_shape(model)
    return check_sources(model, torch.cat([read_image_file(p, shape, "this model translates", "resize or crop it")
                                           for p in paths]))


@torch.no_grad()
def translate(model, sources, direction: str = "ab") -> torch.Tensor:
    """Translated images (B, C, H, W) in [-1, 1] of sources (B, C', H, W) in [-1, 1]; deterministic. `direction`:
    "ab" (pix2pix's only one; CycleGAN's A -> B) or "ba" (CycleGAN's B -> A)."""
    x = check_sources(model, sources)
    if direction not in model.method.directions:
        raise ImgenError(f"this {model.config.method.name} model translates in direction(s) "
                         f"{', '.join(model.method.directions)}, got {direction!r}")
    return model.method.translate(model.net, x.to(model.device), direction)
