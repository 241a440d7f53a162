"""Progressive distillation (Salimans & Ho 2022, Algorithm 2): a student that takes N deterministic DDIM steps
learns to land where its teacher lands in 2N, by regressing onto the x0 that makes one DDIM step from t to
t - 1/N reproduce two teacher DDIM steps (t -> t - 1/2N -> t - 1/N). Each round halves N and the student of
one round is the teacher of the next; the student starts from the teacher's weights.

Chosen over consistency distillation for this CPU scale: its target is exact (two teacher steps, no EMA
target net or metric to tune), it needs only a few hundred steps per round, and the student is an ordinary
model of the teacher's parameterization, so every sampler still runs it.
"""
from __future__ import annotations

from pathlib import Path

import torch

from imgen.denoiser import _bcast, target
from imgen.errors import ImgenError
from imgen.methods.diffusion import DenoisingMethod


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
        from imgen.methods import build_method

        if isinstance(student_steps, bool) or not isinstance(student_steps, int) or student_steps < 1:
            raise ImgenError(f"student_steps must be an integer >= 1, got {student_steps!r}")
        base = build_method(base_method, **base_options)
        if not isinstance(base, DenoisingMethod):
            raise ImgenError(f"progressive distillation needs a diffusion/flow teacher, not method {base_method!r}")
        self.base, self.schedule, self.prediction = base, base.schedule, base.prediction
        self.teacher_path, self.student_steps = str(teacher), student_steps
        self._teacher = None

    def teacher(self):
        if self._teacher is None:
            from imgen.model import load

            model = load(self.teacher_path)
            model.net.requires_grad_(False)
            self._teacher = model.method.denoiser(model.net)
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


def distill(teacher_dir: str | Path, out_dir: str | Path, start_steps: int = 32, end_steps: int = 4,
            train_steps: int = 300, lr: float = 5e-4, batch_size: int | None = None, progress: bool = False) -> Path:
    """Run rounds of progressive distillation from `teacher_dir` (taken to sample well at `start_steps` DDIM/Euler
    steps) until the student takes `end_steps`; round k trains `out_dir/steps{N}`. Returns the last student's dir,
    a normal model directory (imgen.load + any sampler; its config samples with ddim at N steps)."""
    from imgen.config import MethodConfig, SampleConfig, load_config
    from imgen.train import train

    if not (start_steps > end_steps >= 1 and start_steps % end_steps == 0
            and (start_steps // end_steps) & (start_steps // end_steps - 1) == 0):
        raise ImgenError(f"start_steps / end_steps must be a power of two > 1, got {start_steps} / {end_steps}")
    cfg = load_config(Path(teacher_dir) / "config.json")
    opts = dict(cfg.method.options)
    if cfg.method.name == "progressive_distillation":  # distilling a student further: keep its base method
        base_method = opts.pop("base_method", "flow_matching")
        opts.pop("teacher"), opts.pop("student_steps")
    else:
        base_method = cfg.method.name
    current, n = Path(teacher_dir), start_steps
    while n > end_steps:
        n //= 2
        cfg.method = MethodConfig("progressive_distillation", {"teacher": str(current), "student_steps": n,
                                                               "base_method": base_method, **opts})
        cfg.train.steps, cfg.train.lr, cfg.train.warmup, cfg.train.init_from = train_steps, lr, 10, str(current)
        cfg.train.ckpt_every = train_steps
        if batch_size is not None:
            cfg.data.batch_size = batch_size
        cfg.sample = SampleConfig("ddim", steps=n)
        cfg.description = f"progressive distillation ({n} steps) of {Path(teacher_dir).name}"
        train(cfg, Path(out_dir) / f"steps{n}", progress=progress)
        current = Path(out_dir) / f"steps{n}"
    return current
