"""Text-conditioned nets: U-Net cross-attention + AdaGN pooled text, DiT with adaLN-Zero / cross-attention /
in-context conditioning, the learned null text embedding, padding masks, zero init, FLOPs, clear errors."""
import json
import math

import pytest
import torch
from torch import nn

from conftest import overfit_eps
from imgen.errors import ImgenError
from imgen.nn import NETS, DiT, UNet, build_net, dit_s, dit_tiny, unet_small
from imgen.nn.dit import CONDITIONINGS, sincos_pos_embed_2d
from imgen.nn.flops import count_macs, count_params
from imgen.nn.layers import CrossAttention, TextConditioning, modulate

D_TEXT = 24


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


def small_unet(**kw):
    kw = {"base_channels": 16, "channel_mults": (1, 2), "num_res_blocks": 1, "attn_resolutions": (8,),
          "image_size": 16, "num_heads": 2, "context_dim": D_TEXT, **kw}
    return UNet(3, **kw)


def small_dit(conditioning, **kw):
    kw = {"image_size": 16, "patch_size": 4, "dim": 32, "depth": 2, "num_heads": 2, "context_dim": D_TEXT,
          "conditioning": conditioning, **kw}
    return DiT(3, **kw)


# name -> constructor of a small text-conditioned net on 16x16 RGB images
SMALL = {"unet": small_unet, **{f"dit-{c}": (lambda c=c, **kw: small_dit(c, **kw)) for c in CONDITIONINGS}}
USES_TOKENS = ["unet", "dit-cross_attn", "dit-in_context"]  # adaLN-Zero sees only the pooled text


