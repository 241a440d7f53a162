"""Samplers: one function each, one signature, all on the denoiser interface (imgen.denoiser).

    sample_NAME(denoiser, x, ts, cond=None, *, generator=None, callback=None, progress=False, **options) -> x0

`x` is the starting noise at time ts[0] (`initial_noise` draws it at the right scale), `ts` a decreasing
float64 grid ending at 0 (see `imgen.schedules.make_grid`: uniform, karras, logsnr). Any trained diffusion or
flow model runs with any sampler here. `callback(info)` receives dict(i, t, x, x0_hat) after every step; a
tensor it returns replaces x (a per-step projection x <- project(x, t), e.g. inpainting's paste of the known region).

Samplers whose papers assume a VE path (EDM, DPM-Solver++, annealed Langevin) run on any schedule in the
scaled variables x / alpha at noise level sigma / alpha (Karras et al. 2022, eq. 4), which is a VE path.
"""
from __future__ import annotations

import math

import torch
from tqdm.auto import tqdm

from imgen.errors import ImgenError, check_int


def _coeffs(schedule, t):
    t = torch.as_tensor(t, dtype=torch.float64)
    return schedule.alpha(t).item(), schedule.sigma(t).item()


def _steps(ts, progress, desc):
    return tqdm(range(len(ts) - 1), desc=desc, disable=not progress, leave=False)


def _noise(x, generator):
    return torch.randn(x.shape, generator=generator, dtype=x.dtype, device=x.device)


def _step_done(callback, i, t, x, x0_hat):
    """The one per-step hook of every sampler: report the step to `callback`; a tensor it returns becomes x."""
    if callback is None:
        return x
    out = callback({"i": i, "t": t, "x": x, "x0_hat": x0_hat})
    return out if isinstance(out, torch.Tensor) else x


def initial_noise(schedule, shape, ts, generator=None, dtype=torch.float32, device="cpu") -> torch.Tensor:
    """The starting x at ts[0]: N(0, I) * prior_std (1 on VP paths, ~sigma_max on VE)."""
    from imgen.schedules import prior_std

    t0 = torch.as_tensor(ts, dtype=torch.float64).reshape(-1)[0]
    return prior_std(schedule, t0) * torch.randn(shape, generator=generator, dtype=dtype, device=device)


def _check_grid(ts) -> torch.Tensor:
    ts = torch.as_tensor(ts, dtype=torch.float64)
    if ts.ndim != 1 or len(ts) < 2 or bool((ts[1:] >= ts[:-1]).any()) or bool((ts < 0).any()):
        raise ImgenError("ts must be a strictly decreasing 1-D grid of >= 2 times >= 0; build it with "
                         "imgen.schedules.make_grid(schedule, steps, kind)")
    return ts


@torch.no_grad()
def sample_ddim(denoiser, x, ts, cond=None, *, eta=0.0, generator=None, callback=None, progress=False):
    """DDIM (Song et al. 2021), eq. 12 with sigma_t(eta) of eq. 16, written for any path alpha(t), sigma(t).
    eta=0 is the deterministic DDIM; eta=1 is DDPM's ancestral sampler."""
    if not 0.0 <= eta <= 1.0:
        raise ImgenError(f"eta must be in [0, 1], got {eta}")
    ts, sched = _check_grid(ts), denoiser.schedule
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
        x = _step_done(callback, i, s, x, x0_hat)
    return x


def sample_ddpm(denoiser, x, ts, cond=None, *, generator=None, callback=None, progress=False):
    """DDPM ancestral sampling (Ho et al. 2020, Algorithm 2): draw x_s ~ q(x_s | x_t, x0_hat) each step.
    Identical to DDIM with eta=1 (Song et al. 2021, sec. 4.1), so it is that one implementation."""
    return sample_ddim(denoiser, x, ts, cond, eta=1.0, generator=generator, callback=callback, progress=progress)


