"""CLIP: contrastive language-image pre-training (Radford et al. 2021), small enough to train on a CPU on the
shapes data, plus its zero-shot evaluation on held-out (shape, colour) pairs.

A CLIP model is an image encoder and a text encoder, each followed by a linear projection into a shared
embed_dim space where both are L2-normalised; a learned temperature scales their cosine similarities into
logits and the loss is the symmetric cross-entropy over a batch (Figure 3 of the paper).
"""
from __future__ import annotations

import itertools
import json
import math
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from imgen.checkpoint import atomic_write_text, load_tensors, read_json, save_tensors
from imgen.data import load_dataset
from imgen.data.shapes import (ATTRIBUTES, COLOR_NAMES, HELDOUT_PAIRS, POSITIONS, SHAPES, SIZES, make_caption,
                               render_scenes, sample_scene_attributes, scene_captions)
from imgen.errors import ImgenError
from imgen.nn.image_encoder import ImageEncoder
from imgen.nn.text import TextTransformer, Tokenizer, check_prompts, encode_prompts

MAX_LOGIT_SCALE = 100.0  # Radford et al. 2021, sec. 2.5: the temperature is clipped so logits scale by <= 100
HELDOUT_SEED = 1_000_003  # the evaluation stream; any seed gives fresh scenes, this one is never trained on


def contrastive_loss(image_emb: torch.Tensor, text_emb: torch.Tensor, logit_scale: torch.Tensor) -> torch.Tensor:
    """Symmetric InfoNCE of L2-normalised embeddings (B, E) (Radford et al. 2021, Figure 3):
    logits = exp(t) * I @ T^T; loss = (CE(logits, arange) over images + CE(logits^T, arange) over texts) / 2."""
    logits = logit_scale.clamp(max=math.log(MAX_LOGIT_SCALE)).exp() * image_emb @ text_emb.T  # (B, B)
    labels = torch.arange(len(logits), device=logits.device)
    return (F.cross_entropy(logits, labels) + F.cross_entropy(logits.T, labels)) / 2


