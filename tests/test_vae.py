"""VAE / beta-VAE / plain AE (imgen.methods.vae) and the latent tools (imgen.apps.latent): the loss falls, the KL is
the closed form, beta = 0 is deterministic, the discretized likelihood is a probability mass, IWAE(k=1) is the ELBO
in expectation and IWAE(k=64) is tighter, slerp keeps norms, an attribute vector recovers a planted direction, a
model directory loads, samples, encodes and decodes, and a killed run resumes byte-identically."""
import json
import sys

import pytest
import torch

import imgen
from conftest import kill9_and_rerun
from imgen.apps.latent import (apply_attribute, attribute_vector, interpolate, latent_grid, lerp,
                               mean_latent_difference, slerp)
from imgen.checkpoint import load_tensors
from imgen.config import Config, DataConfig, MethodConfig, NetConfig, TrainConfig
from imgen.data import load_dataset
from imgen.errors import ImgenError
from imgen.methods import build_method
from imgen.methods.vae import discretized_gaussian_log_prob
from imgen.metrics import discrete_bits_per_dim
from imgen.nn import build_net
from imgen.train import train

TINY_VAE = {"latent_dim": 2, "latent_channels": 2, "base_channels": 8, "channel_mults": [1, 2]}


def vae_config(steps: int = 40, beta: float = 1.0) -> Config:
    return Config(description="tiny VAE", data=DataConfig("digits", {"split": "train"}, batch_size=32),
                  net=NetConfig("vae", dict(TINY_VAE)), method=MethodConfig("vae", {"beta": beta, "levels": 17}),
                  train=TrainConfig(steps=steps, lr=3e-3, warmup=2, ckpt_every=10, log_every=1))


@pytest.fixture(scope="module")
def vae_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("vae") / "vae"
    train(vae_config(steps=40), out, progress=False)
    return out


def test_vae_loss_falls_over_40_trainer_steps_on_digits(vae_dir):
    log = [json.loads(line) for line in (vae_dir / "log.jsonl").read_text().splitlines()]
    first, last = sum(r["loss"] for r in log[:8]) / 8, sum(r["loss"] for r in log[-8:]) / 8
    assert len(log) == 40 and last < 0.8 * first


def test_kl_term_is_the_closed_form_kl_of_a_diagonal_gaussian_to_the_standard_normal():
    net = build_net("vae", in_channels=1, image_size=8, **TINY_VAE)
    x = torch.rand(5, 1, 8, 8) * 2 - 1
    _, kl = build_method("vae", levels=17).terms(net, x, torch.Generator().manual_seed(0))
    q = net.encode(x)
    normal = torch.distributions.Normal
    ref = torch.distributions.kl_divergence(normal(q.mean, q.std), normal(0.0, 1.0)).sum(1)
    assert torch.allclose(kl, ref, atol=1e-5)


def test_the_discretized_gaussian_is_a_probability_mass_over_the_grey_levels():
    levels = 17
    x = torch.linspace(-1, 1, levels)[:, None]
    for mean, log_sigma in ((0.3, -2.0), (5.0, -3.0), (-0.99, 1.0), (0.0, -6.0)):
        p = discretized_gaussian_log_prob(x, torch.full_like(x, mean), torch.tensor(log_sigma), levels).exp()
        assert abs(p.sum().item() - 1) < 1e-4, (mean, log_sigma)


def test_beta_zero_is_a_deterministic_autoencoder():
    net, method = build_net("vae", in_channels=1, image_size=8, **TINY_VAE), build_method("vae", beta=0.0, levels=17)
    batch = {"image": torch.rand(4, 1, 8, 8) * 2 - 1}
    a = method.loss(net, batch, torch.Generator().manual_seed(0))
    b = method.loss(net, batch, torch.Generator().manual_seed(1))
    assert torch.equal(a, b)  # no sampling noise: z is the posterior mean
    with pytest.raises(ImgenError, match="beta"):
        build_method("vae", beta=-1.0)


