"""GANs (imgen.methods.gan_losses, imgen.nn.gan, imgen.methods.gan): each loss is its paper's formula (the logistic
ones cross-checked against torch's binary cross-entropy), the gradient penalty and R1 are the input-gradient norms
autograd gives in closed form, spectral norm bounds the largest singular value, the projection discriminator adds
<embed(y), phi(x)>, the discriminator and generator updates alternate and each moves only its own parameters, the
diagnostics reach log.jsonl, a killed GAN run resumes byte-identically, `imgen sample --label` draws from the EMA
generator, bad input gets one clear error, and (slow) digits-cgan at a small budget draws the asked digit (SVC)
without collapsing."""
import json
import sys

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import imgen
from conftest import kill9_and_rerun
from imgen.config import Config, DataConfig, MethodConfig, NetConfig, TrainConfig
from imgen.errors import ImgenError
from imgen.methods import build_method
from imgen.methods.gan_losses import (LOSSES, gradient_penalty, hinge_discriminator_loss, minimax_discriminator_loss,
                                      minimax_generator_loss, nonsaturating_generator_loss, r1_penalty,
                                      wasserstein_discriminator_loss)
from imgen.metrics.diversity import diversity_ratio, mode_collapse_warning, within_class_diversity
from imgen.nn import build_net
from imgen.nn.gan import DCGANDiscriminator, minibatch_stddev
from imgen.train import Trainer, train

TINY_GAN = {"latent_dim": 8, "g_channels": 8, "d_channels": 8}


def gan_config(steps: int = 20, conditional: bool = True, **method) -> Config:
    net = dict(TINY_GAN, d_norm="none", spectral_norm=True) if conditional else dict(TINY_GAN, num_classes=None)
    if method.get("gp_weight"):
        net["d_norm"] = "layer"
    return Config(description="tiny GAN", data=DataConfig("digits", {"split": "all"}, batch_size=16),
                  net=NetConfig("gan", net), method=MethodConfig("gan", {"loss": "hinge", **method}),
                  train=TrainConfig(steps=steps, lr=2e-4, betas=[0.0, 0.9], warmup=0, grad_clip=0.0, ckpt_every=5,
                                    log_every=5))


# ---- the losses ---------------------------------------------------------------------------------------------------
def test_each_loss_is_its_papers_formula_on_small_logits():
    g = torch.Generator().manual_seed(0)
    real, fake = torch.randn(7, generator=g) * 3, torch.randn(7, generator=g) * 3
    d_real, d_fake = torch.sigmoid(real), torch.sigmoid(fake)
    # Goodfellow et al. eq. 1: D maximises log D(x) + log(1 - D(G(z))); torch's BCE is the same number
    expect = -(torch.log(d_real).mean() + torch.log(1 - d_fake).mean())
    assert torch.allclose(minimax_discriminator_loss(real, fake), expect, atol=1e-6)
    bce = (F.binary_cross_entropy_with_logits(real, torch.ones(7))
           + F.binary_cross_entropy_with_logits(fake, torch.zeros(7)))
    assert torch.allclose(minimax_discriminator_loss(real, fake), bce, atol=1e-6)
    assert torch.allclose(minimax_generator_loss(fake), torch.log(1 - d_fake).mean(), atol=1e-6)
    assert torch.allclose(nonsaturating_generator_loss(fake), -torch.log(d_fake).mean(), atol=1e-6)
    assert torch.allclose(wasserstein_discriminator_loss(real, fake), fake.mean() - real.mean())
    hinge = 0.5 * (torch.clamp(1 - real, min=0).mean() + torch.clamp(1 + fake, min=0).mean())
    assert torch.allclose(hinge_discriminator_loss(real, fake), hinge)
    for name, (_, g_loss) in LOSSES.items():
        if name in ("wgan", "hinge"):
            assert torch.allclose(g_loss(fake), -fake.mean())
    # the non-saturating loss keeps its gradient where D rejects the fakes (logit -8); the minimax one vanishes
    x = torch.tensor([-8.0], requires_grad=True)
    (g_ns,) = torch.autograd.grad(nonsaturating_generator_loss(x), x)
    (g_mm,) = torch.autograd.grad(minimax_generator_loss(x), x)
    assert g_ns.abs() > 0.99 and g_mm.abs() < 1e-3


