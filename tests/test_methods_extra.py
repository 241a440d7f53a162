"""NCSN (multi-level denoising score matching) and EDM train on the 2D 8-gaussians toy and plug into every sampler.

Smoke tests: 200 Adam steps of a small MLP. The loss must fall, and the trained denoiser must move most of the
way to the exact posterior mean E[x0 | x_t] of the toy mixture (known in closed form, imgen.analytic).
"""
import pytest
import torch

from imgen.analytic import GaussianMixture
from imgen.data import load_dataset
from imgen.denoiser import EDMDenoiser, NetDenoiser
from imgen.errors import ImgenError
from imgen.methods import build_method
from imgen.methods.score import ScoreMatching
from imgen.nn.mlp import MLPDenoiser
from imgen.samplers import get_sampler, initial_noise
from imgen.schedules import make_grid, time_grid

TOY = load_dataset("8gaussians", n=10000, seed=0)
TOY_MIX = GaussianMixture(TOY.weights, TOY.means, torch.eye(2, dtype=torch.float64).expand(8, 2, 2) * TOY.std**2)


def excess_denoising_error(method, net) -> float:
    """Mean ||D_net(x_t, t) - E[x0 | x_t]||^2 over noise levels sigma in {0.25, 0.5, 1, 2}: 0 for a perfect net."""
    den, exact = method.denoiser(net), TOY_MIX.denoiser(method.schedule)
    g = torch.Generator().manual_seed(123)
    x0, _ = TOY_MIX.sample(512, g)
    errs = []
    for sigma in [0.25, 0.5, 1.0, 2.0]:
        t = method.schedule.t_from_edm_sigma(sigma).item()
        x_t = (x0 + sigma * torch.randn(x0.shape, generator=g, dtype=torch.float64)).float()
        with torch.no_grad():
            errs.append(((den(x_t, torch.tensor(t)) - exact(x_t.double(), t)) ** 2).sum(1).mean().item())
    return sum(errs) / len(errs)


def train(method, steps=200):
    torch.manual_seed(0)
    net = MLPDenoiser(dim=2, hidden=64, depth=2)
    before = excess_denoising_error(method, net)
    opt = torch.optim.Adam(net.parameters(), lr=2e-3)
    gen, losses = torch.Generator().manual_seed(0), []
    for step in range(steps):
        batch = TOY.get(torch.arange(step * 256, (step + 1) * 256))
        loss = method.loss(net, batch, gen)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return net, losses, before, excess_denoising_error(method, net)


@pytest.mark.parametrize("name,options,denoiser_type", [("ncsn", {"sigma_max": 4.0}, NetDenoiser),
                                                        ("edm", {}, EDMDenoiser)])
def test_method_trains_on_8gaussians_toward_the_exact_denoiser(name, options, denoiser_type):
    method = build_method(name, **options)
    net, losses, before, after = train(method)
    assert sum(losses[-20:]) / 20 < 0.95 * sum(losses[:20]) / 20  # the (noisy) loss falls
    assert after < 0.3 * before, (before, after)  # and the denoiser approaches E[x0 | x_t] (measured 4-40x, 4 seeds)
    den = method.denoiser(net)
    assert isinstance(den, denoiser_type) and den.schedule is method.schedule
    for sampler in ["heun", "dpmpp_2m", "langevin"]:  # any sampler runs the trained model
        ts = make_grid(method.schedule, 8, "karras")
        x = initial_noise(method.schedule, (64, 2), ts, torch.Generator().manual_seed(0))
        out = get_sampler(sampler)(den, x, ts, generator=torch.Generator().manual_seed(0), **(
            {"n_steps": 5} if sampler == "langevin" else {}))
        assert out.shape == (64, 2) and torch.isfinite(out).all()


def test_ncsn_levels_are_the_papers_geometric_sequence_and_time_grid_walks_them():
    m = ScoreMatching(sigma_min=0.01, sigma_max=1.0, num_levels=10)
    torch.testing.assert_close(m.levels(), torch.logspace(0, -2, 10, dtype=torch.float64))
    torch.testing.assert_close(m.schedule.sigma(time_grid(10)[:-1]), m.levels())  # Langevin on time_grid(L) = NCSN
    t = m.sample_t(1000, torch.Generator().manual_seed(0))
    assert set((t * 10).round().long().tolist()) == set(range(1, 11))


def test_edm_training_noise_is_log_normal():
    m = build_method("edm")
    log_sigma = m.sample_sigma(20000, torch.Generator().manual_seed(0)).log()
    assert abs(log_sigma.mean().item() + 1.2) < 0.03 and abs(log_sigma.std().item() - 1.2) < 0.03


def test_bad_method_options_are_rejected_with_the_fix():
    with pytest.raises(ImgenError, match="valid methods: .*ddpm, edm, flow_matching, .*ncsn"):
        build_method("sde")
    with pytest.raises(ImgenError, match="num_levels must be an integer >= 2"):
        build_method("ncsn", num_levels=1)
    with pytest.raises(ImgenError, match="need 0 < sigma_min < sigma_max"):
        build_method("ncsn", sigma_min=1.0, sigma_max=0.1)
    with pytest.raises(ImgenError, match="sigma_data must be > 0"):
        build_method("edm", sigma_data=-0.5)
    with pytest.raises(ImgenError, match="p_std must be > 0"):
        build_method("edm", p_std=0.0)
    with pytest.raises(ImgenError, match="bad options for method 'edm'.*see imgen/methods/edm.py"):
        build_method("edm", rho=7)
