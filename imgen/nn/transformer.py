"""A decoder-only pre-norm transformer (GPT-2, Radford et al. 2019; nanoGPT's model file) and the token prior
net built on it for image tokens (DALL-E, Ramesh et al. 2021; Parti, Yu et al. 2022; MaskGIT, Chang et al. 2022).

    trunk = Transformer(dim=128, depth=4, heads=4, max_len=80, causal=True)
    h = trunk(x)                               # (B, T, D) embeddings -> (B, T, D) features
    cache = trunk.new_cache(B)                 # incremental decoding: each call appends its keys and values
    h1 = trunk(x[:, :5], cache); h2 = trunk(x[:, 5:6], cache)    # == trunk(x)[:, :6] for a causal trunk

    net = TokenTransformer(in_channels=3, image_size=32, codebook_size=256, token_grid=[8, 8], vocab=[...])
    logits = net(ids, net.condition(cond))     # ids (B, N) image tokens -> (B, N + P, codebook_size) logits

The token prior knows nothing of losses: imgen.methods.token_ar (causal, next token) and imgen.methods.maskgit
(bidirectional, masked tokens; id codebook_size is [MASK]) read its logits.
"""
from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from imgen.errors import ImgenError, check_int
from imgen.nn.layers import ConfigMixin, adaln_zero_modulation, modulate
from imgen.nn.text import TextTransformer, Tokenizer, check_prompts
from imgen.nn.text2img import load_clip_text_tower


class KVCache:
    """Keys and values of the positions seen so far, per layer: (B, heads, max_len, head_dim) buffers and a fill
    length, so a decoding step attends to the past without recomputing it."""

    def __init__(self, depth: int, batch: int, heads: int, max_len: int, head_dim: int, device=None, dtype=None):
        shape = (batch, heads, max_len, head_dim)
        self.k = [torch.zeros(shape, device=device, dtype=dtype) for _ in range(depth)]
        self.v = [torch.zeros(shape, device=device, dtype=dtype) for _ in range(depth)]
        self.length = 0  # positions filled (advanced by Transformer.forward after all layers)
        self.cond: torch.Tensor | None = None  # an adaLN trunk's conditioning vector (B, D), set with the prefix

    def append(self, layer: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        end = self.length + k.shape[2]
        self.k[layer][:, :, self.length:end] = k
        self.v[layer][:, :, self.length:end] = v
        return self.k[layer][:, :, :end], self.v[layer][:, :, :end]


class SelfAttention(nn.Module):
    """Multi-head self-attention (Vaswani et al. 2017, eq. 1), causal or bidirectional, with an optional KV cache."""

    def __init__(self, dim: int, heads: int, causal: bool):
        super().__init__()
        self.heads, self.causal = heads, causal
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor, cache: KVCache | None = None, layer: int = 0) -> torch.Tensor:
        b, t, d = x.shape
        q, k, v = self.qkv(x).view(b, t, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)  # (B, H, T, Dh)
        start = 0
        if cache is not None:
            start = cache.length
            k, v = cache.append(layer, k, v)  # (B, H, start + T, Dh)
        if self.causal and start > 0 and t > 1:  # query i sits at position start + i and sees keys 0..start + i
            mask = torch.ones(t, start + t, dtype=torch.bool, device=x.device).tril(diagonal=start)
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        else:
            out = F.scaled_dot_product_attention(q, k, v, is_causal=self.causal and t > 1)  # one query: sees all
        return self.proj(out.transpose(1, 2).reshape(b, t, d))


