"""Textual inversion (Gal et al. 2022): new words whose token embeddings are the only trained weights.

    add_tokens(net, ["zorp"], init=["triangle"])   # net: a text2img net with imgen's word tokenizer
    ...train only token_parameters(net)...          # the text encoder and the denoiser stay frozen
    tokens_state_dict(net)                         # {"text_encoder.token_emb.new": (k, dim)}: a few hundred bytes

The tokenizer gains the words at ids V..V+k-1 (V: the base vocabulary), and the text encoder's embedding table
looks them up in a separate (k, dim) parameter v* (Gal et al. sec. 3: v* = argmin_v E ||eps - eps_theta(z_t, t,
c_theta(y; v))||^2 with every other weight fixed), initialised from a coarse descriptor word as in the paper.
Files: save_tokens / read_tokens (safetensors; words and the base in its header and in a JSON beside it).
"""
from __future__ import annotations

import json
from pathlib import Path

import torch
from torch import nn

from imgen.checkpoint import atomic_write_text, load_tensors, save_tensors
from imgen.errors import ImgenError
from imgen.nn.text import SPECIAL_TOKENS, Tokenizer, split_words

KEY = "text_encoder.token_emb.new"


class NewTokenEmbedding(nn.Module):
    """A frozen embedding table of V rows plus k trainable rows for ids V..V+k-1."""

    def __init__(self, base: nn.Embedding, new: torch.Tensor):
        super().__init__()
        self.base = base.requires_grad_(False)
        self.new = nn.Parameter(new.clone())

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        v = self.base.num_embeddings
        is_new = ids >= v
        out = self.base(ids.clamp(max=v - 1))
        return torch.where(is_new[..., None], self.new[(ids - v).clamp(min=0, max=len(self.new) - 1)], out)


def _encoder(net: nn.Module):
    enc, tok = getattr(net, "text_encoder", None), getattr(net, "tokenizer", None)
    if enc is None or tok is None or not hasattr(enc, "token_emb"):
        raise ImgenError(f"textual inversion needs a text-to-image net with imgen's word tokenizer (text2img, encoder "
                         f"'transformer'); this is {type(net).__name__}")
    return enc, tok


def check_words(words, tokenizer: Tokenizer | None = None) -> list[str]:
    words = [words] if isinstance(words, str) else list(words)
    if not words:
        raise ImgenError("textual inversion needs at least one new word, e.g. --word zorp")
    for w in words:
        if not isinstance(w, str) or split_words(w) != [w]:
            raise ImgenError(f"the new word must be one lower-case word of letters/digits (as the tokenizer splits "
                             f"prompts), got {w!r}; e.g. zorp")
        if tokenizer is not None and w in tokenizer.stoi:
            raise ImgenError(f"{w!r} is already in the model's vocabulary; pick a word it has never seen, e.g. zorp")
    return words


def add_tokens(net: nn.Module, words, init=None) -> list[int]:
    """Give `net` the new words (embeddings from the `init` words, else the mean embedding) and freeze everything
    else. -> the new token ids."""
    enc, tok = _encoder(net)
    if isinstance(enc.token_emb, NewTokenEmbedding):
        raise ImgenError("this net already has learned words; unload them (remove_tokens) before adding others")
    words = check_words(words, tok)
    init = [None] * len(words) if init is None else ([init] if isinstance(init, str) else list(init))
    if len(init) != len(words):
        raise ImgenError(f"got {len(init)} init words for {len(words)} new words; give one per new word")
    table = enc.token_emb.weight.detach()
    rows = []
    for w in init:
        if w is not None and w not in tok.stoi:
            raise ImgenError(f"init word {w!r} is not in the model's vocabulary; pick a known word close to the "
                             f"concept (e.g. a shape or colour word), or none")
        # Gal et al.: start from a coarse descriptor word (else the mean word embedding)
        rows.append(table[tok.stoi[w]] if w is not None else table[len(SPECIAL_TOKENS):].mean(0))
    net.requires_grad_(False)
    ids = list(range(tok.vocab_size, tok.vocab_size + len(words)))
    net.tokenizer = Tokenizer(tok.itos[len(SPECIAL_TOKENS):] + words)
    enc.token_emb = NewTokenEmbedding(enc.token_emb, torch.stack(rows))
    enc.vocab_size = net.tokenizer.vocab_size
    net._base_tokenizer = tok
    return ids


def token_parameters(net: nn.Module) -> list[nn.Parameter]:
    enc, _ = _encoder(net)
    return [enc.token_emb.new] if isinstance(enc.token_emb, NewTokenEmbedding) else []


def tokens_state_dict(net: nn.Module) -> dict[str, torch.Tensor]:
    return {KEY: p.detach().clone() for p in token_parameters(net)}


def remove_tokens(net: nn.Module) -> None:
    """Back to the base vocabulary and embedding table."""
    enc, _ = _encoder(net)
    if isinstance(enc.token_emb, NewTokenEmbedding):
        enc.token_emb = enc.token_emb.base
        net.tokenizer = net._base_tokenizer
        del net._base_tokenizer
        enc.vocab_size = net.tokenizer.vocab_size


def add_tokens_from_options(net: nn.Module, options: dict) -> list[int]:
    """add_tokens with a config's dict {words, init?} (train.tokens)."""
    unknown = sorted(set(options) - {"words", "init"})
    if unknown or "words" not in options:
        raise ImgenError(f"train.tokens takes 'words' (the new words) and 'init' (a known word each); got "
                         f"{sorted(options)}")
    return add_tokens(net, options["words"], options.get("init"))


# ---- files ----------------------------------------------------------------------------------------------------
def save_tokens(net: nn.Module, path: str | Path, meta: dict) -> Path:
    """The learned embeddings to `path` (safetensors, `meta` with 'words' in its header) and meta to path.json."""
    path = Path(path)
    save_tensors(tokens_state_dict(net), path, meta)
    atomic_write_text(path.with_suffix(".json"), json.dumps(meta, indent=2) + "\n")
    return path


def load_tokens(net: nn.Module, path: str | Path) -> dict:
    """Add the words of a save_tokens file to `net` with their learned embeddings. -> its meta."""
    path = Path(path)
    if not path.is_file():
        raise ImgenError(f"learned-word file {str(path)!r} not found; give the .safetensors file `imgen finetune "
                         f"textual-inversion` wrote")
    tensors, meta = load_tensors(path, with_metadata=True)
    if set(tensors) != {KEY} or not isinstance(meta.get("words"), list):
        raise ImgenError(f"{str(path)!r} is not a textual-inversion file (no {KEY} / words); give a file written by "
                         f"`imgen finetune textual-inversion`")
    remove_tokens(net)
    enc, _ = _encoder(net)
    new = tensors[KEY]
    if new.shape != (len(meta["words"]), enc.token_emb.weight.shape[1]):
        raise ImgenError(f"{str(path)!r} was learned for another base model (embeddings {tuple(new.shape)} for "
                         f"{len(meta['words'])} words, this text encoder's width differs); use it with its base "
                         f"({meta.get('base')!r})")
    add_tokens(net, meta["words"])
    with torch.no_grad():
        enc.token_emb.new.copy_(new)
    return meta
