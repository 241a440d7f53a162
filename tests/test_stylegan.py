"""StyleGAN-lite (imgen.nn.stylegan): a modulated conv is a plain conv with each sample's modulated weights and
demodulation gives every output channel unit norm, equalised layers scale their weights at run time and the mapping
network learns at 1/100 of the rate, the synthesis layers keep the signal's scale (so noise inputs do not drown it),
the discriminator projects labels, truncation psi pulls w to w_avg (psi 0: w_avg itself) or, multimodal, to its
nearest k-means centre of w (k-means as scikit-learn's), style
mixing switches to a second w after one layer in training only, noise inputs follow the sampling seed,
`imgen sample --truncation` works for a StyleGAN and is refused, with one clear error, for other models, the
shapes-stylegan preset trains and resumes to the weights of an uninterrupted run, and the truncation strip and
style-mixing grid draw what they say."""
import pytest
import torch
import torch.nn.functional as F

import imgen
from imgen.config import Config, DataConfig, MethodConfig, NetConfig, TrainConfig
from imgen.errors import ImgenError
from imgen.nn import build_net
from imgen.nn.stylegan import EqualLinear, ModulatedConv2d, kmeans
from imgen.train import train


def test_modulated_conv_is_a_per_sample_conv_with_demodulated_unit_norm_weights():
    torch.manual_seed(0)
    conv = ModulatedConv2d(3, 5, 3, w_dim=4)
    x, w = torch.randn(2, 3, 6, 6), torch.randn(2, 4)
    weight = conv.modulated_weight(w)  # (B, out, in, k, k)
    assert torch.allclose(weight.pow(2).sum((2, 3, 4)), torch.ones(2, 5), atol=1e-5)  # StyleGAN2 eq. 3
    s = conv.affine(w)
    raw = conv.scale * conv.weight[None] * s[:, None, :, None, None]  # eq. 1
    assert torch.allclose(weight, raw / raw.pow(2).sum((2, 3, 4), keepdim=True).sqrt(), atol=1e-6)
    expect = torch.cat([F.conv2d(x[i:i + 1], weight[i], conv.bias, padding=1) for i in range(2)])
    assert torch.allclose(conv(x, w), expect, atol=1e-5)


def test_equalised_linear_scales_at_run_time_and_its_adam_step_is_lr_mul_times_lr():
    torch.manual_seed(0)
    layer = EqualLinear(16, 4, bias_init=1.0, lr_mul=0.01)
    x = torch.randn(8, 16)
    effective = lambda: layer.weight * layer.scale  # noqa: E731
    assert torch.allclose(layer(x), x @ effective().T + 1.0, atol=1e-5)  # ProGAN sec. 4.1; bias starts at bias_init
    assert abs(float(effective().detach().std()) * 4 - 1) < 0.3  # N(0, 1/fan_in) effective weights
    before = effective().detach().clone()
    opt = torch.optim.Adam(layer.parameters(), lr=1e-2)
    layer(x).pow(2).sum().backward()
    opt.step()
    step = (effective() - before).abs()  # Adam's first step is lr per raw weight: lr * lr_mul / sqrt(16) effective
    assert torch.allclose(step, torch.full_like(step, 1e-2 * 0.01 / 4), rtol=1e-3)


def test_synthesis_layers_keep_the_signal_so_noise_inputs_do_not_drown_it():
    torch.manual_seed(0)
    g = build_net("stylegan", in_channels=3, image_size=16, latent_dim=32, g_channels=32, d_channels=8).generator
    stds = []
    for layer in g.layers:  # noise strengths start at 0: these are the styled convs alone
        layer.register_forward_hook(lambda m, i, o: stds.append(float(o.detach().std())))
    g.eval()(torch.randn(64, 32))
    assert len(stds) == 5 and min(stds) > 0.3, stds  # without StyleGAN2's sqrt(2) gain: 0.56 halving to 0.06


