"""The one place where images change representation: float [-1, 1] NCHW tensors <-> uint8 / PIL / PNG, and
change channels or size (adapt_images)."""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from imgen.errors import ImgenError


def to_uint8(x: torch.Tensor) -> np.ndarray:
    """(N, C, H, W) float in [-1, 1] -> (N, H, W, C) uint8."""
    x = ((x.detach().float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    return x.permute(0, 2, 3, 1).cpu().numpy()


def from_uint8(a: np.ndarray) -> torch.Tensor:
    """(N, H, W, C) or (N, H, W) uint8 -> (N, C, H, W) float in [-1, 1]."""
    a = np.asarray(a)
    if a.ndim == 3:
        a = a[..., None]
    return torch.from_numpy(np.ascontiguousarray(a)).permute(0, 3, 1, 2).float() / 127.5 - 1


def to_pil(x: torch.Tensor) -> list[Image.Image]:
    """(N, C, H, W) in [-1, 1] -> list of PIL images (mode L for 1 channel, RGB for 3)."""
    arr = to_uint8(x)
    return [Image.fromarray(a[..., 0] if a.shape[-1] == 1 else a) for a in arr]


def make_grid(x: torch.Tensor, nrow: int | None = None, pad: int = 1) -> torch.Tensor:
    """Tile (N, C, H, W) into one (C, H', W') image, `nrow` images per row, padded with -1 (black)."""
    n, c, h, w = x.shape
    nrow = nrow or max(1, math.ceil(math.sqrt(n)))
    rows = math.ceil(n / nrow)
    grid = x.new_full((c, rows * (h + pad) + pad, nrow * (w + pad) + pad), -1.0)
    for i in range(n):
        r, col = divmod(i, nrow)
        y0, x0 = pad + r * (h + pad), pad + col * (w + pad)
        grid[:, y0:y0 + h, x0:x0 + w] = x[i]
    return grid


def save_grid(x: torch.Tensor, path: str | Path, nrow: int | None = None, scale: int = 1) -> Path:
    """Write a PNG grid of (N, C, H, W) images in [-1, 1]; `scale` enlarges pixels (nearest)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    img = to_pil(make_grid(x, nrow)[None])[0]
    if scale > 1:
        img = img.resize((img.width * scale, img.height * scale), Image.NEAREST)
    img.save(path)
    return path


def save_pngs(x: torch.Tensor, folder: str | Path, prefix: str = "") -> list[Path]:
    """Write each image of (N, C, H, W) as its own PNG in `folder`."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, img in enumerate(to_pil(x)):
        p = folder / f"{prefix}{i:05d}.png"
        img.save(p)
        paths.append(p)
    return paths


def adapt_images(x: torch.Tensor, channels: int, size: int) -> torch.Tensor:
    """Bring (N, C, H, W) images to `channels` (gray <-> RGB by mean / repeat) and `size` x `size`
    (area average when shrinking, bilinear when enlarging)."""
    x = torch.as_tensor(x).float()
    if x.ndim != 4:
        raise ImgenError(f"expected images shaped (N, C, H, W), got {tuple(x.shape)}")
    if x.shape[1] != channels:
        if x.shape[1] == 4:  # RGBA: drop alpha
            x = x[:, :3]
        if channels == 1:
            x = x.mean(1, keepdim=True)
        elif x.shape[1] == 1:
            x = x.repeat(1, channels, 1, 1)
        if x.shape[1] != channels:
            raise ImgenError(f"cannot convert {x.shape[1]}-channel images to {channels} channels; "
                             "give grayscale or RGB images")
    if x.shape[-2:] != (size, size):
        mode = "area" if min(x.shape[-2:]) >= size else "bilinear"
        x = F.interpolate(x, size=(size, size), mode=mode, **({} if mode == "area" else {"align_corners": False}))
    return x
