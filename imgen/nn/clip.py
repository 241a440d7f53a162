"""The CLIP network (Radford et al. 2021): an image encoder and a text encoder, each followed by a linear
projection into a shared embed_dim space where both are L2-normalised, and a learned temperature (logit scale).
Its contrastive loss lives in imgen.methods.clip, its CLIP score in imgen.metrics.clip_score. A CPU-sized one is
built by clip_small / clip_net.
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from imgen.checkpoint import atomic_write_text, load_tensors, read_json, save_tensors
from imgen.errors import ImgenError
from imgen.nn.image_encoder import ImageEncoder
from imgen.nn.text import TextTransformer, Tokenizer, check_prompts, encode_prompts

MAX_LOGIT_SCALE = 100.0  # Radford et al. 2021, sec. 2.5: the temperature is clipped so logits scale by <= 100


def logit_scale_value(logit_scale: torch.Tensor) -> torch.Tensor:
    """exp(t), t clipped at log(100) (sec. 2.5)."""
    return logit_scale.clamp(max=math.log(MAX_LOGIT_SCALE)).exp()


class CLIP(nn.Module):
    """encode_image(images) / encode_text(texts) -> L2-normalised (B, embed_dim).
    tokenizer=None for a self-tokenizing text encoder (MiniLMEncoder)."""

    def __init__(self, image_encoder: nn.Module, text_encoder: nn.Module, tokenizer: Tokenizer | None = None,
                 embed_dim: int = 128):
        super().__init__()
        self.image_encoder, self.text_encoder, self.tokenizer = image_encoder, text_encoder, tokenizer
        self.embed_dim = embed_dim
        self.image_proj = nn.Linear(image_encoder.dim, embed_dim, bias=False)
        self.text_proj = nn.Linear(text_encoder.dim, embed_dim, bias=False)
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1 / 0.07)))  # sec. 2.5: init temperature 0.07

    def encode_image(self, images: torch.Tensor) -> torch.Tensor:
        device = self.logit_scale.device
        return F.normalize(self.image_proj(self.image_encoder(images.to(device))), dim=-1)

    def encode_text(self, texts) -> torch.Tensor:
        _, _, pooled = encode_prompts(texts, self.text_encoder, self.tokenizer)
        return F.normalize(self.text_proj(pooled), dim=-1)

    @torch.no_grad()
    def zero_shot(self, images: torch.Tensor, class_prompts) -> torch.Tensor:
        """Logits (N, K) of N images over K classes. Each class is one prompt or a list of prompts whose
        embeddings are averaged and renormalised (prompt ensembling, Radford et al. 2021, sec. 3.1.4)."""
        groups = [[p] if isinstance(p, str) else list(p) for p in class_prompts]
        if not groups or not all(groups):
            raise ImgenError("zero_shot needs at least one class, each with at least one prompt")
        text = self.encode_text(check_prompts([p for g in groups for p in g]))
        owner = torch.repeat_interleave(torch.arange(len(groups)), torch.tensor([len(g) for g in groups]))
        classes = torch.zeros(len(groups), text.shape[1], dtype=text.dtype).index_add_(0, owner, text.cpu())
        classes = F.normalize(classes, dim=-1).to(text.device)
        return logit_scale_value(self.logit_scale) * self.encode_image(images) @ classes.T

    # ---- save / load: a directory with config.json (incl. the tokenizer) and model.safetensors ----
    def save(self, directory: str | Path) -> None:
        if not isinstance(self.text_encoder, TextTransformer) or not isinstance(self.image_encoder, ImageEncoder):
            raise ImgenError("CLIP.save supports ImageEncoder + TextTransformer models; a frozen pretrained text "
                             "encoder is rebuilt from its package, so save image_encoder/projections yourself")
        directory = Path(directory)
        config = {"kind": "clip", "embed_dim": self.embed_dim, "image_encoder": self.image_encoder.config(),
                  "text_encoder": self.text_encoder.config(), "tokenizer": self.tokenizer.to_dict()}
        save_tensors(self.state_dict(), directory / "model.safetensors")
        atomic_write_text(directory / "config.json", json.dumps(config, indent=1))

    @classmethod
    def load(cls, directory: str | Path) -> "CLIP":
        """A directory written by CLIP.save, or a model directory trained by imgen.train (net "clip"; EMA weights)."""
        directory = Path(directory)
        config = read_json(directory / "config.json")
        if config.get("kind") == "clip":
            model = cls(ImageEncoder.from_config(config["image_encoder"]),
                        TextTransformer.from_config(config["text_encoder"]),
                        Tokenizer.from_dict(config["tokenizer"]), config["embed_dim"])
            weights = directory / "model.safetensors"
        elif isinstance(config.get("net"), dict) and config["net"].get("name") == "clip":
            model, weights = clip_net(**config["net"].get("options", {})), directory / "ema.safetensors"
        else:
            raise ImgenError(f"{directory} does not hold a CLIP model (config.json kind={config.get('kind')!r}); "
                             f"give the directory CLIP.save or imgen.recipes.clip.train_clip wrote")
        model.load_state_dict(load_tensors(weights))
        return model.eval()


def clip_small(tokenizer: Tokenizer, image_size: int = 32, width: int = 32, dim: int = 128, depth: int = 2,
               heads: int = 4, max_len: int = 32, embed_dim: int = 128) -> CLIP:
    """A CPU-sized CLIP: ImageEncoder(width) and a TextTransformer(dim, depth) over `tokenizer`'s vocabulary."""
    return CLIP(ImageEncoder(3, image_size, width, dim),
                TextTransformer(tokenizer.vocab_size, dim, depth, heads, max_len), tokenizer, embed_dim)


def clip_net(vocab: list, in_channels: int = 3, image_size: int = 32, width: int = 32, dim: int = 128,
             depth: int = 2, heads: int = 4, max_len: int = 32, embed_dim: int = 128) -> CLIP:
    """clip_small from JSON-able options (net "clip" of a model config): `vocab` is the tokenizer's word list."""
    if in_channels != 3:
        raise ImgenError(f"net 'clip' reads RGB images (in_channels=3), got in_channels={in_channels}; "
                         f"train it on 'shapes' or a colour image folder")
    return clip_small(Tokenizer(vocab), image_size, width, dim, depth, heads, max_len, embed_dim)