def test_gradient_penalty_is_the_squared_distance_of_the_interpolates_gradient_norm_from_one():
    w = torch.randn(1, 2, 3, 3, generator=torch.Generator().manual_seed(1), requires_grad=True)
    linear = lambda x: (x * w).flatten(1).sum(1)  # noqa: E731  grad_x = w at every x
    real, fake = torch.randn(5, 2, 3, 3), torch.randn(5, 2, 3, 3)
    gp, norms = gradient_penalty(linear, real, fake, torch.Generator().manual_seed(0))
    assert torch.allclose(norms, w.norm().detach().expand(5))
    assert torch.allclose(gp, (w.norm() - 1) ** 2)
    (grad_w,) = torch.autograd.grad(gp, w)  # the penalty trains the critic: d/dw (||w|| - 1)^2
    assert torch.allclose(grad_w, 2 * (w.norm() - 1) * w / w.norm(), atol=1e-6)
    # a quadratic critic D(x) = 0.5 ||x||^2 has grad x: the norms are those of eps x + (1 - eps) x_fake
    quad = lambda x: 0.5 * (x ** 2).flatten(1).sum(1)  # noqa: E731
    gp, norms = gradient_penalty(quad, real, fake, torch.Generator().manual_seed(3))
    eps = torch.rand((5, 1, 1, 1), generator=torch.Generator().manual_seed(3))
    x_hat = eps * real + (1 - eps) * fake
    assert torch.allclose(norms, x_hat.flatten(1).norm(dim=1), atol=1e-6)
    assert torch.allclose(gp, ((x_hat.flatten(1).norm(dim=1) - 1) ** 2).mean(), atol=1e-6)


def test_r1_is_the_mean_squared_input_gradient_norm_on_real_data():
    a = torch.rand(1, 1, 4, 4) + 0.5
    critic = lambda x: (a * x ** 2).flatten(1).sum(1)  # noqa: E731  grad_x = 2 a x
    real = torch.randn(6, 1, 4, 4)
    assert torch.allclose(r1_penalty(critic, real), ((2 * a * real).flatten(1) ** 2).sum(1).mean(), atol=1e-5)


# ---- the nets -----------------------------------------------------------------------------------------------------
def test_spectral_norm_bounds_the_largest_singular_value_and_the_projection_adds_embed_dot_phi():
    torch.manual_seed(0)
    d = DCGANDiscriminator(1, 8, base_channels=8, num_classes=10, norm="none", spectral_norm=True)
    x, y = torch.randn(4, 1, 8, 8), torch.tensor([0, 3, 3, 9])
    for _ in range(30):  # one power iteration per training forward
        d(x, y)
    d.eval()
    for m in d.modules():
        if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear)):
            sigma = torch.linalg.matrix_norm(m.weight.detach().flatten(1), ord=2).item()
            assert abs(sigma - 1) < 0.02, (m, sigma)
    phi = d.features(x).sum((2, 3))
    expect = d.linear(phi).squeeze(1) + (d.embed(y) * phi).sum(1)  # Miyato & Koyama eq. 3
    assert torch.allclose(d(x, y), expect, atol=1e-5)


def test_conditional_batch_norm_scales_and_shifts_by_the_condition_in_every_generator_layer():
    """BN(h) * (1 + W_g e) + W_b e (de Vries et al. 2017), and with g_norm=conditional_batch every norm layer of G
    gets a gradient from the condition: the label reaches all resolutions, not only G's input."""
    from imgen.nn.gan import ConditionalBatchNorm2d, DCGANGenerator

    torch.manual_seed(0)
    cbn = ConditionalBatchNorm2d(3, 5)
    h, e = torch.randn(6, 3, 4, 4), torch.randn(6, 5)
    bn = F.batch_norm(h, None, None, training=True)
    want = bn * (1 + e @ cbn.gain.weight.T + cbn.gain.bias)[:, :, None, None] \
        + (e @ cbn.shift.weight.T + cbn.shift.bias)[:, :, None, None]
    torch.testing.assert_close(cbn(h, e), want)
    g = DCGANGenerator(8, 1, 16, 8, num_classes=10, norm="conditional_batch")
    norms = [m for m in g.modules() if isinstance(m, ConditionalBatchNorm2d)]
    assert len(norms) == 3  # the 4x4 projection and both x2 steps
    g(torch.randn(4, 8), torch.tensor([0, 1, 2, 3])).square().mean().backward()
    assert all(m.gain.weight.grad.abs().sum() > 0 and m.shift.weight.grad.abs().sum() > 0 for m in norms)
    with pytest.raises(ImgenError, match="g_norm 'conditional_batch' needs a conditional GAN"):
        DCGANGenerator(8, 1, 16, 8, norm="conditional_batch")


def test_minibatch_stddev_appends_the_batch_std_and_is_zero_for_a_collapsed_batch():
    h = torch.randn(6, 3, 2, 2)
    out = minibatch_stddev(h)
    assert out.shape == (6, 4, 2, 2) and torch.equal(out[:, :3], h)
    assert torch.allclose(out[:, 3], torch.from_numpy(h.numpy().std(0)).mean().expand(6, 2, 2))
    assert minibatch_stddev(h[:1].expand(6, -1, -1, -1))[:, 3].abs().max() == 0