def test_iwae_k1_is_the_elbo_in_expectation_and_k64_is_a_tighter_bound(vae_dir):
    m = imgen.load(vae_dir)
    x = load_dataset("digits", split="test").get(list(range(16)))["image"]
    many = x.repeat(64, 1, 1, 1)  # 64 independent draws per image
    elbo, iwae1 = m.elbo(many, seed=0), m.iwae(many, k=1, seed=1)
    assert abs(elbo.mean() - iwae1.mean()) < 0.02 * elbo.abs().mean()
    elbo_avg = m.elbo(x, seed=0, samples=64)
    iwae64 = m.iwae(x, k=64, seed=0)
    assert iwae64.mean() > elbo_avg.mean()
    bpd = discrete_bits_per_dim(iwae64, 64)
    assert (bpd > 0).all() and bpd.mean() < 4.1  # below a uniform 17-level coder (log2 17 = 4.09)


def test_slerp_ends_at_the_inputs_and_keeps_the_norm_that_lerp_shrinks():
    a, b = torch.zeros(3, 8), torch.zeros(3, 8)
    a[:, 0], b[:, 1] = 2.0, 2.0  # orthogonal, norm 2
    assert torch.allclose(slerp(a, b, 0.0), a, atol=1e-6) and torch.allclose(slerp(a, b, 1.0), b, atol=1e-6)
    assert torch.allclose(slerp(a, b, 0.5).norm(dim=1), torch.full((3,), 2.0))
    assert torch.allclose(lerp(a, b, 0.5).norm(dim=1), torch.full((3,), 2.0 / 2 ** 0.5))
    z = torch.randn(4, 64)
    assert torch.allclose(slerp(z, z, 0.3), z, atol=1e-5)  # parallel: falls back to lerp


def test_attribute_vector_recovers_a_planted_direction():
    gen = torch.Generator().manual_seed(0)
    d = torch.randn(16, generator=gen)
    d = d / d.norm()
    z_without = torch.randn(500, 16, generator=gen)
    z_with = torch.randn(500, 16, generator=gen) + 3.0 * d
    v = mean_latent_difference(z_with, z_without)
    assert torch.nn.functional.cosine_similarity(v, d, dim=0) > 0.95 and abs(v.norm() - 3.0) < 0.4


def test_a_vae_directory_loads_samples_encodes_decodes_and_draws_its_latent_grid(vae_dir):
    m = imgen.load(vae_dir)
    x = m.sample(6, seed=0)
    assert x.shape == (6, 1, 8, 8) and x.min() >= -1 and x.max() <= 1 and torch.equal(x, m.sample(6, seed=0))
    images = load_dataset("digits", split="test").get(list(range(4)))["image"]
    z = m.encode(images)
    mean, logvar = m.encode(images, logvar=True)
    assert z.shape == (4, 2) and torch.equal(z, mean) and logvar.shape == (4, 2)
    assert m.decode(z).shape == m.reconstruct(images).shape == (4, 1, 8, 8)
    frames = interpolate(m, images[:2], images[2:], steps=5, mode="slerp")
    assert frames.shape == (10, 1, 8, 8) and torch.allclose(frames[0], m.reconstruct(images[:1])[0], atol=1e-5)
    v = attribute_vector(m, images[:2], images[2:])
    assert v.shape == (2,) and apply_attribute(m, images, v, 0.5).shape == (4, 1, 8, 8)
    assert latent_grid(m, n=5).shape == (1, 40, 40)
    with pytest.raises(ImgenError, match="mode"):
        interpolate(m, images[:1], images[1:2], mode="cubic")


def test_kill_9_and_rerun_of_a_vae_is_byte_identical_to_an_uninterrupted_run(tmp_path):
    cfg = tmp_path / "vae.json"
    cfg.write_text(json.dumps(vae_config(steps=30).to_dict()))
    cmd = [sys.executable, "-m", "imgen", "train", str(cfg), "--quiet", "--out"]
    out = tmp_path / "killed"
    assert kill9_and_rerun(cmd, tmp_path / "straight", out, kills=1) >= 1
    assert json.loads((out / "train_state.json").read_text())["step"] == 30
    for name in ("model.safetensors", "ema.safetensors"):
        assert (out / name).read_bytes() == (tmp_path / "straight" / name).read_bytes(), name


