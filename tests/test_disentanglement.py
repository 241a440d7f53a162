"""imgen.metrics.disentanglement: MIG's mutual information against scikit-learn's, and MIG / active units on latents
whose structure is known (one factor per latent -> MIG near 1; every latent mixing both factors -> near 0)."""
import numpy as np
import pytest
import torch
from sklearn.metrics import mutual_info_score

from imgen.errors import ImgenError
from imgen.metrics.disentanglement import active_units, discretize, entropy, mig, mutual_information


def test_mutual_information_and_entropy_match_scikit_learn():
    rng = np.random.default_rng(0)
    a = rng.integers(0, 7, 3000)
    b = (a + rng.integers(0, 3, 3000)) % 5
    assert mutual_information(a, b) == pytest.approx(mutual_info_score(a, b), abs=1e-12)
    assert entropy(b) == pytest.approx(mutual_info_score(b, b), abs=1e-12)  # I(v; v) = H(v)


def test_mig_is_near_one_for_axis_aligned_factors_and_near_zero_for_mixed_ones():
    rng = np.random.default_rng(0)
    shape, color = rng.integers(0, 5, 4000), rng.integers(0, 8, 4000)
    noise = rng.normal(0, 0.05, (4000, 4))
    aligned = np.stack([shape, color, np.zeros(4000), np.zeros(4000)], 1) + noise
    r = mig(torch.from_numpy(aligned), {"shape": shape, "color": color})
    assert r["mig"] > 0.9 and set(r["per_factor"]) == {"shape", "color"}
    rotated = aligned[:, :2] @ np.array([[1.0, 1.0], [1.0, -1.0]])  # both latents carry both factors equally
    mixed = mig(torch.from_numpy(np.concatenate([rotated, noise[:, 2:]], 1)), {"shape": shape, "color": color})
    assert mixed["mig"] < 0.3 < r["mig"] - 0.5


def test_active_units_count_the_latents_that_vary_across_images():
    means = torch.zeros(100, 6)
    means[:, 0] = torch.linspace(-2, 2, 100)
    means[:, 3] = torch.linspace(0, 0.5, 100)  # variance ~0.021 > 0.01
    means[:, 5] = torch.linspace(0, 0.1, 100)  # variance ~0.0009: collapsed to the prior
    assert active_units(means) == 2


def test_discretize_bins_each_column_over_its_own_range():
    codes = discretize(np.array([[0.0, 10.0], [0.5, 20.0], [1.0, 30.0]]), bins=4)
    assert codes[:, 0].tolist() == [0, 2, 3] and codes[:, 1].tolist() == [0, 2, 3]


def test_bad_inputs_are_clear_errors():
    with pytest.raises(ImgenError, match="one value per image"):
        mig(torch.zeros(10, 3), {"shape": np.zeros(9)})
    with pytest.raises(ImgenError, match="more than one value"):
        mig(torch.randn(10, 3), {"shape": np.zeros(10)})
    with pytest.raises(ImgenError, match=">= 2 images"):
        active_units(torch.zeros(1, 3))
