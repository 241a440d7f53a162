"""CLIP reranking (DALL-E, Ramesh et al. 2021, sec. 2.6 and fig. 9): draw k candidate images per prompt, keep the
one whose CLIP image embedding has the highest cosine similarity with the prompt's text embedding. Any
text-to-image model can use it (Model.generate's `rerank`); it costs k times the sampling, plus one CLIP pass."""
from __future__ import annotations

import json
from pathlib import Path

import torch
import torch.nn.functional as F

from imgen.errors import ImgenError, check_int
from imgen.images import adapt_images
from imgen.nn.clip import CLIP
from imgen.pretrained import resolve_model_path


def load_reranker(path: str | Path) -> CLIP:
    """The CLIP (a model directory or a shipped name such as "shapes-scenes-clip") that scores candidates."""
    if not path:
        raise ImgenError("reranking needs a CLIP to score the candidates and this model names none: give one "
                         "(--reranker DIR, or reranker=DIR in Python), a CLIP directory or a shipped name such as "
                         "shapes-scenes-clip")
    directory = Path(resolve_model_path(str(path)))
    config = directory / "config.json"
    if not config.is_file() or json.loads(config.read_text()).get("kind") != "clip":
        raise ImgenError(f"reranker {str(path)!r} is not a CLIP model directory; use the shipped shapes-scenes-clip "
                         f"or one trained with imgen.recipes.clip.train_clip and saved with CLIP.save(DIR)")
    return CLIP.load(directory).eval().requires_grad_(False)


@torch.no_grad()
def best_of(images: torch.Tensor, texts: list[str], clip: CLIP, k: int) -> torch.Tensor:
    """images (len(texts) * k, C, H, W), the k candidates of each text together -> (len(texts), C, H, W): per text
    the candidate CLIP scores highest."""
    check_int(k, "rerank (candidates per image)")
    if len(images) != k * len(texts):
        raise ImgenError(f"best_of needs k={k} candidates per text: got {len(images)} images for {len(texts)} texts")
    clip = clip.to(images.device)
    enc = clip.image_encoder
    img = clip.encode_image(adapt_images(images, enc.in_channels, enc.image_size)).float()  # the CLIP's image size
    img = F.normalize(img, dim=-1).view(len(texts), k, -1)
    txt = F.normalize(clip.encode_text(list(texts)).float(), dim=-1)
    best = (img * txt[:, None]).sum(-1).argmax(1)  # (T,)
    return images.view(len(texts), k, *images.shape[1:])[torch.arange(len(texts)), best]
