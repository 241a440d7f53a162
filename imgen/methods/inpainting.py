"""The condition of a trained inpainting model (Stable Diffusion's inpainting model, Rombach et al. 2022, sec. 4.5
and the SD 1.5/2 inpainting release): the hole mask and the masked image as extra input channels of the denoiser.

    cond["inpaint"] = inpaint_condition(image, hole, encode)       # (B, 1 + C, h, w)

The masked image is the image with the hole set to 0 (mid-grey in [-1, 1]; SD: image * (mask < 0.5)), mapped by
`encode` into the space the sampler walks (a latent model's autoencoder posterior mean times its scale; identity
for a pixel model); the mask is area-averaged to that grid, so a latent cell reads the fraction of its pixels in the
hole. An all-ones hole (nothing known) is plain text-to-image: training sees some, so the model still generates.
Used by the training loss (imgen.methods.latent, imgen.methods.diffusion: from batch["mask"]) and by sampling
(imgen.model.Model.inpaint_condition), so both see the same input.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from imgen.errors import ImgenError


def inpaint_condition(image: torch.Tensor, hole: torch.Tensor, encode=None) -> torch.Tensor:
    """image (B, C, H, W) in [-1, 1], hole (B, 1, H, W) or (H, W) with 1 / True = to fill -> (B, 1 + C', h, w):
    the hole on encode's grid, then encode(the masked image) (C', h, w: encode's output; identity when None)."""
    hole = torch.as_tensor(hole, dtype=image.dtype, device=image.device)
    hole = hole.reshape(1, 1, *hole.shape[-2:]).expand(len(image), -1, -1, -1) if hole.ndim == 2 else hole
    if hole.ndim != 4 or hole.shape[1] != 1 or hole.shape[0] != len(image) or hole.shape[2:] != image.shape[2:]:
        raise ImgenError(f"an inpainting mask must be (B, 1, H, W) matching the images {tuple(image.shape)}, got "
                         f"{tuple(hole.shape)}")
    masked = image * (1 - hole)  # the hole -> 0
    z = masked if encode is None else encode(masked)
    return torch.cat([F.adaptive_avg_pool2d(hole, z.shape[2:]), z], dim=1)