def test_kill_9_and_rerun_of_a_latent_vae_is_byte_identical_to_an_uninterrupted_run(tmp_path):
    from imgen.presets import get_preset

    c = get_preset("shapes-latent-vae")  # its KL warm-up and standardize file are part of what must resume
    c.net.options.update(base_channels=8, hidden=16)
    c.method.options["method_options"]["kl_warmup"] = 20
    c.data.batch_size, c.train.steps, c.train.ckpt_every = 8, 30, 10
    cfg = tmp_path / "lvae.json"
    cfg.write_text(json.dumps(c.to_dict()))
    cmd = [sys.executable, "-m", "imgen", "train", str(cfg), "--quiet", "--out"]
    out = tmp_path / "killed"
    assert kill9_and_rerun(cmd, tmp_path / "straight", out, kills=1) >= 1
    for name in ("model.safetensors", "ema.safetensors", "autoencoder/standardize.safetensors"):
        assert (out / name).read_bytes() == (tmp_path / "straight" / name).read_bytes(), name


def test_imgen_latent_draws_the_grid_and_an_interpolation_and_rejects_bad_input(vae_dir, tmp_path, capsys):
    from imgen.cli import main

    assert main(["latent", "grid", str(vae_dir), "--n", "4", "--out", str(tmp_path / "grid.png")]) == 0
    assert main(["latent", "interpolate", str(vae_dir), "--a", "0", "--b", "3", "--steps", "4", "--mode", "slerp",
                 "--out", str(tmp_path / "lerp.png")]) == 0
    assert (tmp_path / "grid.png").is_file() and (tmp_path / "lerp.png").is_file()
    capsys.readouterr()
    assert main(["latent", "interpolate", str(vae_dir), "--mode", "cubic", "--out", str(tmp_path / "x.png")]) == 2
    assert main(["latent", "interpolate", str(vae_dir), "--a", "99999", "--out", str(tmp_path / "x.png")]) == 2
    assert main(["latent", "grid", str(vae_dir), "--out", str(tmp_path / "x.jpg")]) == 2
    err = capsys.readouterr().err
    assert err.count("imgen: error:") == 3 and "--mode" in err and "--a" in err and ".png" in err


def test_a_fixed_sigma_is_the_likelihood_scale_that_beta_weighs_the_kl_against():
    """method.options.sigma fixes p(x | z)'s std (the net's learned log_sigma is then unused): the loss is
    (-sum_pixels log P(x | z; sigma) + beta * KL) / D, so beta trades nats of KL against that likelihood."""
    net = build_net("vae", in_channels=1, image_size=8, **TINY_VAE)
    x = torch.rand(4, 1, 8, 8) * 2 - 1
    fixed = {beta: build_method("vae", beta=beta, levels=17, sigma=0.2) for beta in (1.0, 4.0)}
    log_px, kl = fixed[1.0].terms(net, x, torch.Generator().manual_seed(0))
    q = net.encode(x)
    z = q.mean + q.std * torch.randn(q.mean.shape, generator=torch.Generator().manual_seed(0))
    ref = discretized_gaussian_log_prob(x, net.decode(z), torch.tensor(0.2).log(), 17)
    assert torch.allclose(log_px, ref, atol=1e-4)
    for beta, method in fixed.items():
        loss = method.loss(net, {"image": x}, torch.Generator().manual_seed(0))
        assert torch.allclose(loss, (-log_px + beta * kl).sum() / x.numel(), rtol=1e-5)
    with torch.no_grad():
        net.log_sigma.fill_(3.0)  # the learned scale no longer enters the fixed-sigma likelihood
    assert torch.allclose(fixed[1.0].terms(net, x, torch.Generator().manual_seed(0))[0], log_px, atol=1e-4)
    learned = build_method("vae", levels=17).terms(net, x, torch.Generator().manual_seed(0))[0]
    assert not torch.allclose(learned, log_px, atol=1.0)
    for bad in (0.0, -1.0, "0.1", True):
        with pytest.raises(ImgenError, match="sigma"):
            build_method("vae", sigma=bad)


