"""The Diffusion Transformer (DiT, Peebles & Xie 2023): patchify the image into tokens, add a 2D position
embedding, run transformer blocks conditioned on time (+ label / text), then a final layer and unpatchify.

The paper's three conditioning variants (sec. 3.2, Fig. 3) are selected by `conditioning`:
  "adaln_zero"  c = time emb + label emb + projected pooled text; each block regresses shift/scale/gate
                from c, gates zero-initialized so every block starts as the identity.
  "cross_attn"  plain pre-LN blocks with an extra cross-attention layer over the conditioning tokens
                [time, label, projected pooled text, projected text tokens] (the paper's [t, c]).
  "in_context"  plain pre-LN blocks; the same conditioning tokens are appended to the image tokens and
                dropped after the last block.
Forward: `net(x, t, cond=None)` like every imgen denoiser; cond may hold "label" int64 (B,), "text"
(B, L, context_dim), "text_mask" (B, L) bool, "text_pooled" (B, context_dim) and "drop" bool (B,)
(True = the learned null label/text embedding). The final linear layer is zero-initialized, so a fresh
net outputs zeros.
"""
from __future__ import annotations

import torch
from torch import nn

from imgen.errors import ImgenError, check_int
from imgen.nn.layers import (
    Attention,
    ConfigMixin,
    CrossAttention,
    LabelEmbedding,
    TextConditioning,
    TimestepEmbedding,
    adaln_zero_modulation,
    as_time_batch,
    modulate,
    reject_text,
    zero_init,
)

CONDITIONINGS = ("adaln_zero", "cross_attn", "in_context")
POS_EMBEDS = ("sincos", "learned")


def sincos_pos_embed_2d(dim: int, grid_size: int) -> torch.Tensor:
    """Fixed 2D sin-cos position embedding (MAE, He et al. 2022, as used by DiT): half the channels encode
    the row, half the column, each as [sin(pos * omega), cos(pos * omega)] with omega_i = 10000^(-2i/(dim/2)).
    Returns (grid_size**2, dim), tokens in row-major order."""
    quarter = dim // 4
    omega = 1.0 / 10000 ** (torch.arange(quarter, dtype=torch.float64) / quarter)
    pos = torch.arange(grid_size, dtype=torch.float64)
    rows, cols = torch.meshgrid(pos, pos, indexing="ij")

    def embed_1d(p):
        args = p.reshape(-1, 1) * omega[None]
        return torch.cat([torch.sin(args), torch.cos(args)], dim=1)

    return torch.cat([embed_1d(cols), embed_1d(rows)], dim=1).float()  # MAE order: w-coordinate half first


