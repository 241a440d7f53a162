"""Distances between two point clouds (2D toys): sliced Wasserstein and MMD with an RBF kernel.

Both compare samples to fresh data samples; calibrate a threshold against the distance between two independent
real samples (the floor set by finite n) and a clearly wrong model (e.g. one Gaussian with the data's moments).
"""
from __future__ import annotations

import torch

from imgen.errors import ImgenError


def _points(x, name: str) -> torch.Tensor:
    x = torch.as_tensor(x).double()
    if x.ndim != 2 or len(x) < 2:
        raise ImgenError(f"{name} must be a (N, D) array of N >= 2 points, got shape {tuple(x.shape)}; "
                         "flatten images with x.reshape(len(x), -1)")
    if not bool(torch.isfinite(x).all()):
        raise ImgenError(f"{name} holds NaN or inf; check the sampler/model that produced it")
    return x


def _pair(x, y):
    x, y = _points(x, "x"), _points(y, "y")
    if x.shape[1] != y.shape[1]:
        raise ImgenError(f"x and y must have the same point dimension, got {x.shape[1]} and {y.shape[1]}")
    return x, y


def sliced_wasserstein(x, y, n_projections: int = 256, p: int = 2, seed: int = 0) -> float:
    """Sliced p-Wasserstein distance (Rabin et al. 2011; Bonneel et al. 2015): the p-Wasserstein distance of the
    1-D projections onto `n_projections` random unit directions, averaged as (mean_theta W_p^p)^(1/p). In 1-D,
    W_p between empirical measures matches sorted quantiles; unequal sizes are compared on a common quantile grid."""
    x, y = _pair(x, y)
    if n_projections < 1 or p < 1:
        raise ImgenError(f"need n_projections >= 1 and p >= 1, got {n_projections}, {p}")
    gen = torch.Generator().manual_seed(seed)
    theta = torch.randn(x.shape[1], n_projections, generator=gen, dtype=torch.float64)
    theta = theta / theta.norm(dim=0, keepdim=True)  # uniform directions on the sphere
    px, py = (x @ theta).sort(0).values, (y @ theta).sort(0).values  # (N, P) sorted projections
    if len(px) != len(py):
        m = max(len(px), len(py))
        q = (torch.arange(m, dtype=torch.float64) + 0.5) / m  # midpoint quantiles
        px, py = px[(q * len(px)).long()], py[(q * len(py)).long()]
    return float(((px - py).abs() ** p).mean() ** (1.0 / p))


def median_bandwidth(x, y) -> float:
    """The median heuristic (Gretton et al. 2012, sec. 8): the median pairwise distance in the pooled sample."""
    z = torch.cat(_pair(x, y))
    d = torch.cdist(z, z)
    return float(d[torch.triu(torch.ones_like(d, dtype=torch.bool), diagonal=1)].median())


def mmd_rbf(x, y, bandwidth: float | None = None, biased: bool = False) -> float:
    """Unbiased squared MMD (Gretton et al. 2012, eq. 3) with the RBF kernel k(a, b) = exp(-|a - b|^2 / (2 h^2)),
    h the median pairwise distance unless given. ~0 (can be slightly negative) when x and y share a distribution.
    biased=True gives the V-statistic (eq. 5), never negative, which suits ratios between models."""
    x, y = _pair(x, y)
    h = median_bandwidth(x, y) if bandwidth is None else float(bandwidth)
    if not h > 0:
        raise ImgenError(f"MMD bandwidth must be > 0, got {h}; the points may all coincide")
    k = lambda a, b: torch.exp(-torch.cdist(a, b) ** 2 / (2 * h * h))  # noqa: E731
    kxx, kyy, kxy = k(x, x), k(y, y), k(x, y)
    if biased:
        return float(kxx.mean() + kyy.mean() - 2 * kxy.mean())
    n, m = len(x), len(y)
    xx = (kxx.sum() - kxx.diagonal().sum()) / (n * (n - 1))
    yy = (kyy.sum() - kyy.diagonal().sum()) / (m * (m - 1))
    return float(xx + yy - 2 * kxy.mean())
