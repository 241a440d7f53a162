"""Kernel Inception Distance (Bińkowski et al. 2018): unbiased MMD^2 with the cubic polynomial kernel
k(x, y) = (x.y / D + 1)^3, averaged over random subsets; reports mean and std over subsets.

Subsets are drawn exactly as torchmetrics does (per subset: randperm of set a, then of set b), from a seeded
generator, so the two agree subset by subset. Only kernel *sums* are needed: each kernel matrix is one fused
GEMM (addmm) and an in-place cube in the features' dtype, summed row-wise and then in float64. (Splitting the
symmetric within-set GEMMs into upper-triangle blocks saves flops but was slower on a busy 2-core CPU: more,
smaller parallel regions.)
"""
from __future__ import annotations

import warnings

import torch

from imgen.errors import ImgenError


def kernel_sum(x: torch.Tensor, y: torch.Tensor, degree: int = 3, coef: float = 1.0,
               skip_diagonal: bool = False) -> torch.Tensor:
    """sum_ij (x_i . y_j / D + coef)^degree for (m, D), (n, D) -> float64 scalar (i != j if skip_diagonal)."""
    k = torch.addmm(x.new_full((1, 1), coef), x, y.T, alpha=1.0 / x.shape[1]).pow_(degree)
    total = k.sum(1).sum(dtype=torch.float64)
    if skip_diagonal:
        total = total - k.diagonal().sum(dtype=torch.float64)
    return total


def kid(feats_a: torch.Tensor, feats_b: torch.Tensor, subsets: int = 100, subset_size: int = 1000,
        seed: int = 0) -> tuple[float, float | None]:
    """KID mean and std (population std over `subsets` subsets of `subset_size` samples each, as torchmetrics).

    `subset_size` is capped at the smaller set's size (as clean-fid), with a warning. When both sets are no larger
    than it, every subset would be the whole of both sets: KID is computed once over all samples and the std is
    None (there is no spread to report; identical subsets would give a meaningless ~1e-8).
    """
    feats_a, feats_b = torch.as_tensor(feats_a), torch.as_tensor(feats_b)
    if not feats_a.is_floating_point():
        feats_a = feats_a.float()
    feats_b = feats_b.to(feats_a.dtype)
    n_a, n_b = feats_a.shape[0], feats_b.shape[0]
    if min(n_a, n_b) < 2:
        raise ImgenError(f"KID needs at least 2 samples in each set, got {n_a} and {n_b}; give it more images")
    m = min(subset_size, n_a, n_b)
    if m == n_a == n_b:  # every subset would be both whole sets: one score, no spread
        warnings.warn(f"KID: both sets have {m} samples, not more than the subset size {subset_size}, so every "
                      "subset would be the same; reporting one KID over all samples and no std (kid_std null); "
                      "give more samples than the subset size, or a smaller subset size, for a spread", stacklevel=2)
        return float(mmd2_unbiased(feats_a, feats_b)), None
    if m < subset_size:
        warnings.warn(f"KID: subset size {subset_size} is more than the smaller set's {m} samples; using subsets "
                      f"of {m}, so each holds that whole set and the std reflects only the other set's resampling",
                      stacklevel=2)
    g = torch.Generator().manual_seed(seed)
    scores = torch.empty(subsets, dtype=torch.float64)
    for s in range(subsets):  # same draw order as torchmetrics' KernelInceptionDistance.compute
        x = feats_a[torch.randperm(n_a, generator=g)[:m]]
        y = feats_b[torch.randperm(n_b, generator=g)[:m]]
        scores[s] = mmd2_unbiased(x, y)
    return float(scores.mean()), float(scores.std(unbiased=False))


def mmd2_unbiased(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Unbiased MMD^2 of two equal-size sets (m, D) under the cubic kernel (Gretton et al. 2012 eq. 3)."""
    m = x.shape[0]
    within = (kernel_sum(x, x, skip_diagonal=True) + kernel_sum(y, y, skip_diagonal=True)) / (m * (m - 1))
    return within - 2 * kernel_sum(x, y) / (m * m)