class CLIP(nn.Module):
    """encode_image(images) / encode_text(texts) -> L2-normalised (B, embed_dim); loss(batch) is the contrastive
    loss of a batch dict with "image" (B, C, H, W) in [-1, 1] and "caption" (B strings).
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

    def loss(self, batch: dict) -> torch.Tensor:
        images, captions = batch.get("image"), batch.get("caption")
        if images is None or captions is None or len(captions) != len(images):
            raise ImgenError("CLIP trains on batches with both 'image' (B, C, H, W) and 'caption' (B strings); "
                             "use a captioned dataset such as load_dataset('shapes')")
        return contrastive_loss(self.encode_image(images), self.encode_text(list(captions)), self.logit_scale)

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
        scale = self.logit_scale.clamp(max=math.log(MAX_LOGIT_SCALE)).exp()
        return scale * self.encode_image(images) @ classes.T

    def clip_score(self, images: torch.Tensor, captions: list[str]) -> float:
        """CLIPScore (Hessel et al. 2021, eq. 1) with w = 100, i.e. 100 * max(cos(E_I, E_T), 0) averaged over the
        pairs, as torchmetrics reports it (the paper's own w = 2.5 rescales it by 2.5 / 100); computed by
        imgen.metrics.clip_score so there is one implementation."""
        from imgen.metrics.clip_score import clip_score
        was_training = self.training
        try:
            return clip_score(images, captions, self.eval())
        finally:
            self.train(was_training)

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
        directory = Path(directory)
        config = read_json(directory / "config.json")
        if config.get("kind") != "clip":
            raise ImgenError(f"{directory} does not hold a CLIP model (config.json kind={config.get('kind')!r}); "
                             f"give the directory CLIP.save wrote")
        model = cls(ImageEncoder.from_config(config["image_encoder"]),
                    TextTransformer.from_config(config["text_encoder"]),
                    Tokenizer.from_dict(config["tokenizer"]), config["embed_dim"])
        model.load_state_dict(load_tensors(directory / "model.safetensors"))
        return model.eval()


def clip_small(tokenizer: Tokenizer, image_size: int = 32, width: int = 32, dim: int = 128, depth: int = 2,
               heads: int = 4, max_len: int = 32, embed_dim: int = 128) -> CLIP:
    """A CPU-sized CLIP: ImageEncoder(width) and a TextTransformer(dim, depth) over `tokenizer`'s vocabulary."""
    return CLIP(ImageEncoder(3, image_size, width, dim),
                TextTransformer(tokenizer.vocab_size, dim, depth, heads, max_len), tokenizer, embed_dim)


def shapes_tokenizer(n: int = 4096, seed: int = 0, split: str = "train") -> Tokenizer:
    """A tokenizer over the words of `n` captions of the shapes stream (captions only, nothing rendered);
    words only the held-out templates use stay unknown (unk) for a train-split tokenizer."""
    a = sample_scene_attributes(seed, np.arange(n), split)
    return Tokenizer.from_corpus(scene_captions(a))


def twin_batch(data, idx: np.ndarray, rng: np.random.Generator) -> dict:
    """Items `idx` of a shapes stream followed by one counterfactual twin each: the same scene and caption with
    the main object's shape or colour changed (to another train pair), so a batch holds hard negatives that
    only shape or only colour tells apart (hard negatives for compositional CLIP: Yuksekgonul et al. 2023,
    NegCLIP; here both the image and the caption of the negative are real). -> {"image", "caption", "attrs"}."""
    a = data.attributes(idx)
    twin = {k: v.copy() for k, v in a.items()}
    heldout = {(SHAPES.index(s), COLOR_NAMES.index(c)) for s, c in HELDOUT_PAIRS}
    for i in range(len(idx)):
        shape, color = int(a["shape"][i]), int(a["color"][i])
        if rng.random() < 0.5:
            options = [("shape", s) for s in range(len(SHAPES)) if s != shape and (s, color) not in heldout]
        else:
            options = [("color", c) for c in range(len(COLOR_NAMES)) if c != color and (shape, c) not in heldout]
        key, value = options[rng.integers(len(options))]
        twin[key][i] = value
    both = {k: np.concatenate([a[k], twin[k]]) for k in a}
    image = render_scenes(both, data.image_size, both["offset"], data.supersample)
    return {"image": image, "caption": scene_captions(both), "attrs": {k: torch.from_numpy(both[k]) for k in ATTRIBUTES}}


def train_clip(steps: int = 2000, batch_size: int = 128, seed: int = 0, image_size: int = 32, lr: float = 2e-3,
               weight_decay: float = 0.05, warmup: int = 100, max_objects: int = 2, twins: bool = True,
               model: CLIP | None = None, progress: bool = True, **net) -> tuple[CLIP, list[float]]:
    """Train a CLIP on the shapes train stream (batch k = items k*B .. (k+1)*B - 1 of the stream `seed`) with
    AdamW, linear warmup then cosine decay. Returns the model (in eval mode) and the loss of every step.
    twins=True makes each batch B/2 stream items and their counterfactual twins (see twin_batch).
    `net` options go to clip_small (width, dim, depth, heads, max_len, embed_dim) when no model is given."""
    if not isinstance(steps, int) or steps < 1 or not isinstance(batch_size, int) or batch_size < 2:
        raise ImgenError(f"train_clip needs steps >= 1 and batch_size >= 2 (a contrastive batch needs negatives); "
                         f"got steps={steps!r}, batch_size={batch_size!r}")
    torch.manual_seed(seed)
    data = load_dataset("shapes", split="train", image_size=image_size, seed=seed, max_objects=max_objects)
    model = model if model is not None else clip_small(shapes_tokenizer(seed=seed), image_size, **net)
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    decay = [p for p in params if p.ndim >= 2]  # no weight decay on norms, biases, temperature
    rest = [p for p in params if p.ndim < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": weight_decay}, {"params": rest, "weight_decay": 0.0}],
                            lr=lr, betas=(0.9, 0.98), eps=1e-6)  # betas/eps as in Radford et al. 2021, sec. 2.5
    warmup = min(warmup, steps // 2)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min((s + 1) / max(warmup, 1), 1.0) * 0.5 * (
        1 + math.cos(math.pi * max(s - warmup, 0) / max(steps - warmup, 1))))
    losses = []
    with tqdm(range(steps), desc="clip", disable=not progress, leave=False) as bar:
        for step in bar:
            if twins:
                half = batch_size // 2
                batch = twin_batch(data, np.arange(step * half, (step + 1) * half), np.random.default_rng([seed, step]))
            else:
                batch = data.get(np.arange(step * batch_size, (step + 1) * batch_size))
            loss = model.loss(batch)
            if not torch.isfinite(loss):
                raise ImgenError(f"CLIP loss became {loss.item()} at step {step}; lower lr (now {lr})")
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            losses.append(loss.item())
            bar.set_postfix(loss=f"{loss.item():.3f}", scale=f"{model.logit_scale.exp().item():.1f}")
    return model.eval(), losses


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
