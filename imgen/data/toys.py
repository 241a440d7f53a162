"""2D toy distributions (two moons, 8 gaussians, swiss roll, checkerboard) as infinite point streams.

Point i is a pure function of (seed, i). Points are float32 (B, 2), roughly in [-3, 3] with unit-ish scale.
The 8-gaussians mixture is exposed exactly (`means`, `std`, `weights`) so samplers can be checked against
the analytic denoiser of a Gaussian mixture.
"""
from __future__ import annotations

import math

import numpy as np
import torch

from imgen.data.base import as_index, hash_normal, hash_uniform
from imgen.errors import ImgenError, check_int


class ToyDataset:
    """A 2D point stream: get(idx) -> dict(x=(B, 2) float32[, label=(B,) int64])."""

    image_size = None
    infinite = True  # any index >= 0 is a fresh point; len() is only the epoch length
    channels = 2  # the point dimension (no image): models for toys read `dim`
    dim = 2

    def __init__(self, name: str, sample, n: int, seed: int, class_names=None):
        check_int(n, f"{name}: n (the epoch length)")
        self.name, self._sample, self.n, self.seed = name, sample, int(n), int(seed)
        self.class_names = None if class_names is None else list(class_names)
        self.num_classes = None if class_names is None else len(class_names)

    def __len__(self) -> int:
        return self.n

    def __repr__(self) -> str:
        return f"ToyDataset(name={self.name!r}, n={self.n}, seed={self.seed})"

    def get(self, idx) -> dict:
        idx = as_index(idx, None, self.name)
        x, label = self._sample(self.seed, idx)
        out = {"x": torch.from_numpy(np.asarray(x, np.float32).reshape(-1, 2))}
        if label is not None:
            out["label"] = torch.from_numpy(label.astype(np.int64))
        return out


def _check_positive(value, what: str, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0 or not math.isfinite(value):
        raise ImgenError(f"{name}: {what} must be a positive number, got {value!r}")
    return float(value)


def two_moons(n: int = 10000, seed: int = 0, noise: float = 0.1) -> ToyDataset:
    """scikit-learn's make_moons (outer moon label 0, inner moon label 1) plus Gaussian noise, centred, x2."""
    noise = _check_positive(noise, "noise", "moons")

    def sample(seed, idx):
        label = (hash_uniform(seed, idx, 0) < 0.5).astype(np.int64)
        t = np.pi * hash_uniform(seed, idx, 1)
        outer = np.stack([np.cos(t), np.sin(t)], -1)
        inner = np.stack([1 - np.cos(t), 0.5 - np.sin(t)], -1)
        x = np.where(label[:, None] == 1, inner, outer)
        x = x + noise * np.stack([hash_normal(seed, idx, 2), hash_normal(seed, idx, 4)], -1)
        return (x - [0.5, 0.25]) * 2.0, label

    return ToyDataset("moons", sample, n, seed, class_names=["outer", "inner"])


def eight_gaussians_mixture(radius: float = 2.0, std: float = 0.25):
    """The exact mixture: means (8, 2) on a circle of `radius`, isotropic `std`, equal weights (8,)."""
    angles = np.arange(8) * (2 * np.pi / 8)
    means = radius * np.stack([np.cos(angles), np.sin(angles)], -1)
    return means, float(std), np.full(8, 1 / 8)


def eight_gaussians(n: int = 10000, seed: int = 0, radius: float = 2.0, std: float = 0.25) -> ToyDataset:
    """Equal mixture of 8 isotropic Gaussians on a circle; `label` is the component. Exposes means/std/weights."""
    means, std, weights = eight_gaussians_mixture(_check_positive(radius, "radius", "8gaussians"),
                                                  _check_positive(std, "std", "8gaussians"))

    def sample(seed, idx):
        label = np.minimum((hash_uniform(seed, idx, 0) * 8).astype(np.int64), 7)
        x = means[label] + std * np.stack([hash_normal(seed, idx, 1), hash_normal(seed, idx, 3)], -1)
        return x, label

    ds = ToyDataset("8gaussians", sample, n, seed, class_names=[f"component {k}" for k in range(8)])
    ds.means, ds.std, ds.weights = means, std, weights
    return ds


def swiss_roll(n: int = 10000, seed: int = 0, noise: float = 0.5) -> ToyDataset:
    """scikit-learn's make_swiss_roll projected to 2D (t cos t, t sin t), t in [1.5 pi, 4.5 pi], noise, / 5."""
    noise = _check_positive(noise, "noise", "swissroll")

    def sample(seed, idx):
        t = 1.5 * np.pi * (1 + 2 * hash_uniform(seed, idx, 0))
        x = np.stack([t * np.cos(t), t * np.sin(t)], -1)
        x = x + noise * np.stack([hash_normal(seed, idx, 1), hash_normal(seed, idx, 3)], -1)
        return x / 5.0, None

    return ToyDataset("swissroll", sample, n, seed)


def checkerboard(n: int = 10000, seed: int = 0) -> ToyDataset:
    """Uniform on the 8 dark squares of a 4x4 checkerboard covering [-3, 3]^2 (FFJORD's toy, rescaled)."""

    def sample(seed, idx):
        x1 = 4 * hash_uniform(seed, idx, 0) - 2  # in [-2, 2)
        x2 = hash_uniform(seed, idx, 1) - 2 * np.floor(2 * hash_uniform(seed, idx, 2))  # [-2, -1) U [0, 1)
        x2 = x2 + np.floor(x1) % 2  # shift odd columns up by one cell
        return 1.5 * np.stack([x1, x2], -1), None

    return ToyDataset("checkerboard", sample, n, seed)
