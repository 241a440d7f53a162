"""k-NN manifold metrics on features.

Precision / recall: Kynkäänniemi et al. 2019, eqs. 1-2: each set's manifold is the union of balls reaching
each sample's k-th nearest neighbour in the same set; precision = share of generated samples inside the real
manifold, recall = share of real samples inside the generated manifold.
Density / coverage: Naeem et al. 2020, eqs. 4-5 (real balls only; robust to outliers).
Distances are computed in row chunks, so memory is O(chunk * N).
"""
from __future__ import annotations

import torch

from imgen.errors import ImgenError


def _sq_dists(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """(m, D), (n, D) -> (m, n) squared Euclidean distances (clipped at 0)."""
    d = (x * x).sum(1, keepdim=True) - 2 * x @ y.T + (y * y).sum(1)[None]
    return d.clamp_min_(0)


def knn_radii(feats: torch.Tensor, k: int, chunk: int = 1024) -> torch.Tensor:
    """Squared distance from each sample to its k-th nearest neighbour in the same set (self excluded)."""
    if feats.shape[0] <= k:
        raise ImgenError(f"k-NN metrics need more than k={k} samples per set, got {feats.shape[0]}; "
                         "give them more images or lower k")
    out = []
    for i in range(0, feats.shape[0], chunk):
        d = _sq_dists(feats[i:i + chunk], feats)
        out.append(d.topk(k + 1, dim=1, largest=False).values[:, k])  # index 0 is the sample itself
    return torch.cat(out)


def manifold_metrics(real: torch.Tensor, fake: torch.Tensor, k: int = 3, chunk: int = 1024) -> dict[str, float]:
    """precision, recall, density, coverage of `fake` against `real` (both (N, D) features)."""
    real, fake = torch.as_tensor(real).double(), torch.as_tensor(fake).double()
    r_real, r_fake = knn_radii(real, k, chunk), knn_radii(fake, k, chunk)
    in_real = torch.zeros(fake.shape[0], dtype=torch.bool)
    density_count = torch.zeros((), dtype=torch.float64)
    for i in range(0, fake.shape[0], chunk):
        inside = _sq_dists(fake[i:i + chunk], real) < r_real[None]  # (c, N_real)
        in_real[i:i + chunk] = inside.any(1)
        density_count += inside.sum()
    in_fake = torch.zeros(real.shape[0], dtype=torch.bool)
    covered = torch.zeros(real.shape[0], dtype=torch.bool)
    for i in range(0, real.shape[0], chunk):
        d = _sq_dists(real[i:i + chunk], fake)  # (c, N_fake)
        in_fake[i:i + chunk] = (d < r_fake[None]).any(1)
        covered[i:i + chunk] = d.min(1).values < r_real[i:i + chunk]
    return {
        "precision": float(in_real.double().mean()),  # Kynkäänniemi eq. 1
        "recall": float(in_fake.double().mean()),  # Kynkäänniemi eq. 2
        "density": float(density_count / (k * fake.shape[0])),  # Naeem eq. 4
        "coverage": float(covered.double().mean()),  # Naeem eq. 5
    }
