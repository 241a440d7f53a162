"""Building blocks shared by imgen's networks: embeddings, normalization, attention, residual blocks,
cross-attention, text conditioning with a learned null embedding, and DiT's adaLN-Zero helpers.

Every block here is a plain module with one job, so nets (U-Net, DiT, ...) compose them. Nothing here
knows about losses or noise schedules.
"""
from __future__ import annotations

import inspect
import math
from typing import NamedTuple

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
    """Raise ImgenError naming any key the constructor `cls` (a class or a function) does not accept (listing the
    valid ones) or any required key that is missing."""
    params = dict(inspect.signature(cls).parameters)  # a class: its __init__ without self
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


def drop_mask(cond: dict, batch_size: int, device) -> torch.Tensor | None:
    """cond["drop"] checked as a bool (B,) tensor (True = use the null embedding), or None if absent."""
    drop = cond.get("drop")
    if drop is None:
        return None
    drop = torch.as_tensor(drop, device=device)
    if drop.dtype != torch.bool or drop.shape != (batch_size,):
        raise ImgenError(
            f'cond["drop"] must be a bool tensor of shape ({batch_size},), got {drop.dtype} '
            f"{tuple(drop.shape)}; True means 'use the null (unconditional) embedding'"
        )
    return drop


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
        drop = drop_mask(cond, batch_size, device)
        if drop is not None:
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


