"""Guidance wraps a denoiser and returns a denoiser, so every sampler gets it for free."""
from __future__ import annotations

import math

import torch

from imgen.denoiser import Denoiser, _bcast
from imgen.errors import ImgenError
from imgen.images import adapt_images
from imgen.nn.clip import MAX_LOGIT_SCALE


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
        self.inner, self.scale, self.uncond, self.schedule = denoiser, float(scale), uncond, denoiser.schedule

    def __call__(self, x, t, cond=None):
        t2 = torch.cat([t, t]) if torch.is_tensor(t) and t.ndim else t  # per-sample times (B,) follow the batch
        both = self.inner(torch.cat([x, x]), t2, _stack(cond, self.uncond))
        x0_c, x0_u = both.chunk(2)
        return x0_u + self.scale * (x0_c - x0_u)


def classifier_free(denoiser: Denoiser, scale: float, cond: dict, batch: int, negative: dict | None = None):
    """Guided denoiser, or the denoiser itself when scale == 1 (no extra evaluations)."""
    if not scale >= 0:
        raise ImgenError(f"guidance scale (cfg) must be >= 0 (1 = no guidance), got {scale}")
    if scale == 1.0:
        return denoiser
    return ClassifierFree(denoiser, scale, negative if negative is not None else null_condition(cond, batch))


class GradientGuidance(Denoiser):
    """Guidance by the gradient of a differentiable log-likelihood log p(y | x_t) (Dhariwal & Nichol 2021, sec. 4.2:
    eps_hat - sqrt(1 - abar) s grad log p(y | x_t)) on any schedule: guiding the score by s grad_x log p(y | x_t)
    shifts Tweedie's estimate x0_hat = (x_t + sigma^2 score) / alpha by (sigma^2 / alpha) s grad_x log p(y | x_t).
    Where alpha = 0 (rectified flow at t = 1) x_t holds no information about y, so no shift is applied.
    Subclasses give `guided(x, t, cond) -> (x0_hat, grad_x log p(y | x_t))`."""

    def __init__(self, denoiser: Denoiser, scale: float, what: str):
        if not scale >= 0:
            raise ImgenError(f"{what} scale must be >= 0 (0 = none), got {scale}")
        self.inner, self.scale, self.schedule = denoiser, float(scale), denoiser.schedule

    def guided(self, x, t, cond):
        raise NotImplementedError

    def __call__(self, x, t, cond=None):
        if self.scale == 0:
            return self.inner(x, t, cond)
        x0_hat, grad = self.guided(x, t, cond)
        t64 = torch.as_tensor(t, dtype=torch.float64, device=x.device)
        a, s = self.schedule.alpha(t64), self.schedule.sigma(t64)
        shift = torch.where(a > 0, s**2 / torch.where(a > 0, a, torch.ones_like(a)), torch.zeros_like(a))
        return x0_hat + _bcast(shift, x) * self.scale * grad  # (sigma^2 / alpha) s grad log p(y | x_t)


def _t_batch(t, x):
    t = torch.as_tensor(t, dtype=torch.float64, device=x.device)
    return (t.expand(len(x)) if t.ndim == 0 else t).to(x.dtype)


class ClassifierGuidance(GradientGuidance):
    """Classifier guidance with a noise-aware classifier: `classifier(x_t, t)` returns logits (B, K) for (B,)
    times; `labels` (B,) are the requested classes. With the exact p(y | x_t) and s = 1 this is exactly
    E[x0 | x_t, y]."""

    def __init__(self, denoiser: Denoiser, classifier, scale: float, labels):
        super().__init__(denoiser, scale, "classifier guidance (1 = exact conditional)")
        labels = torch.as_tensor(labels)
        if labels.ndim != 1 or labels.dtype not in (torch.int64, torch.int32):
            raise ImgenError(f"labels must be an integer tensor of shape (B,), got {labels.dtype} {tuple(labels.shape)}; "
                             "pass torch.full((n,), label) for one class")
        self.classifier, self.labels = classifier, labels.long()

    def log_prob_grad(self, x: torch.Tensor, t) -> torch.Tensor:
        """grad_x log p(y | x_t) for the requested labels (B, ...)."""
        if len(x) != len(self.labels):
            raise ImgenError(f"got {len(self.labels)} guidance labels for a batch of {len(x)}; give one label per sample")
        with torch.enable_grad():  # samplers run under no_grad
            xg = x.detach().requires_grad_(True)
            log_p = torch.log_softmax(self.classifier(xg, _t_batch(t, x)), dim=1)
            picked = log_p[torch.arange(len(x), device=x.device), self.labels.to(x.device)]
            return torch.autograd.grad(picked.sum(), xg)[0]

    def guided(self, x, t, cond):
        return self.inner(x, t, cond), self.log_prob_grad(x, t)


class CLIPGuidance(GradientGuidance):
    """CLIP guidance without a noised CLIP: log p(y | x_t) ~ cos(E_I(x0_hat(x_t)), E_T(y)) / temperature, the
    CLIP similarity of the denoiser's clean estimate to the prompt, differentiated through the denoiser
    ("forward universal guidance", Bansal et al. 2023, eq. 6; GLIDE, Nichol et al. 2022, sec. 2.4 uses a CLIP
    trained on noised images instead). `clip` has encode_image / encode_text (imgen.methods.clip.CLIP);
    `decode` maps x0_hat to images (a latent model's decoder) before CLIP sees them, resized to its input."""

    def __init__(self, denoiser: Denoiser, clip, prompts, scale: float, decode=None):
        super().__init__(denoiser, scale, "CLIP guidance")
        from imgen.nn.text import check_prompts

        self.clip, self.decode = clip, decode
        with torch.no_grad():
            self.text = clip.encode_text(check_prompts(prompts)).detach()  # (B, E), L2-normalised
        self.temperature = float(torch.exp(-clip.logit_scale.detach().clamp(max=math.log(MAX_LOGIT_SCALE))))

    def similarity(self, x0: torch.Tensor) -> torch.Tensor:
        """cos(E_I(image), E_T(prompt)) per sample (B,)."""
        images = self.decode(x0) if self.decode is not None else x0
        enc = self.clip.image_encoder
        return (self.clip.encode_image(adapt_images(images, enc.in_channels, enc.image_size)) * self.text).sum(-1)

    def guided(self, x, t, cond):
        if len(x) != len(self.text):
            raise ImgenError(f"got {len(self.text)} CLIP guidance prompts for a batch of {len(x)}; give one per sample")
        with torch.enable_grad():
            xg = x.detach().requires_grad_(True)
            x0_hat = self.inner(xg, t, cond)
            log_p = self.similarity(x0_hat) / self.temperature
            return x0_hat.detach(), torch.autograd.grad(log_p.sum(), xg)[0]


def clip_guidance(denoiser: Denoiser, clip, prompts, scale: float, decode=None) -> Denoiser:
    """A denoiser guided toward `prompts` (one per sample) by a CLIP model (see CLIPGuidance)."""
    return CLIPGuidance(denoiser, clip, prompts, scale, decode)


def classifier_guidance(denoiser: Denoiser, classifier, scale: float, labels) -> Denoiser:
    """A denoiser guided toward `labels` by a noise-aware classifier (see ClassifierGuidance)."""
    return ClassifierGuidance(denoiser, classifier, scale, labels)
