"""SRGAN (imgen.nn.srgan, imgen.methods.srgan): the generator enlarges 8 -> 32 px through sub-pixel blocks and,
untrained, gives bicubic's image (its bicubic skip); the discriminator gives one logit per image; the discriminator
and generator updates alternate, each moves only its own parameters, and the generator's loss is eq. 3 (content on
shapes-eval's conv maps + pixel MSE + 1e-3 adversarial); a killed-and-resumed run ends byte-identical; `imgen
upscale` takes an SRGAN directory and rejects what does not apply in one line; and (slow) shapes-srgan at a small
budget lets shapes-eval read held-out scenes' shape and colour far more often than from bicubic enlargements."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

import imgen
from conftest import assert_one_line_error, run_cli
from imgen.apps.upscale import bicubic, upscale
from imgen.checkpoint import load_tensors
from imgen.errors import ImgenError
from imgen.images import to_uint8
from imgen.methods import build_method
from imgen.metrics.evaluators import load_evaluator
from imgen.nn import build_net
from imgen.presets import get_preset
from imgen.train import Trainer, train

TINY = {"g_channels": 8, "num_blocks": 1, "d_channels": 8, "d_convs": 4, "d_dense": 16}


def srgan_config(steps: int = 4):
    c = get_preset("shapes-srgan")
    c.data.options["n"], c.data.batch_size = 64, 4
    c.net.options.update(TINY)
    c.train.steps, c.train.ckpt_every, c.train.log_every = steps, 2, 2
    return c


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("srgan") / "m"
    train(srgan_config(), out, progress=False)
    return out


@pytest.fixture(scope="module")
def pairs():
    from imgen.data import load_dataset

    return load_dataset("shapes", image_size=32, max_objects=1, low_res=8, seed=7).get(np.arange(4))


# ---- the nets -----------------------------------------------------------------------------------------------------
def test_generator_upsamples_x4_by_two_pixel_shuffles_and_starts_at_bicubic(pairs):
    net = build_net("srgan", **TINY)
    g, low = net.generator, pairs["low_res"]
    assert sum(isinstance(m, torch.nn.PixelShuffle) for m in g.modules()) == 2  # log2(4) sub-pixel blocks
    assert torch.allclose(g(low), F.interpolate(low, size=32, mode="bicubic"), atol=1e-6)  # zero residual head
    torch.nn.init.normal_(g.tail.weight, 0, 0.1)
    y = g(low)
    assert y.shape == (4, 3, 32, 32) and not torch.allclose(y, bicubic(low, 32))
    assert net.discriminator(y).shape == (4,)  # one logit per image
    no_skip = build_net("srgan", **TINY, bicubic_skip=False).generator
    assert not torch.allclose(no_skip(low), bicubic(low, 32), atol=1e-2)  # without it: the paper's plain SRResNet
    assert build_net("srgan", **TINY, image_size=16).generator(low).shape == (4, 3, 16, 16)


@pytest.mark.parametrize("options, match", [({"num_classes": 5}, "num_classes to null"),
                                            ({"image_size": 24}, "power of two"),
                                            ({"image_size": 30}, "multiple of low_res_size"),
                                            ({"low_res_channels": 1}, "must equal the image's in_channels")])
def test_bad_srgan_net_options_get_one_clear_error(options, match):
    with pytest.raises(ImgenError, match=match):
        build_net("srgan", **{**TINY, **options})


# ---- the losses ---------------------------------------------------------------------------------------------------
def _params(m):
    return [p.detach().clone() for p in m.parameters()]


def _same(a, b):
    return all(torch.equal(x, y) for x, y in zip(a, b))


def test_updates_alternate_each_moves_its_own_nets_and_the_generator_loss_is_eq_3(tmp_path, pairs):
    t = Trainer(srgan_config(steps=1), tmp_path / "t", progress=False)
    assert [name for name, _ in t.updates] == ["discriminator", "generator"]
    batch, losses = pairs, {}
    g0, d0 = _params(t.net.generator), _params(t.net.discriminator)
    t._update("discriminator", t.updates[0][1], batch, losses)
    g1, d1 = _params(t.net.generator), _params(t.net.discriminator)
    assert _same(g0, g1) and not _same(d0, d1)
    t._update("generator", t.updates[1][1], batch, losses)
    assert _same(d1, _params(t.net.discriminator)) and not _same(g1, _params(t.net.generator))
    m, net, hr = t.method, t.net.eval(), batch["image"]
    ev = load_evaluator("shapes-eval").net
    with torch.no_grad():
        sr = net.generator(batch["low_res"])
        content = sum(F.mse_loss(a, b) for a, b in zip(ev.feature_maps(sr), ev.feature_maps(hr)))  # eq. 5, all maps
        logits = net.discriminator(sr)
        want = content + 1.0 * F.mse_loss(sr, hr) + 1e-3 * F.softplus(-logits).mean()  # eq. 3 (+ eq. 4 pixel MSE)
        assert torch.allclose(m.generator_loss(net, batch), want, rtol=1e-5)
        real = net.discriminator(hr)
        want_d = F.softplus(-real).mean() + F.softplus(logits).mean()  # eq. 2
        assert torch.allclose(m.discriminator_loss(net, batch), want_d, rtol=1e-5)
        deepest = build_method("srgan", content_layers=[-1])  # the paper's single (deepest) layer
        assert torch.allclose(deepest.content_loss(sr, hr), F.mse_loss(ev.feature_maps(sr)[-1],
                                                                       ev.feature_maps(hr)[-1]), rtol=1e-5)
        assert m.content_loss(hr, hr) == 0
    with pytest.raises(ImgenError, match="low_res"):
        m.generator_loss(net, {"image": hr})


@pytest.mark.parametrize("options, match", [({"loss": "lsgan"}, "srgan loss must be one of"),
                                            ({"pixel_weight": -1}, "pixel_weight"),
                                            ({"content_layers": "deep"}, "content_layers must be a list"),
                                            ({"content_layers": []}, "content_layers must be a list")])
def test_bad_srgan_method_options_get_one_clear_error(options, match):
    with pytest.raises(ImgenError, match=match):
        build_method("srgan", **options)


def test_a_content_layer_the_evaluator_lacks_is_named(pairs):
    with pytest.raises(ImgenError, match="must index shapes-eval's 5 conv maps"):
        build_method("srgan", content_layers=[7]).content_loss(pairs["image"], pairs["image"])


# ---- model directory, resume, CLI ---------------------------------------------------------------------------------
def test_log_has_the_diagnostics_and_the_model_upscales_deterministically(tiny_dir, pairs):
    import json

    log = [json.loads(line) for line in (tiny_dir / "log.jsonl").read_text().splitlines()]
    keys = {"loss_discriminator", "loss_generator", "d_real_acc", "d_fake_acc", "content", "pixel", "adversarial"}
    assert log and all(keys <= set(r) and all(np.isfinite(r[k]) for k in keys) for r in log)
    m = imgen.load(tiny_dir)
    y = upscale(m, pairs["low_res"])
    assert y.shape == (4, 3, 32, 32) and y.min() >= -1 and y.max() <= 1
    assert torch.equal(y, upscale(imgen.load(tiny_dir), pairs["low_res"]))
    assert torch.equal(y, m.net.generator(pairs["low_res"]).clamp(-1, 1))  # the EMA generator, one pass
    with pytest.raises(ImgenError, match="upscales low-res images"):
        m.sample(2)
    with pytest.raises(ImgenError, match="steps does not apply to srgan"):
        upscale(m, pairs["low_res"], steps=4)
    with pytest.raises(ImgenError, match="is 32x32 but this upsampler takes 8x8"):
        upscale(m, pairs["image"])


def test_a_stopped_and_resumed_run_ends_byte_identical(tmp_path):
    train(srgan_config(steps=4), tmp_path / "straight", progress=False)
    train(srgan_config(steps=2), tmp_path / "resumed", progress=False)  # stops at its step-2 checkpoint
    train(srgan_config(steps=4), tmp_path / "resumed", progress=False)  # a new Trainer resumes from it
    for name in ("model.safetensors", "ema.safetensors"):
        assert (tmp_path / "resumed" / name).read_bytes() == (tmp_path / "straight" / name).read_bytes(), name
    (a, meta_a), (b, meta_b) = (load_tensors(tmp_path / d / "train_state.safetensors", with_metadata=True)
                                for d in ("resumed", "straight"))  # both optimizers' states, RNGs, step
    assert meta_a == meta_b and a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_imgen_upscale_writes_the_srgan_image_and_rejects_what_does_not_apply(tiny_dir, pairs, tmp_path, capsys):
    from imgen.images import from_uint8

    low = tmp_path / "low.png"
    Image.fromarray(to_uint8(pairs["low_res"][:1])[0]).save(low)
    code, out, _ = run_cli(capsys, "upscale", low, "--model", tiny_dir, "--out", tmp_path / "up.png")
    assert code == 0 and "32x32" in out
    want = upscale(imgen.load(tiny_dir), from_uint8(np.array(Image.open(low))[None]))
    assert np.array_equal(np.array(Image.open(tmp_path / "up.png")), to_uint8(want)[0])
    for extra in (["--steps", "5"], ["--aug-level", "0.2"], ["--sampler", "euler"]):
        code, _, err = run_cli(capsys, "upscale", low, "--model", tiny_dir, "--out", tmp_path / "x.png", *extra)
        assert_one_line_error(code, err, "does not apply to srgan models")
    assert not (tmp_path / "x.png").exists()


# ---- quality (slow) -----------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_shapes_srgan_at_a_small_budget_lets_shapes_eval_read_held_out_scenes_better_than_bicubic(tmp_path):
    from imgen.data.shapes import render_scenes
    from imgen.images import adapt_images
    from imgen.metrics.adherence import READ, adherence_scenes, score_images
    from imgen.metrics.psnr_ssim import psnr

    cfg = get_preset("shapes-srgan")  # its nets, 300 of its 1000 steps
    cfg.train.steps, cfg.train.ckpt_every = 300, 300
    train(cfg, tmp_path / "m", progress=False)
    a = adherence_scenes(128)  # held-out stream: scenes never seen in training
    truth = render_scenes(a, 32, offsets=a["offset"])
    low = adapt_images(truth, 3, 8)
    sr, bi = upscale(imgen.load(tmp_path / "m"), low), bicubic(low, 32)
    read = {name: score_images(x, {k: a[k] for k in READ})["shape_color"] for name, x in (("sr", sr), ("bi", bi))}
    # measured (OMP_NUM_THREADS=1), train.seed 0/1/2: 0.445/0.477/0.438 against bicubic's 0.320: twice the margin
    assert read["sr"] > read["bi"] + 0.06, read
    assert psnr(sr, truth).mean() > psnr(bi, truth).mean() - 2  # within 2 dB of bicubic (measured: above it)
