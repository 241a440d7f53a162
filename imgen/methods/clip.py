"""CLIP: contrastive language-image pre-training (Radford et al. 2021) as a method, small enough to train on a
CPU on the shapes data, plus its zero-shot evaluation on held-out (shape, colour) pairs.

The network (imgen.nn.clip.CLIP) maps images and texts into one embed_dim space; the method's loss is the
symmetric cross-entropy over a batch of (image, caption) pairs (Figure 3 of the paper). Train one with
imgen.recipes.clip.train_clip or `imgen train` (net "clip", method "clip", data "shapes").
"""
from __future__ import annotations

import itertools

import numpy as np
import torch
import torch.nn.functional as F

from imgen.data import load_dataset
from imgen.data.shapes import (COLOR_NAMES, POSITIONS, SHAPES, SIZES, make_caption, sample_scene_attributes,
                               scene_captions, twin_batch)
from imgen.errors import ImgenError
from imgen.nn.clip import CLIP, MAX_LOGIT_SCALE, clip_small, logit_scale_value
from imgen.nn.text import Tokenizer

__all__ = ["CLIP", "MAX_LOGIT_SCALE", "ClipMethod", "clip_small", "contrastive_loss", "clip_loss", "twin_batch",
           "shapes_tokenizer", "zero_shot_accuracy", "retrieval_recall_at_1", "evaluate_clip"]

HELDOUT_SEED = 1_000_003  # the evaluation stream; any seed gives fresh scenes, this one is never trained on


def contrastive_loss(image_emb: torch.Tensor, text_emb: torch.Tensor, logit_scale: torch.Tensor) -> torch.Tensor:
    """Symmetric InfoNCE of L2-normalised embeddings (B, E) (Radford et al. 2021, Figure 3):
    logits = exp(t) * I @ T^T; loss = (CE(logits, arange) over images + CE(logits^T, arange) over texts) / 2."""
    logits = logit_scale_value(logit_scale) * image_emb @ text_emb.T  # (B, B)
    labels = torch.arange(len(logits), device=logits.device)
    return (F.cross_entropy(logits, labels) + F.cross_entropy(logits.T, labels)) / 2


def clip_loss(model: CLIP, batch: dict) -> torch.Tensor:
    """The contrastive loss of a CLIP on a batch dict with "image" (B, C, H, W) in [-1, 1] and "caption" (B strings)."""
    images, captions = batch.get("image"), batch.get("caption")
    if images is None or captions is None or len(captions) != len(images):
        raise ImgenError("CLIP trains on batches with both 'image' (B, C, H, W) and 'caption' (B strings); "
                         "use a captioned dataset such as load_dataset('shapes')")
    return contrastive_loss(model.encode_image(images), model.encode_text(list(captions)), model.logit_scale)


class ClipMethod:
    """The method of a CLIP net: loss = contrastive_loss; AdamW with no weight decay on norms, biases and the
    temperature (optimizers, the Trainer's hook). CLIP embeds, it does not sample."""

    def loss(self, net, batch: dict, generator=None) -> torch.Tensor:
        return clip_loss(net, batch)

    def optimizers(self, net, train) -> dict:
        params = [p for p in net.parameters() if p.requires_grad]
        decay = [p for p in params if p.ndim >= 2]
        rest = [p for p in params if p.ndim < 2]
        groups = [{"params": decay, "weight_decay": train.weight_decay}, {"params": rest, "weight_decay": 0.0}]
        return {"net": torch.optim.AdamW(groups, lr=train.lr, betas=tuple(train.betas), eps=train.adam_eps)}

    def denoiser(self, net):
        raise ImgenError("a CLIP model embeds images and texts but does not sample; load it with "
                         "imgen.nn.clip.CLIP.load(DIR) and use encode_image / encode_text / zero_shot")


def clip_method() -> ClipMethod:
    return ClipMethod()


def shapes_tokenizer(n: int = 4096, seed: int = 0, split: str = "train") -> Tokenizer:
    """A tokenizer over the words of `n` captions of the shapes stream (captions only, nothing rendered);
    words only the held-out templates use stay unknown (unk) for a train-split tokenizer."""
    a = sample_scene_attributes(seed, np.arange(n), split)
    return Tokenizer.from_corpus(scene_captions(a))


# ---- zero-shot evaluation on held-out (shape, colour) pairs ----
def attribute_prompts(attribute: str, variants: int = 3) -> list[list[str]]:
    """One prompt list per class of `attribute` ("color" or "shape"): template-0 captions (make_caption) of that
    class with every value of the other attribute, size and position and `variants` synonym draws."""
    if attribute not in ("color", "shape"):
        raise ImgenError(f"zero-shot attribute {attribute!r} is not supported; use 'color' or 'shape'")
    classes, others = (COLOR_NAMES, SHAPES) if attribute == "color" else (SHAPES, COLOR_NAMES)
    other = "shape" if attribute == "color" else "color"
    return [[make_caption({attribute: c, other: o, "size": z, "pos": p}, 0, v)
             for o, z, p, v in itertools.product(range(len(others)), range(len(SIZES)), range(len(POSITIONS)),
                                                 range(variants))]
            for c in range(len(classes))]


def heldout_batch(n: int, image_size: int, seed: int = HELDOUT_SEED, max_objects: int = 1) -> dict:
    """`n` scenes whose main object is a held-out (shape, colour) pair, captioned with held-out templates."""
    return load_dataset("shapes", split="heldout", image_size=image_size, seed=seed,
                        max_objects=max_objects).get(np.arange(n))


def _image_size(model: CLIP) -> int:
    return model.image_encoder.image_size


@torch.no_grad()
def zero_shot_accuracy(model: CLIP, attribute: str = "color", n: int = 500, seed: int = HELDOUT_SEED) -> float:
    """Fraction of `n` held-out single-object scenes whose `attribute` ("color" or "shape") the model picks
    zero-shot from attribute_prompts (chance: 1/8 for colour, 1/5 for shape)."""
    batch = heldout_batch(n, _image_size(model), seed)
    model.eval()
    logits = model.zero_shot(batch["image"], attribute_prompts(attribute))
    return float((logits.argmax(1).cpu() == batch["attrs"][attribute]).double().mean())


@torch.no_grad()
def retrieval_recall_at_1(model: CLIP, n: int = 100, seed: int = HELDOUT_SEED, max_objects: int = 1) -> float:
    """Text -> image recall@1 among `n` held-out scenes: the fraction of captions whose own image is the most
    similar of the n (chance: 1/n). Captions use the held-out templates, so some of their words are new."""
    batch = heldout_batch(n, _image_size(model), seed, max_objects)
    model.eval()
    sim = model.encode_text(batch["caption"]) @ model.encode_image(batch["image"]).T  # (texts, images)
    return float((sim.argmax(1).cpu() == torch.arange(n)).double().mean())


def evaluate_clip(model: CLIP, n: int = 500, seed: int = HELDOUT_SEED) -> dict[str, float]:
    """Zero-shot colour/shape accuracy on n held-out scenes and recall@1 over batches of 100 of them."""
    recall = [retrieval_recall_at_1(model, 100, seed + k) for k in range(max(n // 100, 1))]
    return {"color_acc": zero_shot_accuracy(model, "color", n, seed),
            "shape_acc": zero_shot_accuracy(model, "shape", n, seed),
            "recall@1": float(np.mean(recall))}
