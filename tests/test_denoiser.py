"""Parameterizations convert into the one denoiser interface exactly; schedules have the published shapes."""
import math

import pytest
import torch

from imgen.analytic import GaussianMixture
from imgen.denoiser import PREDICTIONS, EDMDenoiser, edm_preconditioning, target, to_x0
from imgen.errors import ImgenError
from imgen.schedules import (GRIDS, SCHEDULES, VE, ShiftedCosine, VPCosine, VPLinear, build_schedule, karras_grid,
                             make_grid)


@pytest.mark.parametrize("schedule", sorted(SCHEDULES))
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


@pytest.mark.parametrize("schedule", ["linear", "cosine", "shifted_cosine"])
def test_vp_paths_preserve_variance_and_derivatives_are_right(schedule):
    sched = build_schedule(schedule)
    t = torch.linspace(0.05, 0.95, 7, dtype=torch.float64)
    torch.testing.assert_close(sched.alpha(t) ** 2 + sched.sigma(t) ** 2, torch.ones_like(t))
    da, ds = sched.derivatives(t)
    h = 1e-6
    torch.testing.assert_close(da, (sched.alpha(t + h) - sched.alpha(t - h)) / (2 * h), rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(ds, (sched.sigma(t + h) - sched.sigma(t - h)) / (2 * h), rtol=1e-5, atol=1e-7)


def test_unknown_schedule_and_prediction_list_valid_names():
    with pytest.raises(ImgenError, match="valid schedules: cosine, linear, rectified_flow, shifted_cosine, ve"):
        build_schedule("sigmoid")
    with pytest.raises(ImgenError, match="valid: eps, x0, v, velocity, score"):
        target("epsilon", build_schedule("linear"), torch.zeros(1), torch.zeros(1), torch.zeros(1))


def test_shifted_cosine_is_the_cosine_log_snr_plus_2_log_shift():
    """Hoogeboom et al. 2023, sec. 3.1: shift = 1 is alpha^2 = cos^2(pi t / 2) (Nichol's cosine with s = 0, up to
    the logSNR floor at t = 1); shift = 64/256 lowers logSNR by exactly 2 log 4 at every t."""
    t = torch.linspace(0.05, 0.9, 9, dtype=torch.float64)
    base, shifted = ShiftedCosine(1.0), ShiftedCosine(64 / 256)
    torch.testing.assert_close(base.alpha(t) ** 2, torch.cos(math.pi * t / 2) ** 2, rtol=0, atol=6e-4)  # floor: t scaled by 1 - 3.5e-4
    torch.testing.assert_close(shifted.logsnr(t) - base.logsnr(t), torch.full_like(t, 2 * math.log(0.25)))
    torch.testing.assert_close((shifted.alpha(t) / shifted.sigma(t)) ** 2, torch.exp(shifted.logsnr(t)))
    assert base.sigma(torch.tensor(0.0)).item() == 0.0 and abs(base.logsnr(torch.tensor(1.0)).item() + 15) < 1e-9
    with pytest.raises(ImgenError, match="shift must be > 0"):
        ShiftedCosine(0.0)


def test_ve_path_is_geometric_from_sigma_min_to_sigma_max():
    """Song et al. 2021, eq. 31: alpha = 1, sigma(t) = sigma_min (sigma_max / sigma_min)^t; t = 0 is data."""
    ve = VE(0.01, 50.0)
    t = torch.tensor([0.25, 0.5, 1.0], dtype=torch.float64)
    torch.testing.assert_close(ve.sigma(t), torch.tensor([0.01 * 5000**0.25, 0.01 * 5000**0.5, 50.0], dtype=torch.float64))
    assert torch.equal(ve.alpha(t), torch.ones(3, dtype=torch.float64)) and ve.sigma(torch.tensor(0.0)).item() == 0.0
    da, ds = ve.derivatives(t)
    h = 1e-6
    torch.testing.assert_close(ds, (ve.sigma(t + h) - ve.sigma(t - h)) / (2 * h), rtol=1e-6, atol=0)
    assert torch.equal(da, torch.zeros(3, dtype=torch.float64))
    with pytest.raises(ImgenError, match="0 < sigma_min < sigma_max"):
        VE(1.0, 0.5)


@pytest.mark.parametrize("schedule", sorted(SCHEDULES))
def test_edm_sigma_inverts_on_every_schedule(schedule):
    sched = build_schedule(schedule)
    t = torch.linspace(0.02, 0.95, 12, dtype=torch.float64)
    torch.testing.assert_close(sched.t_from_edm_sigma(sched.edm_sigma(t)), t, rtol=1e-9, atol=1e-12)


def test_karras_grid_follows_edm_eq5_and_matches_diffusers():
    """EDM eq. 5 spacing, cross-checked against diffusers' implementation (EulerDiscreteScheduler, float32), and
    mapped to the right times on VE, VP and rectified-flow paths."""
    diffusers = pytest.importorskip("diffusers")
    theirs = torch.as_tensor(diffusers.EulerDiscreteScheduler()._convert_to_karras(torch.tensor([80.0, 0.002]), 10))
    for schedule in [VE(0.001, 100.0), VPLinear(), build_schedule("rectified_flow")]:
        ts = karras_grid(schedule, 10, sigma_min=0.002, sigma_max=80.0, rho=7.0)
        assert len(ts) == 11 and ts[-1] == 0 and bool((ts[1:] < ts[:-1]).all())
        torch.testing.assert_close(schedule.edm_sigma(ts[:-1]), theirs.double(), rtol=1e-5, atol=0)
    ramp = torch.linspace(0, 1, 10, dtype=torch.float64)
    own = (80 ** (1 / 7) + ramp * (0.002 ** (1 / 7) - 80 ** (1 / 7))) ** 7
    torch.testing.assert_close(VE(0.001, 100.0).edm_sigma(karras_grid(VE(0.001, 100.0), 10, 0.002, 80.0))[:-1], own)


def test_logsnr_grid_is_uniform_in_log_snr():
    sched = VPLinear()
    ts = make_grid(sched, 8, "logsnr", sigma_min=0.01, sigma_max=100.0)
    lam = -torch.log(sched.edm_sigma(ts[:-1]))
    torch.testing.assert_close(lam[1:] - lam[:-1], torch.full((7,), (math.log(100) - math.log(0.01)) / 7, dtype=torch.float64))


def test_grid_choice_by_name_and_bad_grids_are_rejected():
    sched = build_schedule("cosine")
    assert torch.equal(make_grid(sched, 4, "uniform"), torch.tensor([1.0, 0.75, 0.5, 0.25, 0.0], dtype=torch.float64))
    for kind in GRIDS:
        assert len(make_grid(sched, 7, kind)) == 8
        with pytest.raises(ImgenError, match="steps must be an integer >= 1"):
            make_grid(sched, 0, kind)
    with pytest.raises(ImgenError, match="valid grids: uniform, karras, logsnr"):
        make_grid(sched, 10, "quadratic")
    with pytest.raises(ImgenError, match="rho must be > 0"):
        make_grid(sched, 10, "karras", rho=0)
    with pytest.raises(ImgenError, match="need 0 < sigma_min < sigma_max"):
        make_grid(sched, 10, "karras", sigma_min=5.0, sigma_max=1.0)
    with pytest.raises(ImgenError, match="outside what schedule 've' reaches"):
        make_grid(VE(0.01, 50.0), 10, "karras", sigma_min=0.002, sigma_max=80.0)
    with pytest.raises(ImgenError, match="apply to kind='karras' or 'logsnr'"):
        make_grid(sched, 10, "uniform", sigma_max=80.0)


@pytest.mark.parametrize("sigma,expected", [
    # sigma_data = 0.5; values worked by hand from EDM Table 1: c_skip, c_out, c_in, c_noise, lambda
    (0.002, (0.25 / 0.250004, 0.001 / 0.250004**0.5, 1 / 0.250004**0.5, math.log(0.002) / 4, 0.250004 / 1e-6)),
    (0.5, (0.5, 0.25 / 0.5**0.5, 1 / 0.5**0.5, math.log(0.5) / 4, 8.0)),
    (80.0, (0.25 / 6400.25, 40 / 6400.25**0.5, 1 / 6400.25**0.5, math.log(80) / 4, 6400.25 / 1600)),
])
def test_edm_preconditioning_matches_table_1_at_spot_values(sigma, expected):
    c = edm_preconditioning(torch.tensor(sigma, dtype=torch.float64), 0.5)
    torch.testing.assert_close(torch.stack(list(c)), torch.tensor(expected, dtype=torch.float64), rtol=1e-12, atol=0)
    # EDM appendix B.6: unit-variance net input and training target, and lambda = 1 / c_out^2
    assert abs(c.c_in**2 * (sigma**2 + 0.25) - 1) < 1e-12 and abs(c.weight * c.c_out**2 - 1) < 1e-9


def test_edm_precond_with_zero_net_is_the_exact_denoiser_of_gaussian_data_on_any_schedule():
    """For data N(0, sigma_data^2 I), E[x0 | x] = c_skip x (the skip branch alone), so F = 0 must reproduce the
    analytic denoiser, also on a VP path where x is rescaled by alpha (EDM eq. 4)."""
    sd = 0.7
    gauss = GaussianMixture([1.0], [[0.0, 0.0]], (torch.eye(2, dtype=torch.float64) * sd**2)[None])
    x = torch.randn(64, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    for sched in [VPLinear(), VE(0.01, 50.0), build_schedule("rectified_flow")]:
        den = EDMDenoiser(lambda x_in, c_noise, cond: torch.zeros_like(x_in), sched, sigma_data=sd)
        for t in [0.1, 0.5, 0.9]:
            torch.testing.assert_close(den(x, t), gauss.denoiser(sched)(x, t))
    with pytest.raises(ImgenError, match="sigma_data must be > 0"):
        EDMDenoiser(lambda *a: 0, VPLinear(), sigma_data=0.0)


def test_score_from_any_denoiser_is_the_gaussian_score():
    """Tweedie: (alpha x0_hat - x) / sigma^2 = grad log N(x; alpha mu, alpha^2 S + sigma^2 I) for Gaussian data."""
    mu, cov = torch.tensor([1.0, -0.5], dtype=torch.float64), torch.tensor([[0.4, 0.1], [0.1, 0.3]], dtype=torch.float64)
    sched = VPLinear()
    den = GaussianMixture([1.0], mu[None], cov[None]).denoiser(sched)
    x = torch.randn(32, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    t = torch.tensor(0.3, dtype=torch.float64)
    a, s = sched.alpha(t), sched.sigma(t)
    expected = -(x - a * mu) @ torch.linalg.inv(a**2 * cov + s**2 * torch.eye(2, dtype=torch.float64))
    torch.testing.assert_close(den.score(x, t, den(x, t)), expected)


def test_clipped_denoiser_keeps_x0_hat_in_the_image_range_and_the_schedule():
    from imgen.denoiser import ClippedDenoiser, FunctionDenoiser

    sched = build_schedule("cosine")
    wild = FunctionDenoiser(lambda x, t, cond=None: 5 * x, sched)
    clipped = ClippedDenoiser(wild)
    x = torch.linspace(-1, 1, 11).reshape(1, 1, 1, 11)
    out = clipped(x, 0.5)
    assert clipped.schedule is sched
    assert out.min() == -1 and out.max() == 1
    torch.testing.assert_close(out[..., 5], 5 * x[..., 5])  # inside the range: untouched


def test_grid_shift_is_sd3_eq23_and_matches_diffusers():
    """t -> shift t / (1 + (shift - 1) t) (Esser et al. 2024, eq. 23), the same sigmas as diffusers'
    FlowMatchEulerDiscreteScheduler(shift=3) on its 1000 training steps; shift=1 changes nothing; bad shift: error."""
    rf = build_schedule("rectified_flow")
    torch.testing.assert_close(make_grid(rf, 4, shift=2.0),
                               torch.tensor([1.0, 6 / 7, 2 / 3, 0.4, 0.0], dtype=torch.float64))
    for kind in GRIDS:
        assert torch.equal(make_grid(rf, 6, kind, shift=1.0), make_grid(rf, 6, kind))
        shifted = make_grid(rf, 6, kind, shift=3.0)
        assert bool((shifted[1:] < shifted[:-1]).all()) and bool((shifted[1:-1] > make_grid(rf, 6, kind)[1:-1]).all())
    diffusers = pytest.importorskip("diffusers")
    theirs = diffusers.FlowMatchEulerDiscreteScheduler(shift=3.0).sigmas
    torch.testing.assert_close(make_grid(rf, 1000, shift=3.0)[:-1].float(), theirs, rtol=0, atol=1e-6)
    with pytest.raises(ImgenError, match="grid shift must be > 0"):
        make_grid(rf, 4, shift=0.0)
