"""Denoiser networks: shapes, conditioning, zero init, config round-trip, a tiny overfit, clear errors."""
import json
import math

import pytest
import torch

from conftest import overfit_eps
from imgen.errors import ImgenError
from imgen.nn import NETS, MLPDenoiser, UNet, build_net, unet_small, unet_tiny
from imgen.nn.layers import LabelEmbedding, SelfAttention, timestep_embedding


@pytest.fixture(autouse=True)
def one_thread():
    """These nets are tiny: one intra-op thread is as fast, and immune to the 100x stalls two OpenMP
    threads hit when the 2-core machine is shared. Restored after each test."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


# (constructor, input shape) for every configuration the nets must support.
CONFIGS = {
    "tiny-digits-1x8x8": (lambda **kw: unet_tiny(1, 8, **kw), (3, 1, 8, 8)),
    "small-1x16x16": (lambda **kw: unet_small(1, 16, **kw), (2, 1, 16, 16)),
    "small-3x16x16": (lambda **kw: unet_small(3, 16, **kw), (2, 3, 16, 16)),
    "small-3x32x32": (lambda **kw: unet_small(3, 32, **kw), (2, 3, 32, 32)),
    "default-1x32x32": (lambda **kw: UNet(1, **kw), (2, 1, 32, 32)),
    "default-3x32x32": (lambda **kw: UNet(3, **kw), (2, 3, 32, 32)),
    "mlp-2d": (lambda **kw: MLPDenoiser(**kw), (5, 2)),
}


def randomize_(net, seed=0):
    """Give every parameter random values, so zero-initialized outputs no longer hide the conditioning."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in net.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.1)
    return net


@pytest.mark.parametrize("name", list(CONFIGS))
def test_output_has_input_shape_and_is_zero_at_init(name):
    make, shape = CONFIGS[name]
    torch.manual_seed(0)
    net = make()
    x, t = torch.randn(shape), torch.rand(shape[0])
    out = net(x, t)
    assert out.shape == x.shape and out.dtype == torch.float32
    assert torch.count_nonzero(out) == 0  # zero-initialized output layer
    randomize_(net)
    out = net(x, t)
    assert out.shape == x.shape and out.is_contiguous() and torch.isfinite(out).all()
    assert out.abs().mean() > 1e-3


@pytest.mark.parametrize("name", ["tiny-digits-1x8x8", "mlp-2d"])
def test_class_conditional_net_uses_label_and_drop_means_null_embedding(name):
    make, shape = CONFIGS[name]
    torch.manual_seed(0)
    net = randomize_(make(num_classes=10)).eval()
    x, t = torch.randn(shape), torch.rand(shape[0])
    b = shape[0]
    label_a, label_b = torch.zeros(b, dtype=torch.long), torch.full((b,), 7, dtype=torch.long)
    out_a = net(x, t, {"label": label_a})
    out_b = net(x, t, {"label": label_b})
    assert (out_a - out_b).abs().amax() > 1e-3  # the label changes the output
    no_label = net(x, t)
    assert torch.equal(net(x, t, {}), no_label)
    dropped = net(x, t, {"label": label_a, "drop": torch.ones(b, dtype=torch.bool)})
    torch.testing.assert_close(dropped, no_label, rtol=0, atol=1e-6)
    assert (no_label - out_a).abs().amax() > 1e-3  # the null embedding is not label 0
    # a per-sample mask drops exactly the masked rows
    drop = torch.tensor([True] + [False] * (b - 1))
    mixed = net(x, t, {"label": label_b, "drop": drop})
    torch.testing.assert_close(mixed[0], no_label[0], rtol=0, atol=1e-5)
    torch.testing.assert_close(mixed[1:], out_b[1:], rtol=0, atol=1e-5)


def test_time_changes_the_output_and_scalar_time_broadcasts():
    net = randomize_(unet_tiny()).eval()
    x = torch.randn(2, 1, 8, 8)
    out_lo, out_hi = net(x, torch.full((2,), 0.1)), net(x, torch.full((2,), 0.9))
    assert (out_lo - out_hi).abs().amax() > 1e-3
    torch.testing.assert_close(net(x, torch.tensor(0.1)), out_lo)


