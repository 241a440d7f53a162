"""An MLP denoiser for low-dimensional toy data (2D moons, swiss roll, Gaussian mixtures).

Same interface as every denoiser net: `net(x, t, cond=None)` with x (B, dim), t (B,) in [0, 1] and an
optional cond dict ("label" int64 (B,), "drop" bool (B,)); output (B, dim), zero at initialization.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from imgen.errors import ImgenError, check_int
from imgen.nn.layers import ConfigMixin, LabelEmbedding, TimestepEmbedding, as_time_batch, zero_init


class MLPBlock(nn.Module):
    """Pre-norm residual MLP block; the embedding is added to the hidden state before the norm."""

    def __init__(self, hidden: int):
        super().__init__()
        self.norm = nn.LayerNorm(hidden)
        self.fc1 = nn.Linear(hidden, 2 * hidden)
        self.fc2 = zero_init(nn.Linear(2 * hidden, hidden))

    def forward(self, h: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        return h + self.fc2(F.silu(self.fc1(self.norm(h + emb))))


class MLPDenoiser(ConfigMixin, nn.Module):
    """x (B, dim) -> Linear -> `depth` residual MLP blocks conditioned on t (and label) -> Linear (zero init)."""

    name = "mlp"

    def __init__(self, dim: int = 2, hidden: int = 256, depth: int = 4, num_classes: int | None = None):
        super().__init__()
        self.save_config(locals())
        for key, v in (("dim", dim), ("hidden", hidden), ("depth", depth)) + (
            (("num_classes", num_classes),) if num_classes is not None else ()
        ):
            check_int(v, f"MLPDenoiser {key}")
        self.dim = dim
        self.time_embed = TimestepEmbedding(hidden, hidden)
        self.label_embed = LabelEmbedding(num_classes, hidden) if num_classes else None
        self.proj_in = nn.Linear(dim, hidden)
        self.blocks = nn.ModuleList([MLPBlock(hidden) for _ in range(depth)])
        self.norm_out = nn.LayerNorm(hidden)
        self.proj_out = zero_init(nn.Linear(hidden, dim))

    def forward(self, x: torch.Tensor, t: torch.Tensor, cond: dict | None = None) -> torch.Tensor:
        if x.ndim != 2 or x.shape[1] != self.dim:
            raise ImgenError(f"MLPDenoiser expects points of shape (B, {self.dim}), got {tuple(x.shape)}")
        emb = self.time_embed(as_time_batch(t, x.shape[0], x.device))
        if self.label_embed is not None:
            emb = emb + self.label_embed(cond, x.shape[0], x.device)
        h = self.proj_in(x)
        for block in self.blocks:
            h = block(h, emb)
        return self.proj_out(F.silu(self.norm_out(h)))
