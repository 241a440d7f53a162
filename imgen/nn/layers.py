"""Building blocks shared by imgen's networks: embeddings, normalization, attention, residual blocks.

Every block here is a plain module with one job, so nets compose them (U-Net today; DiT, cross-attention
and adaLN-Zero blocks later). Nothing here knows about losses or noise schedules.
"""
from __future__ import annotations

import inspect
import math

import torch
import torch.nn.functional as F
from torch import nn

from imgen.errors import ImgenError


# ---------------------------------------------------------------------------------------------------------
# Config round-trip: every net can write its init kwargs as plain JSON and be rebuilt from them.
# ---------------------------------------------------------------------------------------------------------
def init_kwarg_names(cls) -> list[str]:
    """Names of the keyword arguments `cls.__init__` accepts (without self)."""
    return [p for p in inspect.signature(cls.__init__).parameters if p != "self"]


def check_kwargs(cls, kwargs: dict, what: str | None = None) -> None:
    """Raise ImgenError naming any key `cls.__init__` does not accept (listing the valid ones) or any
    required key that is missing."""
    params = {k: p for k, p in inspect.signature(cls.__init__).parameters.items() if k != "self"}
    unknown = sorted(set(kwargs) - set(params))
    if unknown:
        raise ImgenError(
            f"{what or cls.__name__} got unknown option(s) {unknown}; valid options are {list(params)}"
        )
    missing = [k for k, p in params.items() if p.default is inspect.Parameter.empty and k not in kwargs]
    if missing:
        raise ImgenError(f"{what or cls.__name__} needs option(s) {missing}; valid options are {list(params)}")


def _jsonable(value):
    if isinstance(value, (tuple, list)):
        return [_jsonable(v) for v in value]
    return value


class ConfigMixin:
    """`config()` returns the init kwargs as a JSON-able dict; `from_config(d)` rebuilds the net.

    A net calls `self.save_config(locals())` first thing in `__init__` (after `super().__init__()`).
    """

    name = "net"  # registry name, set by each net

    def save_config(self, init_locals: dict) -> None:
        self._config = {k: _jsonable(init_locals[k]) for k in init_kwarg_names(type(self))}

    def config(self) -> dict:
        return {k: (list(v) if isinstance(v, list) else v) for k, v in self._config.items()}

    @classmethod
    def from_config(cls, config: dict):
        if not isinstance(config, dict):
            raise ImgenError(f"{cls.__name__}.from_config needs a dict of init options, got {type(config).__name__}")
        check_kwargs(cls, config)
        return cls(**config)


