"""DDPM, NCSN and EDM on digits learn class-conditional digits that scikit-learn's SVC, trained on the real digits,
reads as the requested class, at a few hundred of their presets' steps (flow matching is checked by tests/test_demo.py
through `imgen demo`). The foundation issue's bar, >= 97% at each preset's full budget, is measured with the training
time by benchmarks/digits_presets.py (benchmarks/results/digits_presets.json: DDPM 0.99, NCSN 0.99, EDM 0.98)."""
import pytest

import imgen
from imgen.digits_check import digits_quality

# measured on 300 samples (one thread): DDPM 0.95 after 700 steps (0.93 after 400), NCSN 0.93 after 300, EDM 0.97
# after 300 (and after 500); a class picked at random scores 0.1


@pytest.mark.slow
def test_digits_ddpm_preset_learns_the_requested_digits_at_25_ddim_steps(trained_digits):
    q = digits_quality(imgen.load(trained_digits("digits-ddpm", 700)), n=300, sampler="ddim", steps=25)
    assert q["svc_accuracy"] >= 0.9  # (0.77 without clipping x0_hat to [-1, 1], at 1000 steps)
    assert q["nn_distance_ratio"] >= 0.5


@pytest.mark.slow
def test_digits_ncsn_preset_learns_the_requested_digits_with_ancestral_steps_on_its_20_levels(trained_digits):
    q = digits_quality(imgen.load(trained_digits("digits-ncsn", 300)), n=300, sampler="ddpm", steps=20)
    assert q["svc_accuracy"] >= 0.88
    assert q["nn_distance_ratio"] >= 0.5


@pytest.mark.slow
def test_digits_edm_preset_learns_the_requested_digits_with_heun_on_the_karras_grid(trained_digits):
    q = digits_quality(imgen.load(trained_digits("digits-edm", 300)), n=300, sampler="heun", steps=13)  # 25 NFE
    assert q["svc_accuracy"] >= 0.92
    assert q["nn_distance_ratio"] >= 0.5
