"""The one interface every sampler sees: x0_hat = denoiser(x_t, t, cond), plus the schedule's alpha(t), sigma(t).

A network's raw output (eps, x0, v or flow velocity) is converted here, once, into x0_hat; the
inverse conversions give training targets. Guidance wraps a denoiser and returns a denoiser.
"""
from __future__ import annotations

from typing import Callable, NamedTuple

import torch

from imgen.errors import ImgenError
from imgen.schedules import Schedule

PREDICTIONS = ("eps", "x0", "v", "velocity", "score")


def _bcast(a: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """(B,) or scalar coefficients -> broadcastable against x (B, ...), in x's dtype."""
    a = torch.as_tensor(a, device=x.device).to(x.dtype)
    return a.reshape(a.shape + (1,) * (x.ndim - a.ndim)) if a.ndim else a


def target(prediction: str, schedule: Schedule, x0, eps, t) -> torch.Tensor:
    """What a network with this parameterization regresses onto at (x0, eps, t)."""
    a, s = _bcast(schedule.alpha(t), x0), _bcast(schedule.sigma(t), x0)
    if prediction == "eps":
        return eps  # DDPM eq. 14
    if prediction == "x0":
        return x0
    if prediction == "v":
        return a * eps - s * x0  # Salimans & Ho 2022, sec. 4 (v-prediction)
    if prediction == "velocity":
        da, ds = schedule.derivatives(t)
        return _bcast(da, x0) * x0 + _bcast(ds, x0) * eps  # flow matching: d/dt (alpha x0 + sigma eps)
    if prediction == "score":
        return -eps / s  # grad_x log q(x_t | x0) = -(x_t - alpha x0) / sigma^2 (Song & Ermon 2019, eq. 5; Vincent 2011)
    raise ImgenError(f"unknown prediction {prediction!r}; valid: {', '.join(PREDICTIONS)}")


def to_x0(prediction: str, schedule: Schedule, out, x_t, t) -> torch.Tensor:
    """Invert `target`: the network output `out` at (x_t, t) -> x0_hat."""
    a, s = _bcast(schedule.alpha(t), x_t), _bcast(schedule.sigma(t), x_t)
    if prediction == "eps":
        return (x_t - s * out) / a
    if prediction == "x0":
        return out
    if prediction == "v":
        return (a * x_t - s * out) / (a**2 + s**2)  # = a x_t - s v on a variance-preserving path, exact on any path
    if prediction == "velocity":
        da, ds = schedule.derivatives(t)
        da, ds = _bcast(da, x_t), _bcast(ds, x_t)
        return (ds * x_t - s * out) / (ds * a - s * da)  # rectified flow: x_t - t v
    if prediction == "score":
        return (x_t + s**2 * out) / a  # Tweedie's formula: E[x0 | x_t] = (x_t + sigma^2 grad log p(x_t)) / alpha
    raise ImgenError(f"unknown prediction {prediction!r}; valid: {', '.join(PREDICTIONS)}")


class Denoiser:
    """Base: a callable x0_hat = D(x, t, cond) that carries its `schedule`. `t` is a float tensor (B,) or scalar."""

    schedule: Schedule

    def __call__(self, x: torch.Tensor, t: torch.Tensor, cond: dict | None = None) -> torch.Tensor:
        raise NotImplementedError

    def eps(self, x, t, x0_hat):
        """eps_hat implied by x0_hat: (x_t - alpha x0_hat) / sigma."""
        return (x - _bcast(self.schedule.alpha(t), x) * x0_hat) / _bcast(self.schedule.sigma(t), x)

    def score(self, x, t, x0_hat):
        """grad_x log p_t(x) implied by x0_hat (Tweedie's formula): (alpha x0_hat - x) / sigma^2. So every
        denoiser, whatever it was trained to predict, gives the score that Langevin dynamics needs."""
        return (_bcast(self.schedule.alpha(t), x) * x0_hat - x) / _bcast(self.schedule.sigma(t), x) ** 2


class NetDenoiser(Denoiser):
    """A network trained with a given parameterization, seen as a denoiser."""

    def __init__(self, net: Callable, schedule: Schedule, prediction: str):
        if prediction not in PREDICTIONS:
            raise ImgenError(f"unknown prediction {prediction!r}; valid: {', '.join(PREDICTIONS)}")
        self.net, self.schedule, self.prediction = net, schedule, prediction

    def __call__(self, x, t, cond=None):
        t = torch.as_tensor(t, dtype=torch.float64, device=x.device)
        t_batch = t.expand(x.shape[0]) if t.ndim == 0 else t
        out = self.net(x, t_batch.to(x.dtype), cond)
        return to_x0(self.prediction, self.schedule, out, x, t_batch)


class FunctionDenoiser(Denoiser):
    """Wrap a plain function f(x, t, cond) -> x0_hat (an analytic denoiser, a guided one...)."""

    def __init__(self, fn: Callable, schedule: Schedule):
        self.fn, self.schedule = fn, schedule

    def __call__(self, x, t, cond=None):
        return self.fn(x, t, cond)


class EDMPreconditioning(NamedTuple):
    c_skip: torch.Tensor
    c_out: torch.Tensor
    c_in: torch.Tensor
    c_noise: torch.Tensor
    weight: torch.Tensor  # the loss weight lambda(sigma)


def edm_preconditioning(sigma, sigma_data: float = 0.5) -> EDMPreconditioning:
    """Karras et al. 2022, Table 1, column "Ours (EDM)", at noise level sigma of a VE variable."""
    sigma = torch.as_tensor(sigma, dtype=torch.float64)
    sd2 = sigma_data**2
    return EDMPreconditioning(
        c_skip=sd2 / (sigma**2 + sd2),  # Table 1, skip scaling c_skip(sigma)
        c_out=sigma * sigma_data / torch.sqrt(sigma**2 + sd2),  # Table 1, output scaling c_out(sigma)
        c_in=1 / torch.sqrt(sigma**2 + sd2),  # Table 1, input scaling c_in(sigma)
        c_noise=torch.log(sigma) / 4,  # Table 1, noise conditioning c_noise(sigma) = ln(sigma) / 4
        weight=(sigma**2 + sd2) / (sigma * sigma_data) ** 2,  # Table 1, loss weighting lambda(sigma) = 1 / c_out^2
    )


class EDMDenoiser(Denoiser):
    """A raw net F wrapped in EDM preconditioning (Karras et al. 2022, eq. 7):
        D(x; sigma) = c_skip(sigma) x + c_out(sigma) F(c_in(sigma) x; c_noise(sigma)).
    EDM's x lives on a VE path; on any schedule it is x_t / alpha at sigma = sigma(t) / alpha(t) (eq. 4), so
    an EDM-trained net is one more denoiser. The net receives c_noise = ln(sigma)/4 as its time input."""

    def __init__(self, net: Callable, schedule: Schedule, sigma_data: float = 0.5):
        if not sigma_data > 0:
            raise ImgenError(f"sigma_data must be > 0 (the data's std; EDM uses 0.5 for images in [-1, 1]), got {sigma_data}")
        self.net, self.schedule, self.sigma_data = net, schedule, float(sigma_data)

    def denoise(self, x: torch.Tensor, sigma, cond: dict | None = None) -> torch.Tensor:
        """D(x; sigma) in EDM's own variables: x = y + n, n ~ N(0, sigma^2 I); sigma scalar or (B,)."""
        sigma = torch.as_tensor(sigma, dtype=torch.float64, device=x.device)
        sigma = sigma.expand(x.shape[0]) if sigma.ndim == 0 else sigma
        c = edm_preconditioning(sigma, self.sigma_data)
        out = self.net(_bcast(c.c_in, x) * x, c.c_noise.to(x.dtype), cond)
        return _bcast(c.c_skip, x) * x + _bcast(c.c_out, x) * out  # eq. 7

    def __call__(self, x, t, cond=None):
        t = torch.as_tensor(t, dtype=torch.float64, device=x.device)
        a = _bcast(self.schedule.alpha(t), x)
        return self.denoise(x / a, self.schedule.edm_sigma(t), cond)


class ClippedDenoiser(Denoiser):
    """x0_hat clipped to the data range, e.g. [-1, 1] for images (DDPM's `clip_denoised`, diffusers' `clip_sample`).
    It keeps an eps-model's early steps sane, where x0_hat = (x - sigma eps_hat) / alpha with alpha near 0."""

    def __init__(self, inner: Denoiser, lo: float = -1.0, hi: float = 1.0):
        self.inner, self.lo, self.hi, self.schedule = inner, lo, hi, inner.schedule

    def __call__(self, x, t, cond=None):
        return self.inner(x, t, cond).clamp(self.lo, self.hi)