# ---------------------------------------------------------------------------------------------------------
# Embeddings
# ---------------------------------------------------------------------------------------------------------
def timestep_embedding(t: torch.Tensor, dim: int, scale: float = 1000.0, max_period: float = 10000.0):
    """Sinusoidal embedding of continuous time t in [0, 1] (Vaswani et al. 2017, sec. 3.5; DDPM uses it
    for the step index, so t is scaled by 1000 to the same frequency range). (B,) -> (B, dim)."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, device=t.device, dtype=torch.float32) / half)
    args = (scale * t.float())[:, None] * freqs[None]
    emb = torch.cat([torch.cos(args), torch.sin(args)], dim=1)
    if dim % 2:
        emb = F.pad(emb, (0, 1))
    return emb


class TimestepEmbedding(nn.Module):
    """t (B,) in [0, 1] -> (B, emb_dim): sinusoidal features then a two-layer MLP (as in DDPM/ADM)."""

    def __init__(self, freq_dim: int, emb_dim: int):
        super().__init__()
        self.freq_dim = freq_dim
        self.mlp = nn.Sequential(nn.Linear(freq_dim, emb_dim), nn.SiLU(), nn.Linear(emb_dim, emb_dim))

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        return self.mlp(timestep_embedding(t, self.freq_dim))


def as_time_batch(t, batch_size: int, device) -> torch.Tensor:
    """Accept t as a float, a 0-d tensor or a (B,) tensor; return a float (B,) tensor."""
    t = torch.as_tensor(t, device=device)
    if not torch.is_floating_point(t):
        raise ImgenError(
            f"t must be a float tensor of times in [0, 1], got dtype {t.dtype}; pass t.float() / num_steps"
        )
    if t.ndim == 0:
        return t.expand(batch_size)
    if t.shape != (batch_size,):
        raise ImgenError(f"t must have shape ({batch_size},) to match the batch, got {tuple(t.shape)}")
    return t


class LabelEmbedding(nn.Module):
    """Class label -> (B, dim), with an extra learned *null* row used when the condition is dropped
    (classifier-free guidance, Ho & Salimans 2022): `cond["drop"]` True, or no `cond["label"]` at all."""

    def __init__(self, num_classes: int, dim: int):
        super().__init__()
        self.num_classes = num_classes
        self.table = nn.Embedding(num_classes + 1, dim)  # row `num_classes` is the null embedding

    def forward(self, cond: dict | None, batch_size: int, device) -> torch.Tensor:
        cond = cond or {}
        null = torch.full((batch_size,), self.num_classes, dtype=torch.long, device=device)
        label = cond.get("label")
        if label is None:
            idx = null
        else:
            label = torch.as_tensor(label, device=device)
            if label.shape != (batch_size,) or label.dtype not in (torch.int64, torch.int32):
                raise ImgenError(
                    f'cond["label"] must be an int64 tensor of shape ({batch_size},), got '
                    f"{label.dtype} {tuple(label.shape)}; pass torch.tensor(labels, dtype=torch.long)"
                )
            if bool((label < 0).any()) or bool((label >= self.num_classes).any()):
                raise ImgenError(
                    f'cond["label"] holds ids outside [0, {self.num_classes - 1}] '
                    f"(min {int(label.min())}, max {int(label.max())}); use num_classes > max label, "
                    f'and cond["drop"] (not a special label) to request the null embedding'
                )
            idx = label.long()
        drop = cond.get("drop")
        if drop is not None:
            drop = torch.as_tensor(drop, device=device)
            if drop.dtype != torch.bool or drop.shape != (batch_size,):
                raise ImgenError(
                    f'cond["drop"] must be a bool tensor of shape ({batch_size},), got {drop.dtype} '
                    f"{tuple(drop.shape)}; True means 'use the null (unconditional) embedding'"
                )
            idx = torch.where(drop, null, idx)
        return self.table(idx)


# ---------------------------------------------------------------------------------------------------------
# Normalization, attention, residual blocks, resampling
# ---------------------------------------------------------------------------------------------------------
def num_groups(channels: int, max_groups: int = 32) -> int:
    """The largest group count <= max_groups that divides `channels` (32 for the usual widths)."""
    return math.gcd(channels, max_groups)


def group_norm(channels: int, max_groups: int = 32, eps: float = 1e-5) -> nn.GroupNorm:
    return nn.GroupNorm(num_groups(channels, max_groups), channels, eps=eps)


def zero_init(module: nn.Module) -> nn.Module:
    """Zero a layer's weights and bias, so a residual branch (or a net's output) starts as zero (ADM)."""
    for p in module.parameters():
        nn.init.zeros_(p)
    return module


class SelfAttention(nn.Module):
    """Pre-norm multi-head self-attention over the H*W positions of a feature map, with a residual
    connection and a zero-initialized output projection. Uses the fused
    `F.scaled_dot_product_attention` kernel."""

    def __init__(self, channels: int, num_heads: int = 4):
        super().__init__()
        if channels % num_heads:
            raise ImgenError(
                f"attention with {channels} channels cannot be split into {num_heads} heads; "
                f"choose num_heads dividing {channels}"
            )
        self.num_heads = num_heads
        self.norm = group_norm(channels)
        self.qkv = nn.Linear(channels, 3 * channels)
        self.proj = zero_init(nn.Linear(channels, channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        tokens = self.norm(x).flatten(2).transpose(1, 2)  # (B, N, C); a view when x is channels_last
        q, k, v = self.qkv(tokens).view(b, h * w, 3, self.num_heads, c // self.num_heads).permute(2, 0, 3, 1, 4)
        out = F.scaled_dot_product_attention(q, k, v)  # (B, heads, N, C/heads)
        out = self.proj(out.transpose(1, 2).reshape(b, h * w, c))
        return x + out.transpose(1, 2).view(b, c, h, w)


class ResBlock(nn.Module):
    """GroupNorm-SiLU-conv twice, with the time(+label) embedding applied as a per-channel scale and
    shift after the second norm (AdaGN, Dhariwal & Nichol 2021, sec. 3.1: y_s * GroupNorm(h) + y_b).
    The residual branch's last conv is zero-initialized, so the block starts as its skip path."""

    def __init__(self, in_channels: int, out_channels: int, emb_dim: int, dropout: float = 0.0):
        super().__init__()
        self.norm1 = group_norm(in_channels)
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, padding=1)
        self.emb_proj = nn.Linear(emb_dim, 2 * out_channels)
        self.norm2 = group_norm(out_channels)
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.conv2 = zero_init(nn.Conv2d(out_channels, out_channels, 3, padding=1))
        self.skip = nn.Conv2d(in_channels, out_channels, 1) if in_channels != out_channels else nn.Identity()

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        scale, shift = self.emb_proj(F.silu(emb))[:, :, None, None].chunk(2, dim=1)
        h = F.silu(torch.addcmul(shift, self.norm2(h), 1 + scale))  # AdaGN: (1 + y_s) * GN(h) + y_b
        return self.skip(x) + self.conv2(self.dropout(h))


class Downsample(nn.Module):
    """Halve H and W with a stride-2 3x3 conv."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, stride=2, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


class Upsample(nn.Module):
    """Double H and W: nearest-neighbour upsampling then a 3x3 conv."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))