def test_the_discriminator_projects_labels():
    torch.manual_seed(0)
    d = build_net("stylegan", in_channels=1, image_size=8, num_classes=3, latent_dim=8, g_channels=8,
                  d_channels=8).discriminator
    x = torch.randn(4, 1, 8, 8)
    a, b = d(x, torch.zeros(4, dtype=torch.long)), d(x, torch.ones(4, dtype=torch.long))
    assert a.shape == (4,) and not torch.allclose(a, b)
    with pytest.raises(ImgenError, match="give labels"):
        d(x)


def test_truncation_pulls_w_to_its_mean_and_mixing_switches_w_after_one_layer_in_training_only():
    torch.manual_seed(0)
    g = build_net("stylegan", in_channels=1, image_size=16, latent_dim=8, g_channels=8, d_channels=8,
                  mixing_prob=1.0).generator
    g.train()
    for _ in range(5):
        g.mapping(torch.randn(16, 8))  # w_avg follows the mapped w in training
    assert g.mapping.w_avg.abs().sum() > 0
    g.eval()
    z = torch.randn(4, 8)
    w = g.mapping(z)
    assert torch.allclose(g.ws(z, truncation=0.0), g.mapping.w_avg.expand(4, g.num_ws, 8))
    assert torch.allclose(g.ws(z, truncation=0.5)[:, 0], g.mapping.w_avg + 0.5 * (w - g.mapping.w_avg), atol=1e-6)
    assert torch.equal(g.ws(z), w[:, None].expand(4, g.num_ws, 8))  # eval: no mixing
    g.train()
    ws = g.ws(z, generator=torch.Generator().manual_seed(1))
    for i in range(4):  # layers [0, cut) keep w(z), layers [cut, num_ws) take the second w
        same = torch.isclose(ws[i], ws[i, :1], atol=1e-6).all(1)
        cut = int(same.long().argmin())
        assert 1 <= cut < g.num_ws and same[:cut].all() and not same[cut:].any()


def test_kmeans_finds_the_centres_scikit_learn_finds():
    from sklearn.cluster import KMeans

    g = torch.Generator().manual_seed(0)
    true = torch.randn(5, 3, generator=g) * 10
    x = (true[torch.arange(500) % 5] + torch.randn(500, 3, generator=g)).double()
    ours = kmeans(x, 5, generator=torch.Generator().manual_seed(1))
    theirs = torch.from_numpy(KMeans(5, n_init=10, random_state=0).fit(x.numpy()).cluster_centers_)
    assert torch.cdist(ours, theirs).min(1).values.max() < 1e-6  # the same partition, the same means


def test_multimodal_truncation_pulls_w_to_its_nearest_centre_recomputed_when_the_mapping_changes():
    torch.manual_seed(0)
    with pytest.raises(ImgenError, match="truncation_clusters must be an int in \\[0, 1000\\]"):
        build_net("stylegan", in_channels=1, image_size=8, latent_dim=8, g_channels=8, d_channels=8,
                  truncation_clusters=-1)
    g = build_net("stylegan", in_channels=1, image_size=8, latent_dim=8, g_channels=8, d_channels=8,
                  truncation_clusters=4).generator.eval()
    centres = g.truncation_centres()
    assert centres.shape == (4, 8) and torch.equal(centres, g.truncation_centres())  # cached
    z = torch.randn(6, 8)
    w = g.mapping(z)
    nearest = centres[torch.cdist(w, centres).argmin(1)]
    assert torch.allclose(g.ws(z, truncation=0.0)[:, 0], nearest)  # psi 0: each w's own mode, not one mean
    assert torch.allclose(g.ws(z, truncation=0.5)[:, 0], nearest + 0.5 * (w - nearest), atol=1e-6)
    assert torch.equal(g.ws(z)[:, 0], w)
    mapped = g.mapping(torch.randn(10_000, 8, generator=torch.Generator().manual_seed(0)))
    spread = torch.cdist(mapped, centres).min(1).values.mean()
    assert spread < torch.cdist(mapped, mapped.mean(0, keepdim=True)).mean()  # K modes sit closer than one mean
    with torch.no_grad():
        g.mapping.mlp[0].weight.mul_(2)  # a training step, an EMA update or a load changes the mapping in place
    assert not torch.allclose(g.truncation_centres(), centres)


