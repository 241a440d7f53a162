"""Parameterizations convert into the one denoiser interface exactly; schedules have the published shapes."""
import math

import pytest
import torch

from imgen.denoiser import PREDICTIONS, target, to_x0
from imgen.errors import ImgenError
from imgen.schedules import VPCosine, VPLinear, build_schedule


@pytest.mark.parametrize("schedule", ["linear", "cosine", "rectified_flow"])
@pytest.mark.parametrize("prediction", PREDICTIONS)
def test_perfect_prediction_gives_back_x0(schedule, prediction):
    sched = build_schedule(schedule)
    g = torch.Generator().manual_seed(0)
    x0, eps = torch.randn(16, 3, 4, 4, generator=g, dtype=torch.float64), torch.randn(16, 3, 4, 4, generator=g, dtype=torch.float64)
    t = torch.linspace(0.02, 0.98, 16, dtype=torch.float64)
    a, s = sched.alpha(t).view(-1, 1, 1, 1), sched.sigma(t).view(-1, 1, 1, 1)
    x_t = a * x0 + s * eps
    out = target(prediction, sched, x0, eps, t)
    torch.testing.assert_close(to_x0(prediction, sched, out, x_t, t), x0, rtol=1e-6, atol=1e-6)


def test_linear_schedule_matches_ddpm_discrete_betas():
    """alpha_bar of the continuous VP path at t = i/T equals prod(1 - beta_j) of DDPM's linear betas to 1e-3 absolute
    (2.5% relative wherever alpha_bar > 0.01; the gap is the half-step offset of a Riemann sum): the VP SDE
    is the T -> infinity limit of DDPM."""
    T = 1000
    betas = torch.linspace(1e-4, 0.02, T, dtype=torch.float64)
    alpha_bar = torch.cumprod(1 - betas, 0)
    t = torch.arange(1, T + 1, dtype=torch.float64) / T
    ours = VPLinear().alpha(t) ** 2
    assert (ours - alpha_bar).abs().max() < 1e-3
    big = alpha_bar > 0.01
    assert ((ours - alpha_bar).abs() / alpha_bar)[big].max() < 0.025


def test_cosine_schedule_matches_improved_ddpm_formula():
    t = torch.tensor([0.0, 0.25, 0.5, 0.75], dtype=torch.float64)
    s = 0.008
    f = lambda u: math.cos((u + s) / (1 + s) * math.pi / 2) ** 2  # noqa: E731
    expected = torch.tensor([f(u) / f(0) for u in t.tolist()], dtype=torch.float64)
    torch.testing.assert_close(VPCosine().alpha(t) ** 2, expected)


@pytest.mark.parametrize("schedule", ["linear", "cosine"])
def test_vp_paths_preserve_variance_and_derivatives_are_right(schedule):
    sched = build_schedule(schedule)
    t = torch.linspace(0.05, 0.95, 7, dtype=torch.float64)
    torch.testing.assert_close(sched.alpha(t) ** 2 + sched.sigma(t) ** 2, torch.ones_like(t))
    da, ds = sched.derivatives(t)
    h = 1e-6
    torch.testing.assert_close(da, (sched.alpha(t + h) - sched.alpha(t - h)) / (2 * h), rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(ds, (sched.sigma(t + h) - sched.sigma(t - h)) / (2 * h), rtol=1e-5, atol=1e-7)


def test_unknown_schedule_and_prediction_list_valid_names():
    with pytest.raises(ImgenError, match="valid schedules: cosine, linear, rectified_flow"):
        build_schedule("sigmoid")
    with pytest.raises(ImgenError, match="valid: eps, x0, v, velocity"):
        target("score", build_schedule("linear"), torch.zeros(1), torch.zeros(1), torch.zeros(1))
