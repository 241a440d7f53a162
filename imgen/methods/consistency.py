"""Consistency distillation (Song et al. 2023, "Consistency Models", Algorithm 2) and its guided form, latent
consistency distillation (Luo et al. 2023, "Latent Consistency Models", Algorithm 1), of any imgen diffusion/flow
teacher: a student f(x_t, t) that maps every point of the teacher's probability-flow ODE trajectory to its end,
so one evaluation (or a few, re-noising in between: `imgen.samplers.sample_consistency`, or TCD's `sample_tcd`) draws a
sample.

The student is the teacher's net and parameterization (started from its weights) inside the boundary
parameterization of Song et al. (eq. 5, Appendix C) written, as LCM does (eq. 9), on the net's x0 prediction:
    f(x_t, t) = c_skip(t) x_t + c_out(t) x0_hat(x_t, t),    c_skip(0) = 1, c_out(0) = 0,
so f(x, 0) = x exactly. imgen's paths all reach clean data at t = 0 (sigma = 0), and no sampler evaluates a
denoiser there, so the boundary eps of Song et al. is t = 0 here.

Each training step (Algorithm 2): x ~ data, n ~ U{0..N-k} on the teacher's own N-step time grid t_0 = 0 < ... < t_N,
x_{t_{n+k}} = alpha x + sigma z, one teacher ODE step (DDIM or Heun, with classifier-free guidance w folded in
for LCM, eq. 10) from t_{n+k} to t_n, and the loss ||f_theta(x_{t_{n+k}}, t_{n+k}) - f_theta-(x_hat_{t_n}, t_n)||^2
against the EMA target net theta- <- mu theta- + (1 - mu) theta. k > 1 is LCM's skipping step (sec. 4.3).
"""
from __future__ import annotations

import copy

import torch

from imgen.denoiser import Denoiser, _bcast
from imgen.errors import ImgenError, check_int
from imgen.guidance import classifier_free
from imgen.methods.denoising import build_denoising_method, denoising_method_of
from imgen.nn import load_net
from imgen.schedules import GRIDS, make_grid

SOLVERS = ("ddim", "heun")


def consistency_coefficients(sigma, sigma_data: float = 0.5, scaling: float = 10.0):
    """(c_skip, c_out) at noise level sigma = sigma(t) / alpha(t) (the boundary at sigma = 0): Song et al. 2023,
    Appendix C, c_skip = sd^2 / (d^2 + sd^2), with LCM's timestep scaling d = scaling * sigma (Luo et al. 2023,
    eq. 9 and its code) and c_out = d / sqrt(d^2 + sd^2) -> 1, as the net already predicts x0. Written so that
    sigma = inf (rectified flow at t = 1) gives (0, 1) and sigma = 0 gives exactly (1, 0)."""
    d = scaling * torch.as_tensor(sigma, dtype=torch.float64).clamp(min=0)
    c_skip = 1 / (1 + (d / sigma_data) ** 2)  # Appendix C: c_skip = sd^2 / (d^2 + sd^2)
    c_out = 1 / torch.sqrt(1 + (sigma_data / d) ** 2)  # = d / sqrt(d^2 + sd^2); 0 at d = 0, 1 at d = inf
    return c_skip, c_out


class ConsistencyDenoiser(Denoiser):
    """f(x_t, t) = c_skip(t) x_t + c_out(t) D(x_t, t) around a denoiser D (Song et al. 2023, eq. 5; LCM eq. 9).
    Where c_out = 0 (t = 0) it returns x itself, without evaluating D: the boundary condition f(x, 0) = x."""

    def __init__(self, inner: Denoiser, sigma_data: float = 0.5, scaling: float = 10.0):
        self.inner, self.schedule, self.sigma_data, self.scaling = inner, inner.schedule, sigma_data, scaling

    def __call__(self, x, t, cond=None):
        t = torch.as_tensor(t, dtype=torch.float64, device=x.device)
        t = t.expand(x.shape[0]) if t.ndim == 0 else t
        c_skip, c_out = consistency_coefficients(self.schedule.edm_sigma(t), self.sigma_data, self.scaling)
        boundary = (c_out == 0).reshape(-1, *(1,) * (x.ndim - 1))
        if bool(boundary.all()):
            return x
        f = _bcast(c_skip, x) * x + _bcast(c_out, x) * self.inner(x, t, cond)  # eq. 5
        return torch.where(boundary, x, f)


