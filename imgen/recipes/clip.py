"""Train CLIP (Radford et al. 2021) on the shapes train stream with the Trainer: net "clip", method "clip"
(the contrastive loss), data "shapes" (with counterfactual twins as hard negatives). The run is an ordinary model
directory (config.json, model/ema safetensors, exact resume); CLIP.load reads it.
"""
from __future__ import annotations

from pathlib import Path

from imgen.config import Config, DataConfig, MethodConfig, NetConfig, SampleConfig, TrainConfig
from imgen.errors import ImgenError
from imgen.methods.clip import shapes_tokenizer
from imgen.nn.clip import CLIP
from imgen.nn.text import SPECIAL_TOKENS
from imgen.recipes import fit


def clip_config(steps: int = 2000, batch_size: int = 128, seed: int = 0, image_size: int = 32, lr: float = 2e-3,
                weight_decay: float = 0.05, warmup: int = 100, max_objects: int = 2, twins: bool = True,
                **net) -> Config:
    """The config train_clip trains: AdamW (betas 0.9/0.98, eps 1e-6 as in sec. 2.5 of the paper; no weight decay
    on norms, biases and the temperature), linear warm-up then cosine decay, no gradient clipping, no EMA."""
    if not isinstance(steps, int) or steps < 1 or not isinstance(batch_size, int) or batch_size < 2:
        raise ImgenError(f"train_clip needs steps >= 1 and batch_size >= 2 (a contrastive batch needs negatives); "
                         f"got steps={steps!r}, batch_size={batch_size!r}")
    vocab = shapes_tokenizer(seed=seed).itos[len(SPECIAL_TOKENS):]
    return Config(
        description="CLIP on the shapes train stream",
        data=DataConfig("shapes", {"split": "train", "image_size": image_size, "seed": seed,
                                   "max_objects": max_objects, "twins": twins}, batch_size=batch_size),
        net=NetConfig("clip", {"vocab": vocab, "image_size": image_size, **net}),
        method=MethodConfig("clip", {}),
        train=TrainConfig(steps=steps, lr=lr, weight_decay=weight_decay, betas=[0.9, 0.98], adam_eps=1e-6,
                          warmup=min(warmup, steps // 2), lr_schedule="cosine", grad_clip=0.0, ema_decay=0.0,
                          ema_warmup=False, seed=seed, ckpt_every=max(1, min(250, steps // 10)), log_every=1),
        sample=SampleConfig())


def train_clip(steps: int = 2000, batch_size: int = 128, seed: int = 0, image_size: int = 32, lr: float = 2e-3,
               weight_decay: float = 0.05, warmup: int = 100, max_objects: int = 2, twins: bool = True,
               progress: bool = True, out_dir: str | Path | None = None, **net) -> tuple[CLIP, list[float]]:
    """Train a CLIP on the shapes train stream `seed` with the Trainer into `out_dir` (a temp dir when None; a
    rerun into the same directory resumes exactly). twins=True makes each batch B/2 stream items and their
    counterfactual twins (imgen.data.shapes.twin_batch). `net` options go to clip_small (width, dim, depth,
    heads, max_len, embed_dim). Returns the model (eval mode) and the loss of every step."""
    config = clip_config(steps, batch_size, seed, image_size, lr, weight_decay, warmup, max_objects, twins, **net)
    return fit(config, out_dir, progress)
