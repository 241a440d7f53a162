"""Noise schedules in continuous time t in [0, 1]: x_t = alpha(t) * x0 + sigma(t) * eps.

Every diffusion-like method is one of these paths plus a network parameterization; samplers only
ever see alpha(t) and sigma(t) (and their derivatives), so any sampler runs any method.
"""
from __future__ import annotations

import math

import torch

from imgen.errors import ImgenError


class Schedule:
    """A Gaussian path x_t = alpha(t) x0 + sigma(t) eps with t=0 data and t=1 (near) pure noise."""

    name = "base"
    t_min = 0.0  # smallest time a sampler steps to before its final jump to t = 0
    t_max = 1.0

    def alpha(self, t: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def sigma(self, t: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def derivatives(self, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(d alpha/dt, d sigma/dt) by autodiff (alpha, sigma act elementwise), so a new schedule needs only
        alpha and sigma."""
        t = torch.as_tensor(t, dtype=torch.float64).detach().clone().requires_grad_(True)
        with torch.enable_grad():
            da, ds = (torch.autograd.grad(f(t).sum(), t)[0] for f in (self.alpha, self.sigma))
        return da, ds

    def config(self) -> dict:
        return {"name": self.name}


class VPLinear(Schedule):
    """DDPM's linear betas (1e-4 .. 0.02 over T=1000) as the continuous VP path of Song et al. 2021, eq. 33:
    alpha_bar(t) = exp(-beta_min t - (beta_max - beta_min) t^2 / 2)."""

    name = "linear"

    def __init__(self, beta_min: float = 0.1, beta_max: float = 20.0):
        self.beta_min, self.beta_max = beta_min, beta_max

    def log_alpha_bar(self, t):
        return -self.beta_min * t - 0.5 * (self.beta_max - self.beta_min) * t**2

    def alpha(self, t):
        return torch.exp(0.5 * self.log_alpha_bar(t))

    def sigma(self, t):
        return torch.sqrt(-torch.expm1(self.log_alpha_bar(t)))

    def config(self):
        return {"name": self.name, "beta_min": self.beta_min, "beta_max": self.beta_max}


class VPCosine(Schedule):
    """Cosine alpha_bar of Nichol & Dhariwal 2021, eq. 17: alpha_bar(t) = cos^2((t + s)/(1 + s) * pi/2) / f(0).
    alpha_bar is floored at `alpha_bar_min` (their beta clipping at 0.999) so x0 stays recoverable at t = 1."""

    name = "cosine"

    def __init__(self, s: float = 0.008, alpha_bar_min: float = 1e-5):
        self.s, self.alpha_bar_min = s, alpha_bar_min

    def alpha_bar(self, t):
        f = torch.cos((t + self.s) / (1 + self.s) * math.pi / 2) ** 2
        f0 = math.cos(self.s / (1 + self.s) * math.pi / 2) ** 2
        return (f / f0).clamp(self.alpha_bar_min, 1.0)

    def alpha(self, t):
        return torch.sqrt(self.alpha_bar(t))

    def sigma(self, t):
        return torch.sqrt(1 - self.alpha_bar(t))

    def config(self):
        return {"name": self.name, "s": self.s, "alpha_bar_min": self.alpha_bar_min}


class RectifiedFlow(Schedule):
    """The straight path of flow matching / rectified flow (Lipman et al. 2023; Liu et al. 2023):
    x_t = (1 - t) x0 + t eps, velocity v = eps - x0."""

    name = "rectified_flow"

    def alpha(self, t):
        return 1 - t

    def sigma(self, t):
        return t

    def derivatives(self, t):
        t = torch.as_tensor(t, dtype=torch.float64)
        return -torch.ones_like(t), torch.ones_like(t)


SCHEDULES = {"linear": VPLinear, "cosine": VPCosine, "rectified_flow": RectifiedFlow}


def build_schedule(name: str, **kwargs) -> Schedule:
    if name not in SCHEDULES:
        raise ImgenError(f"unknown schedule {name!r}; valid schedules: {', '.join(sorted(SCHEDULES))}")
    try:
        return SCHEDULES[name](**kwargs)
    except TypeError as e:
        raise ImgenError(f"bad options for schedule {name!r}: {e}") from None


def time_grid(steps: int, t_max: float = 1.0, t_min: float = 0.0) -> torch.Tensor:
    """steps + 1 decreasing times from t_max to t_min, uniform in t (float64)."""
    if steps < 1:
        raise ImgenError(f"steps must be >= 1, got {steps}; use e.g. --steps 25")
    return torch.linspace(t_max, t_min, steps + 1, dtype=torch.float64)
