"""The one interface every sampler sees: x0_hat = denoiser(x_t, t, cond), plus the schedule's alpha(t), sigma(t).

A network's raw output (eps, x0, v or flow velocity) is converted here, once, into x0_hat; the
inverse conversions give training targets. Guidance wraps a denoiser and returns a denoiser.
"""
from __future__ import annotations

from typing import Callable

import torch

from imgen.errors import ImgenError
from imgen.schedules import Schedule

PREDICTIONS = ("eps", "x0", "v", "velocity")


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
    raise ImgenError(f"unknown prediction {prediction!r}; valid: {', '.join(PREDICTIONS)}")


class Denoiser:
    """Base: a callable x0_hat = D(x, t, cond) that carries its `schedule`. `t` is a float tensor (B,) or scalar."""

    schedule: Schedule

    def __call__(self, x: torch.Tensor, t: torch.Tensor, cond: dict | None = None) -> torch.Tensor:
        raise NotImplementedError

    def eps(self, x, t, x0_hat):
        """eps_hat implied by x0_hat: (x_t - alpha x0_hat) / sigma."""
        return (x - _bcast(self.schedule.alpha(t), x) * x0_hat) / _bcast(self.schedule.sigma(t), x)


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
