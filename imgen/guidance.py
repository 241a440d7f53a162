"""Guidance wraps a denoiser and returns a denoiser, so every sampler gets it for free."""
from __future__ import annotations

import torch

from imgen.denoiser import Denoiser, _bcast
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


class ClassifierGuidance(Denoiser):
    """Classifier guidance (Dhariwal & Nichol 2021, sec. 4.2 and Algorithm 2: eps_hat - sqrt(1 - abar) s grad log
    p_phi(y | x_t)) on any schedule: guiding the score by s grad_x log p(y | x_t) shifts Tweedie's estimate
    x0_hat = (x_t + sigma^2 score) / alpha by (sigma^2 / alpha) s grad_x log p(y | x_t). With the exact
    p(y | x_t) and s = 1 this is exactly E[x0 | x_t, y]. `classifier(x_t, t)` returns logits (B, K) for
    (B,) times; `labels` (B,) are the requested classes. Where alpha = 0 (rectified flow at t = 1) x_t holds
    no information about y, so no shift is applied."""

    def __init__(self, denoiser: Denoiser, classifier, scale: float, labels):
        if not scale >= 0:
            raise ImgenError(f"classifier guidance scale must be >= 0 (0 = none, 1 = exact conditional), got {scale}")
        labels = torch.as_tensor(labels)
        if labels.ndim != 1 or labels.dtype not in (torch.int64, torch.int32):
            raise ImgenError(f"labels must be an integer tensor of shape (B,), got {labels.dtype} {tuple(labels.shape)}; "
                             "pass torch.full((n,), label) for one class")
        self.inner, self.classifier, self.scale = denoiser, classifier, float(scale)
        self.labels, self.schedule = labels.long(), denoiser.schedule

    def log_prob_grad(self, x: torch.Tensor, t) -> torch.Tensor:
        """grad_x log p(y | x_t) for the requested labels (B, ...)."""
        if len(x) != len(self.labels):
            raise ImgenError(f"got {len(self.labels)} guidance labels for a batch of {len(x)}; give one label per sample")
        t = torch.as_tensor(t, dtype=torch.float64, device=x.device)
        t_batch = (t.expand(len(x)) if t.ndim == 0 else t).to(x.dtype)
        with torch.enable_grad():  # samplers run under no_grad
            xg = x.detach().requires_grad_(True)
            log_p = torch.log_softmax(self.classifier(xg, t_batch), dim=1)
            picked = log_p[torch.arange(len(x), device=x.device), self.labels.to(x.device)]
            return torch.autograd.grad(picked.sum(), xg)[0]

    def __call__(self, x, t, cond=None):
        x0_hat = self.inner(x, t, cond)
        if self.scale == 0:
            return x0_hat
        t64 = torch.as_tensor(t, dtype=torch.float64, device=x.device)
        a, s = self.schedule.alpha(t64), self.schedule.sigma(t64)
        shift = torch.where(a > 0, s**2 / torch.where(a > 0, a, torch.ones_like(a)), torch.zeros_like(a))
        return x0_hat + _bcast(shift, x) * self.scale * self.log_prob_grad(x, t)  # (sigma^2 / alpha) s grad log p(y|x_t)


def classifier_guidance(denoiser: Denoiser, classifier, scale: float, labels) -> Denoiser:
    """A denoiser guided toward `labels` by a noise-aware classifier (see ClassifierGuidance)."""
    return ClassifierGuidance(denoiser, classifier, scale, labels)
