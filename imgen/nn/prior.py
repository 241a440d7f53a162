"""unCLIP's diffusion prior network (Ramesh et al. 2022, sec. 2.1): a transformer that denoises a CLIP image
embedding conditioned on the caption.

Forward: `net(x, t, cond)`; x (B, embed_dim) the noised image embedding, t (B,) in [0, 1], cond the text
condition as every text-conditioned imgen net reads it (imgen.nn.layers.TextConditioning): cond["text"]
(B, L, embed_dim) encoded text tokens, cond["text_mask"] (B, L) bool, cond["text_pooled"] (B, embed_dim) the
CLIP text embedding, cond["drop"] (B,) bool for the learned null text (classifier-free guidance).
Output (B, embed_dim), zero at initialization.

Sec. 2.1: "a decoder-only Transformer ... on a sequence consisting of, in order: the encoded text, the CLIP
text embedding, an embedding for the diffusion timestep, the noised CLIP image embedding, and a final embedding
whose output from the Transformer is used to predict the unnoised CLIP image embedding." The paper's mask is
causal; only the final token is read out and it attends to everything either way, so the blocks here use
full attention with a key padding mask (imgen.nn.text.TextBlock). With use_text_tokens=False the sequence
starts at the CLIP text embedding.
"""
from __future__ import annotations

import torch
from torch import nn

from imgen.errors import ImgenError, check_int
from imgen.nn.layers import ConfigMixin, TextConditioning, TimestepEmbedding, as_time_batch, zero_init
from imgen.nn.text import TextBlock


class PriorTransformer(ConfigMixin, nn.Module):
    """[text tokens..., text embedding, time, noised z_i, query] -> `depth` pre-norm blocks -> query's output."""

    name = "prior"

    def __init__(self, embed_dim: int = 64, dim: int = 128, depth: int = 4, heads: int = 4,
                 use_text_tokens: bool = True):
        super().__init__()
        self.save_config(locals())
        for key, v in (("embed_dim", embed_dim), ("dim", dim), ("depth", depth), ("heads", heads)):
            check_int(v, f"PriorTransformer {key}")
        if dim % heads:
            raise ImgenError(f"PriorTransformer dim={dim} cannot be split into {heads} heads; pick heads dividing dim")
        self.embed_dim, self.use_text_tokens = embed_dim, use_text_tokens
        self.text_cond = TextConditioning(embed_dim, num_null_tokens=1 if use_text_tokens else 0)
        self.text_in = nn.Linear(embed_dim, dim) if use_text_tokens else None
        self.pooled_in = nn.Linear(embed_dim, dim)
        self.time_embed = TimestepEmbedding(dim, dim)
        self.x_in = nn.Linear(embed_dim, dim)
        self.query = nn.Parameter(torch.randn(dim) * 0.02)
        self.pos_emb = nn.Parameter(torch.randn(4, dim) * 0.02)  # the 4 fixed slots: text emb, time, z_t, query
        self.blocks = nn.ModuleList(TextBlock(dim, heads) for _ in range(depth))
        self.norm_out = nn.LayerNorm(dim)
        self.proj_out = zero_init(nn.Linear(dim, embed_dim))

    def forward(self, x: torch.Tensor, t: torch.Tensor, cond: dict | None = None) -> torch.Tensor:
        b = x.shape[0]
        if x.ndim != 2 or x.shape[1] != self.embed_dim:
            raise ImgenError(f"PriorTransformer expects image embeddings of shape (B, {self.embed_dim}), "
                             f"got {tuple(x.shape)}; build it with embed_dim equal to CLIP's embed_dim")
        ctx = self.text_cond(cond, b, x.device, what="PriorTransformer")
        fixed = torch.stack([self.pooled_in(ctx.pooled), self.time_embed(as_time_batch(t, b, x.device)),
                             self.x_in(x), self.query.expand(b, -1)], dim=1) + self.pos_emb  # (B, 4, dim)
        mask = torch.ones(b, 4, dtype=torch.bool, device=x.device)
        if ctx.tokens is not None:
            fixed = torch.cat([self.text_in(ctx.tokens), fixed], dim=1)  # (B, L + 4, dim)
            mask = torch.cat([ctx.mask, mask], dim=1)
        h = fixed
        for block in self.blocks:
            h = block(h, mask)
        return self.proj_out(self.norm_out(h[:, -1]))  # x0-prediction head (sec. 2.1) when trained for x0