def multihead_attention(q, k, v, num_heads: int, key_mask: torch.Tensor | None = None,
                        edit_probs=None) -> torch.Tensor:
    """softmax(Q K^T / sqrt(d) + mask) V per head (Vaswani et al. 2017, eq. 1) via SDPA.
    q (B, N, C), k and v (B, M, C), key_mask (B, M) bool with True = attend (a padding token is False).
    `edit_probs(P) -> P'` (prompt-to-prompt editing, imgen.apps.edit) sees and may replace the attention
    probabilities P (B, heads, N, M); they are then computed explicitly instead of by the fused kernel.
    Returns (B, N, C)."""
    b, n, c = q.shape
    m = k.shape[1]
    split = lambda z, length: z.reshape(b, length, num_heads, c // num_heads).transpose(1, 2)  # noqa: E731
    mask = None if key_mask is None else key_mask[:, None, None, :]  # (B, 1, 1, M): broadcast over heads, queries
    if edit_probs is None:
        out = F.scaled_dot_product_attention(split(q, n), split(k, m), split(v, m), attn_mask=mask)
    else:
        logits = split(q, n) @ split(k, m).transpose(-1, -2) / math.sqrt(c // num_heads)
        if mask is not None:
            logits = logits.masked_fill(~mask, float("-inf"))
        out = edit_probs(logits.softmax(dim=-1)) @ split(v, m)
    return out.transpose(1, 2).reshape(b, n, c)


def _check_heads(channels: int, num_heads: int) -> None:
    if channels % num_heads:
        raise ImgenError(
            f"attention with {channels} channels cannot be split into {num_heads} heads; "
            f"choose num_heads dividing {channels}"
        )


class SelfAttention(nn.Module):
    """Pre-norm multi-head self-attention over the H*W positions of a feature map, with a residual
    connection and a zero-initialized output projection. Uses the fused
    `F.scaled_dot_product_attention` kernel."""

    def __init__(self, channels: int, num_heads: int = 4):
        super().__init__()
        _check_heads(channels, num_heads)
        self.num_heads = num_heads
        self.norm = group_norm(channels)
        self.qkv = nn.Linear(channels, 3 * channels)
        self.proj = zero_init(nn.Linear(channels, channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        tokens = self.norm(x).flatten(2).transpose(1, 2)  # (B, N, C); a view when x is channels_last
        q, k, v = self.qkv(tokens).chunk(3, dim=-1)
        out = self.proj(multihead_attention(q, k, v, self.num_heads))
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


# ---------------------------------------------------------------------------------------------------------
# Attention over token sequences, cross-attention and text conditioning (text-to-image nets)
# ---------------------------------------------------------------------------------------------------------
class Attention(nn.Module):
    """Multi-head self-attention on tokens (B, N, D) with an optional key padding mask; no norm and no
    residual (the transformer block owns those, e.g. DiT's adaLN-Zero block)."""

    def __init__(self, dim: int, num_heads: int):
        super().__init__()
        _check_heads(dim, num_heads)
        self.num_heads = num_heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor, key_mask: torch.Tensor | None = None) -> torch.Tensor:
        q, k, v = self.qkv(x).chunk(3, dim=-1)
        return self.proj(multihead_attention(q, k, v, self.num_heads, key_mask))


class CrossAttention(nn.Module):
    """Pre-norm cross-attention with a residual: queries from image tokens x (B, N, channels), keys and
    values from context tokens (B, M, context_dim) such as text token embeddings (LDM, Rombach et al.
    2022, sec. 3.3). `context_mask` (B, M) bool marks real tokens; padding (False) gets zero weight.
    The output projection is zero-initialized, so the layer starts as the identity."""

    def __init__(self, channels: int, context_dim: int, num_heads: int = 4):
        super().__init__()
        _check_heads(channels, num_heads)
        self.num_heads = num_heads
        self.norm = nn.LayerNorm(channels)
        self.q = nn.Linear(channels, channels)
        self.kv = nn.Linear(context_dim, 2 * channels)
        self.proj = zero_init(nn.Linear(channels, channels))
        self.edit_probs = None  # a hook on the attention probabilities (multihead_attention), set by editing

    def forward(self, x: torch.Tensor, context: torch.Tensor, context_mask: torch.Tensor | None = None):
        k, v = self.kv(context).chunk(2, dim=-1)
        out = multihead_attention(self.q(self.norm(x)), k, v, self.num_heads, context_mask, self.edit_probs)
        return x + self.proj(out)


def feature_map_cross_attention(attn: CrossAttention, x: torch.Tensor, context, context_mask) -> torch.Tensor:
    """Apply a CrossAttention to a feature map (B, C, H, W) by treating its H*W positions as tokens."""
    b, c, h, w = x.shape
    tokens = attn(x.flatten(2).transpose(1, 2), context, context_mask)  # (B, H*W, C)
    return tokens.transpose(1, 2).reshape(b, c, h, w)


def modulate(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """adaLN: x (B, N, D) * (1 + scale) + shift with per-sample (B, D) shift/scale (DiT, Peebles & Xie 2023)."""
    return x * (1 + scale.unsqueeze(1)) + shift.unsqueeze(1)


def adaln_zero_modulation(dim: int, num_chunks: int) -> nn.Sequential:
    """The adaLN-Zero regression of `num_chunks` (B, dim) vectors (shift, scale, gate, ...) from the
    conditioning vector c (DiT sec. 3.2): zero-initialized, so every gate starts at 0 and each block is
    the identity."""
    adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(dim, num_chunks * dim))
    zero_init(adaLN_modulation[-1])
    return adaLN_modulation


class TextContext(NamedTuple):
    """What TextConditioning hands a net: tokens (B, M, D_text) and mask (B, M) bool (None for a net that
    reads only the pooled text), pooled (B, D_text)."""

    tokens: torch.Tensor | None
    mask: torch.Tensor | None
    pooled: torch.Tensor


class TextConditioning(nn.Module):
    """Reads cond["text"] (B, L, D_text) float, cond["text_mask"] (B, L) bool (True = real token; optional,
    default all real), cond["text_pooled"] (B, D_text) and cond["drop"] (B,) bool, and returns the
    TextContext a net attends to. A dropped row, or a batch without text, gets the explicit *learned* null
    embedding (classifier-free guidance, Ho & Salimans 2022): `num_null_tokens` null tokens and a null
    pooled vector. The null tokens are appended after the caption tokens and the masks pick one or the
    other per row, so a batch may mix dropped and kept rows (as CFG's stacked batch does).

    AdaGN option: with `emb_dim` set, `add_pooled(emb, ctx)` adds a projection of the pooled text to a
    net's time embedding, which every ResBlock turns into its GroupNorm scale and shift (Dhariwal & Nichol
    2021, sec. 3.1; pooled-text conditioning as in Imagen / SD-XL). A net that reads only the pooled text
    (DiT adaLN-Zero) passes num_null_tokens=0 and gets tokens = mask = None."""

    def __init__(self, context_dim: int, emb_dim: int | None = None, num_null_tokens: int = 4):
        super().__init__()
        self.context_dim = context_dim
        self.pooled_proj = nn.Linear(context_dim, emb_dim) if emb_dim else None
        self.null_tokens = (nn.Parameter(torch.randn(num_null_tokens, context_dim) * 0.02)  # (L_null, D_text)
                            if num_null_tokens else None)
        self.null_pooled = nn.Parameter(torch.randn(context_dim) * 0.02)  # (D_text,)

    def forward(self, cond: dict | None, batch_size: int, device, what: str = "net") -> TextContext:
        cond = cond or {}
        null_pooled = self.null_pooled.expand(batch_size, -1)
        null_tokens = null_mask = None
        if self.null_tokens is not None:
            null_tokens = self.null_tokens.expand(batch_size, -1, -1)
            null_mask = torch.ones(null_tokens.shape[:2], dtype=torch.bool, device=device)
        text = cond.get("text")
        if text is None:
            if cond.get("text_pooled") is not None or cond.get("text_mask") is not None:
                raise ImgenError(f'{what} got cond["text_pooled"]/cond["text_mask"] without cond["text"]; pass '
                                 f"all three from encode_prompts, or none of them for the null condition")
            return TextContext(null_tokens, null_mask, null_pooled)
        text, mask, pooled = self._checked(cond, batch_size, device, what)
        drop = drop_mask(cond, batch_size, device)
        if drop is None:
            drop = torch.zeros(batch_size, dtype=torch.bool, device=device)
        empty = ~mask.any(dim=1) & ~drop
        if bool(empty.any()):
            raise ImgenError(
                f'cond["text_mask"] has no real token in row(s) {empty.nonzero().flatten().tolist()}; encode '
                f'a non-empty prompt, or set cond["drop"] True there to use the null condition'
            )
        pooled = torch.where(drop[:, None], null_pooled, pooled.to(null_pooled.dtype))
        if null_tokens is None:
            return TextContext(None, None, pooled)
        tokens = torch.cat([text.to(null_tokens.dtype), null_tokens], dim=1)  # (B, L + L_null, D_text)
        mask = torch.cat([mask & ~drop[:, None], null_mask & drop[:, None]], dim=1)
        return TextContext(tokens, mask, pooled)

    def add_pooled(self, emb: torch.Tensor, ctx: TextContext) -> torch.Tensor:
        """emb (B, emb_dim) + W pooled: the pooled text (or null pooled vector) joins the time embedding."""
        return emb + self.pooled_proj(ctx.pooled)

    def _checked(self, cond: dict, batch_size: int, device, what: str):
        d = self.context_dim
        text = torch.as_tensor(cond["text"], device=device)
        if text.ndim != 3 or text.shape[0] != batch_size or text.shape[2] != d or not text.is_floating_point():
            raise ImgenError(f'{what} expects cond["text"] float of shape ({batch_size}, L, {d}), got '
                             f"{text.dtype} {tuple(text.shape)}; build the net with context_dim equal to "
                             f"the text encoder's width")
        mask = cond.get("text_mask")
        if mask is None:
            mask = torch.ones(text.shape[:2], dtype=torch.bool, device=device)
        mask = torch.as_tensor(mask, device=device)
        if mask.dtype != torch.bool or mask.shape != text.shape[:2]:
            raise ImgenError(f'cond["text_mask"] must be a bool tensor of shape {tuple(text.shape[:2])} '
                             f"(True = real token), got {mask.dtype} {tuple(mask.shape)}")
        pooled = cond.get("text_pooled")
        if pooled is None:
            raise ImgenError(f'{what} got cond["text"] without cond["text_pooled"] ({batch_size}, {d}); pass '
                             f"the pooled feature encode_prompts returns")
        pooled = torch.as_tensor(pooled, device=device)
        if pooled.shape != (batch_size, d) or not pooled.is_floating_point():
            raise ImgenError(f'cond["text_pooled"] must be float of shape ({batch_size}, {d}), got '
                             f"{pooled.dtype} {tuple(pooled.shape)}")
        return text, mask, pooled


def reject_text(cond: dict | None, what: str) -> None:
    """Raise if a net built without context_dim is handed text conditioning (it would silently ignore it)."""
    if cond and any(cond.get(k) is not None for k in ("text", "text_mask", "text_pooled")):
        d = tuple(cond["text"].shape)[-1] if torch.is_tensor(cond.get("text")) else "D_text"
        raise ImgenError(f'{what} was built without context_dim but got text conditioning (cond["text"]); '
                         f"build it with context_dim={d} to use text, or leave the text keys out")
