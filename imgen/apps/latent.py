"""Latent-space tools for a trained autoencoder or VAE (`imgen.load(DIR)` of a `vae` or `kl_autoencoder` model):
interpolation (linear and spherical), attribute vectors (the mean latent of images with an attribute minus the mean
of images without it, e.g. "red" minus "blue" from the shapes' ground-truth attributes; White 2016, "Sampling
generative networks", sec. 2.2-2.4) applied to new images, and the classic 2-D latent grid picture of a
`latent_dim=2` VAE (Kingma & Welling 2014, fig. 4).

    m = imgen.load("runs/digits-vae")
    frames = interpolate(m, x_a, x_b, steps=8, mode="slerp")            # (B * 8, C, H, W), one row per pair
    v = attribute_vector(m, red_images, blue_images)
    edited = apply_attribute(m, x, v, scale=1.0)
    picture = latent_grid(m, n=15)                                       # (C, H', W') in [-1, 1]
"""
from __future__ import annotations

import numpy as np
import torch

from imgen.errors import ImgenError, check_int
from imgen.images import make_grid

MODES = ("linear", "slerp")


def lerp(z_a: torch.Tensor, z_b: torch.Tensor, t: float) -> torch.Tensor:
    return (1 - t) * z_a + t * z_b


def slerp(z_a: torch.Tensor, z_b: torch.Tensor, t: float, eps: float = 1e-7) -> torch.Tensor:
    """Spherical interpolation per sample (White 2016, sec. 2.2; Shoemake 1985): along the great circle between
    z_a and z_b (flattened per row), so that the norm stays near the prior's typical radius instead of shrinking
    through the middle as a straight line does. Falls back to lerp for (anti)parallel pairs."""
    a, b = z_a.flatten(1), z_b.flatten(1)
    cos = (a * b).sum(1) / (a.norm(dim=1) * b.norm(dim=1)).clamp_min(eps)
    omega = torch.arccos(cos.clamp(-1, 1))[:, None]
    sin = torch.sin(omega)
    spherical = (torch.sin((1 - t) * omega) * a + torch.sin(t * omega) * b) / sin.clamp_min(eps)
    out = torch.where(sin > 1e-4, spherical, lerp(a, b, t))
    return out.reshape(z_a.shape)


def _images(x: torch.Tensor) -> torch.Tensor:
    x = torch.as_tensor(x, dtype=torch.float32)
    return x[None] if x.ndim == 3 else x


def interpolate(model, x_a: torch.Tensor, x_b: torch.Tensor, steps: int = 8, mode: str = "linear") -> torch.Tensor:
    """Decode `steps` latents from encode(x_a) to encode(x_b) (both ends included) for each pair of images
    ((C, H, W) or (B, C, H, W) each): (B * steps, C, H, W), the frames of pair i in row i."""
    if mode not in MODES:
        raise ImgenError(f"unknown interpolation mode {mode!r}; valid: {', '.join(MODES)}")
    check_int(steps, "steps", minimum=2)
    x_a, x_b = _images(x_a), _images(x_b)
    if x_a.shape != x_b.shape:
        raise ImgenError(f"interpolate needs two image batches of one shape, got {tuple(x_a.shape)} and "
                         f"{tuple(x_b.shape)}")
    z_a, z_b = model.encode(x_a), model.encode(x_b)
    mix = lerp if mode == "linear" else slerp
    z = torch.stack([mix(z_a, z_b, i / (steps - 1)) for i in range(steps)], 1)  # (B, steps, *latent)
    return model.decode(z.flatten(0, 1))


def mean_latent_difference(z_with: torch.Tensor, z_without: torch.Tensor) -> torch.Tensor:
    """The attribute vector of two sets of latents: mean(z_with) - mean(z_without), shape of one latent."""
    if len(z_with) == 0 or len(z_without) == 0:
        raise ImgenError("an attribute vector needs at least one example with and one without the attribute")
    return z_with.mean(0) - z_without.mean(0)


def attribute_vector(model, images_with: torch.Tensor, images_without: torch.Tensor) -> torch.Tensor:
    """The mean posterior-mean latent of `images_with` minus that of `images_without` (one latent's shape)."""
    return mean_latent_difference(model.encode(_images(images_with)), model.encode(_images(images_without)))


def scenes_with(data, attribute: str, value: int, n: int, start: int = 0, stop: int | None = None) -> dict:
    """The first n items of `data` (a dataset with ground-truth `attributes(idx)`, e.g. shapes) among indices
    [start, stop) (stop: the dataset's end) whose `attribute` is class `value`: data.get of those (image + attrs)."""
    check_int(n, "n")
    idx = np.arange(start, len(data) if stop is None else min(stop, len(data)))
    attrs = data.attributes(idx)
    if attribute not in attrs:
        raise ImgenError(f"this dataset has no ground-truth attribute {attribute!r}; it has {', '.join(attrs)}")
    found = idx[np.asarray(attrs[attribute]) == value][:n]
    if len(found) < n:
        raise ImgenError(f"only {len(found)} items with {attribute} = {value} among items {start}..{idx[-1] + 1}; "
                         f"ask for fewer")
    return data.get(found)


def apply_attribute(model, x: torch.Tensor, vector: torch.Tensor, scale: float = 1.0) -> torch.Tensor:
    """decode(encode(x) + scale * vector): images (B, C, H, W) with the attribute added (scale < 0 removes it)."""
    z = model.encode(_images(x))
    if tuple(vector.shape) != tuple(z.shape[1:]):
        raise ImgenError(f"attribute vector of shape {tuple(vector.shape)} does not fit this model's latents "
                         f"{tuple(z.shape[1:])}; compute it with attribute_vector on the same model")
    return model.decode(z + scale * vector)


def latent_grid_points(n: int = 15, quantile: float = 0.95) -> torch.Tensor:
    """(n * n, 2) latents at the N(0, 1) quantiles of an evenly spaced grid in [1 - quantile, quantile] per axis
    (Kingma & Welling 2014, fig. 4: equal prior mass between neighbours), first coordinate along rows, top row
    at the largest second coordinate."""
    check_int(n, "n", minimum=2)
    if not 0.5 < quantile < 1:
        raise ImgenError(f"quantile must be in (0.5, 1), got {quantile}")
    q = torch.distributions.Normal(0.0, 1.0).icdf(torch.linspace(1 - quantile, quantile, n))
    z2, z1 = torch.meshgrid(q.flip(0), q, indexing="ij")
    return torch.stack([z1.flatten(), z2.flatten()], 1)


def latent_grid(model, n: int = 15, quantile: float = 0.95, pad: int = 0) -> torch.Tensor:
    """The 2-D latent space of a `latent_dim=2` VAE as one image (C, n*H + pad*(n+1), ...) in [-1, 1]: the decoded
    n x n grid of latent_grid_points (save with imgen.images.to_pil or save_grid)."""
    shape = tuple(getattr(model.net, "latent_shape", ()))
    if shape != (2,):
        raise ImgenError(f"latent_grid draws a 2-D latent space; this model's latents are shaped {shape} "
                         f"(train a VAE with --set net.options.latent_dim=2, e.g. preset digits-vae)")
    return make_grid(model.decode(latent_grid_points(n, quantile)), nrow=n, pad=pad)
