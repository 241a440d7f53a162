"""CLIP score (Hessel et al. 2021, eq. 1 with w = 100, as torchmetrics reports it): 100 * max(cos(E_I, E_T), 0),
averaged over image-caption pairs.

`model` is any CLIP-like object with encode_image(images (N, C, H, W) in [-1, 1]) -> (N, E) and
encode_text(list[str]) -> (N, E) (imgen's own CLIP model exposes these); the result should be reported as
clip[<model name>], since scores from different CLIP models are not comparable.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from imgen.errors import ImgenError


@torch.no_grad()
def clip_score(images: torch.Tensor, captions: list[str], model) -> float:
    if len(captions) != images.shape[0]:
        raise ImgenError(f"CLIP score pairs each image with one caption; got {images.shape[0]} images and "
                         f"{len(captions)} captions")
    img = F.normalize(model.encode_image(images).double(), dim=-1)
    txt = F.normalize(model.encode_text(list(captions)).double(), dim=-1)
    return float((100 * (img * txt).sum(-1).clamp_min(0)).mean())
