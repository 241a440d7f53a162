"""Super-resolution with a trained upsampler (SR3, Saharia et al. 2021; Imagen's cascade, Saharia et al. 2022) and a
two-stage text-to-image cascade: a base model draws the prompt at low resolution, the upsampler enlarges it.

    up = imgen.load("runs/shapes-sr")                 # imgen train shapes-sr --out runs/shapes-sr
    x = upscale(up, low_res)                          # (B, 3, 8, 8) in [-1, 1] -> (B, 3, 32, 32)
    x = cascade(base, up, ["a red circle in the top left"])

The low-res image conditions every denoising step after Imagen's noise-conditioning augmentation at a fixed level
(`aug_level`, default the model's sample_aug): it is corrupted by the forward process at that level and the level
is given to the net (imgen.methods.superres). An SRGAN model (imgen.methods.srgan; `imgen train shapes-srgan`)
upscales in one generator pass: no steps, sampler, seed or aug_level.
"""
from __future__ import annotations

from pathlib import Path

import torch

from imgen.apps.inputs import read_image_file
from imgen.errors import ImgenError, check_int
from imgen.nn.superres import upsample


def low_res_shape(model) -> tuple[int, int, int]:
    """(C, h, w) of the images an upsampler takes; one clear error for a model that is not an upsampler."""
    size = getattr(model.net, "low_res_size", None)
    if not size or not (hasattr(model.method, "low_res_condition") or hasattr(model.method, "upscale")):
        raise ImgenError(f"this {model.config.method.name!r} model ({model.config.data.name}) is not an upsampler; "
                         "give a super-resolution model, e.g. one from `imgen train shapes-sr --out DIR` (or "
                         "shapes-srgan)")
    return model.net.low_res_channels, size, size


def check_low_res(model, images) -> torch.Tensor:
    """(C, h, w) or (B, C, h, w) images in [-1, 1] of the upsampler's input shape -> (B, C, h, w) float32."""
    c, h, w = low_res_shape(model)
    x = torch.as_tensor(images, dtype=torch.float32)
    x = x[None] if x.ndim == 3 else x
    if x.ndim != 4 or x.shape[1] != c or len(x) == 0:
        raise ImgenError(f"expected low-res images shaped (B, {c}, {h}, {w}) in [-1, 1], got {tuple(x.shape)}")
    if tuple(x.shape[2:]) != (h, w):
        raise ImgenError(f"the image is {x.shape[3]}x{x.shape[2]} but this upsampler takes {w}x{h} images; "
                         f"downsample it to {w}x{h} (imgen.images.adapt_images averages areas)")
    if x.min() < -1 or x.max() > 1:
        raise ImgenError("image values must be in [-1, 1] (imgen.images.from_uint8 converts 0..255)")
    return x


def read_low_res(path: str | Path, model) -> torch.Tensor:
    """A low-res image file (RGB for a colour upsampler, L for a grey one) -> (1, C, h, w) in [-1, 1]."""
    return check_low_res(model, read_image_file(path, low_res_shape(model), "this upsampler takes", "downsample it"))


@torch.no_grad()
def upscale(model, low_res_images, *, seed: int = 0, aug_level: float | None = None, steps: int | None = None,
            sampler: str | None = None, **kwargs) -> torch.Tensor:
    """Upsample low-res images ((C, h, w) or (B, C, h, w) in [-1, 1]) with the upsampler `model`: one sample per
    image, (B, C, H, W) in [-1, 1]. aug_level: the conditioning-augmentation level (default the model's
    sample_aug); kwargs go to Model.sample (grid, progress, callback, ...)."""
    low = check_low_res(model, low_res_images)
    if hasattr(model.method, "upscale"):  # a GAN upsampler (SRGAN): one deterministic generator pass
        given = [name for name, v in (("steps", steps), ("sampler", sampler), ("aug_level", aug_level)) if v is not None]
        if given:
            raise ImgenError(f"{', '.join(given)} does not apply to {model.config.method.name} models (one generator "
                             f"pass, no sampling); drop it")
        return model.method.upscale(model.net, low.to(model.device))
    level = model.method.sample_aug if aug_level is None else aug_level
    if not isinstance(level, (int, float)) or not 0.0 <= level <= 1.0:
        raise ImgenError(f"aug_level must be a noise level in [0, 1], got {aug_level!r}")
    low = low.to(model.device)
    cond = model.method.low_res_condition(low, level, torch.Generator().manual_seed(seed + 1))
    if not model.method.residual:
        return model.sample(len(low), cond=cond, seed=seed, steps=steps, sampler=sampler, cfg=1.0, **kwargs)
    # residual model: x = bicubic(low) + r (imgen.methods.superres); r may leave [-1, 1], so no clipping until the sum
    r = model.sample(len(low), cond=cond, seed=seed, steps=steps, sampler=sampler, cfg=1.0, clip_x0=False, raw=True,
                     **kwargs)
    return (model.method.base(low, r.shape[-1]) + r).clamp(-1, 1)


def bicubic(low_res_images, size: int) -> torch.Tensor:
    """The baseline: bicubic interpolation to size x size, clamped to [-1, 1]."""
    return upsample(torch.as_tensor(low_res_images, dtype=torch.float32), size).clamp(-1, 1)


@torch.no_grad()
def cascade(base, upsampler, prompts, *, n: int = 1, seed: int = 0, base_kwargs: dict | None = None,
            **kwargs) -> torch.Tensor:
    """Imagen's cascade (sec. 2.5): a text-to-image `base` draws each prompt at the upsampler's input size, the
    upsampler enlarges it. -> (len(prompts) * n, C, H, W) in [-1, 1]; base_kwargs go to base.generate, kwargs to
    upscale."""
    check_int(n, "n (images per prompt)")
    c, h, w = low_res_shape(upsampler)
    if not base.is_text:
        raise ImgenError("the cascade's base must be a text-to-image model (e.g. `imgen train shapes-8px-t2i`)")
    low = base.generate(prompts, n=n, seed=seed, **(base_kwargs or {}))
    if tuple(low.shape[1:]) != (c, h, w):
        raise ImgenError(f"the base makes {tuple(low.shape[1:])} images but the upsampler takes ({c}, {h}, {w}); "
                         "pair models whose sizes match")
    return upscale(upsampler, low, seed=seed, **kwargs)