def test_noise_inputs_follow_the_sampling_generator():
    torch.manual_seed(0)
    g = build_net("stylegan", in_channels=1, image_size=8, latent_dim=8, g_channels=8, d_channels=8).generator.eval()
    for layer in g.layers:
        torch.nn.init.constant_(layer.noise_strength, 0.5)
    z = torch.randn(2, 8)
    a = g(z, generator=torch.Generator().manual_seed(0))
    assert a.shape == (2, 1, 8, 8)
    assert torch.equal(a, g(z, generator=torch.Generator().manual_seed(0)))
    assert not torch.equal(a, g(z, generator=torch.Generator().manual_seed(1)))


def test_imgen_sample_truncation_for_a_stylegan_and_a_clear_error_elsewhere(tmp_path, capsys):
    from imgen.cli import main

    cfg = Config(description="tiny StyleGAN", data=DataConfig("digits", {"split": "all"}, batch_size=8),
                 net=NetConfig("stylegan", {"num_classes": None, "latent_dim": 8, "g_channels": 8, "d_channels": 8}),
                 method=MethodConfig("gan", {"loss": "nonsaturating", "r1_weight": 1.0}),
                 train=TrainConfig(steps=4, lr=1e-3, betas=[0.0, 0.99], warmup=0, grad_clip=0.0, ckpt_every=4,
                                   log_every=2))
    train(cfg, tmp_path / "s", progress=False)
    m = imgen.load(tmp_path / "s")
    x0 = m.sample(4, truncation=0.0, seed=0)
    assert x0.shape == (4, 1, 8, 8) and not torch.equal(x0, m.sample(4, truncation=1.0, seed=0))
    assert main(["sample", str(tmp_path / "s"), "--truncation", "0.5", "--n", "4",
                 "--out", str(tmp_path / "t.png")]) == 0 and (tmp_path / "t.png").is_file()
    with pytest.raises(ImgenError, match=r"in \[0, 1\]"):
        m.sample(2, truncation=1.5)
    dcgan = Config(description="tiny DCGAN", data=DataConfig("digits", {"split": "all"}, batch_size=8),
                   net=NetConfig("gan", {"num_classes": None, "latent_dim": 8, "g_channels": 8, "d_channels": 8}),
                   method=MethodConfig("gan", {}), train=TrainConfig(steps=1, warmup=0, ckpt_every=1))
    train(dcgan, tmp_path / "d", progress=False)
    capsys.readouterr()
    assert main(["sample", str(tmp_path / "d"), "--truncation", "0.5", "--out", str(tmp_path / "x.png")]) == 2
    err = capsys.readouterr().err
    assert err.count("imgen: error:") == 1 and "StyleGAN" in err


def test_shapes_stylegan_preset_trains_and_resumes_to_the_weights_of_an_uninterrupted_run(tmp_path):
    from imgen.train import train_preset

    small = ("data.batch_size=4",)  # the preset's nets and losses; a small batch keeps it to seconds
    train_preset("shapes-stylegan", tmp_path / "r", steps=2, overrides=small)
    train_preset("shapes-stylegan", tmp_path / "r", steps=4, overrides=small)  # resumes at step 2
    train_preset("shapes-stylegan", tmp_path / "s", steps=4, overrides=small)
    for name in ("model.safetensors", "ema.safetensors"):
        assert (tmp_path / "r" / name).read_bytes() == (tmp_path / "s" / name).read_bytes(), name
    m = imgen.load(tmp_path / "r")
    assert m.config.net.name == "stylegan" and m.num_classes is None
    x = m.sample(3, truncation=0.5, seed=0)
    assert x.shape == (3, 3, 16, 16) and x.abs().max() <= 1


