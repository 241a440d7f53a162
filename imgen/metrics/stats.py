"""Streaming feature statistics: running mean and covariance in float64, merged batch by batch.

Only (n, mean, M2) are kept, never the features, so FID of any number of images needs O(D^2) memory.
Batches are merged with the pairwise update of Chan, Golub & LeVeque (1979), eq. 2.1b, which stays accurate
when the mean is large compared with the spread (unlike sum-of-outer-products minus n * mean mean^T).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch

from imgen.errors import ImgenError


@dataclass
class RunningStats:
    """Running mean / covariance of (B, D) feature batches, accumulated in float64."""

    dim: int
    n: int = 0
    mean: torch.Tensor = field(default=None)  # (D,) float64
    m2: torch.Tensor = field(default=None)  # (D, D) float64: sum of centred outer products

    def __post_init__(self):
        if self.mean is None:
            self.mean = torch.zeros(self.dim, dtype=torch.float64)
        if self.m2 is None:
            self.m2 = torch.zeros(self.dim, self.dim, dtype=torch.float64)

    def update(self, feats: torch.Tensor) -> "RunningStats":
        """Add a (B, D) batch of features."""
        feats = torch.as_tensor(feats).detach().to("cpu", torch.float64)
        if feats.ndim != 2 or feats.shape[1] != self.dim:
            raise ImgenError(f"RunningStats expects (B, {self.dim}) features, got {tuple(feats.shape)}; "
                             "pass the output of one feature extractor")
        b = feats.shape[0]
        if b == 0:
            return self
        batch_mean = feats.mean(0)
        centred = feats - batch_mean
        batch_m2 = centred.T @ centred
        return self._merge(b, batch_mean, batch_m2)

    def merge(self, other: "RunningStats") -> "RunningStats":
        """Fold another RunningStats (e.g. from another process) into this one."""
        if other.dim != self.dim:
            raise ImgenError(f"cannot merge statistics of dimension {other.dim} into {self.dim}")
        return self._merge(other.n, other.mean, other.m2)

    def _merge(self, nb: int, mean_b: torch.Tensor, m2_b: torch.Tensor) -> "RunningStats":
        na, n = self.n, self.n + nb
        delta = mean_b - self.mean
        self.mean = self.mean + delta * (nb / n)
        self.m2 = self.m2 + m2_b + torch.outer(delta, delta) * (na * nb / n)  # Chan et al. eq. 2.1b
        self.n = n
        return self

    @property
    def cov(self) -> torch.Tensor:
        """Unbiased covariance (divides by n - 1), float64 (D, D)."""
        if self.n < 2:
            raise ImgenError(f"covariance needs at least 2 samples, got {self.n}; give the metric more images")
        return self.m2 / (self.n - 1)

    @classmethod
    def from_features(cls, feats: torch.Tensor, chunk: int = 4096) -> "RunningStats":
        feats = torch.as_tensor(feats)
        stats = cls(dim=feats.shape[1])
        for i in range(0, feats.shape[0], chunk):
            stats.update(feats[i:i + chunk])
        return stats

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {"n": torch.tensor([self.n], dtype=torch.int64), "mean": self.mean, "m2": self.m2}

    @classmethod
    def from_state_dict(cls, sd: dict[str, torch.Tensor]) -> "RunningStats":
        mean = sd["mean"].to(torch.float64)
        return cls(dim=mean.shape[0], n=int(sd["n"][0]), mean=mean, m2=sd["m2"].to(torch.float64))

    def save(self, path: str | Path) -> None:
        from safetensors.torch import save_file

        save_file({k: v.contiguous() for k, v in self.state_dict().items()}, str(path))

    @classmethod
    def load(cls, path: str | Path) -> "RunningStats":
        from safetensors.torch import load_file

        return cls.from_state_dict(load_file(str(path)))
