"""Consistency distillation (Song et al. 2023) and LCM (Luo et al. 2023) as a recipe: one Trainer run of method
"consistency_distillation" (imgen.methods.consistency) from a teacher model directory, started from its weights."""
from __future__ import annotations

from pathlib import Path

from imgen.config import MethodConfig, SampleConfig, load_config
from imgen.errors import ImgenError
from imgen.methods.denoising import DENOISING_METHODS
from imgen.train import train

KINDS = ("consistency", "lcm")
LCM_GUIDANCE = 1.2  # imgen's cfg scale folded into an LCM student (LCM's omega = 0.2): FID-near the teacher at cfg 1
LCM_SAMPLE = {"eta": 0.3, "shift": 2.0}  # TCD's gamma (its default) on an SD3-shifted grid (benchmarks/applications.py)


def distill_consistency(teacher_dir: str | Path, out_dir: str | Path, kind: str = "consistency",
                        train_steps: int = 400, lr: float = 5e-4, batch_size: int | None = None,
                        guidance: float | None = None, sample_steps: int | None = None, skip: int = 1,
                        solver: str | None = None, target_decay: float = 0.95, seed: int = 0,
                        progress: bool = False) -> Path:
    """Train a consistency ("consistency": Song et al. 2023, Algorithm 2) or latent-consistency ("lcm": Luo et al.
    2023, Algorithm 1, classifier-free guidance `guidance` folded into the target, default LCM_GUIDANCE) student of
    `teacher_dir` into `out_dir` (rerun to resume), on the teacher's own sampling grid (its sample.steps and grid;
    Heun steps if the teacher samples with heun/edm, else DDIM). The student is a normal model directory that
    samples at cfg 1 and `sample_steps` steps: a consistency student with the "consistency" sampler (default 1 step),
    an LCM with TCD's "tcd" sampler (default 4 steps, LCM_SAMPLE's gamma on a shifted grid). -> out_dir."""
    if kind not in KINDS:
        raise ImgenError(f"unknown consistency distillation kind {kind!r}; valid: {', '.join(KINDS)}")
    if not (Path(teacher_dir) / "config.json").is_file():
        raise ImgenError(f"teacher {str(teacher_dir)!r} is not a model directory (no config.json); train one first, "
                         "e.g. `imgen train digits-flow --out runs/digits-flow`")
    cfg = load_config(Path(teacher_dir) / "config.json")
    if cfg.method.name not in DENOISING_METHODS:
        raise ImgenError(f"consistency distillation needs a diffusion/flow teacher ({', '.join(DENOISING_METHODS)}), "
                         f"but {str(teacher_dir)!r} was trained with method {cfg.method.name!r}")
    guidance = (LCM_GUIDANCE if kind == "lcm" else 1.0) if guidance is None else float(guidance)
    if kind == "lcm" and cfg.net.options.get("num_classes") is None and cfg.net.name != "text2img":
        raise ImgenError("LCM folds classifier-free guidance into the student, which needs a conditional teacher; "
                         "use --kind consistency for an unconditional one")
    solver = solver or ("heun" if cfg.sample.sampler in ("heun", "edm") else "ddim")
    cfg.method = MethodConfig("consistency_distillation", {
        "teacher": str(teacher_dir), "base_method": cfg.method.name, "guidance": guidance, "steps": cfg.sample.steps,
        "grid": cfg.sample.grid, "skip": skip, "solver": solver, "target_decay": target_decay,
        **cfg.method.options})
    cfg.train.steps, cfg.train.lr, cfg.train.warmup, cfg.train.init_from = train_steps, lr, 10, str(teacher_dir)
    cfg.train.ckpt_every, cfg.train.seed = min(cfg.train.ckpt_every, train_steps), seed
    if batch_size is not None:
        cfg.data.batch_size = batch_size
    if kind == "lcm":
        cfg.sample = SampleConfig("tcd", steps=sample_steps or 4, grid=cfg.sample.grid, cfg=1.0, **LCM_SAMPLE)
    else:
        cfg.sample = SampleConfig("consistency", steps=sample_steps or 1, grid=cfg.sample.grid, cfg=1.0)
    cfg.description = (f"{'LCM (guidance ' + format(guidance, 'g') + ' folded in)' if kind == 'lcm' else 'consistency'}"
                       f" distillation of {Path(teacher_dir).name}")
    train(cfg, out_dir, progress=progress)
    return Path(out_dir)