def test_residual_branches_and_attention_start_at_zero():
    net = unet_small(3, 32)
    zeroed = [n for n, p in net.named_parameters() if torch.count_nonzero(p) == 0 and p.ndim > 1]
    n_res = sum(1 for n, _ in net.named_modules() if n.endswith(".res"))
    n_attn = sum(1 for n, _ in net.named_modules() if n.endswith(".attn") and _ is not None)
    assert sum(n.endswith("res.conv2.weight") for n in zeroed) == n_res
    assert sum(n.endswith("attn.proj.weight") for n in zeroed) == n_attn > 0
    assert "conv_out.weight" in zeroed


def test_timestep_embedding_matches_diffusers():
    from diffusers.models.embeddings import get_timestep_embedding

    t = torch.tensor([0.0, 0.013, 0.5, 0.999, 1.0])
    for dim in (32, 64, 33):
        ours = timestep_embedding(t, dim)
        ref = get_timestep_embedding(1000 * t, dim, flip_sin_to_cos=True, downscale_freq_shift=0)
        torch.testing.assert_close(ours, ref, rtol=0, atol=2e-5)


def test_self_attention_matches_explicit_softmax_attention():
    torch.manual_seed(0)
    attn = randomize_(SelfAttention(16, num_heads=4))
    x = torch.randn(2, 16, 4, 4)
    b, c, h, w = x.shape
    tokens = attn.norm(x).flatten(2).transpose(1, 2)
    q, k, v = attn.qkv(tokens).chunk(3, dim=-1)
    split = lambda z: z.view(b, h * w, 4, c // 4).transpose(1, 2)  # noqa: E731
    q, k, v = split(q), split(k), split(v)
    weights = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(c // 4), dim=-1)  # Vaswani et al. eq. 1
    ref = attn.proj((weights @ v).transpose(1, 2).reshape(b, h * w, c)).transpose(1, 2).view(b, c, h, w)
    torch.testing.assert_close(attn(x), x + ref, rtol=1e-5, atol=1e-5)
    # also correct on a channels_last input (the layout the U-Net runs in)
    torch.testing.assert_close(attn(x.contiguous(memory_format=torch.channels_last)), x + ref,
                               rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name,kwargs", [
    ("unet", dict(in_channels=1, image_size=8, base_channels=16, channel_mults=[1, 2], attn_resolutions=[4],
                  num_classes=3, num_heads=2)),
    ("unet", dict(in_channels=3, out_channels=6, image_size=16, base_channels=16, channel_mults=(1, 2, 2),
                  num_res_blocks=1, attn_resolutions=(8, 4), dropout=0.1)),
    ("mlp", dict(dim=2, hidden=32, depth=2, num_classes=5)),
])
def test_config_round_trip_rebuilds_identical_net(name, kwargs):
    torch.manual_seed(0)
    net = randomize_(build_net(name, **kwargs)).eval()
    config = json.loads(json.dumps(net.config()))  # must be plain JSON
    rebuilt = NETS[name].from_config(config)
    assert rebuilt.config() == config
    sd, sd2 = net.state_dict(), rebuilt.state_dict()
    assert list(sd) == list(sd2)
    assert all(sd[k].shape == sd2[k].shape for k in sd)
    rebuilt.load_state_dict(sd)
    rebuilt.eval()
    if name == "unet":
        x = torch.randn(2, kwargs["in_channels"], kwargs["image_size"], kwargs["image_size"])
    else:
        x = torch.randn(4, kwargs["dim"])
    t = torch.rand(x.shape[0])
    cond = {"label": torch.tensor([0] * x.shape[0])} if kwargs.get("num_classes") else None
    assert torch.equal(net(x, t, cond), rebuilt(x, t, cond))


@pytest.mark.parametrize("make,x", [
    (lambda: unet_tiny(1, 8), torch.randn(16, 1, 8, 8, generator=torch.Generator().manual_seed(1))),
    (lambda: MLPDenoiser(hidden=64, depth=2), torch.randn(64, 2, generator=torch.Generator().manual_seed(1))),
])
def test_overfits_a_fixed_noise_prediction_batch(make, x):
    torch.manual_seed(0)
    net = make()
    g = torch.Generator().manual_seed(2)
    eps, t = torch.randn(x.shape, generator=g), torch.rand(x.shape[0], generator=g)
    x_t = torch.cos(t * math.pi / 2).view(-1, *[1] * (x.ndim - 1)) * x + torch.sin(
        t * math.pi / 2).view(-1, *[1] * (x.ndim - 1)) * eps
    losses = overfit_eps(net, x_t, t, eps, lr=2e-3)
    assert losses[0] == pytest.approx(eps.pow(2).mean().item())  # zero output at init
    assert losses[-1] < 0.5 * losses[0]


@pytest.mark.parametrize("kwargs,message", [
    (dict(in_channels=3, image_size=30, channel_mults=(1, 2, 2)), "not divisible by 2**(levels-1) = 4"),
    (dict(in_channels=3, image_size=32, attn_resolutions=(3,)), "never reaches; its resolutions are [32, 16, 8]"),
    (dict(in_channels=3, base_channels=30, num_heads=4), "not divisible by num_heads=4"),
    (dict(in_channels=0), "in_channels must be an integer >= 1"),
    (dict(in_channels=3, channel_mults=()), "channel_mults must be a non-empty list"),
    (dict(in_channels=3, dropout=1.5), "dropout must be in [0, 1)"),
])
def test_bad_unet_options_raise_clear_errors(kwargs, message):
    with pytest.raises(ImgenError) as e:
        UNet(**kwargs)
    assert message in str(e.value)


def test_build_net_rejects_unknown_names_and_options():
    with pytest.raises(ImgenError, match=r"unknown net 'vit'; valid nets are \[.*'dit', .*'mlp', .*'text2img', .*'unet'.*\]"):
        build_net("vit")
    with pytest.raises(ImgenError, match=r"unknown option\(s\) \['chanels'\]; valid options are \['in_channels'"):
        build_net("unet", in_channels=3, chanels=64)
    with pytest.raises(ImgenError, match=r"needs option\(s\) \['in_channels'\]"):
        build_net("unet")
    with pytest.raises(ImgenError, match=r"unknown option\(s\) \['width'\]"):
        MLPDenoiser.from_config({"width": 3})
    assert isinstance(build_net("mlp", dim=3), MLPDenoiser)


def test_bad_forward_inputs_raise_clear_errors():
    net = unet_tiny(1, 8, num_classes=4)
    x, t = torch.randn(2, 1, 8, 8), torch.rand(2)
    with pytest.raises(ImgenError, match=r"expects images of shape \(B, 1, H, W\), got \(2, 3, 8, 8\)"):
        net(torch.randn(2, 3, 8, 8), t)
    with pytest.raises(ImgenError, match="must be divisible by 2"):
        net(torch.randn(2, 1, 7, 7), t)
    with pytest.raises(ImgenError, match=r"t must have shape \(2,\)"):
        net(x, torch.rand(3))
    with pytest.raises(ImgenError, match="t must be a float tensor"):
        net(x, torch.tensor([1, 2]))
    with pytest.raises(ImgenError, match=r"outside \[0, 3\]"):
        net(x, t, {"label": torch.tensor([0, 4])})
    with pytest.raises(ImgenError, match=r'cond\["drop"\] must be a bool tensor'):
        net(x, t, {"label": torch.tensor([0, 1]), "drop": torch.tensor([0, 1])})
    with pytest.raises(ImgenError, match=r"expects points of shape \(B, 2\)"):
        MLPDenoiser()(torch.randn(4, 3), torch.rand(4))


def test_label_embedding_has_a_null_row_beyond_the_classes():
    emb = LabelEmbedding(3, 8)
    assert emb.table.weight.shape == (4, 8)
    out = emb({"drop": torch.tensor([True, True])}, 2, "cpu")
    torch.testing.assert_close(out, emb.table.weight[3].expand(2, 8))