class MLP(nn.Module):
    def __init__(self, dim: int, mlp_ratio: int = 4):
        super().__init__()
        self.fc = nn.Linear(dim, mlp_ratio * dim)
        self.proj = nn.Linear(mlp_ratio * dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(F.gelu(self.fc(x)))


class Block(nn.Module):
    """Pre-norm block (GPT-2): x + attn(LN(x)), then x + MLP(LN(x)). With `adaln`, a conditioning vector c (B, D)
    shifts and scales both LayerNorms' outputs and gates both branches (DiT's adaLN-Zero, Peebles & Xie 2023,
    sec. 3.2; zero-initialised, so the block starts as the identity)."""

    def __init__(self, dim: int, heads: int, causal: bool, adaln: bool = False):
        super().__init__()
        self.ln1, self.attn = nn.LayerNorm(dim), SelfAttention(dim, heads, causal)
        self.ln2, self.mlp = nn.LayerNorm(dim), MLP(dim)
        self.adaLN_modulation = adaln_zero_modulation(dim, 6) if adaln else None

    def forward(self, x: torch.Tensor, cache: KVCache | None = None, layer: int = 0,
                c: torch.Tensor | None = None) -> torch.Tensor:
        if self.adaLN_modulation is None:
            x = x + self.attn(self.ln1(x), cache, layer)
            return x + self.mlp(self.ln2(x))
        shift1, scale1, gate1, shift2, scale2, gate2 = self.adaLN_modulation(c).chunk(6, dim=1)
        x = x + gate1.unsqueeze(1) * self.attn(modulate(self.ln1(x), shift1, scale1), cache, layer)
        return x + gate2.unsqueeze(1) * self.mlp(modulate(self.ln2(x), shift2, scale2))


class Transformer(nn.Module):
    """Learned positions + `depth` pre-norm blocks + a final LayerNorm over input embeddings (B, T, dim).
    With a cache, the T inputs sit at positions cache.length .. cache.length + T - 1 and are appended to it.
    With `adaln`, every block is modulated by a conditioning vector c (B, dim) given to forward."""

    def __init__(self, dim: int, depth: int, heads: int, max_len: int, causal: bool = True, adaln: bool = False):
        super().__init__()
        if dim % heads:
            raise ImgenError(f"transformer dim={dim} cannot be split into {heads} heads; pick heads dividing dim")
        self.dim, self.depth, self.heads, self.max_len, self.causal = dim, depth, heads, max_len, causal
        self.adaln = adaln
        self.pos_emb = nn.Parameter(torch.zeros(max_len, dim))
        self.blocks = nn.ModuleList(Block(dim, heads, causal, adaln) for _ in range(depth))
        self.ln_f = nn.LayerNorm(dim)
        nn.init.normal_(self.pos_emb, std=0.02)
        for name, p in self.named_parameters():  # GPT-2: residual projections scaled by 1/sqrt(2 * depth)
            if name.endswith("proj.weight"):
                nn.init.normal_(p, std=0.02 / (2 * depth) ** 0.5)
            elif name.endswith(("qkv.weight", "fc.weight")):
                nn.init.normal_(p, std=0.02)

    def new_cache(self, batch: int) -> KVCache:
        p = self.pos_emb
        return KVCache(self.depth, batch, self.heads, self.max_len, self.dim // self.heads, p.device, p.dtype)

    def forward(self, x: torch.Tensor, cache: KVCache | None = None, c: torch.Tensor | None = None) -> torch.Tensor:
        if self.adaln and c is None:
            raise ImgenError("this transformer is adaLN-conditioned: give forward its conditioning vector c (B, dim)")
        start = 0 if cache is None else cache.length
        if start + x.shape[1] > self.max_len:
            raise ImgenError(f"sequence of {start + x.shape[1]} positions exceeds the transformer's max_len "
                             f"{self.max_len}; build it with a larger max_len")
        x = x + self.pos_emb[start:start + x.shape[1]]
        for i, block in enumerate(self.blocks):
            x = block(x, cache, i, c)
        if cache is not None:
            cache.length += x.shape[1]
        return self.ln_f(x)


class TokenTransformer(ConfigMixin, nn.Module):
    """A prior over a tokenizer's (h, w) grid of image tokens: the condition as a prefix of P embeddings, then the
    N = h * w image tokens in raster order (DALL-E sec. 2.2: "text tokens then image tokens in one stream").

    The condition is caption words (option `vocab`: the word Tokenizer's words, P = max_len), a class label
    (`num_classes`, P = 1) or nothing (P = 1, a learned start embedding). A dropped condition (cond["drop"]) is a
    learned null prefix (classifier-free guidance, Ho & Salimans 2022). Token id codebook_size is [MASK] (MaskGIT).
    With `text_encoder` (a CLIP directory, e.g. shipped "shapes-clip") the caption prefix is its frozen text tower's
    token features, projected to dim, instead of word embeddings learned from scratch; with text_pool=True it is one
    embedding, the tower's pooled caption embedding (the one CLIP's contrastive loss trains), projected (P = 1).
    With adaln=True the condition also reaches every block: the mean prefix embedding modulates each block's
    LayerNorms and gates (DiT's adaLN-Zero), instead of only being attended to as the first positions.
    in_channels/image_size are the images the tokenizer decodes to (Model reads the sample shape from them)."""

    name = "token_transformer"

    def __init__(self, in_channels: int, image_size: int, codebook_size: int, token_grid: list | tuple,
                 num_classes: int | None = None, vocab: list | None = None, max_len: int = 16, dim: int = 128,
                 depth: int = 4, heads: int = 4, causal: bool = True, text_encoder: str = "",
                 text_encoder_options: dict | None = None, text_pool: bool = False, adaln: bool = False):
        super().__init__()
        self.save_config(locals())
        check_int(codebook_size, "token_transformer codebook_size", minimum=2)
        if not isinstance(token_grid, (list, tuple)) or len(token_grid) != 2:
            raise ImgenError(f"token_transformer token_grid must be [h, w] (the tokenizer's token grid), got "
                             f"{token_grid!r}; residual-VQ tokenizers are not supported")
        if vocab and num_classes:
            raise ImgenError("token_transformer takes a caption vocabulary or num_classes, not both; set one to null")
        self.in_channels, self.image_size, self.codebook_size = in_channels, image_size, codebook_size
        self.token_grid = tuple(int(s) for s in token_grid)
        self.num_tokens = self.token_grid[0] * self.token_grid[1]
        self.num_classes, self.causal = num_classes, causal
        self.tokenizer = Tokenizer(vocab) if vocab else None
        if text_pool and not (vocab and text_encoder):
            raise ImgenError("token_transformer text_pool=true needs a caption vocabulary and a text_encoder (a CLIP "
                             "directory): it conditions on that tower's pooled caption embedding")
        self.max_len, self.text_pool = max_len, bool(text_pool)
        self.prefix_len = max_len if vocab and not text_pool else 1
        self.token_emb = nn.Embedding(codebook_size + 1, dim)  # + [MASK]
        if self.tokenizer is not None and text_encoder:  # a frozen CLIP text tower's token features, projected
            self.text_encoder = TextTransformer(self.tokenizer.vocab_size, **{"max_len": max_len, **(
                text_encoder_options or {})}).requires_grad_(False)  # max_len here: its positions (>= ours)
            if Path(text_encoder).is_dir():  # at load time the state dict brings the weights
                load_clip_text_tower(self.text_encoder, text_encoder)
            self.text_proj = nn.Linear(self.text_encoder.dim, dim)
        elif self.tokenizer is not None:
            self.word_emb = nn.Embedding(self.tokenizer.vocab_size, dim)
        elif num_classes:
            self.label_emb = nn.Embedding(num_classes, dim)
        else:
            self.start = nn.Parameter(torch.zeros(1, dim))
        if vocab or num_classes:
            self.null_prefix = nn.Parameter(torch.zeros(self.prefix_len, dim))  # the dropped condition
            nn.init.normal_(self.null_prefix, std=0.02)
        self.trunk = Transformer(dim, depth, heads, self.prefix_len + self.num_tokens, causal, bool(adaln))
        self.head = nn.Linear(dim, codebook_size)
        for emb in (self.token_emb, getattr(self, "word_emb", None), getattr(self, "label_emb", None)):
            if emb is not None:
                nn.init.normal_(emb.weight, std=0.02)

    @property
    def text_conditional(self) -> bool:
        return self.tokenizer is not None

    def encode(self, prompts) -> dict:
        """{"text": word ids (B, max_len), "text_mask"} of prompts, ready for `condition` (Model.generate)."""
        if self.tokenizer is None:
            raise ImgenError("this token prior is not text-conditional; sample it with labels (imgen sample)")
        ids, mask = self.tokenizer.encode(check_prompts(prompts), self.max_len)
        return {"text": ids.to(self.head.weight.device), "text_mask": mask.to(self.head.weight.device)}

    def condition(self, cond: dict | None, batch: int) -> torch.Tensor:
        """The prefix embeddings (B, P, dim) of a condition dict: "caption" (strings) or "text" ids, or "label";
        rows with "drop" True get the null prefix."""
        cond = dict(cond or {})
        if self.tokenizer is not None:
            if "text" not in cond and "caption" in cond:
                cond.update(self.encode(list(cond["caption"])))
            if "text" not in cond:
                if cond.get("drop") is None or not bool(cond["drop"].all()):
                    raise ImgenError("this token prior is text-conditional: give cond['caption'] (strings) or "
                                     "net.encode(prompts) (imgen generate)")
                prefix = self.null_prefix.expand(batch, -1, -1)
            else:
                prefix = self._embed_text(cond["text"], cond["text_mask"])  # (B, P, D)
        elif self.num_classes:
            if cond.get("label") is None:
                if cond.get("drop") is None or not bool(cond["drop"].all()):
                    raise ImgenError("this token prior is class-conditional; give labels")
                prefix = self.null_prefix.expand(batch, -1, -1)
            else:
                prefix = self.label_emb(cond["label"])[:, None]
        else:
            prefix = self.start.expand(batch, -1, -1)
        drop = cond.get("drop")
        if drop is not None and (self.tokenizer is not None or self.num_classes):
            prefix = torch.where(drop.to(prefix.device)[:, None, None], self.null_prefix.to(prefix.dtype), prefix)
        return prefix

    def _embed_text(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Word ids (B, P) -> prefix (B, P, D): learned word embeddings, or the frozen text tower's token features
        (unCLIP/Imagen condition on a frozen pretrained text encoder). Pads are embedded too (a fixed-length prefix)."""
        if hasattr(self, "text_encoder"):
            tokens, pooled = self.text_encoder(ids, mask)
            return self.text_proj(pooled[:, None] if self.text_pool else tokens)
        return self.word_emb(ids)

    def new_cache(self, batch: int) -> KVCache:
        return self.trunk.new_cache(batch)

    def forward(self, ids: torch.Tensor, prefix: torch.Tensor | None = None, cache: KVCache | None = None):
        """Logits (B, T, codebook_size) of the sequence [prefix (B, P, D) if given, embed(ids) (B, T_ids)] (the
        features of every position; a method picks the ones it predicts from). With a cache, the inputs continue
        the cached sequence."""
        x = self.token_emb(ids)
        c = None
        if self.trunk.adaln:  # the condition vector: from the prefix, or kept in the cache since the first call
            if prefix is None and (cache is None or cache.cond is None):
                raise ImgenError("an adaLN token prior needs the condition's prefix on its first call")
            c = prefix.mean(1) if prefix is not None else cache.cond
            if cache is not None:
                cache.cond = c
        if prefix is not None:
            x = torch.cat([prefix, x], dim=1)
        return self.head(self.trunk(x, cache, c))
