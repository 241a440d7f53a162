"""Samplers: one function each, one signature, all on the denoiser interface (imgen.denoiser).

    sample_NAME(denoiser, x, ts, cond=None, *, generator=None, callback=None, progress=False, **options) -> x0

`x` is the starting noise at time ts[0], `ts` a decreasing float64 grid ending at 0 (see
`imgen.schedules.time_grid`). Any trained diffusion or flow model runs with any sampler here.
`callback(info)` receives dict(i, t, x, x0_hat) after every step (for trajectory plots).
"""
from __future__ import annotations

import torch
from tqdm.auto import tqdm

from imgen.errors import ImgenError


def _coeffs(schedule, t):
    t = torch.as_tensor(t, dtype=torch.float64)
    return schedule.alpha(t).item(), schedule.sigma(t).item()


def _steps(ts, progress, desc):
    return tqdm(range(len(ts) - 1), desc=desc, disable=not progress, leave=False)


def _noise(x, generator):
    return torch.randn(x.shape, generator=generator, dtype=x.dtype, device=x.device)


@torch.no_grad()
def sample_ddim(denoiser, x, ts, cond=None, *, eta=0.0, generator=None, callback=None, progress=False):
    """DDIM (Song et al. 2021), eq. 12 with sigma_t(eta) of eq. 16, written for any path alpha(t), sigma(t).
    eta=0 is the deterministic DDIM; eta=1 is DDPM's ancestral sampler."""
    if not 0.0 <= eta <= 1.0:
        raise ImgenError(f"eta must be in [0, 1], got {eta}")
    sched = denoiser.schedule
    for i in _steps(ts, progress, "ddim" if eta == 0 else f"ddim(eta={eta})"):
        t, s = ts[i], ts[i + 1]
        a_t, s_t = _coeffs(sched, t)
        a_s, s_s = _coeffs(sched, s)
        x0_hat = denoiser(x, t, cond)
        eps_hat = (x - a_t * x0_hat) / s_t
        # eq. 16: c = eta * sqrt(posterior variance of q(x_s | x_t, x0)), posterior var = s_s^2 (1 - (a_t s_s / (a_s s_t))^2)
        c = eta * s_s * max(0.0, 1 - (a_t * s_s / (a_s * s_t)) ** 2) ** 0.5 if s_s > 0 else 0.0
        x = a_s * x0_hat + max(s_s**2 - c**2, 0.0) ** 0.5 * eps_hat  # eq. 12
        if c > 0:
            x = x + c * _noise(x, generator)
        if callback is not None:
            callback({"i": i, "t": s, "x": x, "x0_hat": x0_hat})
    return x


def sample_ddpm(denoiser, x, ts, cond=None, *, generator=None, callback=None, progress=False):
    """DDPM ancestral sampling (Ho et al. 2020, Algorithm 2): draw x_s ~ q(x_s | x_t, x0_hat) each step.
    Identical to DDIM with eta=1 (Song et al. 2021, sec. 4.1), so it is that one implementation."""
    return sample_ddim(denoiser, x, ts, cond, eta=1.0, generator=generator, callback=callback, progress=progress)


@torch.no_grad()
def sample_euler(denoiser, x, ts, cond=None, *, generator=None, callback=None, progress=False):
    """Euler's method on the probability-flow ODE in the model's own time t:
    dx/dt = alpha'(t) x0_hat + sigma'(t) eps_hat. For rectified flow this is the usual
    x <- x + (s - t) v (Liu et al. 2023, eq. 1)."""
    sched = denoiser.schedule
    for i in _steps(ts, progress, "euler"):
        t, s = ts[i], ts[i + 1]
        a_t, s_t = _coeffs(sched, t)
        da, ds = (d.item() for d in sched.derivatives(torch.as_tensor(t, dtype=torch.float64)))
        x0_hat = denoiser(x, t, cond)
        eps_hat = (x - a_t * x0_hat) / s_t
        x = x + (s - t) * (da * x0_hat + ds * eps_hat)
        if callback is not None:
            callback({"i": i, "t": s, "x": x, "x0_hat": x0_hat})
    return x


@torch.no_grad()
def ddim_invert(denoiser, x0, ts, cond=None, *, fixed_point_iters=4, callback=None, progress=False):
    """DDIM inversion (Song et al. 2021, sec. 4.3; Dhariwal & Nichol 2021, eq. 13): run the eta=0 update of
    eq. 12 forward in time along `ts` (given either way round; run from 0 up), mapping an image to the noise
    that `sample_ddim(eta=0)` on the reversed grid decodes back to it. eps is taken at the current point; at
    t = 0, where it is undefined, at the next time.

    Classic inversion evaluates eps at the start of each step, so decoding only approximately undoes it
    (error O(step)). With `fixed_point_iters` > 0 each step instead solves the implicit equation
    "the DDIM decode step from the new point lands on the old one" by fixed-point iteration (Pan et al. 2023,
    AIDI, eq. 8), which makes decode(invert(x)) exact up to the iteration's residual."""
    ts = torch.as_tensor(ts, dtype=torch.float64)
    ts = ts.flip(0) if ts[0] > ts[-1] else ts
    sched, x = denoiser.schedule, x0
    for i in _steps(ts, progress, "ddim-invert"):
        t, s = ts[i], ts[i + 1]
        a_t, s_t = _coeffs(sched, t)
        a_s, s_s = _coeffs(sched, s)
        t_eval = t if s_t > 0 else s
        eps_hat = denoiser.eps(x, t_eval, denoiser(x, t_eval, cond))
        x0_hat = (x - s_t * eps_hat) / a_t  # eq. 12's predicted x0, written with eps_hat
        x_new = a_s * x0_hat + s_s * eps_hat
        for _ in range(fixed_point_iters):
            eps_hat = denoiser.eps(x_new, s, denoiser(x_new, s, cond))  # eps where the decoder will evaluate it
            x0_hat = (x - s_t * eps_hat) / a_t
            x_new = a_s * x0_hat + s_s * eps_hat
        x = x_new
        if callback is not None:
            callback({"i": i, "t": s, "x": x, "x0_hat": x0_hat})
    return x


SAMPLERS = {"ddpm": sample_ddpm, "ddim": sample_ddim, "euler": sample_euler}
STOCHASTIC = {"ddpm"}


def get_sampler(name: str):
    if name not in SAMPLERS:
        raise ImgenError(f"unknown sampler {name!r}; valid samplers: {', '.join(sorted(SAMPLERS))}")
    return SAMPLERS[name]
