"""Progressive distillation (Salimans & Ho 2022, Algorithm 2): a student that takes N deterministic DDIM steps
learns to land where its teacher lands in 2N, by regressing onto the x0 that makes one DDIM step from t to
t - 1/N reproduce two teacher DDIM steps (t -> t - 1/2N -> t - 1/N). Each round halves N and the student of
one round is the teacher of the next; the student starts from the teacher's weights.

Its target is exact (two teacher steps, no EMA target net or metric to tune), it needs only a few hundred steps
per round, and the student is an ordinary model of the teacher's parameterization, so every sampler still runs it.
Consistency distillation and LCM (one- to four-step students with an EMA target net) are
imgen.methods.consistency; `imgen distill TEACHER --kind progressive|consistency|lcm` runs either.
"""
from __future__ import annotations

import torch

from imgen.denoiser import _bcast, target
from imgen.errors import ImgenError, check_int
from imgen.methods.denoising import build_denoising_method
from imgen.methods.diffusion import DenoisingMethod
from imgen.nn import load_net


def ddim_step(denoiser, x, t, s, cond=None) -> torch.Tensor:
    """One deterministic DDIM step (Song et al. 2021, eq. 12, eta = 0) from per-sample times t to s, both (B,)."""
    sched = denoiser.schedule
    x0_hat = denoiser(x, t, cond)
    eps_hat = (x - _bcast(sched.alpha(t), x) * x0_hat) / _bcast(sched.sigma(t), x)
    return _bcast(sched.alpha(s), x) * x0_hat + _bcast(sched.sigma(s), x) * eps_hat


def distillation_target(teacher, x_t, t, student_steps: int, cond=None) -> torch.Tensor:
    """x0_tilde of Salimans & Ho 2022, Algorithm 2: two teacher DDIM steps t -> t' = t - 1/2N -> t'' = t - 1/N,
    then the x0 a single DDIM step t -> t'' must predict to land on the same z_t''. t is (B,) float64."""
    sched = teacher.schedule
    t1, t2 = t - 0.5 / student_steps, t - 1.0 / student_steps
    z_t2 = ddim_step(teacher, ddim_step(teacher, x_t, t, t1, cond), t1, t2, cond)
    ratio = _bcast(sched.sigma(t2) / sched.sigma(t), x_t)
    return (z_t2 - ratio * x_t) / (_bcast(sched.alpha(t2), x_t) - ratio * _bcast(sched.alpha(t), x_t))  # Algorithm 2


class ProgressiveDistillation:
    """loss(net, batch) and denoiser(net) of a student taking `student_steps` uniform DDIM steps. The student
    has the teacher's schedule and parameterization (`base_method` with the remaining options), so its model
    directory samples like the teacher's. The teacher model directory is loaded on the first loss call."""

    def __init__(self, teacher: str, student_steps: int, base_method: str = "flow_matching", **base_options):
        check_int(student_steps, "student_steps")
        base = build_denoising_method(base_method, **base_options)
        if not isinstance(base, DenoisingMethod):
            raise ImgenError(f"progressive distillation needs a diffusion/flow teacher, not method {base_method!r}")
        self.base, self.base_name, self.schedule, self.prediction = base, base_method, base.schedule, base.prediction
        self.teacher_path, self.student_steps = str(teacher), student_steps
        self._teacher = None

    def teacher(self):
        """The teacher's denoiser: its EMA net under this student's base method (teacher and student share the
        schedule and parameterization: a teacher is a `base_method` model or a student distilled from one)."""
        if self._teacher is None:
            config, net = load_net(self.teacher_path)
            name, opts = config.method.name, config.method.options
            if name == "progressive_distillation":
                name = opts.get("base_method", "flow_matching")
            if name != self.base_name:
                raise ImgenError(f"the teacher {self.teacher_path!r} was trained with method {name!r} but the student "
                                 f"distils base_method {self.base_name!r}; set base_method={name!r}")
            self._teacher = self.base.denoiser(net.eval().requires_grad_(False))
        return self._teacher

    def loss(self, net, batch: dict, generator=None) -> torch.Tensor:
        x0 = batch["image"] if "image" in batch else batch["x"]
        cond = self.base.condition(batch, generator)
        n = self.student_steps
        i = torch.randint(1, n + 1, (len(x0),), generator=generator)  # Algorithm 2: t = i / N, i ~ U{1..N}
        t = i.double() / n  # the uniform grid make_grid gives the student (every schedule here has t_max = 1)
        eps = torch.randn(x0.shape, generator=generator, dtype=x0.dtype)
        x_t = _bcast(self.schedule.alpha(t), x0) * x0 + _bcast(self.schedule.sigma(t), x0) * eps
        with torch.no_grad():
            x0_tilde = distillation_target(self.teacher(), x_t, t, n, cond)
            eps_tilde = (x_t - _bcast(self.schedule.alpha(t), x0) * x0_tilde) / _bcast(self.schedule.sigma(t), x0)
            goal = target(self.prediction, self.schedule, x0_tilde, eps_tilde, t)  # the student's own parameterization
        return torch.mean((net(x_t, t.to(x0.dtype), cond) - goal) ** 2)

    def denoiser(self, net):
        return self.base.denoiser(net)


def progressive_distillation(teacher: str, student_steps: int, base_method: str = "flow_matching",
                             **base_options) -> ProgressiveDistillation:
    """Options besides teacher/student_steps/base_method are the teacher method's own (cond_drop, schedule...)."""
    return ProgressiveDistillation(teacher, student_steps, base_method, **base_options)