@torch.no_grad()
def teacher_step(teacher: Denoiser, x, t, s, cond=None, solver: str = "ddim") -> torch.Tensor:
    """One step of the teacher's probability-flow ODE from per-sample times t to s < t, both (B,): DDIM (Song et al.
    2021, eq. 12, eta = 0; LCM's solver), which is Euler in x / alpha at sigma / alpha (Karras et al. 2022, eq. 4),
    or Heun (Karras et al. 2022, Algorithm 1, lines 7-11; Song et al. 2023's CD solver). Heun's correction is
    skipped where the step ends at sigma = 0 or starts at alpha = 0, as in `imgen.samplers.sample_edm`."""
    sched = teacher.schedule
    a_t, s_t, a_s, s_s = (_bcast(f(v), x) for v in (t, s) for f in (sched.alpha, sched.sigma))
    x0 = teacher(x, t, cond)
    eps = (x - a_t * x0) / s_t
    x_s = a_s * x0 + s_s * eps  # DDIM eq. 12
    if solver == "heun":
        ok = (a_t > 0) & (s_s > 0)
        eps_s = (x_s - a_s * teacher(x_s, s, cond)) / torch.where(s_s > 0, s_s, torch.ones_like(s_s))
        one = torch.ones_like(a_t)
        sig_t, sig_s = s_t / torch.where(ok, a_t, one), s_s / a_s
        heun = a_s * (x / torch.where(ok, a_t, one) + (sig_s - sig_t) * 0.5 * (eps + eps_s))  # Algorithm 1, line 10
        x_s = torch.where(ok, heun, x_s)
    return x_s


