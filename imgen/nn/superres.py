"""Low-resolution conditioning of a super-resolution denoiser (SR3, Saharia et al. 2021, sec. 2.3; Imagen, Saharia
et al. 2022, sec. 2.5): cond["low_res"] (B, C, h, w) is upsampled to the net's size and concatenated to x as extra
input channels, and cond["low_res_level"] (B,) in [0, 1], the noise level of Imagen's conditioning augmentation,
is embedded like a timestep and added to the time embedding. What corrupts the low-res image (and how) is the
method's business (imgen.methods.superres); this module only reads the two keys."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from imgen.errors import ImgenError
from imgen.nn.layers import TimestepEmbedding, as_time_batch


def upsample(low_res: torch.Tensor, size) -> torch.Tensor:
    """Bicubic enlargement of (B, C, h, w) to `size` (int or (H, W)), as SR3 sec. 2.3 conditions on."""
    size = (size, size) if isinstance(size, int) else tuple(size)
    return F.interpolate(low_res, size=size, mode="bicubic", align_corners=False)


class LowResConditioning(nn.Module):
    """`channels` low-res channels at `size` x `size` pixels; `emb_dim` the width of the net's time embedding."""

    def __init__(self, channels: int, size: int, freq_dim: int, emb_dim: int):
        super().__init__()
        self.channels, self.size = channels, size
        self.level_embed = TimestepEmbedding(freq_dim, emb_dim)  # Imagen app. B: the aug level conditions the net

    def forward(self, x: torch.Tensor, emb: torch.Tensor, cond: dict | None) -> tuple[torch.Tensor, torch.Tensor]:
        """(x with the upsampled low-res image as extra channels (B, C + channels, H, W), emb + level embedding)."""
        low = None if cond is None else cond.get("low_res")
        if low is None:
            raise ImgenError("this is a super-resolution net: give cond['low_res'], the (B, "
                             f"{self.channels}, {self.size}, {self.size}) image to upscale (imgen.apps.upscale)")
        if low.ndim != 4 or tuple(low.shape[1:]) != (self.channels, self.size, self.size) or len(low) != len(x):
            raise ImgenError(f"cond['low_res'] must be ({len(x)}, {self.channels}, {self.size}, {self.size}), got "
                             f"{tuple(low.shape)}; downsample the image to {self.size}x{self.size}")
        level = cond.get("low_res_level")
        level = torch.zeros(len(x), device=x.device) if level is None else as_time_batch(level, len(x), x.device)
        up = upsample(low.to(x.dtype), x.shape[2:])  # SR3 sec. 2.3
        return torch.cat([x, up], dim=1), emb + self.level_embed(level.to(x.dtype))
