"""Fréchet distance between Gaussian fits of two feature sets (FID, Heusel et al. 2017, eq. 6).

    d^2 = ||mu1 - mu2||^2 + tr(S1) + tr(S2) - 2 tr((S1 S2)^{1/2})

All in float64. tr((S1 S2)^{1/2}) is the sum of square roots of the eigenvalues of S1 S2, which equal those
of the symmetric PSD matrix A^T S2 A for any factor S1 = A A^T (A^T S2 A is similar to S1 S2). A is the
Cholesky factor when S1 is positive definite (cheap), else U diag(sqrt(l)) from S1's eigendecomposition.
A symmetric eigensolver is faster and stabler than a general sqrtm or eigvals: no complex parts, and tiny
negative eigenvalues from rounding are clipped to 0.
"""
from __future__ import annotations

import torch

from imgen.errors import ImgenError
from imgen.metrics.stats import RunningStats


def trace_sqrt_product(sigma1: torch.Tensor, sigma2: torch.Tensor) -> torch.Tensor:
    """tr((S1 S2)^{1/2}) for symmetric PSD S1, S2 (float64)."""
    sigma1, sigma2 = sigma1.double(), sigma2.double()
    a, info = torch.linalg.cholesky_ex(sigma1)  # S1 = A A^T
    if info != 0:  # singular S1: factor through the eigendecomposition instead
        lam, u = torch.linalg.eigh(sigma1)
        a = u * lam.clamp_min(0).sqrt()
    m = a.T @ sigma2 @ a
    m = (m + m.T) / 2  # symmetric up to rounding; make it exact for eigvalsh
    return torch.linalg.eigvalsh(m).clamp_min(0).sqrt().sum()


def frechet_distance(mu1, sigma1, mu2, sigma2) -> float:
    """Fréchet distance between N(mu1, sigma1) and N(mu2, sigma2) (Heusel et al. 2017, eq. 6)."""
    mu1, mu2 = torch.as_tensor(mu1).double(), torch.as_tensor(mu2).double()
    sigma1, sigma2 = torch.as_tensor(sigma1).double(), torch.as_tensor(sigma2).double()
    diff = mu1 - mu2
    d2 = diff @ diff + sigma1.trace() + sigma2.trace() - 2 * trace_sqrt_product(sigma1, sigma2)
    return float(d2.clamp_min(0))


def check_enough_samples(n: int, dim: int, features: str = "features") -> None:
    """FID's covariance is singular with n <= D samples: say so and point to KID."""
    if n <= dim:
        raise ImgenError(
            f"FID needs more samples than feature dimensions: got {n} samples of {dim}-dim {features} features, "
            f"so the covariance is singular and FID is meaningless. Use at least {dim + 1} images "
            "(10k is the usual), or use KID (--metrics kid), which is unbiased for small sets.")


def fid_from_stats(a: RunningStats, b: RunningStats, features: str = "features") -> float:
    """FID from two RunningStats of the same extractor."""
    if a.dim != b.dim:
        raise ImgenError(f"FID compares features of one extractor; got dimensions {a.dim} and {b.dim}")
    check_enough_samples(min(a.n, b.n), a.dim, features)
    return frechet_distance(a.mean, a.cov, b.mean, b.cov)


def fid(feats_a: torch.Tensor, feats_b: torch.Tensor, features: str = "features") -> float:
    """FID between two (N, D) feature sets."""
    return fid_from_stats(RunningStats.from_features(feats_a), RunningStats.from_features(feats_b), features)