class DiTBlock(nn.Module):
    """A transformer block. With `adaln` it is DiT's adaLN-Zero block (Fig. 3, right); otherwise a pre-LN
    ViT block, with a cross-attention layer after self-attention when `context_dim` is given."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float = 4.0, adaln: bool = True,
                 context_dim: int | None = None):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, elementwise_affine=not adaln, eps=1e-6)
        self.attn = Attention(dim, num_heads)
        self.cross = CrossAttention(dim, context_dim, num_heads) if context_dim else None
        self.norm2 = nn.LayerNorm(dim, elementwise_affine=not adaln, eps=1e-6)
        hidden = int(dim * mlp_ratio)
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(approximate="tanh"), nn.Linear(hidden, dim))
        self.adaLN_modulation = adaln_zero_modulation(dim, 6) if adaln else None

    def forward(self, x, c=None, key_mask=None, context=None, context_mask=None):
        if self.adaLN_modulation is not None:
            shift_msa, scale_msa, gate_msa, shift_mlp, scale_mlp, gate_mlp = self.adaLN_modulation(c).chunk(6, dim=1)
            x = x + gate_msa.unsqueeze(1) * self.attn(modulate(self.norm1(x), shift_msa, scale_msa), key_mask)
            return x + gate_mlp.unsqueeze(1) * self.mlp(modulate(self.norm2(x), shift_mlp, scale_mlp))
        x = x + self.attn(self.norm1(x), key_mask)
        if self.cross is not None:
            x = self.cross(x, context, context_mask)
        return x + self.mlp(self.norm2(x))


class FinalLayer(nn.Module):
    """LayerNorm (adaLN-modulated by c when `adaln`) then a zero-initialized linear map to p*p*C per token."""

    def __init__(self, dim: int, out_dim: int, adaln: bool):
        super().__init__()
        self.norm = nn.LayerNorm(dim, elementwise_affine=not adaln, eps=1e-6)
        self.linear = zero_init(nn.Linear(dim, out_dim))
        self.adaLN_modulation = adaln_zero_modulation(dim, 2) if adaln else None

    def forward(self, x, c=None):
        x = self.norm(x)
        if self.adaLN_modulation is not None:
            shift, scale = self.adaLN_modulation(c).chunk(2, dim=1)
            x = modulate(x, shift, scale)
        return self.linear(x)


class DiT(ConfigMixin, nn.Module):
    """Diffusion Transformer on (B, in_channels, image_size, image_size) images with patch size p:
    (image_size / p)**2 tokens of width `dim`, `depth` blocks of `num_heads` heads."""

    name = "dit"

    def __init__(
        self,
        in_channels: int = 3,
        out_channels: int | None = None,
        image_size: int = 32,
        patch_size: int = 2,
        dim: int = 128,
        depth: int = 4,
        num_heads: int = 4,
        mlp_ratio: float = 4.0,
        conditioning: str = "adaln_zero",
        context_dim: int | None = None,
        num_classes: int | None = None,
        pos_embed: str = "sincos",
    ):
        super().__init__()
        self.save_config(locals())
        _validate(in_channels, out_channels, image_size, patch_size, dim, depth, num_heads, mlp_ratio,
                  conditioning, context_dim, num_classes, pos_embed)
        out_channels = out_channels or in_channels
        self.in_channels, self.out_channels, self.image_size = in_channels, out_channels, image_size
        self.patch_size, self.conditioning = patch_size, conditioning
        grid = image_size // patch_size
        adaln = conditioning == "adaln_zero"

        self.patch_embed = nn.Conv2d(in_channels, dim, patch_size, stride=patch_size)  # patchify
        if pos_embed == "sincos":
            self.register_buffer("pos_embed", sincos_pos_embed_2d(dim, grid)[None], persistent=False)
        else:
            self.pos_embed = nn.Parameter(torch.randn(1, grid * grid, dim) * 0.02)
        self.time_embed = TimestepEmbedding(256, dim)
        self.label_embed = LabelEmbedding(num_classes, dim) if num_classes else None
        # adaLN-Zero sees the pooled text (projected into c); the token variants see the projected pooled
        # text and tokens as conditioning tokens.
        self.text_cond = None
        if context_dim:
            self.text_cond = TextConditioning(context_dim, dim, 0) if adaln else TextConditioning(context_dim)
        self.text_proj = nn.Linear(context_dim, dim) if context_dim and not adaln else None
        block_context = dim if conditioning == "cross_attn" else None
        self.blocks = nn.ModuleList(
            [DiTBlock(dim, num_heads, mlp_ratio, adaln, block_context) for _ in range(depth)]
        )
        self.final = FinalLayer(dim, patch_size * patch_size * out_channels, adaln)
        self._init_weights()

    def _init_weights(self):
        # DiT's init: xavier-uniform linears, zero biases; then the adaLN-Zero and output layers to zero.
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.xavier_uniform_(m.weight)
                nn.init.zeros_(m.bias)
        w = self.patch_embed.weight
        nn.init.xavier_uniform_(w.view(w.shape[0], -1))
        nn.init.zeros_(self.patch_embed.bias)
        for m in self.time_embed.mlp:
            if isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, std=0.02)
        for m in self.modules():
            if isinstance(m, (DiTBlock, FinalLayer)) and m.adaLN_modulation is not None:
                zero_init(m.adaLN_modulation[-1])
            if isinstance(m, CrossAttention):
                zero_init(m.proj)
        zero_init(self.final.linear)

    def forward(self, x: torch.Tensor, t: torch.Tensor, cond: dict | None = None) -> torch.Tensor:
        size = self.image_size
        if x.ndim != 4 or tuple(x.shape[1:]) != (self.in_channels, size, size):
            raise ImgenError(f"DiT expects images of shape (B, {self.in_channels}, {size}, {size}), got "
                             f"{tuple(x.shape)}; resize the images or build the net with image_size="
                             f"{x.shape[-1] if x.ndim == 4 else '...'}")
        b = x.shape[0]
        h = self.patch_embed(x).flatten(2).transpose(1, 2) + self.pos_embed  # (B, N, D)
        c = self.time_embed(as_time_batch(t, b, x.device))  # (B, D)
        label = self.label_embed(cond, b, x.device) if self.label_embed is not None else None
        text = None
        if self.text_cond is not None:
            text = self.text_cond(cond, b, x.device, what="DiT")
        else:
            reject_text(cond, "DiT")

        if self.conditioning == "adaln_zero":
            if label is not None:
                c = c + label
            if text is not None:
                c = self.text_cond.add_pooled(c, text)
            for block in self.blocks:
                h = block(h, c)
            out = self.final(h, c)
        else:
            # conditioning tokens: [time, label?, pooled text?, text tokens?] (B, M, D) with mask (B, M)
            tokens = [c[:, None]] + ([label[:, None]] if label is not None else [])
            if text is not None:
                tokens.append(self.text_proj(text.pooled)[:, None])
            mask = torch.ones(b, len(tokens), dtype=torch.bool, device=x.device)
            if text is not None:
                tokens.append(self.text_proj(text.tokens))
                mask = torch.cat([mask, text.mask], dim=1)
            context = torch.cat(tokens, dim=1)
            context_mask = mask if text is not None else None  # all real: skip the mask
            if self.conditioning == "cross_attn":
                for block in self.blocks:
                    h = block(h, context=context, context_mask=context_mask)
            else:  # in_context: append, attend jointly, drop the conditioning tokens at the output
                n = h.shape[1]
                h = torch.cat([h, context], dim=1)
                key_mask = None
                if context_mask is not None:
                    key_mask = torch.cat([torch.ones(b, n, dtype=torch.bool, device=x.device), context_mask], 1)
                for block in self.blocks:
                    h = block(h, key_mask=key_mask)
                h = h[:, :n]
            out = self.final(h)
        return self.unpatchify(out)

    def unpatchify(self, tokens: torch.Tensor) -> torch.Tensor:
        """(B, N, p*p*C) -> (B, C, H, W)."""
        b, p, c = tokens.shape[0], self.patch_size, self.out_channels
        g = self.image_size // p
        x = tokens.reshape(b, g, g, p, p, c)
        return torch.einsum("nhwpqc->nchpwq", x).reshape(b, c, g * p, g * p)


def _validate(in_channels, out_channels, image_size, patch_size, dim, depth, num_heads, mlp_ratio,
              conditioning, context_dim, num_classes, pos_embed):
    for name, v in (("in_channels", in_channels), ("image_size", image_size), ("patch_size", patch_size),
                    ("dim", dim), ("depth", depth), ("num_heads", num_heads)):
        check_int(v, f"DiT {name}")
    for name, v in (("out_channels", out_channels), ("context_dim", context_dim), ("num_classes", num_classes)):
        if v is not None:
            check_int(v, f"DiT {name}")
    if conditioning not in CONDITIONINGS:
        raise ImgenError(f"DiT conditioning {conditioning!r} is unknown; valid conditionings are "
                         f"{list(CONDITIONINGS)}")
    if pos_embed not in POS_EMBEDS:
        raise ImgenError(f"DiT pos_embed {pos_embed!r} is unknown; valid choices are {list(POS_EMBEDS)}")
    if image_size % patch_size:
        raise ImgenError(f"DiT image_size {image_size} is not divisible by patch_size {patch_size}; choose a "
                         f"patch_size dividing {image_size} (e.g. 2 or 4) or resize the images")
    if dim % num_heads:
        raise ImgenError(f"DiT dim {dim} is not divisible by num_heads={num_heads}; choose num_heads "
                         f"dividing {dim}")
    if pos_embed == "sincos" and dim % 4:
        raise ImgenError(f"DiT dim {dim} must be a multiple of 4 for the 2D sin-cos position embedding; "
                         f"use such a dim or pos_embed='learned'")
    if not isinstance(mlp_ratio, (int, float)) or isinstance(mlp_ratio, bool) or mlp_ratio <= 0:
        raise ImgenError(f"DiT mlp_ratio must be a positive number, got {mlp_ratio!r}")


# Named constructors sized for 32x32 training on a CPU (pass conditioning, context_dim, num_classes, ...).
def dit_tiny(in_channels: int = 3, image_size: int = 32, **kw) -> DiT:
    """dim 128, depth 4, patch 4 (64 tokens at 32 px): the fastest DiT."""
    kw = {"patch_size": 4, "dim": 128, "depth": 4, "num_heads": 4, **kw}
    return DiT(in_channels, image_size=image_size, **kw)


def dit_s(in_channels: int = 3, image_size: int = 32, **kw) -> DiT:
    """dim 192, depth 6, patch 2 (256 tokens at 32 px)."""
    kw = {"patch_size": 2, "dim": 192, "depth": 6, "num_heads": 6, **kw}
    return DiT(in_channels, image_size=image_size, **kw)
