"""Progressive distillation (Salimans & Ho 2022, Algorithm 2) as a recipe: rounds of method
"progressive_distillation" (imgen.methods.distill), each student the next round's teacher."""
from __future__ import annotations

from pathlib import Path

from imgen.config import MethodConfig, SampleConfig, load_config
from imgen.errors import ImgenError
from imgen.train import train


def distill(teacher_dir: str | Path, out_dir: str | Path, start_steps: int = 32, end_steps: int = 4,
            train_steps: int = 300, lr: float = 5e-4, batch_size: int | None = None, progress: bool = False) -> Path:
    """Run rounds of progressive distillation from `teacher_dir` (taken to sample well at `start_steps` DDIM/Euler
    steps) until the student takes `end_steps`; round k trains `out_dir/steps{N}`. Returns the last student's dir,
    a normal model directory (imgen.load + any sampler; its config samples with ddim at N steps)."""
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
