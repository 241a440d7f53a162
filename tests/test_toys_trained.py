"""Diffusion, score, EDM and flow-matching models trained on 2D toys reach the data.

Distances (imgen.metrics.toy_distances) between 2000 model samples and 2000 fresh data points (another seed):
sliced 2-Wasserstein (256 directions) and unbiased MMD^2 with an RBF kernel at the median bandwidth.
Calibration (measured, `test_thresholds_separate_real_data_from_a_single_gaussian`):
                          SW floor (real vs real)   SW one Gaussian   MMD floor   MMD one Gaussian
    8gaussians            0.065                     0.383             -0.0002     0.0027
    moons                 0.047                     0.318             -0.0002     0.0017
Thresholds: SW < 0.14 and MMD < 0.0008, at least 2x from both ends (asserted below).
"""
import numpy as np
import pytest
import torch
from scipy.stats import wasserstein_distance

import imgen
from imgen.config import Config, DataConfig, MethodConfig, NetConfig, SampleConfig, TrainConfig
from imgen.data import load_dataset
from imgen.errors import ImgenError
from imgen.metrics.toy_distances import median_bandwidth, mmd_rbf, sliced_wasserstein
from imgen.train import train

SW_MAX, MMD_MAX = 0.14, 0.0008
N = 2000


def fresh(name: str, n: int = N, seed: int = 123) -> torch.Tensor:
    return load_dataset(name, seed=seed).get(np.arange(n))["x"]


def one_gaussian_like(x: torch.Tensor, seed: int = 0) -> torch.Tensor:
    """The clearly wrong model: a single Gaussian with the data's mean and covariance."""
    x = x.double()
    z = torch.randn(len(x), 2, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    return x.mean(0) + z @ torch.linalg.cholesky(torch.cov(x.T)).T


# ---- the distances themselves -------------------------------------------------------------------------
def test_sliced_wasserstein_in_1d_is_scipys_wasserstein_distance():
    gen = torch.Generator().manual_seed(0)
    x, y = torch.randn(300, 1, generator=gen), 0.5 + 2 * torch.randn(300, 1, generator=gen)
    ours = sliced_wasserstein(x, y, n_projections=4, p=1)  # every 1-D direction is +-1
    assert ours == pytest.approx(wasserstein_distance(x[:, 0].numpy(), y[:, 0].numpy()), rel=1e-9)


def test_sliced_wasserstein_of_a_shift_is_the_shift_times_the_mean_projection():
    x = torch.randn(1000, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    # shifting by d moves every projection by <theta, d>: SW_2 = |d| sqrt(E cos^2) = |d| / sqrt(2) in 2D
    assert sliced_wasserstein(x, x + torch.tensor([3.0, 0.0], dtype=torch.float64), 4096) == pytest.approx(
        3 / 2**0.5, rel=0.03)
    assert sliced_wasserstein(x, x) == 0.0


def test_mmd_matches_the_explicit_unbiased_estimator():
    gen = torch.Generator().manual_seed(0)
    x, y = torch.randn(30, 2, generator=gen, dtype=torch.float64), torch.randn(20, 2, generator=gen, dtype=torch.float64) + 1
    h = 0.7
    k = lambda a, b: float(np.exp(-np.sum((a - b) ** 2) / (2 * h * h)))  # noqa: E731
    xs, ys = x.numpy(), y.numpy()
    xx = sum(k(a, b) for i, a in enumerate(xs) for j, b in enumerate(xs) if i != j) / (30 * 29)
    yy = sum(k(a, b) for i, a in enumerate(ys) for j, b in enumerate(ys) if i != j) / (20 * 19)
    xy = sum(k(a, b) for a in xs for b in ys) / (30 * 20)
    assert mmd_rbf(x, y, bandwidth=h) == pytest.approx(xx + yy - 2 * xy, rel=1e-10)
    z = torch.cat([x, y])
    d = torch.cdist(z, z)
    assert median_bandwidth(x, y) == pytest.approx(float(d[np.triu_indices(50, 1)].median()))


def test_distances_reject_bad_point_sets_with_the_fix():
    with pytest.raises(ImgenError, match="same point dimension"):
        mmd_rbf(torch.zeros(5, 2), torch.zeros(5, 3))
    with pytest.raises(ImgenError, match=r"reshape\(len\(x\), -1\)"):
        sliced_wasserstein(torch.zeros(5, 1, 2, 2), torch.zeros(5, 4))
    with pytest.raises(ImgenError, match="NaN"):
        sliced_wasserstein(torch.full((5, 2), float("nan")), torch.zeros(5, 2))


@pytest.mark.parametrize("data", ["8gaussians", "moons"])
def test_thresholds_separate_real_data_from_a_single_gaussian(data):
    real, other = fresh(data), fresh(data, seed=7)
    wrong = one_gaussian_like(other)
    assert sliced_wasserstein(real, other) < SW_MAX / 2 and sliced_wasserstein(real, wrong) > 2 * SW_MAX
    assert mmd_rbf(real, other) < MMD_MAX / 2 and mmd_rbf(real, wrong) > 2 * MMD_MAX


# ---- trained models -----------------------------------------------------------------------------------
# method config, sampling options, training steps; each trains a 3-block MLP (width 128, batch 256, lr 2e-3) in
# about 20-40 s on one uncontended thread (flow matching: 3000 steps, ~45 s; at 1500 it stays ~4% too narrow on moons)
CASES = {
    "ddpm": (MethodConfig("ddpm", {"schedule": "linear", "cond_drop": 1.0}), dict(sampler="ddpm", steps=200), 1500),
    "ncsn": (MethodConfig("ncsn", {"sigma_max": 5.0, "cond_drop": 1.0}), dict(sampler="langevin", steps=10), 1500),
    "edm": (MethodConfig("edm", {"cond_drop": 1.0}), dict(sampler="heun", steps=25, grid="karras"), 1500),
    "flow_matching": (MethodConfig("flow_matching", {"cond_drop": 1.0}), dict(sampler="midpoint", steps=25), 3000),
}


# each method on one toy, both toys covered (every method reached both in earlier runs; one each keeps the slow tier
# short): the 8 modes of 8gaussians test mode coverage, the moons' thin arcs test precision
@pytest.mark.slow
@pytest.mark.parametrize("method,data", [("ddpm", "moons"), ("ncsn", "8gaussians"), ("edm", "moons"),
                                         ("flow_matching", "8gaussians")])
def test_trained_toy_model_reaches_the_data(method, data, tmp_path):
    method_config, sampling, steps = CASES[method]
    config = Config(data=DataConfig(data, {}, batch_size=256), net=NetConfig("mlp", {"hidden": 128, "depth": 3}),
                    method=method_config,
                    train=TrainConfig(steps=steps, lr=2e-3, warmup=100, ema_decay=0.99, ckpt_every=steps, log_every=100),
                    sample=SampleConfig(**sampling))
    train(config, tmp_path / "model", progress=False)
    x = imgen.load(tmp_path / "model").sample(N, seed=0)
    real = fresh(data)
    sw, mmd = sliced_wasserstein(x, real), mmd_rbf(x, real)
    print(f"{method} on {data}: sliced W2 {sw:.4f}, MMD^2 {mmd:.5f}")
    assert sw < SW_MAX and mmd < MMD_MAX, (method, data, sw, mmd)
