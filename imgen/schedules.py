"""Noise schedules in continuous time t in [0, 1]: x_t = alpha(t) * x0 + sigma(t) * eps.

Every diffusion-like method is one of these paths plus a network parameterization; samplers only
ever see alpha(t) and sigma(t) (and their derivatives), so any sampler runs any method.
"""
from __future__ import annotations

import math

import torch

from imgen.errors import ImgenError, check_int, build


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

    def edm_sigma(self, t: torch.Tensor) -> torch.Tensor:
        """sigma(t) / alpha(t): the noise level of the scaled variable x / alpha, which is a VE path
        (Karras et al. 2022, eq. 4 with s(t) = alpha(t)). Samplers written for VE run on any schedule in it."""
        t = torch.as_tensor(t, dtype=torch.float64)
        return self.sigma(t) / self.alpha(t)

    def t_from_edm_sigma(self, sigma) -> torch.Tensor:
        """Inverse of `edm_sigma` on [0, t_max] by bisection (edm_sigma is nondecreasing on every path), so a
        new schedule needs no inverse of its own. Values beyond the schedule's range clamp to its ends."""
        target = torch.as_tensor(sigma, dtype=torch.float64)
        lo, hi = torch.zeros_like(target), torch.full_like(target, self.t_max)
        for _ in range(64):  # 2^-64 of the interval: below float64 resolution
            mid = 0.5 * (lo + hi)
            below = self.edm_sigma(mid) < target
            lo, hi = torch.where(below, mid, lo), torch.where(below, hi, mid)
        return torch.where(target <= 0, torch.zeros_like(hi), hi)

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


class ShiftedCosine(Schedule):
    """The cosine path written in log-SNR, shifted (Hoogeboom et al. 2023, "simple diffusion", sec. 3.1):
    logSNR(t) = -2 log tan(pi t / 2) + 2 log(shift), alpha^2 = sigmoid(logSNR), sigma^2 = sigmoid(-logSNR).
    shift = 64 / resolution makes a high-resolution image as noisy at time t as a 64x64 one (shift < 1 = noisier);
    shift = 1 is the cosine of Nichol & Dhariwal with s = 0. logSNR(1) is floored at `logsnr_min` so x0 stays
    recoverable at t = 1 (before the shift, as in their code); t = 0 is exact data (logSNR = +inf)."""

    name = "shifted_cosine"

    def __init__(self, shift: float = 1.0, logsnr_min: float = -15.0):
        if not shift > 0:
            raise ImgenError(f"shifted_cosine: shift must be > 0 (64 / image resolution), got {shift}")
        self.shift, self.logsnr_min = float(shift), float(logsnr_min)
        self._u_max = math.atan(math.exp(-0.5 * logsnr_min))  # the unshifted cosine reaches logsnr_min at t = 1

    def logsnr(self, t):
        u = torch.as_tensor(t, dtype=torch.float64) * self._u_max  # t in [0, 1] -> angle in [0, u_max] (~ pi t / 2)
        return -2 * torch.log(torch.tan(u)) + 2 * math.log(self.shift)  # simple diffusion, sec. 3.1

    def alpha(self, t):
        return torch.sqrt(torch.sigmoid(self.logsnr(t)))

    def sigma(self, t):
        return torch.sqrt(torch.sigmoid(-self.logsnr(t)))

    def config(self):
        return {"name": self.name, "shift": self.shift, "logsnr_min": self.logsnr_min}