class ConsistencyDistillation:
    """loss(net, batch) and denoiser(net) of a consistency student of the teacher model directory `teacher`
    (loaded on the first loss call). The student has the teacher's schedule and parameterization (`base_method`
    with the remaining options). `guidance` > 1 is LCM: the teacher step uses classifier-free guidance at that
    scale (imgen's convention: 1 = none; LCM's omega = guidance - 1), so the student samples guided at cfg = 1.
    `steps`/`grid`: the teacher grid N (imgen.schedules.make_grid); `skip`: LCM's k; `target_decay`: mu of the
    EMA target net (0.95, Song et al. 2023 Table 3 for CD; LCM's too). The target net is checkpointed with the
    run (state_tensors), so a resumed distillation ends byte-identical to one that never stopped."""

    def __init__(self, teacher: str, base_method: str = "flow_matching", guidance: float = 1.0, steps: int = 25,
                 grid: str = "uniform", skip: int = 1, solver: str = "ddim", target_decay: float = 0.95,
                 sigma_data: float = 0.5, timestep_scaling: float = 10.0, **base_options):
        check_int(steps, "steps (the teacher grid's steps N)")
        check_int(skip, "skip (LCM's skipping step k)")
        if skip > steps:
            raise ImgenError(f"skip (k = {skip}) must be <= steps (N = {steps}): one teacher step spans k grid steps")
        if grid not in GRIDS:
            raise ImgenError(f"unknown grid {grid!r}; valid grids: {', '.join(GRIDS)}")
        if solver not in SOLVERS:
            raise ImgenError(f"unknown teacher solver {solver!r}; valid: {', '.join(SOLVERS)}")
        if not 0.0 <= target_decay < 1.0:
            raise ImgenError(f"target_decay (mu of the EMA target net) must be in [0, 1), got {target_decay}")
        if not guidance >= 1.0:
            raise ImgenError(f"guidance must be >= 1 (1 = none, consistency distillation; > 1 = LCM), got {guidance}")
        if not (sigma_data > 0 and timestep_scaling > 0):
            raise ImgenError("sigma_data and timestep_scaling must be > 0")
        self.base = build_denoising_method(base_method, **base_options)
        if not hasattr(self.base, "denoiser") or not hasattr(self.base, "schedule"):
            raise ImgenError(f"consistency distillation needs a diffusion/flow teacher, not method {base_method!r}")
        self.base_name, self.schedule = base_method, self.base.schedule
        self.teacher_path, self.guidance, self.skip, self.solver = str(teacher), float(guidance), skip, solver
        self.target_decay, self.sigma_data = float(target_decay), float(sigma_data)
        self.scaling = float(timestep_scaling)
        self.ts = make_grid(self.schedule, steps, grid).flip(0)  # t_0 = 0 < t_1 < ... < t_N
        self._teacher, self._target = None, None

    def teacher(self) -> Denoiser:
        if self._teacher is None:
            config, net = load_net(self.teacher_path)
            name = denoising_method_of(config.method.name, config.method.options)[0]  # a latent teacher: its inner one
            if name != self.base_name:
                raise ImgenError(f"the teacher {self.teacher_path!r} was trained with method {name!r} "
                                 f"but the student distils base_method {self.base_name!r}; set base_method={name!r}")
            self._teacher = self.base.denoiser(net.eval().requires_grad_(False))
        return self._teacher

    def state_tensors(self) -> dict:
        """The EMA target net theta-, checkpointed by the Trainer (exact resume)."""
        return {} if self._target is None else dict(self._target.state_dict())

    def load_state_tensors(self, net, tensors: dict) -> None:
        if tensors:
            self._target = copy.deepcopy(net).eval().requires_grad_(False)
            self._target.load_state_dict(tensors)

    @torch.no_grad()
    def _update_target(self, net) -> torch.nn.Module:
        """theta- <- stopgrad(mu theta- + (1 - mu) theta) (Algorithm 2, last line), before the step that uses it."""
        if self._target is None:
            self._target = copy.deepcopy(net).eval().requires_grad_(False)
        for p_t, p in zip(self._target.parameters(), net.parameters()):
            p_t.lerp_(p, 1 - self.target_decay)
        for b_t, b in zip(self._target.buffers(), net.buffers()):
            b_t.copy_(b)
        return self._target

    def condition(self, batch: dict) -> dict | None:
        """The label/caption condition, never dropped: the student learns the conditional (or guided) ODE."""
        keys = [k for k in ("label", "caption") if k in batch]
        if not keys or getattr(self.base, "cond_drop", 0.0) >= 1.0:
            return None
        return {**{k: batch[k] for k in keys}, "drop": torch.zeros(len(batch[keys[0]]), dtype=torch.bool)}

    def guided_teacher(self, cond: dict | None) -> Denoiser:
        if cond is None or self.guidance == 1.0:
            return self.teacher()
        return classifier_free(self.teacher(), self.guidance, cond, len(cond["drop"]))  # LCM eq. 10, w = guidance - 1

    def loss(self, net, batch: dict, generator=None) -> torch.Tensor:
        x0 = batch["image"] if "image" in batch else batch["x"]
        cond = self.condition(batch)
        target_net = self._update_target(net)
        n = torch.randint(0, len(self.ts) - self.skip, (len(x0),), generator=generator)  # n ~ U{0..N-k}
        t_hi, t_lo = self.ts[n + self.skip], self.ts[n]
        z = torch.randn(x0.shape, generator=generator, dtype=x0.dtype)
        x_hi = _bcast(self.schedule.alpha(t_hi), x0) * x0 + _bcast(self.schedule.sigma(t_hi), x0) * z
        with torch.no_grad():
            x_lo = teacher_step(self.guided_teacher(cond), x_hi, t_hi, t_lo, cond, self.solver)  # Algorithm 2, Phi
            goal = self.denoiser(target_net)(x_lo, t_lo, cond)  # f_theta-(x_hat_{t_n}, t_n)
        return torch.mean((self.denoiser(net)(x_hi, t_hi, cond) - goal) ** 2)  # d = squared L2, lambda = 1

    def denoiser(self, net) -> ConsistencyDenoiser:
        return ConsistencyDenoiser(self.base.denoiser(net), self.sigma_data, self.scaling)


def consistency_distillation(teacher: str, base_method: str = "flow_matching", **options) -> ConsistencyDistillation:
    """Options besides those of ConsistencyDistillation are the teacher method's own (cond_drop, schedule...)."""
    return ConsistencyDistillation(teacher, base_method, **options)