def _velocity(denoiser, x, t, cond):
    """The probability-flow ODE in the model's own time t: dx/dt = alpha'(t) x0_hat + sigma'(t) eps_hat
    (the flow-matching velocity; eps - x0 on the rectified-flow path). Returns (velocity, x0_hat)."""
    a_t, s_t = _coeffs(denoiser.schedule, t)
    da, ds = (d.item() for d in denoiser.schedule.derivatives(torch.as_tensor(t, dtype=torch.float64)))
    x0_hat = denoiser(x, t, cond)
    return da * x0_hat + ds * (x - a_t * x0_hat) / s_t, x0_hat


@torch.no_grad()
def sample_euler(denoiser, x, ts, cond=None, *, generator=None, callback=None, progress=False):
    """Euler's method on the probability-flow ODE in the model's own time t (see `_velocity`).
    For rectified flow this is the usual x <- x + (s - t) v (Liu et al. 2023, eq. 1)."""
    ts = _check_grid(ts)
    for i in _steps(ts, progress, "euler"):
        t, s = ts[i], ts[i + 1]
        v, x0_hat = _velocity(denoiser, x, t, cond)
        x = x + (s - t) * v
        x = _step_done(callback, i, s, x, x0_hat)
    return x


@torch.no_grad()
def sample_midpoint(denoiser, x, ts, cond=None, *, generator=None, callback=None, progress=False):
    """The explicit midpoint rule (2nd-order Runge-Kutta) on the velocity ODE of `_velocity`, the RK2 solver
    of rectified flow (Liu et al. 2023, sec. 2.2 solve eq. 1 with any ODE solver): x_mid = x + h/2 v(x, t),
    x <- x + h v(x_mid, t + h/2). Two evaluations per step, none at t = 0."""
    ts = _check_grid(ts)
    for i in _steps(ts, progress, "midpoint"):
        t, s = ts[i].item(), ts[i + 1].item()
        h = s - t
        v, _ = _velocity(denoiser, x, t, cond)
        v_mid, x0_hat = _velocity(denoiser, x + 0.5 * h * v, t + 0.5 * h, cond)
        x = x + h * v_mid
        x = _step_done(callback, i, s, x, x0_hat)
    return x