def test_kl_warmup_ramps_the_kl_weight_linearly_from_zero_to_beta_then_trains_the_beta_elbo():
    method = build_method("vae", beta=4.0, levels=17, kl_warmup=100)
    assert method.kl_weight == 4.0  # outside the Trainer (no set_step): the full beta-ELBO
    for step, weight in ((0, 0.0), (25, 1.0), (50, 2.0), (100, 4.0), (5000, 4.0)):
        method.set_step(step)
        assert method.kl_weight == pytest.approx(weight)
    net = build_net("vae", in_channels=1, image_size=8, **TINY_VAE)
    x = torch.rand(4, 1, 8, 8) * 2 - 1
    log_px, kl = method.terms(net, x, torch.Generator().manual_seed(0))
    method.set_step(50)
    assert torch.allclose(method.loss(net, {"image": x}, torch.Generator().manual_seed(0)),
                          (-log_px + 2.0 * kl).sum() / x.numel(), rtol=1e-5)
    with pytest.raises(ImgenError, match="kl_warmup"):
        build_method("vae", kl_warmup=-1)


def test_the_burgess_net_maps_32px_rgb_scenes_to_a_vector_latent_and_back():
    net = build_net("vae", in_channels=3, image_size=32, latent_dim=10, arch="burgess", base_channels=8, hidden=32)
    x = torch.rand(5, 3, 32, 32) * 2 - 1
    q = net.encode(x)
    assert q.mean.shape == q.logvar.shape == (5, 10) and net.latent_shape == (10,)
    assert net.decode(q.mean).shape == (5, 3, 32, 32)
    loss = build_method("vae", sigma=0.1).loss(net, {"image": x})
    loss.backward()
    assert torch.isfinite(loss) and all(p.grad is not None for n, p in net.named_parameters() if n != "log_sigma")
    with pytest.raises(ImgenError, match="arch"):
        build_net("vae", in_channels=3, image_size=32, arch="resnet")
    with pytest.raises(ImgenError, match="power-of-two"):
        build_net("vae", in_channels=3, image_size=24, latent_dim=10, arch="burgess")
    with pytest.raises(ImgenError, match="latent_dim"):
        build_net("vae", in_channels=3, image_size=32, latent_dim=None, arch="burgess")
    with pytest.raises(ImgenError, match=r"\(B, 3, 32, 32\)"):
        net.encode(torch.zeros(2, 3, 16, 16))


def test_the_broadcast_decoder_renders_from_z_and_the_pixel_coordinates_at_full_or_half_grid():
    for size, upsample, channels in ((32, 2, 3), (8, 1, 4)):
        net = build_net("vae", in_channels=channels, image_size=size, latent_dim=6, arch="broadcast",
                        base_channels=8, hidden=16, upsample=upsample)
        assert net.decoder.grid == size // upsample
        z = torch.randn(2, 6)
        x = net.decode(z)
        assert x.shape == (2, channels, size, size) and net.encode(x).mean.shape == (2, 6)
        assert torch.equal(net.decoder.coords[0, :, 0, -1], torch.tensor([-1.0, 1.0]))  # (row, column) coordinates
        if upsample == 1:  # the same z at every cell: away from the zero padding only the coordinates vary the map
            inner = x[..., 3:5, 3:5].flatten(2)
            assert (inner.std(2) > 1e-4).all()
            net.decoder.coords.zero_()
            assert (net.decode(z)[..., 3:5, 3:5].flatten(2).std(2) < 1e-6).all()
    with pytest.raises(ImgenError, match="upsample"):
        build_net("vae", in_channels=3, image_size=32, latent_dim=6, arch="broadcast", upsample=4)


def test_levels_null_is_the_gaussian_density_of_continuous_data():
    method = build_method("vae", levels=None, sigma=0.5)
    net = build_net("vae", in_channels=4, image_size=8, latent_dim=3, arch="broadcast", base_channels=8, hidden=16,
                    upsample=1)
    x, z = torch.randn(5, 4, 8, 8), torch.randn(5, 3)
    want = torch.distributions.Normal(net.decode(z), 0.5).log_prob(x).flatten(1).sum(1)
    assert torch.allclose(method.log_px(net, x, z), want, rtol=1e-5)
    with pytest.raises(ImgenError, match="levels"):
        build_method("vae", levels=1)


