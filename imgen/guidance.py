"""Guidance wraps a denoiser and returns a denoiser, so every sampler gets it for free."""
from __future__ import annotations

import torch

from imgen.denoiser import Denoiser
from imgen.errors import ImgenError


def _stack(a: dict, b: dict) -> dict:
    """Concatenate two condition dicts along the batch (tensors) or list axis (e.g. captions)."""
    out = {}
    for k in a.keys() | b.keys():
        if k not in a or k not in b:
            raise ImgenError(f"conditional and unconditional inputs differ in key {k!r}")
        out[k] = torch.cat([a[k], b[k]]) if torch.is_tensor(a[k]) else list(a[k]) + list(b[k])
    return out


def null_condition(cond: dict, batch: int) -> dict:
    """The explicit 'no condition' input: the same keys with drop=True (nets use their learned null embedding)."""
    out = dict(cond)
    out["drop"] = torch.ones(batch, dtype=torch.bool)
    return out


class ClassifierFree(Denoiser):
    """Classifier-free guidance (Ho & Salimans 2022, eq. 6) in x0 space, which is the same as in eps space
    because x0_hat is affine in eps_hat at fixed x_t: D = D_u + w (D_c - D_u). w = 1 is no guidance.
    `uncond` is the null condition or a negative prompt's condition."""

    def __init__(self, denoiser: Denoiser, scale: float, uncond: dict):
        if scale < 0:
            raise ImgenError(f"guidance scale must be >= 0 (1 = no guidance), got {scale}")
        self.inner, self.scale, self.uncond, self.schedule = denoiser, float(scale), uncond, denoiser.schedule

    def __call__(self, x, t, cond=None):
        both = self.inner(torch.cat([x, x]), t, _stack(cond, self.uncond))
        x0_c, x0_u = both.chunk(2)
        return x0_u + self.scale * (x0_c - x0_u)


def classifier_free(denoiser: Denoiser, scale: float, cond: dict, batch: int, negative: dict | None = None):
    """Guided denoiser, or the denoiser itself when scale == 1 (no extra evaluations)."""
    if scale == 1.0:
        return denoiser
    return ClassifierFree(denoiser, scale, negative if negative is not None else null_condition(cond, batch))
