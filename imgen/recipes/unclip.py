"""Train the two unCLIP stages (Ramesh et al. 2022) under a frozen CLIP with the Trainer: methods unclip_prior
and unclip_decoder (imgen.methods.unclip) on the shapes train stream. out_dir holds clip/ (CLIP.save) and one
model directory per stage (prior/, decoder/), each with exact resume.
"""
from __future__ import annotations

import tempfile
from pathlib import Path

import torch
from torch import nn

from imgen.config import Config, DataConfig, MethodConfig, NetConfig, SampleConfig, TrainConfig
from imgen.errors import ImgenError, check_int
from imgen.methods.unclip import DECODER_METHOD, PRIOR_METHOD, decoder_options
from imgen.nn.clip import CLIP
from imgen.recipes import fit


def _clip_dir(clip: CLIP, out_dir: str | Path | None) -> Path:
    """out_dir/clip holding `clip` (written once; a rerun checks it is the same CLIP)."""
    root = Path(tempfile.mkdtemp(prefix="imgen-unclip-")) if out_dir is None else Path(out_dir)
    path = root / "clip"
    if (path / "config.json").is_file():
        saved = CLIP.load(path).state_dict()
        if saved.keys() != clip.state_dict().keys() or not all(torch.equal(saved[k], v.cpu())
                                                                for k, v in clip.state_dict().items()):
            raise ImgenError(f"{str(path)!r} holds a different CLIP; give another out_dir to train under this one")
    else:
        clip.save(path)
    return path


def stage_config(stage: str, clip: CLIP, clip_dir: Path, net: NetConfig, steps: int, batch_size: int, seed: int,
                 lr: float, warmup: int, max_objects: int, method: dict | None) -> Config:
    """AdamW (betas 0.9/0.999, no weight decay), linear warm-up then cosine decay, grad-norm clipping at 1, no EMA."""
    check_int(steps, f"unclip {stage}: steps")
    spec = dict(method or (PRIOR_METHOD if stage == "prior" else DECODER_METHOD))
    return Config(
        description=f"unCLIP {stage} on the shapes train stream",
        data=DataConfig("shapes", {"split": "train", "image_size": clip.image_encoder.image_size, "seed": seed,
                                   "max_objects": max_objects}, batch_size=batch_size),
        net=net, method=MethodConfig(f"unclip_{stage}", {"clip": str(clip_dir.resolve()), **spec}),
        train=TrainConfig(steps=steps, lr=lr, betas=[0.9, 0.999], warmup=min(warmup, steps // 2),
                          lr_schedule="cosine", grad_clip=1.0, ema_decay=0.0, ema_warmup=False, seed=seed,
                          ckpt_every=max(1, min(250, steps // 10)), log_every=1),
        sample=SampleConfig())


def train_prior(clip: CLIP, steps: int = 1000, batch_size: int = 128, seed: int = 0, lr: float = 1e-3,
                warmup: int = 50, max_objects: int = 1, method: dict | None = None, progress: bool = True,
                out_dir: str | Path | None = None, **net_options) -> tuple[nn.Module, list[float]]:
    """Train the diffusion prior on (caption, image) pairs of the shapes train stream `seed` (batch k = items
    k*B .. (k+1)*B - 1) under the frozen `clip`, into out_dir/prior (out_dir: a temp dir when None; a rerun
    resumes). `net_options` go to PriorTransformer (dim, depth, heads, use_text_tokens). Returns the net (eval
    mode) and the loss of every step."""
    clip_dir = _clip_dir(clip, out_dir)
    net = NetConfig("prior", {"embed_dim": clip.embed_dim, **net_options})
    config = stage_config("prior", clip, clip_dir, net, steps, batch_size, seed, lr, warmup, max_objects, method)
    return fit(config, clip_dir.parent / "prior", progress)


def train_decoder(clip: CLIP, steps: int = 2000, batch_size: int = 64, seed: int = 0, lr: float = 2e-3,
                  warmup: int = 50, max_objects: int = 1, method: dict | None = None, progress: bool = True,
                  out_dir: str | Path | None = None, **net_options) -> tuple[nn.Module, list[float]]:
    """Train the decoder P(x | z_i) on images of the shapes train stream `seed` and their frozen-CLIP
    embeddings, into out_dir/decoder. `net_options` go to decoder_options (U-Net options)."""
    clip_dir = _clip_dir(clip, out_dir)
    net = NetConfig("unet", decoder_options(clip, **net_options))
    config = stage_config("decoder", clip, clip_dir, net, steps, batch_size, seed, lr, warmup, max_objects, method)
    return fit(config, clip_dir.parent / "decoder", progress)
