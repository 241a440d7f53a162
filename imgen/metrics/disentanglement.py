"""How a VAE's latent space is organised, measured against ground-truth factors of variation:

- active units (Burda et al. 2016, sec. 5.2): latent dimension j is active when Var_x(E_q[z_j | x]) > 0.01; beta-VAE
  (Higgins et al. 2017) trades reconstructions for fewer, more independent active units.
- MIG, the mutual information gap (Chen et al. 2018, "Isolating sources of disentanglement", eq. 7):
      MIG = 1/K sum_k (I(z_j(k); v_k) - I(z_j'(k); v_k)) / H(v_k)
  with j(k), j'(k) the latent dimensions of highest and second-highest mutual information with factor v_k. Chen et al.
  estimate I(z_j; v_k) from samples of q(z|x); here, as in the disentanglement_lib reimplementation (Locatello et al.
  2019), each posterior-mean dimension is discretized into `bins` equal-width histogram bins and I is the plug-in
  estimate of the contingency table. 0 = no factor has a latent of its own, 1 = each factor lives in one latent.
"""
from __future__ import annotations

import numpy as np
import torch

from imgen.errors import ImgenError, check_int


def active_units(means: torch.Tensor, threshold: float = 0.01) -> int:
    """How many latent dimensions of posterior means (N, D) vary across the data by more than `threshold`."""
    means = torch.as_tensor(means, dtype=torch.float64).flatten(1)
    if len(means) < 2:
        raise ImgenError(f"active_units needs the posterior means of >= 2 images, got {len(means)}")
    return int((means.var(0) > threshold).sum())


def discretize(values: np.ndarray, bins: int = 20) -> np.ndarray:
    """Each column of (N, D) values into `bins` equal-width bins over its own range -> (N, D) int codes."""
    values = np.asarray(values, np.float64)
    lo, hi = values.min(0), values.max(0)
    width = np.where(hi > lo, (hi - lo) / bins, 1.0)
    return np.clip(((values - lo) / width).astype(np.int64), 0, bins - 1)


def mutual_information(a: np.ndarray, b: np.ndarray) -> float:
    """Plug-in I(a; b) in nats of two (N,) integer codes (the contingency table's empirical joint)."""
    _, a = np.unique(a, return_inverse=True)
    _, b = np.unique(b, return_inverse=True)
    joint = np.zeros((a.max() + 1, b.max() + 1))
    np.add.at(joint, (a, b), 1.0)
    joint /= joint.sum()
    outer = joint.sum(1, keepdims=True) * joint.sum(0, keepdims=True)
    nz = joint > 0
    return float((joint[nz] * np.log(joint[nz] / outer[nz])).sum())


def entropy(codes: np.ndarray) -> float:
    """H(v) in nats of (N,) integer codes."""
    p = np.unique(codes, return_counts=True)[1] / len(codes)
    return float(-(p * np.log(p)).sum())


def mig(means: torch.Tensor, factors: dict[str, np.ndarray], bins: int = 20) -> dict:
    """MIG of posterior means (N, D) against ground-truth factors {name: (N,) int}: {"mig": mean over factors,
    "per_factor": {name: gap / H(v)}, "mi": {name: [I(z_j; v) for each j]} in nats}. Factors taking one value only
    carry no information and are left out."""
    check_int(bins, "bins", minimum=2)
    z = np.asarray(torch.as_tensor(means, dtype=torch.float64).flatten(1))
    if z.shape[1] < 2:
        raise ImgenError(f"MIG compares a factor's two most informative latents; these latents have {z.shape[1]} dimension")
    codes = discretize(z, bins)
    per_factor, mi = {}, {}
    for name, v in factors.items():
        v = np.asarray(v).reshape(-1)
        if len(v) != len(z):
            raise ImgenError(f"factor {name!r} has {len(v)} values for {len(z)} latents; give one value per image")
        h = entropy(v)
        if h == 0:
            continue
        mi[name] = [mutual_information(codes[:, j], v) for j in range(z.shape[1])]
        top = sorted(mi[name], reverse=True)
        per_factor[name] = (top[0] - top[1]) / h
    if not per_factor:
        raise ImgenError("MIG needs at least one factor that takes more than one value")
    return {"mig": float(np.mean(list(per_factor.values()))), "per_factor": per_factor, "mi": mi}
