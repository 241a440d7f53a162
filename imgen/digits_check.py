"""Judge a class-conditional digits model with a classifier imgen did not write (scikit-learn's SVC on the
real 8x8 digits), and check samples are not copies of the training set (nearest-neighbour distances)."""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.datasets import load_digits
from sklearn.svm import SVC


def _to_digits_space(x: torch.Tensor) -> np.ndarray:
    """(N, 1, H, W) in [-1, 1] -> (N, 64) in sklearn's 0..16 scale (area-downsampled to 8x8)."""
    if x.shape[-1] != 8:
        x = F.adaptive_avg_pool2d(x, 8)
    return ((x.clamp(-1, 1) + 1) * 8).reshape(len(x), 64).double().numpy()


def digits_quality(model, n: int = 500, sampler: str = "euler", steps: int = 25, cfg: float = 1.0, seed: int = 0) -> dict:
    """SVC accuracy on the requested labels, and median NN distance sample->train over median NN distance
    among real images (>= 0.5 means samples are not copies)."""
    digits = load_digits()
    real, labels = digits.data.astype(np.float64), digits.target
    svc = SVC().fit(real, labels)  # rbf, gamma='scale': ~99% held-out accuracy on real digits
    want = torch.arange(n) % 10
    x = model.sample(n, labels=want, sampler=sampler, steps=steps, cfg=cfg, seed=seed)
    xs = _to_digits_space(x)
    acc = float((svc.predict(xs) == want.numpy()).mean())
    real_t = torch.from_numpy(real)
    d_real = torch.cdist(real_t, real_t)
    d_real.fill_diagonal_(float("inf"))
    d_samp = torch.cdist(torch.from_numpy(xs), real_t)
    ratio = float(d_samp.min(1).values.median() / d_real.min(1).values.median())
    return {"svc_accuracy": acc, "nn_distance_ratio": ratio, "n": n, "sampler": sampler, "steps": steps, "cfg": cfg}