@torch.no_grad()
def sample_edm(denoiser, x, ts, cond=None, *, s_churn=40.0, s_tmin=0.05, s_tmax=50.0, s_noise=1.0,
               generator=None, callback=None, progress=False):
    """EDM's stochastic sampler (Karras et al. 2022, Algorithm 2) in x / alpha at sigma = sigma(t) / alpha(t):
    at each step raise the noise from sigma_i to sigma_hat = (1 + gamma) sigma_i by adding fresh noise
    ("churn", gamma = min(s_churn / N, sqrt 2 - 1) where s_tmin <= sigma_i <= s_tmax), then one Heun step of
    the ODE dx/dsigma = (x - D(x; sigma)) / sigma = eps_hat from sigma_hat to sigma_{i+1}. s_churn = 0 is
    Algorithm 1 (`sample_heun`). Defaults: EDM Table 5 (ImageNet) with s_noise = 1, right for an exact denoiser.
    The correction is skipped at the final step to sigma = 0 (as in the paper) and on a step that starts at
    alpha = 0 (sigma = inf, rectified flow at t = 1), where the scaled ODE is singular: that step is Euler (DDIM)."""
    if not s_churn >= 0:
        raise ImgenError(f"s_churn must be >= 0 (0 = deterministic Heun; EDM uses 0..80), got {s_churn}")
    if not s_noise > 0:
        raise ImgenError(f"s_noise must be > 0 (EDM uses 1.0..1.007), got {s_noise}")
    if not 0 <= s_tmin <= s_tmax:
        raise ImgenError(f"need 0 <= s_tmin <= s_tmax (the noise range where churn applies), got {s_tmin}, {s_tmax}")
    ts, sched = _check_grid(ts), denoiser.schedule
    n = len(ts) - 1
    for i in _steps(ts, progress, "heun" if s_churn == 0 else "edm"):
        t, s = ts[i], ts[i + 1]
        a_t, s_t = _coeffs(sched, t)
        a_s, s_s = _coeffs(sched, s)
        sig, sig_next = (s_t / a_t if a_t > 0 else math.inf), s_s / a_s
        gamma = min(s_churn / n, 2**0.5 - 1) if s_tmin <= sig <= s_tmax and math.isfinite(sig) else 0.0  # Algorithm 2, line 4
        if gamma > 0:
            sig_hat = sig * (1 + gamma)  # line 5
            t = sched.t_from_edm_sigma(sig_hat)
            a_hat, s_hat = _coeffs(sched, t)
            sig_hat = s_hat / a_hat  # = (1 + gamma) sigma_i unless clamped at the schedule's end
            x = a_hat * (x / a_t + (sig_hat**2 - sig**2) ** 0.5 * s_noise * _noise(x, generator))  # line 6
            a_t, s_t, sig = a_hat, s_hat, sig_hat
        x0_hat = denoiser(x, t, cond)
        d = (x - a_t * x0_hat) / s_t  # line 7: d = (x - D) / sigma in x / alpha, i.e. eps_hat
        x_next = a_s * x0_hat + s_s * d  # line 8: Euler step, sigma_hat -> sigma_next (= DDIM)
        if s_s > 0 and math.isfinite(sig):  # lines 9-11: 2nd-order (trapezoidal) correction
            x0_next = denoiser(x_next, s, cond)
            d_next = (x_next - a_s * x0_next) / s_s
            x_next = a_s * (x0_hat + sig_next * d + 0.5 * (sig_next - sig) * (d_next - d))  # = x_hat + (sig_next - sig) (d + d') / 2
        x = x_next
        x = _step_done(callback, i, ts[i + 1], x, x0_hat)
    return x


def sample_heun(denoiser, x, ts, cond=None, *, generator=None, callback=None, progress=False):
    """Heun's 2nd-order deterministic sampler (Karras et al. 2022, Algorithm 1) in x / alpha, sigma / alpha:
    `sample_edm` with s_churn = 0. 2 N - 1 evaluations for N steps ending at t = 0."""
    return sample_edm(denoiser, x, ts, cond, s_churn=0.0, generator=generator, callback=callback, progress=progress)


def _half_log_snr(a: float, s: float) -> float:
    """lambda = log(alpha / sigma), +-inf at the ends of a path."""
    return math.inf if s == 0 else -math.inf if a == 0 else math.log(a) - math.log(s)


@torch.no_grad()
def sample_dpmpp_2m(denoiser, x, ts, cond=None, *, generator=None, callback=None, progress=False):
    """DPM-Solver++(2M) (Lu et al. 2022b, Algorithm 2): multistep 2nd order in lambda = log(alpha / sigma) with
    the data prediction x0_hat, one evaluation per step. First step and the final step to sigma = 0
    (lambda = inf) are first order, the last as in k-diffusion's implementation."""
    ts, sched = _check_grid(ts), denoiser.schedule
    x0_prev, h_prev = None, None
    for i in _steps(ts, progress, "dpm++2m"):
        t, s = ts[i], ts[i + 1]
        a_t, s_t = _coeffs(sched, t)
        a_s, s_s = _coeffs(sched, s)
        h = _half_log_snr(a_s, s_s) - _half_log_snr(a_t, s_t)  # h_i = lambda_{t_i} - lambda_{t_{i-1}}
        x0_hat = denoiser(x, t, cond)
        if x0_prev is None or not (h_prev > 0 and 0 < h < math.inf):
            d = x0_hat  # first-order step (DPM-Solver++ 1 = DDIM); also where a step does not move lambda
        else:
            r = h_prev / h  # r_i = h_{i-1} / h_i
            d = (1 + 1 / (2 * r)) * x0_hat - 1 / (2 * r) * x0_prev  # Algorithm 2, D_i
        x = (s_s / s_t) * x - a_s * math.expm1(-h) * d  # Algorithm 2: (sigma_i / sigma_{i-1}) x - alpha_i (e^{-h_i} - 1) D_i
        x0_prev, h_prev = x0_hat, h
        x = _step_done(callback, i, s, x, x0_hat)
    return x