class VE(Schedule):
    """Variance exploding path (Song et al. 2021, eq. 31, the continuous NCSN): alpha = 1 and
    sigma(t) = sigma_min (sigma_max / sigma_min)^t, geometric from sigma_min (t -> 0+) to sigma_max (t = 1).
    t = 0 itself is clean data (sigma = 0), the point every sampler ends at, as in EDM's final step to sigma = 0.
    Start sampling from x = sigma_max * N(0, I) (see `prior_std`)."""

    name = "ve"

    def __init__(self, sigma_min: float = 0.01, sigma_max: float = 50.0):
        if not 0 < sigma_min < sigma_max:
            raise ImgenError(f"ve: need 0 < sigma_min < sigma_max, got sigma_min={sigma_min}, sigma_max={sigma_max}")
        self.sigma_min, self.sigma_max = float(sigma_min), float(sigma_max)

    def alpha(self, t):
        return torch.ones_like(torch.as_tensor(t, dtype=torch.float64))

    def sigma(self, t):
        t = torch.as_tensor(t, dtype=torch.float64)
        geometric = self.sigma_min * (self.sigma_max / self.sigma_min) ** t  # Song et al. 2021, eq. 31
        return torch.where(t > 0, geometric, torch.zeros_like(geometric))

    def derivatives(self, t):
        t = torch.as_tensor(t, dtype=torch.float64)
        return torch.zeros_like(t), self.sigma(t) * math.log(self.sigma_max / self.sigma_min)

    def config(self):
        return {"name": self.name, "sigma_min": self.sigma_min, "sigma_max": self.sigma_max}


SCHEDULES = {"linear": VPLinear, "cosine": VPCosine, "rectified_flow": RectifiedFlow, "shifted_cosine": ShiftedCosine,
             "ve": VE}


def build_schedule(name: str, **kwargs) -> Schedule:
    return build(SCHEDULES, "schedule", name, **kwargs)


def prior_std(schedule: Schedule, t) -> float:
    """Std of x_t for unit-variance data, sqrt(alpha^2 + sigma^2): the scale of the starting noise at time t
    (1 on VP paths, as DDPM's N(0, I); about sigma_max on VE, as NCSN/EDM's sigma_max * N(0, I))."""
    t = torch.as_tensor(t, dtype=torch.float64)
    return float(torch.sqrt(schedule.alpha(t) ** 2 + schedule.sigma(t) ** 2))


def time_grid(steps: int, t_max: float = 1.0, t_min: float = 0.0) -> torch.Tensor:
    """steps + 1 decreasing times from t_max to t_min, uniform in t (float64)."""
    _check_steps(steps)
    return torch.linspace(t_max, t_min, steps + 1, dtype=torch.float64)


def _check_steps(steps) -> None:
    check_int(steps, "steps", hint="; use e.g. --steps 25")


def _sigma_range(schedule: Schedule, sigma_min, sigma_max) -> tuple[float, float]:
    """Defaults of EDM Table 1: sigma_min = sigma(eps_s) with eps_s = 1e-3; sigma_max = sigma(1), or 80
    (EDM's own value) where the path's sigma/alpha is infinite at t = 1 (rectified flow)."""
    if sigma_min is None:
        sigma_min = float(schedule.edm_sigma(1e-3))
    if sigma_max is None:
        sigma_max = float(schedule.edm_sigma(schedule.t_max))
        sigma_max = sigma_max if math.isfinite(sigma_max) else 80.0
    if not 0 < sigma_min < sigma_max:
        raise ImgenError(f"need 0 < sigma_min < sigma_max, got sigma_min={sigma_min}, sigma_max={sigma_max}")
    return float(sigma_min), float(sigma_max)


def _times_for(schedule: Schedule, sigmas: torch.Tensor) -> torch.Tensor:
    """t for each positive noise level (of x / alpha), then the final t = 0; checks the schedule reaches them."""
    ts = schedule.t_from_edm_sigma(sigmas)
    got = schedule.edm_sigma(ts)
    if not torch.allclose(got, sigmas, rtol=1e-6) or bool((ts <= 0).any()):
        lo, hi = float(schedule.edm_sigma(1e-9)), float(schedule.edm_sigma(schedule.t_max))
        raise ImgenError(f"noise levels {sigmas.min().item():.4g}..{sigmas.max().item():.4g} are outside what schedule "
                         f"{schedule.name!r} reaches (sigma/alpha in ({lo:.4g}, {hi:.4g}]); pass sigma_min/sigma_max inside it")
    return torch.cat([ts, ts.new_zeros(1)])