def randomize_(net, seed=0, std=0.1):
    """Random parameters, so zero-initialized layers no longer hide the conditioning paths."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in net.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * std)
    return net


def text_cond(batch, length=5, lengths=None, dim=D_TEXT, seed=1):
    """Random token embeddings; row i has lengths[i] real tokens (the rest padding)."""
    g = torch.Generator().manual_seed(seed)
    lengths = lengths or [length] * batch
    mask = torch.arange(length)[None] < torch.tensor(lengths)[:, None]
    return {"text": torch.randn(batch, length, dim, generator=g), "text_mask": mask,
            "text_pooled": torch.randn(batch, dim, generator=g)}


def inputs(batch=2, size=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(batch, 3, size, size, generator=g), torch.rand(batch, generator=g)


@pytest.mark.parametrize("make,size", [
    *[(SMALL[n], 16) for n in SMALL],
    (lambda: unet_small(context_dim=128), 32),
    *[(lambda c=c: dit_tiny(conditioning=c, context_dim=128), 32) for c in CONDITIONINGS],
    *[(lambda c=c: dit_s(conditioning=c, context_dim=128, num_classes=5), 32) for c in CONDITIONINGS],
])
def test_every_variant_outputs_the_input_shape_and_zero_at_init(make, size):
    torch.manual_seed(0)
    net = make()
    d = net.config()["context_dim"]
    x, t = inputs(2, size)
    cond = text_cond(2, dim=d)
    out = net(x, t, cond)
    assert out.shape == x.shape and out.dtype == torch.float32
    assert torch.count_nonzero(out) == 0  # zero-initialized output layer
    randomize_(net)
    out = net(x, t, cond)
    assert out.shape == x.shape and torch.isfinite(out).all() and out.abs().mean() > 1e-3


@pytest.mark.parametrize("name", USES_TOKENS)
def test_masked_padding_tokens_do_not_change_the_output(name):
    net = randomize_(SMALL[name]()).eval()
    x, t = inputs(3)
    cond = text_cond(3, length=6, lengths=[6, 3, 1])
    out = net(x, t, cond)
    garbage = 50 * torch.randn(3, 4, D_TEXT)
    padded = dict(cond, text=torch.cat([cond["text"], garbage], 1),
                  text_mask=torch.cat([cond["text_mask"], torch.zeros(3, 4, dtype=torch.bool)], 1))
    torch.testing.assert_close(net(x, t, padded), out, rtol=0, atol=1e-5)
    # the same garbage tokens marked real do change it: the tokens are attended to
    unmasked = dict(padded, text_mask=torch.ones(3, 10, dtype=torch.bool))
    assert (net(x, t, unmasked) - out).abs().amax() > 1e-3


@pytest.mark.parametrize("name", list(SMALL))
def test_drop_uses_the_learned_null_text_embedding(name):
    net = randomize_(SMALL[name]()).eval()
    with torch.no_grad():  # a trained null embedding is on the scale of real token features
        for null in (net.text_cond.null_tokens, net.text_cond.null_pooled):
            if null is not None:  # adaLN-Zero reads only the pooled text: no null tokens
                null.normal_()
    x, t = inputs(2)
    cond = text_cond(2)
    captioned = net(x, t, cond)
    no_text = net(x, t)
    assert torch.equal(net(x, t, {}), no_text)
    dropped = net(x, t, dict(cond, drop=torch.ones(2, dtype=torch.bool)))
    torch.testing.assert_close(dropped, no_text, rtol=0, atol=1e-5)
    # the caption matters: 10x the tolerance of the equalities (in-context DiT at this init: ~1e-3, other nets more)
    assert (no_text - captioned).abs().amax() > 1e-4
    zeros = {k: torch.zeros_like(v) for k, v in cond.items() if k != "text_mask"}
    zeros["text_mask"] = cond["text_mask"]
    assert (net(x, t, zeros) - no_text).abs().amax() > 1e-3  # null embedding is learned, not zeros
    # a per-row drop (CFG stacks kept and dropped rows in one batch) affects exactly that row
    mixed = net(x, t, dict(cond, drop=torch.tensor([True, False])))
    torch.testing.assert_close(mixed[0], no_text[0], rtol=0, atol=1e-5)
    torch.testing.assert_close(mixed[1], captioned[1], rtol=0, atol=1e-5)


@pytest.mark.parametrize("name,null", [("unet", "null_tokens"), ("dit-cross_attn", "null_tokens"),
                                       ("dit-in_context", "null_tokens"), ("dit-adaln_zero", "null_pooled")])
def test_null_embedding_is_a_trained_parameter_saved_with_the_net(name, null):
    net = randomize_(SMALL[name]())
    x, t = inputs(2)
    net(x, t, dict(text_cond(2), drop=torch.ones(2, dtype=torch.bool))).pow(2).sum().backward()
    assert getattr(net.text_cond, null).grad.abs().sum() > 0
    assert f"text_cond.{null}" in net.state_dict()
    # no parameter is dead weight (every one gets a gradient from a mixed kept/dropped batch)
    net.zero_grad(set_to_none=True)
    net(x, t, dict(text_cond(2), drop=torch.tensor([True, False]))).pow(2).sum().backward()
    assert [n for n, p in net.named_parameters() if p.grad is None or not p.grad.any()] == []


@pytest.mark.parametrize("make", [small_unet, lambda **kw: small_dit("adaln_zero", **kw),
                                  lambda **kw: small_dit("in_context", **kw)])
def test_labels_and_text_condition_together_and_drop_nulls_both(make):
    # std 0.3: at 0.1 one appended label token among ~25 barely moves an in-context DiT
    net = randomize_(make(num_classes=4), std=0.3).eval()
    x, t = inputs(2)
    cond = text_cond(2)
    a = net(x, t, dict(cond, label=torch.tensor([0, 0])))
    b = net(x, t, dict(cond, label=torch.tensor([3, 3])))
    assert (a - b).abs().amax() > 1e-3
    dropped = net(x, t, dict(cond, label=torch.tensor([0, 0]), drop=torch.ones(2, dtype=torch.bool)))
    torch.testing.assert_close(dropped, net(x, t), rtol=0, atol=1e-5)


def test_adaln_zero_dit_is_zero_at_init_and_every_block_is_the_identity():
    torch.manual_seed(0)
    net = dit_tiny(conditioning="adaln_zero", context_dim=D_TEXT, num_classes=3)
    x, t = inputs(2, 32)
    cond = dict(text_cond(2), label=torch.tensor([0, 2]))
    assert torch.count_nonzero(net(x, t, cond)) == 0
    h = torch.randn(2, 64, 128)
    c = torch.randn(2, 128)
    for block in net.blocks:
        assert torch.count_nonzero(block.adaLN_modulation[-1].weight) == 0
        assert torch.equal(block(h, c), h)  # gates are 0: x + 0 * attn + 0 * mlp
    # once the modulation is trained, a block is no longer the identity
    nn.init.normal_(net.blocks[0].adaLN_modulation[-1].weight, std=0.1)
    assert not torch.allclose(net.blocks[0](h, c), h)


def test_modulate_is_dit_adaln():
    x, shift, scale = torch.randn(2, 5, 8), torch.randn(2, 8), torch.randn(2, 8)
    torch.testing.assert_close(modulate(x, shift, scale), x * (1 + scale[:, None, :]) + shift[:, None, :])


def test_cross_attention_matches_explicit_masked_softmax_attention():
    torch.manual_seed(0)
    heads, c, d_ctx = 4, 16, 12
    attn = randomize_(CrossAttention(c, d_ctx, heads))
    x, context = torch.randn(2, 7, c), torch.randn(2, 5, d_ctx)
    mask = torch.tensor([[True, True, True, False, False], [True, False, True, True, True]])
    b, n, m, dh = 2, 7, 5, c // heads
    q = attn.q(attn.norm(x)).view(b, n, heads, dh).transpose(1, 2)
    k, v = (z.view(b, m, heads, dh).transpose(1, 2) for z in attn.kv(context).chunk(2, dim=-1))
    bias = torch.zeros(b, 1, 1, m).masked_fill(~mask[:, None, None, :], float("-inf"))
    weights = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(dh) + bias, dim=-1)  # Vaswani et al. eq. 1
    ref = x + attn.proj((weights @ v).transpose(1, 2).reshape(b, n, c))
    torch.testing.assert_close(attn(x, context, mask), ref, rtol=1e-5, atol=1e-5)
    assert torch.equal(CrossAttention(c, d_ctx, heads)(x, context, mask), x)  # zero-init: identity


def test_sincos_position_embedding_matches_diffusers():
    from diffusers.models.embeddings import get_2d_sincos_pos_embed

    for dim, grid in ((32, 4), (128, 8), (192, 16)):
        ref = get_2d_sincos_pos_embed(dim, grid, base_size=grid, output_type="pt").float()
        torch.testing.assert_close(sincos_pos_embed_2d(dim, grid), ref, rtol=0, atol=1e-6)


@pytest.mark.parametrize("name,kwargs", [
    ("unet", dict(in_channels=3, image_size=16, base_channels=16, channel_mults=[1, 2], num_res_blocks=1,
                  attn_resolutions=[8], cross_attn_resolutions=[16, 8], context_dim=D_TEXT, num_heads=2)),
    *[("dit", dict(in_channels=3, image_size=16, patch_size=4, dim=32, depth=2, num_heads=2, conditioning=c,
                   context_dim=D_TEXT, num_classes=3, pos_embed=p))
      for c, p in zip(CONDITIONINGS, ("sincos", "learned", "sincos"))],
])
def test_config_round_trip_rebuilds_identical_net(name, kwargs):
    torch.manual_seed(0)
    net = randomize_(build_net(name, **kwargs)).eval()
    config = json.loads(json.dumps(net.config()))
    rebuilt = NETS[name].from_config(config)
    assert rebuilt.config() == config
    sd = net.state_dict()
    assert list(sd) == list(rebuilt.state_dict())
    rebuilt.load_state_dict(sd)
    x, t = inputs(2)
    cond = text_cond(2, lengths=[5, 2])
    if kwargs.get("num_classes"):
        cond["label"] = torch.tensor([1, 2])
    assert torch.equal(net(x, t, cond), rebuilt.eval()(x, t, cond))


def test_unet_cross_attention_sits_at_the_chosen_resolutions_and_defaults_stay_unchanged():
    default = small_unet()
    n_self = sum(b.attn is not None for b in [*default.down, *default.mid, *default.up] if hasattr(b, "attn"))
    n_cross = sum(hasattr(b, "cross") for b in [*default.down, *default.mid, *default.up])
    assert n_cross == n_self  # default: where self-attention is (incl. the middle)
    everywhere = small_unet(cross_attn_resolutions=(16, 8))
    assert sum(hasattr(b, "cross") for b in everywhere.modules()) == 2 + 1 + 4  # down, mid, up blocks
    plain = UNet(3, image_size=16, base_channels=16, channel_mults=(1, 2), num_res_blocks=1, num_heads=2)
    assert not any(isinstance(m, (CrossAttention, TextConditioning)) for m in plain.modules())
    assert not any(k.startswith("text") or ".cross." in k for k in plain.state_dict())


@pytest.mark.parametrize("conditioning", CONDITIONINGS)
def test_dit_overfits_a_fixed_text_conditioned_batch(conditioning):
    torch.manual_seed(0)
    net = small_dit(conditioning, dim=64, depth=2, num_heads=4)
    g = torch.Generator().manual_seed(3)
    x0 = torch.randn(8, 3, 16, 16, generator=g)
    eps, t = torch.randn(x0.shape, generator=g), torch.rand(8, generator=g)
    a, s = torch.cos(t * math.pi / 2).view(-1, 1, 1, 1), torch.sin(t * math.pi / 2).view(-1, 1, 1, 1)
    x_t = a * x0 + s * eps
    cond = text_cond(8, length=6, lengths=[6, 5, 4, 3, 6, 2, 1, 6], seed=4)
    losses = overfit_eps(net, x_t, t, eps, cond, lr=3e-3)
    assert losses[0] == pytest.approx(eps.pow(2).mean().item())  # zero output at init
    assert losses[-1] < 0.6 * losses[0]


def test_count_macs_matches_hand_counts():
    lin = nn.Linear(10, 7)
    assert count_macs(lin, torch.randn(3, 10)) == 3 * 10 * 7
    conv = nn.Conv2d(3, 8, 3, padding=1)
    assert count_macs(conv, torch.randn(2, 3, 5, 5)) == 2 * 5 * 5 * 8 * 3 * 9
    attn = CrossAttention(16, 12, num_heads=4)
    b, n, m = 2, 9, 5
    mask = torch.ones(b, m, dtype=torch.bool)
    expected = b * (n * 16 * 16 + m * 12 * 32 + 2 * n * m * 16 + n * 16 * 16)  # q, kv, QK^T and AV, proj
    assert count_macs(attn, torch.randn(b, n, 16), torch.randn(b, m, 12), mask) == expected
    assert count_params(lin) == 77
    lin.bias.requires_grad_(False)
    assert count_params(lin, trainable_only=True) == 70


@pytest.mark.parametrize("patch_size", [2, 4])
def test_dit_macs_match_a_hand_count(patch_size):
    x, t = inputs(1, 32)
    net = dit_tiny(patch_size=patch_size)  # adaLN-Zero, D = 128, depth 4, MLP ratio 4
    d, n, p, depth = 128, (32 // patch_size) ** 2, patch_size, 4
    block = 3 * n * d * d + 2 * n * n * d + n * d * d + 8 * n * d * d + d * 6 * d  # qkv, attention, proj, mlp, adaLN
    expected = (n * 3 * p * p * d  # patchify conv
                + 256 * d + d * d  # timestep MLP
                + depth * block
                + d * 2 * d + n * d * p * p * 3)  # final adaLN and linear
    assert count_macs(net, x, t) == expected


@pytest.mark.parametrize("make,message", [
    (lambda: DiT(3, image_size=30, patch_size=4), "image_size 30 is not divisible by patch_size 4"),
    (lambda: DiT(3, conditioning="film"),
     "conditioning 'film' is unknown; valid conditionings are ['adaln_zero', 'cross_attn', 'in_context']"),
    (lambda: DiT(3, dim=30, num_heads=4), "dim 30 is not divisible by num_heads=4"),
    (lambda: DiT(3, dim=6, num_heads=3), "multiple of 4 for the 2D sin-cos"),
    (lambda: DiT(3, pos_embed="rope"), "valid choices are ['sincos', 'learned']"),
    (lambda: DiT(3, depth=0), "depth must be an integer >= 1"),
    (lambda: UNet(3, cross_attn_resolutions=(8,)), "cross_attn_resolutions needs context_dim"),
    (lambda: UNet(3, context_dim=8, cross_attn_resolutions=(5,)), "never reaches; its resolutions are [32, 16, 8]"),
    (lambda: UNet(3, context_dim=0), "context_dim must be an integer >= 1"),
    (lambda: build_net("dit", in_channels=3, width=3), "unknown option(s) ['width']"),
])
def test_bad_options_raise_clear_errors(make, message):
    with pytest.raises(ImgenError) as e:
        make()
    assert message in str(e.value)


@pytest.mark.parametrize("make", [lambda: UNet(3, image_size=16, base_channels=16, channel_mults=(1, 2)),
                                  lambda: small_dit("cross_attn", context_dim=None)])
def test_text_given_to_a_net_without_context_dim_is_an_error(make):
    net = make()
    x, t = inputs(2)
    with pytest.raises(ImgenError, match=r"built without context_dim .* build it with context_dim=24"):
        net(x, t, text_cond(2))


def test_bad_text_inputs_raise_clear_errors():
    net = small_dit("cross_attn")
    x, t = inputs(2)
    cond = text_cond(2)
    with pytest.raises(ImgenError, match=r'expects cond\["text"\] float of shape \(2, L, 24\)'):
        net(x, t, dict(cond, text=torch.randn(2, 5, 16)))
    with pytest.raises(ImgenError, match=r'cond\["text_mask"\] must be a bool tensor of shape \(2, 5\)'):
        net(x, t, dict(cond, text_mask=torch.ones(2, 5)))
    with pytest.raises(ImgenError, match=r'without cond\["text_pooled"\]'):
        net(x, t, {k: v for k, v in cond.items() if k != "text_pooled"})
    with pytest.raises(ImgenError, match=r'cond\["text_pooled"\] must be float of shape \(2, 24\)'):
        net(x, t, dict(cond, text_pooled=torch.randn(2, 5)))
    with pytest.raises(ImgenError, match=r'no real token in row\(s\) \[1\]; .* set cond\["drop"\] True'):
        net(x, t, dict(cond, text_mask=torch.tensor([[True] * 5, [False] * 5])))
    # ... but a dropped row may have an empty mask
    net(x, t, dict(cond, text_mask=torch.tensor([[True] * 5, [False] * 5]), drop=torch.tensor([False, True])))
    with pytest.raises(ImgenError, match=r'cond\["drop"\] must be a bool tensor'):
        net(x, t, dict(cond, drop=torch.tensor([0, 1])))
    with pytest.raises(ImgenError, match=r"expects images of shape \(B, 3, 16, 16\), got \(2, 3, 8, 8\)"):
        net(torch.randn(2, 3, 8, 8), t, cond)
