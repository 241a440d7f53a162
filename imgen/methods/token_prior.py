"""What the token priors (imgen.methods.token_ar, imgen.methods.maskgit) share: a frozen image tokenizer
(a VQ-VAE/VQGAN model directory, e.g. `imgen train shapes-vqvae --out DIR`) referenced by the method option
`tokenizer`, copied into the prior's directory at train start (OUT/tokenizer/, like imgen.methods.latent's
autoencoder) so the model directory is self-contained; the condition of a batch with caption/label dropout for
classifier-free guidance; guided logits; and temperature / top-k / top-p sampling of logits.

    method: {"name": "token_ar", "options": {"tokenizer": "runs/shapes-vqvae", "cond_drop": 0.1}}
"""
from __future__ import annotations

import os
from pathlib import Path

import torch

from imgen.checkpoint import copy_model_files
from imgen.errors import ImgenError, check_nonnegative
from imgen.nn import load_net
from imgen.pretrained import resolve_model_path

TOKENIZER_DIR = "tokenizer"  # inside the prior's model directory
TOKENIZER_FILES = ("config.json", "ema.safetensors", "model.safetensors")  # no optimizer state
CONDITIONS = ("auto", "caption", "label", "none")


def load_tokenizer(path: str | Path):
    """The frozen tokenizer net (eval mode, no grads) of a VQ-VAE/VQGAN model directory."""
    if not path:
        raise ImgenError("a token prior needs method option 'tokenizer': the directory of a VQ tokenizer trained "
                         "with `imgen train shapes-vqvae --out DIR` (--set method.options.tokenizer=DIR)")
    path = resolve_model_path(path)
    if not (Path(path) / "config.json").is_file():
        raise ImgenError(f"tokenizer {str(path)!r} is not a model directory (no config.json); train one with "
                         f"`imgen train shapes-vqvae --out DIR` and pass --set method.options.tokenizer=DIR")
    _, net = load_net(path)
    if not hasattr(net, "encode_tokens"):
        raise ImgenError(f"tokenizer {str(path)!r} holds a {type(net).__name__}, not an image tokenizer; give a "
                         f"directory trained with `imgen train shapes-vqvae` (a VQ-VAE or VQGAN)")
    if len(net.token_shape) != 2:
        raise ImgenError(f"tokenizer {str(path)!r} has token shape {net.token_shape} (residual VQ); token priors "
                         f"model one token per grid cell, use a vq, vq_ema, fsq or lfq tokenizer")
    return net.eval().requires_grad_(False)


def tokenizer_net_options(method_options: dict, dataset, net_options: dict) -> dict:
    """The token_transformer options that follow from the tokenizer and the data (imgen.train.resolve_config):
    codebook_size, token_grid, and the condition (caption vocabulary, num_classes, or none)."""
    from imgen.data.base import caption_corpus
    from imgen.nn.text import SPECIAL_TOKENS, Tokenizer

    tok = load_tokenizer(method_options.get("tokenizer", ""))
    if (tok.in_channels, tok.image_size) != (dataset.channels, dataset.image_size):
        raise ImgenError(f"the tokenizer encodes {tok.in_channels}-channel {tok.image_size}x{tok.image_size} images "
                         f"but the data ({dataset.name}) has {dataset.channels}-channel {dataset.image_size}x"
                         f"{dataset.image_size} ones; train a tokenizer on this data or change data.options")
    out = {"codebook_size": tok.codebook_size, "token_grid": list(tok.token_grid)}
    condition = method_options.get("condition", "auto")
    if condition == "auto":
        has_captions = getattr(dataset, "captions", None) is not None
        condition = "caption" if has_captions else "label" if getattr(dataset, "num_classes", None) else "none"
    if condition == "caption":
        out["num_classes"] = None
        if net_options.get("text_encoder"):  # a frozen CLIP text tower: its vocabulary, length and architecture
            from imgen.nn.text2img import clip_directory, clip_text_options

            clip_dir = clip_directory(net_options["text_encoder"], "text_encoder")
            opts = clip_text_options(clip_dir)
            if net_options.get("max_len", 16) > opts["max_len"]:
                raise ImgenError(f"net.options.max_len={net_options['max_len']} exceeds the text encoder's "
                                 f"{opts['max_len']} positions; use max_len <= {opts['max_len']}")
            out.update(text_encoder=clip_dir, vocab=opts["vocab"],
                       text_encoder_options={**opts["encoder_options"], "max_len": opts["max_len"]})
        elif not net_options.get("vocab"):
            out["vocab"] = Tokenizer.from_corpus(caption_corpus(dataset)).itos[len(SPECIAL_TOKENS):]
    elif condition == "label":
        if not getattr(dataset, "num_classes", None):
            raise ImgenError(f"condition 'label' needs labelled data; {dataset.name} has no labels (use 'caption' or "
                             f"'none')")
        out.update(vocab=None, num_classes=net_options.get("num_classes") or dataset.num_classes)
    else:
        out.update(vocab=None, num_classes=None)
    return out


