"""Every sampler, given the exact Gaussian-mixture denoiser E[x0 | x_t], reproduces the mixture.

Tolerances (n = 4000 samples, 3 components): weights within 0.03, component means within 0.08,
covariances within 0.08 (max abs entry) of the truth. These are ~3-4 standard errors of the
estimates themselves plus the sampler's discretisation error at its recommended steps.
"""
import pytest
import torch

from imgen.analytic import GaussianMixture
from imgen.errors import ImgenError
from imgen.guidance import classifier_free
from imgen.samplers import SAMPLERS, ddim_invert, get_sampler, sample_ddim
from imgen.schedules import build_schedule, time_grid

MIX = GaussianMixture(
    [0.5, 0.3, 0.2],
    [[-2.0, 0.0], [2.0, 1.0], [0.0, -2.5]],
    [[[0.3, 0.1], [0.1, 0.2]], [[0.2, 0.0], [0.0, 0.5]], [[0.15, 0.0], [0.0, 0.1]]],
)
N = 4000
RECOMMENDED_STEPS = {"ddpm": 250, "ddim": 100, "euler": 100}


def mixture_fit(x: torch.Tensor, mix: GaussianMixture = MIX):
    """Empirical weights, means, covariances of samples assigned to their most likely component."""
    resp = mix.posterior(x, 1.0, 0.0)[0]
    k = resp.argmax(1)
    weights = torch.bincount(k, minlength=len(mix.weights)).double() / len(x)
    means = torch.stack([x[k == j].double().mean(0) for j in range(len(mix.weights))])
    covs = torch.stack([torch.cov(x[k == j].double().T) for j in range(len(mix.weights))])
    return weights, means, covs


def assert_reproduces_mixture(x):
    w, m, c = mixture_fit(x)
    assert torch.allclose(w, MIX.weights, atol=0.03), (w, MIX.weights)
    assert torch.allclose(m, MIX.means, atol=0.08), (m, MIX.means)
    assert (c - MIX.covs).abs().max() < 0.08, (c, MIX.covs)


def test_mixture_fit_accepts_true_samples_and_rejects_wrong_ones():
    x, _ = MIX.sample(N, torch.Generator().manual_seed(1))
    assert_reproduces_mixture(x)
    with pytest.raises(AssertionError):
        assert_reproduces_mixture(x * 1.3)  # too wide: the check can fail


@pytest.mark.parametrize("schedule", ["linear", "cosine", "rectified_flow"])
@pytest.mark.parametrize("sampler,eta", [("ddpm", None), ("ddim", 0.0), ("ddim", 1.0), ("euler", None)])
def test_sampler_given_exact_denoiser_recovers_the_mixture(schedule, sampler, eta):
    den = MIX.denoiser(build_schedule(schedule))
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(N, 2, dtype=torch.float64, generator=gen)
    kwargs = {} if eta is None else {"eta": eta}
    x0 = get_sampler(sampler)(den, x, time_grid(RECOMMENDED_STEPS[sampler]), generator=gen, **kwargs)
    assert_reproduces_mixture(x0)


@pytest.mark.parametrize("schedule", ["linear", "cosine", "rectified_flow"])
def test_ddim_eta0_inversion_round_trips_below_1e3_rms_at_200_steps(schedule):
    den = MIX.denoiser(build_schedule(schedule))
    x0, _ = MIX.sample(500, torch.Generator().manual_seed(2))
    ts = time_grid(200)
    z = ddim_invert(den, x0, ts)
    rms = (sample_ddim(den, z, ts) - x0).pow(2).mean().sqrt().item()
    assert rms < 1e-3
    assert 0.9 < z.std().item() < 1.1  # and the latent looks like unit Gaussian noise


def test_classic_inversion_without_fixed_point_is_only_approximate():
    den = MIX.denoiser(build_schedule("linear"))
    x0, _ = MIX.sample(500, torch.Generator().manual_seed(2))
    ts = time_grid(200)
    rms = (sample_ddim(den, ddim_invert(den, x0, ts, fixed_point_iters=0), ts) - x0).pow(2).mean().sqrt().item()
    assert 1e-3 < rms < 0.2


def test_stochastic_and_deterministic_samplers_agree_in_distribution():
    den = MIX.denoiser(build_schedule("cosine"))
    gen = torch.Generator().manual_seed(3)
    a = sample_ddim(den, torch.randn(N, 2, dtype=torch.float64, generator=gen), time_grid(100), eta=0.0)
    b = sample_ddim(den, torch.randn(N, 2, dtype=torch.float64, generator=gen), time_grid(100), eta=1.0, generator=gen)
    wa, ma, _ = mixture_fit(a)
    wb, mb, _ = mixture_fit(b)
    assert torch.allclose(wa, wb, atol=0.04) and torch.allclose(ma, mb, atol=0.1)


@pytest.mark.parametrize("sampler", sorted(SAMPLERS))
def test_sampler_is_deterministic_for_a_seed(sampler):
    den = MIX.denoiser(build_schedule("linear"))
    outs = []
    for _ in range(2):
        gen = torch.Generator().manual_seed(7)
        x = torch.randn(64, 2, dtype=torch.float64, generator=gen)
        outs.append(get_sampler(sampler)(den, x, time_grid(20), generator=gen))
    assert torch.equal(outs[0], outs[1])


def test_cfg_moves_mass_toward_the_requested_class_as_scale_grows():
    two = GaussianMixture([0.5, 0.5], [[-1.0, 0.0], [1.0, 0.0]], torch.stack([torch.eye(2) * 0.5] * 2))
    den = two.denoiser(build_schedule("rectified_flow"), cond_component=True)
    n = 600
    cond = {"label": torch.zeros(n, dtype=torch.long), "drop": torch.zeros(n, dtype=torch.bool)}
    share = []
    for scale in [0.0, 1.0, 3.0]:
        gen = torch.Generator().manual_seed(0)
        x = torch.randn(n, 2, dtype=torch.float64, generator=gen)
        x0 = sample_ddim(classifier_free(den, scale, cond, n), x, time_grid(50), cond)
        share.append((x0[:, 0] < 0).double().mean().item())
    assert share[0] < share[1] < share[2]
    assert abs(share[0] - 0.5) < 0.08 and share[2] > 0.97  # scale 0 = unconditional, 3 = strongly class 0


def test_unknown_sampler_lists_valid_ones():
    with pytest.raises(ImgenError, match="valid samplers: ddim, ddpm, euler"):
        get_sampler("heunn")


def test_out_of_range_eta_and_steps_are_rejected():
    den = MIX.denoiser(build_schedule("linear"))
    with pytest.raises(ImgenError, match="eta must be in"):
        sample_ddim(den, torch.randn(4, 2), time_grid(5), eta=1.5)
    with pytest.raises(ImgenError, match="steps must be >= 1"):
        time_grid(0)