def test_generator_and_discriminator_shapes():
    net = build_net("gan", in_channels=3, image_size=32, num_classes=5, minibatch_std=True, **TINY_GAN)
    x = net.generator(torch.randn(6, 8), torch.arange(6) % 5)
    assert x.shape == (6, 3, 32, 32) and x.abs().max() <= 1
    assert net.discriminator(x, torch.arange(6) % 5).shape == (6,)


# ---- training through the Trainer ---------------------------------------------------------------------------------
def _params(module):
    return [p.detach().clone() for p in module.parameters()]


def _same(a, b):
    return all(torch.equal(x, y) for x, y in zip(a, b))


def test_discriminator_and_generator_updates_alternate_and_each_moves_only_its_own_parameters(tmp_path):
    t = Trainer(gan_config(steps=1), tmp_path / "g", progress=False)
    assert [name for name, _ in t.updates] == ["discriminator", "generator"]
    batch, losses = t.dataset.get(np.arange(16)), {}
    g0, d0 = _params(t.net.generator), _params(t.net.discriminator)
    t._update("discriminator", t.updates[0][1], batch, losses)
    g1, d1 = _params(t.net.generator), _params(t.net.discriminator)
    assert _same(g0, g1) and not _same(d0, d1)
    t._update("generator", t.updates[1][1], batch, losses)
    assert _same(d1, _params(t.net.discriminator)) and not _same(g1, _params(t.net.generator))
    wgan = Trainer(gan_config(steps=1, loss="wgan", gp_weight=10.0, n_critic=3), tmp_path / "w", progress=False)
    assert [name for name, _ in wgan.updates] == ["discriminator"] * 3 + ["generator"]


def test_log_holds_the_gan_diagnostics_and_a_tiny_gan_learns_to_fool_its_discriminator(tmp_path):
    train(gan_config(steps=20, loss="wgan", gp_weight=10.0), tmp_path / "w", progress=False)
    log = [json.loads(line) for line in (tmp_path / "w" / "log.jsonl").read_text().splitlines()]
    keys = {"loss_discriminator", "loss_generator", "grad_norm_discriminator", "grad_norm_generator", "d_real_acc",
            "d_fake_acc", "gp", "gp_grad_norm"}
    assert all(keys <= set(r) and all(np.isfinite(r[k]) for k in keys) for r in log)
    assert all(0 <= r["d_real_acc"] <= 1 and 0 <= r["d_fake_acc"] <= 1 for r in log)
    m = imgen.load(tmp_path / "w")
    x = m.sample(8, seed=3)
    assert x.shape == (8, 1, 8, 8) and torch.equal(x, m.sample(8, seed=3)) and not torch.equal(x, m.sample(8, seed=4))


@pytest.mark.slow
def test_kill_9_and_rerun_of_a_gan_is_byte_identical_to_an_uninterrupted_run(tmp_path):
    from imgen.checkpoint import load_tensors

    cfg = tmp_path / "gan.json"  # WGAN-GP: the interpolation weights draw from the checkpointed generator too
    cfg.write_text(json.dumps(gan_config(steps=40, loss="wgan", gp_weight=10.0, n_critic=2).to_dict()))
    cmd = [sys.executable, "-m", "imgen", "train", str(cfg), "--quiet", "--out"]
    out = tmp_path / "killed"
    assert kill9_and_rerun(cmd, tmp_path / "straight", out, kills=1) >= 1
    for name in ("model.safetensors", "ema.safetensors"):
        assert (out / name).read_bytes() == (tmp_path / "straight" / name).read_bytes(), name
    (a, meta_a), (b, meta_b) = (load_tensors(d / "train_state.safetensors", with_metadata=True)
                                for d in (out, tmp_path / "straight"))  # both optimizers' states, RNGs, step
    assert meta_a == meta_b and a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_imgen_sample_label_writes_the_ema_generators_images_and_rejects_bad_input(tmp_path, capsys):
    from PIL import Image

    from imgen.cli import main

    train(gan_config(steps=10), tmp_path / "c", progress=False)
    out = tmp_path / "sevens"
    assert main(["sample", str(tmp_path / "c"), "--label", "7", "--n", "4", "--out", str(out), "--seed", "2"]) == 0
    pngs = sorted(out.glob("*.png"))
    m = imgen.load(tmp_path / "c")  # EMA weights
    want = ((m.sample(4, labels=[7] * 4, seed=2) + 1) * 127.5).round().clamp(0, 255).to(torch.uint8)
    got = torch.stack([torch.from_numpy(np.array(Image.open(p).convert("L"))) for p in pngs])
    assert len(pngs) == 4 and got.shape[-2:] == (8, 8)
    assert (got.int() - want[:, 0].int()).abs().max() <= 1
    capsys.readouterr()
    assert main(["sample", str(tmp_path / "c"), "--label", "12", "--out", str(tmp_path / "x.png")]) == 2
    err = capsys.readouterr().err
    assert err.count("imgen: error:") == 1 and "0..9" in err
    assert main(["sample", str(tmp_path / "c"), "--steps", "50", "--out", str(tmp_path / "y.png")]) == 2
    err = capsys.readouterr().err  # a GAN draws in one pass: --steps would be silently ignored
    assert err.count("imgen: error:") == 1 and "--steps does not apply to gan models" in err
    assert not (tmp_path / "y.png").exists()