@torch.no_grad()
def sample_langevin(denoiser, x, ts, cond=None, *, n_steps=100, eps=None, final_denoise=True, generator=None,
                    callback=None, progress=False):
    """Annealed Langevin dynamics (Song & Ermon 2019, Algorithm 1) at the noise levels of `ts`: at each level
    sigma_i = sigma(t_i) / alpha(t_i) > 0 take `n_steps` (T, 100 as in the paper) steps of size a_i = eps sigma_i^2 / sigma_L^2,
        x <- x + a_i / 2 * score(x; sigma_i) + sqrt(a_i) z,
    in x / alpha, where sigma_L is the smallest level. The score comes from any denoiser by Tweedie's formula,
    score = (alpha x0_hat - x) / sigma^2 (`Denoiser.score`), so this runs on every model, not only score nets.
    eps=None uses 0.2 sigma_L^2 (the paper's eps = 2e-5 at sigma_L = 0.01). If the grid ends at t = 0 and
    `final_denoise`, the result is x0_hat at the last level (one more evaluation; the noise-removal step of
    Jolicoeur-Martineau et al. 2021 / Song & Ermon 2020). NFE = n_steps * levels (+ 1)."""
    check_int(n_steps, "n_steps (Langevin steps per noise level)")
    if eps is not None and not eps > 0:
        raise ImgenError(f"eps (Langevin step size at the smallest level) must be > 0, got {eps}")
    ts, sched = _check_grid(ts), denoiser.schedule
    levels = [t for t in ts.tolist() if _coeffs(sched, t)[1] > 0]
    a0 = _coeffs(sched, ts[0])[0]
    if a0 == 0:
        raise ImgenError("annealed Langevin needs a finite noise level sigma/alpha at ts[0] (alpha(ts[0]) = 0 here); "
                         "start the grid below t = 1, e.g. make_grid(schedule, steps, kind='karras')")
    sig_l = _coeffs(sched, levels[-1])[1] / _coeffs(sched, levels[-1])[0]
    eps = 0.2 * sig_l**2 if eps is None else eps
    x_scaled = x / a0
    x0_hat = x
    for i in tqdm(range(len(levels)), desc="langevin", disable=not progress, leave=False):
        t = levels[i]
        a, s = _coeffs(sched, t)
        step = eps * (s / a) ** 2 / sig_l**2  # Algorithm 1: alpha_i = eps sigma_i^2 / sigma_L^2
        for _ in range(n_steps):
            x0_hat = denoiser(a * x_scaled, t, cond)
            score = (x0_hat - x_scaled) / (s / a) ** 2  # score of x / alpha at sigma / alpha
            x_scaled = x_scaled + 0.5 * step * score + step**0.5 * _noise(x, generator)  # Algorithm 1, line 6
        if callback is not None:
            x_t = a * x_scaled
            x_new = _step_done(callback, i, t, x_t, x0_hat)
            x_scaled = x_scaled if x_new is x_t else x_new / a
    a_end = _coeffs(sched, ts[-1])[0]
    if ts[-1] == 0 and final_denoise:
        a, _ = _coeffs(sched, levels[-1])
        return a_end * denoiser(a * x_scaled, levels[-1], cond)
    return a_end * x_scaled