def test_truncation_strip_and_style_mixing_grid_take_the_styles_they_say(tmp_path, monkeypatch):
    from imgen.plots import style_mixing_grid, truncation_strip

    cfg = Config(description="tiny StyleGAN", data=DataConfig("digits", {"split": "all"}, batch_size=8),
                 net=NetConfig("stylegan", {"num_classes": None, "latent_dim": 8, "g_channels": 8, "d_channels": 8}),
                 method=MethodConfig("gan", {"loss": "nonsaturating", "r1_weight": 1.0}),
                 train=TrainConfig(steps=2, warmup=0, grad_clip=0.0, ckpt_every=2))
    train(cfg, tmp_path / "s", progress=False)
    m = imgen.load(tmp_path / "s")
    g = m.net.generator
    drawn = []
    synthesis = g.synthesis
    monkeypatch.setattr(g, "synthesis", lambda ws, generator=None: drawn.append(ws) or synthesis(ws, generator))
    style_mixing_grid(m, n=2, coarse_layers=1, seed=0)
    a, b = drawn[2][0], drawn[0][0]  # the first A source (left column) and the first B source (top row)
    mixed = drawn[3][0]  # cell (A0, B0): B0's first w, A0's others (StyleGAN fig. 3)
    assert torch.equal(mixed[:1], b[:1]) and torch.equal(mixed[1:], a[1:]) and not torch.equal(a[0], b[0])
    monkeypatch.undo()
    assert len(truncation_strip(m, psis=(1.0, 0.0), n=2).axes) == 1
    with pytest.raises(ImgenError, match="coarse_layers"):
        style_mixing_grid(m, coarse_layers=g.num_ws)
    dcgan = Config(description="tiny DCGAN", data=DataConfig("digits", {"split": "all"}, batch_size=8),
                   net=NetConfig("gan", {"num_classes": None, "latent_dim": 8, "g_channels": 8, "d_channels": 8}),
                   method=MethodConfig("gan", {}), train=TrainConfig(steps=1, warmup=0, ckpt_every=1))
    train(dcgan, tmp_path / "d", progress=False)
    with pytest.raises(ImgenError, match="StyleGAN"):
        truncation_strip(imgen.load(tmp_path / "d"))


def test_the_clip_discriminator_adds_an_unconditional_head_on_the_frozen_clip_image_tower(tmp_path):
    from imgen.nn.clip import CLIP
    from imgen.pretrained import shipped_model_dir

    clip_dir = shipped_model_dir("shapes-clip")
    net = build_net("stylegan", in_channels=3, image_size=16, latent_dim=8, g_channels=8, d_channels=8,
                    mapping_depth=1, clip_discriminator=str(clip_dir))
    clip, d = CLIP.load(clip_dir), net.discriminator
    assert all(torch.equal(v, clip.image_encoder.state_dict()[k]) for k, v in d.features.tower.state_dict().items())
    assert not any(p.requires_grad for p in d.features.tower.parameters()) and "embed" not in d.features.head
    x = (torch.rand(3, 3, 16, 16, generator=torch.Generator().manual_seed(0)) * 2 - 1).requires_grad_(True)
    h = F.leaky_relu(d.features.head["hidden"](clip.image_encoder(x)), 0.2)
    assert torch.allclose(d(x), d.pixel(x) + d.features.head["linear"](h).squeeze(1), atol=1e-5)
    (grad,) = torch.autograd.grad(d.features(x).sum(), x)  # G learns through the frozen tower
    assert grad.abs().sum() > 0
    with pytest.raises(ImgenError, match="unconditional"):
        build_net("stylegan", in_channels=3, image_size=16, num_classes=3, clip_discriminator=str(clip_dir))
    with pytest.raises(ImgenError, match="not a CLIP directory"):
        from imgen.train import train_preset

        train_preset("shapes-stylegan", tmp_path / "x", steps=1,
                     overrides=(f"net.options.clip_discriminator={tmp_path}",))