def karras_grid(schedule: Schedule, steps: int, sigma_min: float | None = None, sigma_max: float | None = None,
                rho: float = 7.0) -> torch.Tensor:
    """steps + 1 decreasing times whose noise levels sigma/alpha follow EDM's spacing (Karras et al. 2022,
    eq. 5): sigma_i = (sigma_max^(1/rho) + i/(steps-1) (sigma_min^(1/rho) - sigma_max^(1/rho)))^rho, i < steps,
    then t = 0. rho = 1 is uniform in sigma; large rho crowds steps at low noise."""
    _check_steps(steps)
    if not rho > 0:
        raise ImgenError(f"rho must be > 0 (EDM uses 7), got {rho}")
    sigma_min, sigma_max = _sigma_range(schedule, sigma_min, sigma_max)
    ramp = torch.linspace(0, 1, steps, dtype=torch.float64) if steps > 1 else torch.zeros(1, dtype=torch.float64)
    inv_rho = 1.0 / rho
    sigmas = (sigma_max**inv_rho + ramp * (sigma_min**inv_rho - sigma_max**inv_rho)) ** rho  # EDM eq. 5
    return _times_for(schedule, sigmas)


def logsnr_grid(schedule: Schedule, steps: int, sigma_min: float | None = None,
                sigma_max: float | None = None) -> torch.Tensor:
    """steps + 1 decreasing times uniform in log-SNR lambda = -log(sigma/alpha) (DPM-Solver's "logSNR" time
    steps, Lu et al. 2022a, sec. 3.4) from sigma_max to sigma_min, then t = 0."""
    _check_steps(steps)
    sigma_min, sigma_max = _sigma_range(schedule, sigma_min, sigma_max)
    sigmas = torch.exp(torch.linspace(math.log(sigma_max), math.log(sigma_min), steps, dtype=torch.float64))
    return _times_for(schedule, sigmas)


GRIDS = ("uniform", "karras", "logsnr")


def make_grid(schedule: Schedule, steps: int, kind: str = "uniform", *, sigma_min: float | None = None,
              sigma_max: float | None = None, rho: float = 7.0, shift: float = 1.0) -> torch.Tensor:
    """The time grid a sampler walks, chosen by name: "uniform" in t (from the schedule's t_max), "karras"
    (EDM eq. 5) or "logsnr"; sigma_min/sigma_max are noise levels of x / alpha (karras and logsnr only).
    `shift` > 1 moves the grid's times toward the noisy end, u -> shift u / (1 + (shift - 1) u) with u = t / t_max
    (Esser et al. 2024, SD3, eq. 23; diffusers' `shift`): fewer steps spent near the data. 1 leaves it as it is."""
    if not shift > 0:
        raise ImgenError(f"grid shift must be > 0 (1 = no shift), got {shift}")
    ts = _named_grid(schedule, steps, kind, sigma_min, sigma_max, rho)
    if shift == 1:
        return ts
    u = ts / schedule.t_max
    return schedule.t_max * shift * u / (1 + (shift - 1) * u)


def _named_grid(schedule, steps, kind, sigma_min, sigma_max, rho) -> torch.Tensor:
    if kind == "uniform":
        if sigma_min is not None or sigma_max is not None:
            raise ImgenError("the uniform grid spans the whole schedule; sigma_min/sigma_max apply to kind='karras' or 'logsnr'")
        _check_steps(steps)
        return time_grid(steps, schedule.t_max, 0.0)
    if kind == "karras":
        return karras_grid(schedule, steps, sigma_min, sigma_max, rho)
    if kind == "logsnr":
        return logsnr_grid(schedule, steps, sigma_min, sigma_max)
    raise ImgenError(f"unknown grid {kind!r}; valid grids: {', '.join(GRIDS)}")
