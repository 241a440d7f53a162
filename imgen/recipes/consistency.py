"""Consistency distillation (Song et al. 2023) and LCM (Luo et al. 2023) as a recipe: one Trainer run of method
"consistency_distillation" (imgen.methods.consistency) from a teacher model directory, started from its weights."""
from __future__ import annotations

from pathlib import Path

from imgen.checkpoint import read_json
from imgen.config import MethodConfig, SampleConfig, load_config
from imgen.errors import ImgenError
from imgen.methods.denoising import DENOISING_METHODS, denoising_method_of
from imgen.methods.latent import AE_DIR, SCALE_FILE
from imgen.pretrained import resolve_model_path
from imgen.train import train

KINDS = ("consistency", "lcm")
LCM_GUIDANCE = 1.2  # cfg folded into an LCM of an unguided teacher (LCM's omega = 0.2): FID-near the teacher at cfg 1
LCM_SAMPLE = {"eta": 0.3, "shift": 2.0}  # TCD's gamma (its default) on an SD3-shifted grid (benchmarks/applications.py)


def distill_consistency(teacher_dir: str | Path, out_dir: str | Path, kind: str = "consistency",
                        train_steps: int = 400, lr: float = 5e-4, batch_size: int | None = None,
                        guidance: float | None = None, sample_steps: int | None = None, skip: int = 1,
                        solver: str | None = None, target_decay: float = 0.95, seed: int = 0,
                        progress: bool = False) -> Path:
    """Train a consistency ("consistency": Song et al. 2023, Algorithm 2) or latent-consistency ("lcm": Luo et al.
    2023, Algorithm 1, classifier-free guidance `guidance` folded into the target, default the teacher's own cfg when
    it guides, else LCM_GUIDANCE) student of `teacher_dir` (a latent diffusion teacher too: the student then learns on
    its latents, as LCM itself) into `out_dir` (rerun to resume), on the teacher's own sampling grid (its sample.steps
    and grid; Heun steps if the teacher samples with heun/edm, else DDIM). The student is a normal model directory that
    samples at cfg 1 and `sample_steps` steps: a consistency student with the "consistency" sampler (default 1 step),
    an LCM with TCD's "tcd" sampler (default 4 steps, LCM_SAMPLE's gamma on a shifted grid). -> out_dir."""
    if kind not in KINDS:
        raise ImgenError(f"unknown consistency distillation kind {kind!r}; valid: {', '.join(KINDS)}")
    teacher_dir = resolve_model_path(teacher_dir)  # a directory, or a shipped model's name ("shapes-latent-t2i")
    if not (teacher_dir / "config.json").is_file():
        raise ImgenError(f"teacher {str(teacher_dir)!r} is not a model directory (no config.json); train one first, "
                         "e.g. `imgen train digits-flow --out runs/digits-flow`")
    cfg = load_config(teacher_dir / "config.json")
    latent = cfg.method.name == "latent"  # LCM proper: the student works on the teacher's latents
    base_name, base_options = denoising_method_of(cfg.method.name, cfg.method.options)
    if base_name not in DENOISING_METHODS:
        raise ImgenError(f"consistency distillation needs a diffusion/flow teacher ({', '.join(DENOISING_METHODS)}, "
                         f"or latent diffusion on one), but {str(teacher_dir)!r} was trained with method "
                         f"{cfg.method.name!r}")
    if guidance is None:  # LCM distils the guided ODE users sample: the teacher's own cfg when it guides
        guidance = (cfg.sample.cfg if cfg.sample.cfg > 1 else LCM_GUIDANCE) if kind == "lcm" else 1.0
    guidance = float(guidance)
    if kind == "lcm" and cfg.net.options.get("num_classes") is None and cfg.net.name != "text2img":
        raise ImgenError("LCM folds classifier-free guidance into the student, which needs a conditional teacher; "
                         "use --kind consistency for an unconditional one")
    solver = solver or ("heun" if cfg.sample.sampler in ("heun", "edm") else "ddim")
    method = MethodConfig("consistency_distillation", {
        "teacher": str(teacher_dir), "base_method": base_name, "guidance": guidance, "steps": cfg.sample.steps,
        "grid": cfg.sample.grid, "skip": skip, "solver": solver, "target_decay": target_decay, **base_options})
    if latent:  # the teacher's autoencoder and its measured latent scale, so student and teacher share one space
        lo, ae = cfg.method.options, teacher_dir / AE_DIR
        scale = lo.get("scale") or read_json(ae / SCALE_FILE)["scale"]
        method = MethodConfig("latent", {"autoencoder": str(ae), "scale": scale,
                                         "posterior": lo.get("posterior", "sample"),
                                         "method": method.name, "method_options": method.options})
    cfg.method = method
    cfg.train.steps, cfg.train.lr, cfg.train.warmup, cfg.train.init_from = train_steps, lr, 10, str(teacher_dir)
    cfg.train.ckpt_every, cfg.train.seed = min(cfg.train.ckpt_every, train_steps), seed
    if batch_size is not None:
        cfg.data.batch_size = batch_size
    if kind == "lcm":
        cfg.sample = SampleConfig("tcd", steps=sample_steps or 4, grid=cfg.sample.grid, cfg=1.0, **LCM_SAMPLE)
    else:
        cfg.sample = SampleConfig("consistency", steps=sample_steps or 1, grid=cfg.sample.grid, cfg=1.0)
    cfg.description = (f"{'LCM (guidance ' + format(guidance, 'g') + ' folded in)' if kind == 'lcm' else 'consistency'}"
                       f" distillation of {teacher_dir.name}")
    train(cfg, out_dir, progress=progress)
    return Path(out_dir)
