"""Normalizing flows (imgen.nn.flow): every layer and both models invert exactly, their log-determinants are
autograd's slogdet of the Jacobian, the identity flow scores N(0, I) analytically, and a short fit lowers the NLL."""
import json
import math

import pytest
import torch

from imgen.errors import ImgenError
from imgen.metrics import bits_per_dim
from imgen.nn.flow import (ActNorm, AffineCoupling, Glow, InvConv1x1, RealNVP, Squeeze, dequantization_bin_width,
                           dequantize_uniform)


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


def randomize_(module, seed=0, std=0.3):
    """Perturb every parameter, so zero-initialised couplings (identity at init) no longer hide the math."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.add_(std * torch.randn(p.shape, generator=g, dtype=p.dtype))
    return module


def prepared(module, shape, seed=0):
    """A float64 module after a data-dependent init batch (ActNorm) and randomised weights, in eval mode."""
    torch.manual_seed(seed)
    module = module.double().train()
    module(1.5 * torch.randn(8, *shape[1:], dtype=torch.float64) + 0.3)  # the init batch
    randomize_(module, seed)
    return module.eval()


def flatten_output(out):
    y = out[0]
    return torch.cat([z.flatten() for z in y]) if isinstance(y, list) else y.flatten()


def jacobian_logdet(module, x):
    """log|det d forward(x) / dx| by autograd on one flattened sample (float64)."""
    jac = torch.autograd.functional.jacobian(lambda v: flatten_output(module(v.reshape(x.shape))), x.flatten())
    sign, logabsdet = torch.linalg.slogdet(jac)
    assert sign != 0
    return logabsdet


LAYERS = {
    "actnorm": (lambda: ActNorm(4), (1, 4, 2, 2)),
    "invconv": (lambda: InvConv1x1(4), (1, 4, 2, 2)),
    "squeeze": (lambda: Squeeze(), (1, 2, 4, 4)),
    "coupling-checkerboard-1ch": (lambda: AffineCoupling(1, 8, "checkerboard", 0), (1, 1, 4, 4)),
    "coupling-checkerboard-odd": (lambda: AffineCoupling(2, 8, "checkerboard", 1), (1, 2, 3, 3)),
    "coupling-channel-even": (lambda: AffineCoupling(4, 8, "channel", 0), (1, 4, 2, 2)),
    "coupling-channel-odd": (lambda: AffineCoupling(3, 8, "channel", 1), (1, 3, 2, 2)),
}
MODELS = {
    "realnvp": (lambda: RealNVP(1, 4, num_scales=1, hidden=8), (1, 1, 4, 4)),
    "realnvp-2scales-rgb": (lambda: RealNVP(3, 4, num_scales=2, hidden=8), (1, 3, 4, 4)),
    "glow": (lambda: Glow(1, 4, levels=2, steps=2, hidden=8), (1, 1, 4, 4)),
    "glow-split-prior": (lambda: Glow(1, 4, levels=2, steps=2, hidden=8, split_prior=True), (1, 1, 4, 4)),
    "glow-dropout": (lambda: Glow(1, 4, levels=2, steps=2, hidden=8, dropout=0.3), (1, 1, 4, 4)),  # eval: no dropout
}


@pytest.mark.parametrize("name", list(LAYERS) + list(MODELS))
def test_inverse_of_forward_is_identity(name):
    build, shape = {**LAYERS, **MODELS}[name]
    module = prepared(build(), shape)
    x = torch.randn(5, *shape[1:], dtype=torch.float64)
    with torch.no_grad():
        y, logdet = module(x)
        assert logdet.shape == (5,)
        assert (module.inverse(y) - x).abs().max() < 1e-4


@pytest.mark.parametrize("name", list(LAYERS) + list(MODELS))
def test_logdet_equals_autograd_slogdet_of_the_jacobian(name):
    build, shape = {**LAYERS, **MODELS}[name]
    module = prepared(build(), shape, seed=1)
    x = torch.randn(*shape, dtype=torch.float64)
    _, logdet = module(x)
    if name != "squeeze":  # a permutation: its logdet is 0; the others have random weights, so not trivially 0 == 0
        assert abs(logdet.item()) > 1e-2
    assert abs(logdet.item() - jacobian_logdet(module, x).item()) < 1e-3


def test_default_digit_sized_models_invert_in_float32():
    for net in (RealNVP(), Glow()):
        net.train()(torch.randn(16, 1, 8, 8))  # ActNorm init batch
        randomize_(net, std=0.05).eval()
        x = torch.rand(4, 1, 8, 8) * 2 - 1
        with torch.no_grad():
            zs, _ = net(x)
            assert (net.inverse(zs) - x).abs().max() < 1e-4


def test_coupling_dropout_acts_in_training_only():
    net = prepared(Glow(1, 4, levels=2, steps=2, hidden=8, dropout=0.3), (1, 1, 4, 4))
    x = torch.randn(6, 1, 4, 4, dtype=torch.float64)
    with torch.no_grad():
        assert torch.equal(net.log_prob(x), net.log_prob(x))  # eval: deterministic (and invertible, tests above)
        net.train()
        assert not torch.allclose(net.log_prob(x), net.log_prob(x))  # training: a random subnetwork per pass
    assert sum(isinstance(m, torch.nn.Dropout) for m in net.modules()) == 2 * 4  # two per coupling net
    assert not any(isinstance(m, torch.nn.Dropout) for m in Glow(1, 4, levels=2, steps=2, hidden=8).modules())


def test_lu_invconv_logdet_is_hw_times_slogdet_of_w():
    conv = randomize_(InvConv1x1(5).double(), seed=2)
    x = torch.randn(3, 5, 4, 6, dtype=torch.float64)
    y, logdet = conv(x)
    w = conv.weight()
    assert torch.allclose(logdet, torch.linalg.slogdet(w)[1] * 4 * 6 * torch.ones(3, dtype=torch.float64))
    assert torch.allclose(y, torch.einsum("oc,bchw->bohw", w, x))  # it really is a 1x1 conv with W


def test_actnorm_data_dependent_init_gives_zero_mean_unit_variance_and_checkpoints():
    norm = ActNorm(3)
    scale, shift = torch.tensor([0.1, 2.0, 5.0])[:, None, None], torch.tensor([1.0, -3.0, 0.0])[:, None, None]
    x = torch.randn(32, 3, 4, 4) * scale + shift
    y, _ = norm(x)
    assert y.mean(dim=(0, 2, 3)).abs().max() < 1e-5
    assert (y.std(dim=(0, 2, 3), unbiased=False) - 1).abs().max() < 1e-4
    restored = ActNorm(3)
    restored.load_state_dict(norm.state_dict())  # the `initialized` buffer travels with the weights
    assert torch.allclose(restored(x * 10)[0], norm(x * 10)[0])  # no re-init on the next training batch


@pytest.mark.parametrize("name", list(MODELS))
def test_identity_initialised_flow_scores_the_standard_normal_density(name):
    build, shape = MODELS[name]
    net = build().eval()  # couplings start as identity, InvConv as a rotation, ActNorm uninitialised
    x = torch.randn(6, *shape[1:])
    d = x[0].numel()
    analytic = -0.5 * x.flatten(1).pow(2).sum(1) - 0.5 * d * math.log(2 * math.pi)
    assert torch.allclose(net.log_prob(x), analytic, atol=1e-4)


@pytest.mark.parametrize("name", list(MODELS))
def test_sample_shapes_temperature_zero_gives_the_mode_and_seeds_repeat(name):
    build, shape = MODELS[name]
    net = prepared(build(), shape).float()
    samples = net.sample(3, generator=torch.Generator().manual_seed(0))
    assert samples.shape == (3, *shape[1:]) and samples.dtype == torch.float32
    assert torch.equal(samples, net.sample(3, generator=torch.Generator().manual_seed(0)))
    mode = net.sample(4, temperature=0.0)
    zeros = [torch.zeros(1, *s) for s in net.z_shapes()]
    assert torch.allclose(mode, net.inverse(zeros).expand(4, *shape[1:]), rtol=1e-4, atol=1e-4)
    spread = [net.sample(200, temperature=t, generator=torch.Generator().manual_seed(1)).std() for t in (0.3, 1.0)]
    assert spread[0] < spread[1]


@pytest.mark.parametrize("name", ["realnvp", "glow"])
def test_short_fit_on_correlated_gaussian_images_lowers_the_nll(name):
    torch.manual_seed(0)
    d = 16  # 1x4x4 images with a strongly correlated covariance of spread scales
    q = torch.linalg.qr(torch.randn(d, d))[0]
    a = q * torch.logspace(-1.3, 0.3, d)
    data = (torch.randn(2048, d) @ a.T).reshape(-1, 1, 4, 4)
    true_nll = 0.5 * torch.logdet(2 * math.pi * math.e * a @ a.T).item()  # entropy of N(0, A A^T)
    net = RealNVP(1, 4, hidden=16) if name == "realnvp" else Glow(1, 4, levels=1, steps=3, hidden=16)
    net(data[:256])  # ActNorm init batch (Glow)
    with torch.no_grad():
        start = -net.log_prob(data).mean().item()
    opt = torch.optim.Adam(net.parameters(), lr=5e-3)
    for step in range(80):
        loss = -net.log_prob(data[torch.randint(0, len(data), (128,))]).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        end = -net.log_prob(data).mean().item()
    assert end < start - 0.5 * (start - true_nll), (start, end, true_nll)


@pytest.mark.parametrize("cls", [RealNVP, Glow])
def test_config_round_trip_rebuilds_the_same_flow(cls):
    net = cls(in_channels=1, image_size=8, hidden=16)
    config = json.loads(json.dumps(net.config()))
    rebuilt = cls.from_config(config)
    assert rebuilt.config() == config
    rebuilt.load_state_dict(net.state_dict())
    x = torch.randn(2, 1, 8, 8)
    assert torch.allclose(rebuilt.eval().log_prob(x), net.eval().log_prob(x))


def test_uniform_dequantization_stays_in_its_bin_and_a_uniform_density_is_8_bits_per_dim():
    k = torch.randint(0, 256, (4, 1, 8, 8))
    x = k / 127.5 - 1  # imgen's [-1, 1] images of 8-bit data
    xd = dequantize_uniform(x, 256, generator=torch.Generator().manual_seed(0))
    assert torch.equal(torch.floor((xd + 1) / 2 * 256).long(), k)
    levels = torch.randint(0, 17, (100,))
    digits = dequantize_uniform(levels / 8.0 - 1, n_bins=17)  # sklearn digits: 17 grey levels
    assert torch.equal(torch.floor((digits + 1) / 2 * 17).long(), levels)
    d = 64
    log_prob_uniform = torch.full((4,), -d * math.log(2.0))  # U[-1, 1)^D
    bpd = bits_per_dim(-log_prob_uniform, d, bin_width=dequantization_bin_width(256))
    assert torch.allclose(bpd, torch.full((4,), 8.0, dtype=torch.float64))


@pytest.mark.parametrize("build, fix", [
    (lambda: RealNVP(1, 6, num_scales=2), "divisible by 2 ** num_scales"),
    (lambda: Glow(levels=0), "Glow levels must be an integer >= 1"),
    (lambda: Glow(steps=2.5), "Glow steps"),
    (lambda: RealNVP(hidden=-4), "RealNVP hidden"),
    (lambda: AffineCoupling(1, mask="channel"), "use mask='checkerboard'"),
    (lambda: AffineCoupling(2, mask="diagonal"), "'checkerboard' or 'channel'"),
    (lambda: Glow(dropout=1.0), "dropout must be in [0, 1)"),
    (lambda: Glow().log_prob(torch.zeros(2, 3, 8, 8)), "in_channels and image_size"),
    (lambda: Glow().sample(2, temperature=-1.0), "temperature must be a number >= 0"),
    (lambda: RealNVP().inverse([torch.zeros(1, 2, 4, 4)]), "needs 2 latents"),
    (lambda: Squeeze()(torch.zeros(1, 1, 3, 4)), "even height and width"),
    (lambda: Glow.from_config({"depth": 3}), "unknown option(s) ['depth']"),
    (lambda: dequantize_uniform(torch.zeros(2), n_bins=1), "n_bins must be an integer >= 2"),
])
def test_bad_arguments_raise_imgen_error_naming_the_fix(build, fix):
    with pytest.raises(ImgenError) as err:
        build()
    assert fix in str(err.value)