def test_bad_gan_options_get_one_clear_error(tmp_path):
    with pytest.raises(ImgenError, match="gan loss must be one of"):
        build_method("gan", loss="lsgan")
    with pytest.raises(ImgenError, match="gp_weight"):
        build_method("gan", gp_weight=-1)
    with pytest.raises(ImgenError, match="n_critic"):
        build_method("gan", n_critic=0)
    with pytest.raises(ImgenError, match="power of two"):
        build_net("gan", image_size=12)
    with pytest.raises(ImgenError, match="d_norm"):
        build_net("gan", d_norm="spectral")
    bn_gp = gan_config(steps=1, conditional=False, loss="wgan", gp_weight=10.0)
    bn_gp.net.options["d_norm"] = "batch"
    with pytest.raises(ImgenError, match="without batch norm"):
        Trainer(bn_gp, tmp_path / "bn", progress=False)
    wrong_net = gan_config(steps=1)
    wrong_net.net = NetConfig("vae", {"latent_dim": 2, "base_channels": 8, "channel_mults": [1, 2]})
    with pytest.raises(ImgenError, match="net name 'gan'"):
        Trainer(wrong_net, tmp_path / "vae", progress=False)
    train(gan_config(steps=2, conditional=False), tmp_path / "u", progress=False)
    with pytest.raises(ImgenError, match="unconditional"):
        imgen.load(tmp_path / "u").sample(2, labels=[1, 2])
    with pytest.raises(ImgenError, match="no denoiser"):
        imgen.load(tmp_path / "u").method.denoiser(None)


def test_diversity_ratio_flags_a_collapsed_generator():
    g = torch.Generator().manual_seed(0)
    real, labels = torch.randn(40, 1, 8, 8, generator=g), torch.arange(40) % 4
    assert diversity_ratio(real, labels, real, labels) == pytest.approx(1.0)
    collapsed = real[labels.argsort()][::10].repeat_interleave(10, 0)  # one image per class, 10 copies each
    assert within_class_diversity(collapsed, torch.arange(40) // 10) == 0
    assert diversity_ratio(collapsed, torch.arange(40) // 10, real, labels) == 0
    assert "mode collapse" in mode_collapse_warning(0.1) and mode_collapse_warning(0.9) is None
    with pytest.raises(ImgenError, match="two images"):
        within_class_diversity(real[:3], torch.arange(3))


# ---- slow: digits-cgan draws the asked digit ------------------------------------------------------------------------
@pytest.mark.slow
def test_digits_cgan_at_a_small_budget_draws_the_asked_digit_without_collapse(trained_digits, tmp_path):
    from PIL import Image

    from imgen.cli import main
    from imgen.data import load_dataset
    from imgen.digits_check import _to_digits_space, digits_quality
    from sklearn.datasets import load_digits
    from sklearn.svm import SVC

    model_dir = trained_digits("digits-cgan", 400)  # 400 of its 3000 steps: ~70 s on 2 cores
    m = imgen.load(model_dir)
    q = digits_quality(m, n=300)
    assert q["svc_accuracy"] >= 0.9 and q["nn_distance_ratio"] >= 0.5, q
    ds = load_dataset("digits", split="all")
    real = ds.get(np.arange(len(ds)))
    labels = torch.arange(300) % 10
    # no collapse: a generator drawing one image per class scores 0; collapsing runs scored ~0.3 (full preset: 0.78)
    assert diversity_ratio(m.sample(300, labels=labels, seed=1), labels, real["image"], real["label"]) >= 0.6
    assert main(["sample", str(model_dir), "--label", "7", "--n", "40", "--out", str(tmp_path / "s")]) == 0
    x = torch.stack([torch.from_numpy(np.array(Image.open(p).convert("L"))) for p in sorted((tmp_path / "s").iterdir())])
    x = x[:, None].float() / 127.5 - 1
    d = load_digits()
    assert (SVC().fit(d.data, d.target).predict(_to_digits_space(x)) == 7).mean() >= 0.85