@torch.no_grad()
def sample_tcd(denoiser, x, ts, cond=None, *, eta=0.3, generator=None, callback=None, progress=False):
    """Strategic stochastic sampling (Zheng et al. 2024, "Trajectory Consistency Distillation", eq. 15) for a
    consistency/LCM student's f: x0_hat = f(x, t_i); a deterministic DDIM step (eq. 12 of Song et al. 2021, eps from
    x0_hat) to u = (1 - eta) t_{i+1}; then the forward process from u back up to t_{i+1}, which adds fresh noise:
    x <- (alpha_s / alpha_u) x_u + sqrt(sigma_s^2 - (alpha_s sigma_u / alpha_u)^2) z. `eta` is TCD's gamma (diffusers'
    TCDScheduler names it eta): 1 re-noises x0_hat completely (multistep consistency sampling), 0 is deterministic
    DDIM with the student's x0. The step to t = 0 returns x0_hat. One evaluation per step: steps = NFE."""
    if not 0.0 <= eta <= 1.0:
        raise ImgenError(f"eta must be in [0, 1] (TCD's gamma; 1 = plain consistency sampling), got {eta}")
    ts, sched = _check_grid(ts), denoiser.schedule
    for i in _steps(ts, progress, "consistency" if eta == 1 else f"tcd(eta={eta})"):
        t, s = ts[i], ts[i + 1]
        a_s, s_s = _coeffs(sched, s)
        x0_hat = denoiser(x, t, cond)
        if s_s == 0:
            x = x0_hat
        elif eta == 1:  # u = 0: x_u = x0_hat, the re-noise of Song et al. 2023, Algorithm 1, line 5
            x = a_s * x0_hat + s_s * _noise(x, generator)
        else:
            a_t, s_t = _coeffs(sched, t)
            a_u, s_u = _coeffs(sched, (1 - eta) * s)
            x = a_u * x0_hat + s_u * (x - a_t * x0_hat) / s_t  # DDIM to u with the student's eps
            if eta > 0:
                r = a_s / a_u
                x = r * x + max(s_s**2 - (r * s_u) ** 2, 0.0) ** 0.5 * _noise(x, generator)  # q(x_s | x_u)
        x = _step_done(callback, i, s, x, x0_hat)
    return x


def sample_consistency(denoiser, x, ts, cond=None, *, generator=None, callback=None, progress=False):
    """Multistep consistency sampling (Song et al. 2023, Algorithm 1; Luo et al. 2023, Algorithm 3) for a
    consistency model's f (imgen.methods.consistency): x0_hat = f(x, t_i), then re-noise it to the next time,
    x <- alpha(t_{i+1}) x0_hat + sigma(t_{i+1}) z (Algorithm 1, line 5, with the boundary eps at t = 0); the step to
    t = 0 returns x0_hat. One evaluation per step: steps = NFE (1 step: f(noise, t_max)). TCD's sampler with eta=1."""
    return sample_tcd(denoiser, x, ts, cond, eta=1.0, generator=generator, callback=callback, progress=progress)


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
        x = _step_done(callback, i, s, x, x0_hat)
    return x


SAMPLERS = {"ddpm": sample_ddpm, "ddim": sample_ddim, "euler": sample_euler, "heun": sample_heun, "edm": sample_edm,
            "dpmpp_2m": sample_dpmpp_2m, "langevin": sample_langevin, "midpoint": sample_midpoint,
            "consistency": sample_consistency, "tcd": sample_tcd}
STOCHASTIC = {"ddpm", "edm", "langevin", "consistency", "tcd"}
RECOMMENDED_STEPS = {"ddpm": 250, "ddim": 100, "euler": 100, "heun": 25, "edm": 64, "dpmpp_2m": 20,
                     "langevin": 40, "midpoint": 25}  # grid steps at which each reproduces a 2D mixture (tests)


def get_sampler(name: str):
    if name not in SAMPLERS:
        raise ImgenError(f"unknown sampler {name!r}; valid samplers: {', '.join(sorted(SAMPLERS))}")
    return SAMPLERS[name]
