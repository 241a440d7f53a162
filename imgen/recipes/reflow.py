"""Reflow (Liu et al. 2023, "Flow Straight and Fast", sec. 2.2, Algorithm 1) as a recipe: draw (noise, sample)
couplings from a trained flow's ODE, then train a 2-rectified flow (method "reflow") on them from the teacher's
weights."""
from __future__ import annotations

from pathlib import Path

import torch

from imgen.config import DataConfig, MethodConfig
from imgen.data.pairs import PairDataset
from imgen.errors import ImgenError
from imgen.model import load
from imgen.samplers import STOCHASTIC, get_sampler
from imgen.train import train


@torch.no_grad()
def make_reflow_pairs(model, n: int, steps: int = 100, sampler: str = "dpmpp_2m", seed: int = 0,
                      batch: int = 500, path: str | Path | None = None) -> PairDataset:
    """Draw n noises z (one generator seeded by `seed`) and push each through the teacher's probability-flow ODE
    with a deterministic `sampler` at `steps` steps: the coupling (Z0, Z1) of Liu et al. 2023, Algorithm 1.
    Conditional teachers get labels 0, 1, ..., num_classes - 1 in turn (no guidance). Saved to `path` if given."""
    get_sampler(sampler)
    if sampler in STOCHASTIC:
        raise ImgenError(f"reflow pairs need a deterministic ODE sampler, not {sampler!r}; "
                         "use e.g. 'dpmpp_2m', 'heun', 'euler'")
    if n < 1 or batch < 1:
        raise ImgenError(f"n and batch must be >= 1, got n={n}, batch={batch}")
    gen = torch.Generator().manual_seed(seed)
    noise = torch.randn((n, *model.shape), generator=gen)  # rectified flow starts at N(0, I) (t = 1)
    label = None if model.num_classes is None else torch.arange(n) % model.num_classes
    sample = torch.cat([
        model.sample(len(z), labels=None if label is None else label[i:i + batch], sampler=sampler, steps=steps,
                     cfg=1.0, seed=seed, noise=z)
        for i, z in ((i, noise[i:i + batch]) for i in range(0, n, batch))])
    meta = {"sampler": sampler, "steps": steps, "seed": seed, "num_classes": model.num_classes,
            "teacher": model.config.description}
    ds = PairDataset(noise, sample, label, meta)
    if path is not None:
        ds.save(path)
    return ds


def train_reflow(teacher_dir, out_dir, n_pairs: int = 2000, pair_steps: int = 100, sampler: str = "dpmpp_2m",
                 train_steps: int = 1000, lr: float = 5e-4, seed: int = 0, progress: bool = False):
    """2-rectified flow from a trained flow model directory: draw `n_pairs` ODE couplings with `sampler` at
    `pair_steps` steps into out_dir/pairs.safetensors, then train out_dir/model from the teacher's weights on them.
    Returns the model directory (a normal one: imgen.load + any sampler)."""
    teacher = load(teacher_dir)
    cfg = teacher.config
    if cfg.method.name not in ("flow_matching", "reflow"):
        raise ImgenError(f"reflow needs a rectified-flow teacher (flow_matching or reflow), got {cfg.method.name!r}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    pairs_path = out / "pairs.safetensors"
    if not pairs_path.exists():
        make_reflow_pairs(teacher, n_pairs, pair_steps, sampler, seed, path=pairs_path)
    cfg.data = DataConfig("pairs", {"path": str(pairs_path)}, batch_size=cfg.data.batch_size)
    cfg.method = MethodConfig("reflow", dict(cfg.method.options))
    cfg.train.steps, cfg.train.lr, cfg.train.warmup, cfg.train.init_from = train_steps, lr, 10, str(teacher_dir)
    cfg.train.ckpt_every, cfg.train.seed = train_steps, seed
    cfg.description = f"2-rectified flow (reflow) of {Path(teacher_dir).name}"
    train(cfg, out / "model", progress=progress)
    return out / "model"