def filter_logits(logits: torch.Tensor, top_k: int | None = None, top_p: float | None = None) -> torch.Tensor:
    """Logits (..., V) with all but the top_k largest (Fan et al. 2018) and all outside the nucleus -- the
    smallest set of most likely tokens whose probability reaches top_p (Holtzman et al. 2020, eq. 2) -- at -inf."""
    if top_k is not None and top_k < logits.shape[-1]:
        kth = logits.topk(top_k, dim=-1).values[..., -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p is not None and top_p < 1.0:
        sorted_logits, order = logits.sort(dim=-1, descending=True)
        probs = sorted_logits.softmax(-1)
        outside = probs.cumsum(-1) - probs >= top_p  # the mass before a token already reaches p
        logits = logits.masked_fill(outside.scatter(-1, order, outside), float("-inf"))
    return logits


def check_sampling(temperature, top_k, top_p) -> None:
    if temperature is not None and check_nonnegative(temperature, "temperature") == 0:
        raise ImgenError("temperature must be > 0 (for greedy decoding use top_k=1)")
    if top_k is not None and (isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1):
        raise ImgenError(f"top_k must be an integer >= 1, got {top_k!r}")
    if top_p is not None and (isinstance(top_p, bool) or not isinstance(top_p, (int, float)) or not 0 < top_p <= 1):
        raise ImgenError(f"top_p must be a number in (0, 1], got {top_p!r}")


def sample_logits(logits: torch.Tensor, generator=None, temperature: float = 1.0, top_k: int | None = None,
                  top_p: float | None = None) -> torch.Tensor:
    """One token id per row of logits (B, V) from softmax(logits / temperature), filtered by top_k / top_p."""
    probs = filter_logits(logits / temperature, top_k, top_p).softmax(-1)
    return torch.multinomial(probs, 1, generator=generator)[:, 0]


class TokenPrior:
    """The shared part of a prior over a frozen tokenizer's tokens; subclasses define loss and sample."""

    def __init__(self, tokenizer: str = "", cond_drop: float = 0.1, condition: str = "auto"):
        if not isinstance(tokenizer, (str, os.PathLike)) or not str(tokenizer):
            raise ImgenError(f"method {self.name!r} needs option 'tokenizer': the directory of a VQ tokenizer trained "
                             "with `imgen train shapes-vqvae --out DIR` (--set method.options.tokenizer=DIR)")
        if not 0 <= check_nonnegative(cond_drop, "cond_drop") <= 1:
            raise ImgenError(f"cond_drop must be in [0, 1], got {cond_drop!r}")
        if condition not in CONDITIONS:
            raise ImgenError(f"condition must be one of {', '.join(CONDITIONS)}, got {condition!r}")
        self.tokenizer_path, self.cond_drop = str(tokenizer), float(cond_drop)
        self._tok = None

    name = "token_prior"

    # -- the model directory --------------------------------------------------------------------------------
    def bind(self, root: str | Path | None, dataset=None) -> None:
        """Training (a dataset given): copy the tokenizer into root/tokenizer unless it is there (a resume).
        Loading: read it from there."""
        if root is None:
            raise ImgenError("a token prior decodes with the tokenizer stored in its directory; load it with "
                             "imgen.load(MODEL_DIR)")
        tok_dir = Path(root) / TOKENIZER_DIR
        if not (tok_dir / "config.json").is_file():
            if dataset is None:
                raise ImgenError(f"token prior {str(root)!r} lacks its tokenizer copy {str(tok_dir)!r} (written at "
                                 f"train start); restore the directory or retrain it")
            src = resolve_model_path(self.tokenizer_path)
            load_tokenizer(src)  # a clear error for a missing or wrong directory
            copy_model_files(src, tok_dir, TOKENIZER_FILES)
        self._tok = load_tokenizer(tok_dir)

    @property
    def tokenizer(self):
        if self._tok is None:
            raise ImgenError("this token prior is not bound to a model directory yet; train it with imgen.train or "
                             "load it with imgen.load(MODEL_DIR)")
        return self._tok

    @torch.no_grad()
    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Images -> token ids (B, N) in raster order."""
        return self.tokenizer.to(x.device).encode_tokens(x).flatten(1)

    @torch.no_grad()
    def decode_tokens(self, net, ids: torch.Tensor) -> torch.Tensor:
        """Token ids (B, N) -> images (B, C, H, W)."""
        return self.tokenizer.to(ids.device).decode_tokens(ids.view(len(ids), *net.token_grid))

    # -- conditions ------------------------------------------------------------------------------------------
    def train_prefix(self, net, batch: dict, generator=None) -> torch.Tensor:
        """The condition prefix of a batch, each row's condition dropped with probability cond_drop (CFG)."""
        n = len(batch["image"])
        drop = torch.rand(n, generator=generator) < self.cond_drop
        cond = {"drop": drop.to(batch["image"].device)}
        if net.text_conditional:
            if "caption" not in batch:
                raise ImgenError("a text-conditional token prior needs captioned data (e.g. shapes)")
            cond["caption"] = batch["caption"]
        elif net.num_classes:
            if "label" not in batch:
                raise ImgenError("a class-conditional token prior needs labelled data (e.g. digits)")
            cond["label"] = batch["label"]
        return net.condition(cond, n)

    def sample_prefix(self, net, cond: dict | None, n: int, cfg: float) -> torch.Tensor:
        """(2n, P, D) prefixes: the condition, then the null condition when guided (cfg != 1), else (n, P, D)."""
        if (net.text_conditional or net.num_classes) and cond is None:
            raise ImgenError("this token prior is conditional: give labels (imgen sample --label) or prompts "
                             "(imgen generate)")
        prefix = net.condition(cond, n)
        if cfg == 1.0:
            return prefix
        if not (net.text_conditional or net.num_classes):
            raise ImgenError("classifier-free guidance needs a conditional model; this one is unconditional, use cfg=1")
        return torch.cat([prefix, net.condition({"drop": torch.ones(n, dtype=torch.bool)}, n)])

    @staticmethod
    def guide(logits: torch.Tensor, cfg: float) -> torch.Tensor:
        """Classifier-free guidance on logits (Ho & Salimans 2022, eq. 6; Muse sec. 2.6): l_u + cfg (l_c - l_u)."""
        if cfg == 1.0:
            return logits
        cond, uncond = logits.chunk(2)
        return uncond + cfg * (cond - uncond)

    def denoiser(self, net):
        raise ImgenError(f"a {self.name} token prior is not a diffusion model: it has no denoiser; sample it with "
                         "imgen.load(DIR).sample / generate")
