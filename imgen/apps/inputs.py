"""Checked inputs of the image-to-image applications (imgen.apps.inpaint, imgen.apps.img2img): a model's pixel shape,
an image or mask as a tensor or a file, and the one call that samples a model with a prompt, a label or neither."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image

from imgen.errors import ImgenError
from imgen.images import from_uint8


def pixel_shape(model) -> tuple[int, int, int]:
    """(C, H, W) of the images `model` makes (a latent model's decoded size)."""
    try:  # a VAE's or GAN's method refuses to build a denoiser
        ok = len(model.shape) == 3 and model.method.denoiser(model.net) is not None
    except (AttributeError, ImgenError):
        ok = False
    if not ok:
        raise ImgenError(f"image-to-image applications need a diffusion or flow model of images; this is a "
                         f"{model.config.method.name!r} model of shape {model.shape}")
    return tuple(model.pixel_shape)


def to_model_space(model, x: torch.Tensor) -> torch.Tensor:
    """Images -> what the sampler walks: latents z = scale * E(x) for a latent model (LDM sec. 4.3.2; the
    posterior's mean, so the same image always gives the same latent), else x."""
    return model.method.encode_mean(x) if model.latent else x


def from_model_space(model, z: torch.Tensor) -> torch.Tensor:
    return (model.method.decode(z) if model.latent else z).clamp(-1, 1)


def check_image(model, image) -> torch.Tensor:
    """A (C, H, W) or (1, C, H, W) image in [-1, 1] of the model's pixel shape -> (1, C, H, W) float32."""
    c, h, w = pixel_shape(model)
    x = torch.as_tensor(image, dtype=torch.float32)
    x = x[None] if x.ndim == 3 else x
    if x.ndim != 4 or x.shape[0] != 1 or x.shape[1] != c:
        raise ImgenError(f"expected one image shaped ({c}, {h}, {w}) in [-1, 1], got {tuple(image.shape)}")
    if tuple(x.shape[2:]) != (h, w):
        raise ImgenError(f"the image is {x.shape[3]}x{x.shape[2]} but the model makes {w}x{h} images; "
                         f"resize or crop it to {w}x{h}")
    if x.min() < -1 or x.max() > 1:
        raise ImgenError("image values must be in [-1, 1] (imgen.images.from_uint8 converts 0..255)")
    return x


def check_mask(mask, size: tuple[int, int]) -> torch.Tensor:
    """A binary (H, W) mask (True / 1 = the hole to fill, False / 0 = known) -> bool (H, W)."""
    m = torch.as_tensor(mask)
    m = m.reshape(m.shape[-2:]) if m.ndim > 2 and all(d == 1 for d in m.shape[:-2]) else m
    if m.ndim != 2:
        raise ImgenError(f"the mask must be one (H, W) channel, got shape {tuple(m.shape)}")
    if tuple(m.shape) != tuple(size):
        raise ImgenError(f"the mask is {m.shape[1]}x{m.shape[0]} but the image is {size[1]}x{size[0]}; "
                         "draw the mask at the image's size")
    if m.dtype != torch.bool and not bool(((m == 0) | (m == 1)).all()):
        raise ImgenError("the mask is not binary; use 0 for known pixels and 1 (white in a file) for the hole")
    if not bool(m.any()):
        raise ImgenError("the mask marks no pixel to fill; paint the hole white (1)")
    return m.bool()


def read_image_file(path: str | Path, shape: tuple[int, int, int], takes: str = "the model makes",
                    fix: str = "resize or crop it") -> torch.Tensor:
    """An image file of `shape` (C, H, W: RGB for C = 3, else L) -> (1, C, H, W) in [-1, 1]; a wrong mode or size is
    one error naming what `takes` such images and the `fix`. The one reader of every image-to-image verb's input."""
    c, h, w = shape
    img = _open(path, "image")
    want = "RGB" if c == 3 else "L"
    if img.mode != want:
        raise ImgenError(f"{path} is a {img.mode} image but {takes} {want} images; convert it to {want}")
    if img.size != (w, h):
        raise ImgenError(f"{path} is {img.size[0]}x{img.size[1]} but {takes} {w}x{h} images; {fix} to {w}x{h}")
    return from_uint8(np.array(img)[None])


def read_image(path: str | Path, model) -> torch.Tensor:
    """An image file (RGB for a colour model, L for a grey one) of the model's size -> (1, C, H, W) in [-1, 1]."""
    return check_image(model, read_image_file(path, pixel_shape(model)))


def read_mask(path: str | Path, size: tuple[int, int]) -> torch.Tensor:
    """A black-and-white mask file (mode 1 or L, only 0 and 255; white = the hole) -> bool (H, W)."""
    img = _open(path, "mask")
    if img.mode not in ("1", "L"):
        raise ImgenError(f"the mask {path} is a {img.mode} image; save it as a black-and-white (mode L or 1) PNG, "
                         "white where to fill")
    a = np.asarray(img.convert("L"))
    if not np.isin(a, (0, 255)).all():
        raise ImgenError(f"the mask {path} is not binary (values other than 0 and 255); threshold it: black = keep, "
                         "white = fill")
    return check_mask(torch.from_numpy(a == 255), size)


def _open(path, what: str) -> Image.Image:
    try:
        with Image.open(path) as img:
            img.load()
            return img
    except FileNotFoundError:
        raise ImgenError(f"{what} file {str(path)!r} not found; check the path") from None
    except OSError as e:
        raise ImgenError(f"cannot read {what} {str(path)!r} as an image ({e}); give a PNG") from None


def run_sampler(model, prompt: str | None, n: int, label=None, **kwargs) -> torch.Tensor:
    """model.generate([prompt], n) for a text model (prompt required), model.sample(n) otherwise (a label for a
    class-conditional model); kwargs go to Model.sample (noise, ts, callback, raw, steps, cfg, seed, ...)."""
    if model.is_text:
        if not prompt or not prompt.strip():
            raise ImgenError("this is a text-to-image model; give a prompt (e.g. \"a red circle in the top left\")")
        return model.generate([prompt], n=n, **kwargs)
    if prompt:
        raise ImgenError("this model is not text-conditional; drop the prompt (a class-conditional model takes a "
                         "label)")
    return model.sample(n, labels=label, **kwargs)