def test_a_latent_vae_encodes_and_decodes_pixels_through_the_shipped_autoencoder(tmp_path, capsys):
    from imgen.cli import main
    from imgen.presets import get_preset

    cfg = get_preset("shapes-latent-vae")
    cfg.net.options.update(base_channels=8, hidden=16)
    cfg.data.batch_size, cfg.train.steps, cfg.train.ckpt_every = 8, 2, 2
    train(cfg, tmp_path / "lvae", progress=False)
    m = imgen.load(tmp_path / "lvae")
    x = torch.rand(3, 3, 32, 32) * 2 - 1
    z = m.encode(x)
    assert z.shape == (3, 16) and m.decode(z).shape == m.reconstruct(x).shape == (3, 3, 32, 32)
    # encode = the VAE's posterior mean of the autoencoder's posterior mean, standardized per latent entry
    stats = load_tensors(tmp_path / "lvae" / "autoencoder" / "standardize.safetensors")
    assert stats["mean"].shape == stats["std"].shape == (4, 8, 8) and (stats["std"] > 0).all()
    ae_mean = m.method.autoencoder.encode(x).mean
    assert torch.allclose(m.method.encode_mean(x), (ae_mean - stats["mean"]) / stats["std"], atol=1e-5)
    assert torch.allclose(z, m.net.encode(m.method.encode_mean(x)).mean)
    assert torch.allclose(m.decode(z), m.method.decode(m.net.decode(z)).clamp(-1, 1))
    assert m.sample(4, seed=1).shape == (4, 3, 32, 32) and torch.equal(m.sample(4, seed=1), m.sample(4, seed=1))
    with pytest.raises(ImgenError, match="latents"):
        m.elbo(x)
    with pytest.raises(ImgenError, match=r"\(B, 3, 32, 32\)"):
        m.encode(torch.zeros(2, 4, 8, 8))
    assert main(["latent", "attribute", str(tmp_path / "lvae"), "--n", "2", "--examples", "10",
                 "--out", str(tmp_path / "edit.png")]) == 0
    capsys.readouterr()


def test_imgen_latent_attribute_edits_shapes_scenes_and_rejects_other_data_and_colours(vae_dir, tmp_path, capsys):
    from PIL import Image

    from imgen.apps.latent import scenes_with
    from imgen.cli import main
    from imgen.data.shapes import COLOR_NAMES

    cfg = Config(description="tiny shapes VAE", data=DataConfig("shapes", {"image_size": 32, "max_objects": 1},
                                                                batch_size=8),
                 net=NetConfig("vae", {"latent_dim": 4, "arch": "burgess", "base_channels": 8, "hidden": 16}),
                 method=MethodConfig("vae", {"sigma": 0.3}), train=TrainConfig(steps=2, warmup=1, ckpt_every=2))
    train(cfg, tmp_path / "shapes-vae", progress=False)
    data = load_dataset("shapes", image_size=32, max_objects=1)
    red = scenes_with(data, "color", COLOR_NAMES.index("red"), 5, start=100, stop=300)
    assert red["image"].shape == (5, 3, 32, 32) and (red["attrs"]["color"] == COLOR_NAMES.index("red")).all()
    assert main(["latent", "attribute", str(tmp_path / "shapes-vae"), "--n", "3", "--examples", "20",
                 "--scale", "1", "--out", str(tmp_path / "edit.png")]) == 0
    assert Image.open(tmp_path / "edit.png").size == (3 * 33 + 1, 2 * 33 + 1)  # 3 sources over their 3 edits
    capsys.readouterr()
    assert main(["latent", "attribute", str(vae_dir), "--out", str(tmp_path / "x.png")]) == 2  # a digits VAE
    assert main(["latent", "attribute", str(tmp_path / "shapes-vae"), "--target", "purple",
                 "--out", str(tmp_path / "x.png")]) == 2
    with pytest.raises(ImgenError, match="only 0 items with color = 99 among items 0..50"):
        scenes_with(data, "color", 99, 1, stop=50)
    err = capsys.readouterr().err
    assert err.count("imgen: error:") == 2 and "shapes" in err and "--target" in err
