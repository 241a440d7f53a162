"""Super-resolution (SR3 with Imagen's noise-conditioning augmentation): the low-res image and its augmentation level
reach the net, the method corrupts the condition at random levels while training and at a fixed one when sampling,
the upsampler makes images of the high-res shape, and `imgen upscale` writes a PNG or fails in one line."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

import imgen
from imgen.apps.upscale import bicubic, cascade, upscale
from imgen.data import load_dataset
from imgen.errors import ImgenError
from imgen.images import to_uint8
from imgen.metrics.psnr_ssim import psnr
from imgen.nn.unet import UNet
from imgen.presets import get_preset
from imgen.train import train

from conftest import assert_one_line_error, run_cli, tiny_config

TINY_NET = {"base_channels": 8, "channel_mults": [1, 2], "num_res_blocks": 1, "attn_resolutions": [], "num_heads": 2}


def sr_config(steps: int = 3):
    c = get_preset("shapes-sr")
    c.data.options["n"], c.data.batch_size = 64, 4
    c.net.options.update(TINY_NET)
    c.train.steps, c.train.warmup, c.train.ckpt_every, c.train.log_every = steps, 1, steps, 1
    return c


@pytest.fixture(scope="module")
def sr_dir(tmp_path_factory):
    """A tiny shapes-sr upsampler trained 3 steps: the mechanics, not quality."""
    out = tmp_path_factory.mktemp("sr") / "sr"
    train(sr_config(), out, progress=False)
    return out


@pytest.fixture(scope="module")
def sr(sr_dir):
    return imgen.load(sr_dir)


@pytest.fixture(scope="module")
def pairs():
    return load_dataset("shapes", image_size=32, low_res=8, max_objects=1).get(np.arange(4))


def sr_net(**kw) -> UNet:
    torch.manual_seed(0)
    net = UNet(3, image_size=32, low_res_channels=3, low_res_size=8, **{**TINY_NET, **kw})
    for p in net.parameters():  # zero-initialised output convs (ADM): a fresh net would ignore its conditions
        if p.ndim > 1 and not p.any():
            torch.nn.init.normal_(p, std=0.1)
    return net.eval()


def record_conds(net) -> list[dict]:
    seen = []
    net.register_forward_pre_hook(lambda mod, args, kwargs: seen.append(kwargs.get("cond", args[2] if len(args) > 2
                                                                                    else None)), with_kwargs=True)
    return seen


# ---- data -----------------------------------------------------------------------------------------------------
def test_shapes_low_res_is_the_area_average_of_the_image(pairs):
    assert pairs["image"].shape == (4, 3, 32, 32) and pairs["low_res"].shape == (4, 3, 8, 8)
    assert torch.allclose(pairs["low_res"], F.avg_pool2d(pairs["image"], 4), atol=1e-6)


@pytest.mark.parametrize("bad", [7, 32, 0, True])
def test_shapes_rejects_a_low_res_that_does_not_divide_the_image(bad):
    with pytest.raises(ImgenError, match="low_res must be an integer size dividing image_size=32"):
        load_dataset("shapes", image_size=32, low_res=bad)


# ---- the net: SR3 sec. 2.3 conditioning -----------------------------------------------------------------------
def test_low_res_image_is_extra_input_channels_and_changes_the_output(pairs):
    net = sr_net()
    assert net.conv_in.in_channels == 3 + 3
    x, t = torch.randn(4, 3, 32, 32), torch.full((4,), 0.5)
    with torch.no_grad():
        a = net(x, t, {"low_res": pairs["low_res"]})
        b = net(x, t, {"low_res": pairs["low_res"].flip(0)})
    assert a.shape == x.shape and not torch.allclose(a, b)


def test_noise_augmentation_level_reaches_the_net(pairs):
    net = sr_net()
    x, t = torch.randn(4, 3, 32, 32), torch.full((4,), 0.5)
    with torch.no_grad():
        outs = [net(x, t, {"low_res": pairs["low_res"], "low_res_level": torch.full((4,), s)}) for s in (0.0, 0.4)]
    assert not torch.allclose(*outs)


@pytest.mark.parametrize("low, match", [(torch.zeros(4, 3, 16, 16), r"must be \(4, 3, 8, 8\)"),
                                        (torch.zeros(4, 1, 8, 8), r"must be \(4, 3, 8, 8\)"),
                                        (torch.zeros(2, 3, 8, 8), r"must be \(4, 3, 8, 8\)"),
                                        (None, "super-resolution net: give cond\\['low_res'\\]")])
def test_net_rejects_a_missing_or_misshaped_low_res_image(low, match):
    with pytest.raises(ImgenError, match=match):
        sr_net()(torch.zeros(4, 3, 32, 32), torch.full((4,), 0.5), None if low is None else {"low_res": low})


def test_net_options_must_come_together():
    with pytest.raises(ImgenError, match="low_res_channels and low_res_size go together"):
        UNet(3, image_size=32, low_res_channels=3, **TINY_NET)
    with pytest.raises(ImgenError, match="larger than image_size"):
        UNet(3, image_size=32, low_res_channels=3, low_res_size=64, **TINY_NET)


# ---- the method: Imagen's noise-conditioning augmentation -----------------------------------------------------
def test_training_corrupts_the_low_res_image_at_random_levels_given_to_the_net(sr, pairs):
    net = sr_net()
    seen = record_conds(net)
    sr.method.loss(net, pairs, torch.Generator().manual_seed(0))
    level, low = seen[0]["low_res_level"].double(), seen[0]["low_res"]
    assert level.min() >= 0 and level.max() <= sr.method.aug_max and level.std() > 0
    # rectified-flow path: low_aug = (1 - s) x + s eps, so the residual is s eps
    resid = (low - (1 - level.view(-1, 1, 1, 1).float()) * pairs["low_res"]).flatten(1)
    assert torch.allclose(resid.std(1), level.float(), rtol=0.35)


@pytest.mark.parametrize("residual", [True, False])
def test_the_denoised_variable_is_the_residual_over_bicubic(pairs, residual, monkeypatch):
    """SRDiff sec. 3.2: a residual model denoises x - bicubic(low_res); at t = 0 the net sees exactly that."""
    from imgen.methods import build_method

    method = build_method("super_resolution", residual=residual)
    monkeypatch.setattr(method, "sample_t", lambda n, generator=None: torch.zeros(n, dtype=torch.float64))
    net = sr_net()
    seen = []
    net.register_forward_pre_hook(lambda mod, args: seen.append(args[0]))
    method.loss(net, pairs)
    up = F.interpolate(pairs["low_res"], size=32, mode="bicubic", align_corners=False)  # not clamped
    want = pairs["image"] - up if residual else pairs["image"]
    assert torch.allclose(seen[0], want, atol=1e-6)


def test_augmentation_level_zero_keeps_the_low_res_image(sr, pairs):
    cond = sr.method.low_res_condition(pairs["low_res"], 0.0)
    assert torch.equal(cond["low_res"], pairs["low_res"]) and torch.equal(cond["low_res_level"], torch.zeros(4))


def test_upscale_gives_the_net_the_fixed_sampling_level(sr, pairs):
    seen = record_conds(sr.net)
    upscale(sr, pairs["low_res"][:2], steps=2, aug_level=0.2)
    assert len(seen) == 2 and all(torch.allclose(c["low_res_level"], torch.full((2,), 0.2)) for c in seen)
    seen.clear()
    upscale(sr, pairs["low_res"][:2], steps=2)
    assert torch.allclose(seen[0]["low_res_level"], torch.full((2,), sr.method.sample_aug))
    sr.net._forward_pre_hooks.clear()


# ---- the application ------------------------------------------------------------------------------------------
def test_upscale_output_shape_range_and_determinism(sr, pairs):
    a = upscale(sr, pairs["low_res"][:3], steps=3, seed=1)
    b = upscale(sr, pairs["low_res"][:3], steps=3, seed=1)
    assert a.shape == (3, 3, 32, 32) and a.min() >= -1 and a.max() <= 1 and torch.equal(a, b)
    assert upscale(sr, pairs["low_res"][0], steps=2).shape == (1, 3, 32, 32)  # one (C, h, w) image


def test_bicubic_baseline_recovers_a_smooth_image():
    yy, xx = torch.meshgrid(torch.linspace(-1, 1, 32), torch.linspace(-1, 1, 32), indexing="ij")
    smooth = (0.5 * torch.sin(2 * xx) * torch.cos(yy)).expand(1, 3, 32, 32)
    assert psnr(bicubic(F.avg_pool2d(smooth, 4), 32), smooth).item() > 30


def test_upscale_rejects_wrong_inputs_and_models(sr, pairs, tmp_path):
    with pytest.raises(ImgenError, match="the image is 32x32 but this upsampler takes 8x8"):
        upscale(sr, pairs["image"])
    with pytest.raises(ImgenError, match="in \\[-1, 1\\]"):
        upscale(sr, pairs["low_res"] * 3)
    with pytest.raises(ImgenError, match="aug_level must be a noise level"):
        upscale(sr, pairs["low_res"], aug_level=2.0)
    with pytest.raises(ImgenError, match="super-resolution model; use imgen.apps.upscale"):
        sr.sample(2)
    train(tiny_config(steps=1), tmp_path / "digits", progress=False)
    digits = imgen.load(tmp_path / "digits")
    with pytest.raises(ImgenError, match="is not an upsampler"):
        upscale(digits, torch.zeros(1, 1, 8, 8))
    with pytest.raises(ImgenError, match="not an upsampler"):
        cascade(digits, digits, ["a red circle"])


def test_shapes_downsample_serves_area_averaged_scenes():
    full = load_dataset("shapes", image_size=32, max_objects=1).get(np.arange(3))["image"]
    small = load_dataset("shapes", image_size=32, max_objects=1, downsample=8)
    assert small.image_size == 8 and torch.allclose(small.get(np.arange(3))["image"], F.avg_pool2d(full, 4), atol=1e-6)


def test_cascade_draws_the_prompt_at_8px_then_upscales_it(sr, tmp_path):
    c = get_preset("shapes-8px-t2i")
    c.data.options["n"], c.data.batch_size = 64, 4
    c.net.options["backbone_options"].update(base_channels=8, num_heads=2)
    c.train.steps, c.train.warmup, c.train.ckpt_every = 2, 1, 2
    train(c, tmp_path / "base", progress=False)
    base = imgen.load(tmp_path / "base")
    assert base.shape == (3, 8, 8)
    x = cascade(base, sr, ["a red circle in the top left", "a blue star"], n=2, base_kwargs={"steps": 2},
                steps=2)
    assert x.shape == (4, 3, 32, 32) and x.min() >= -1 and x.max() <= 1
    with pytest.raises(ImgenError, match="not an upsampler"):
        cascade(base, base, ["a red circle"])


# ---- CLI ------------------------------------------------------------------------------------------------------
def write_png(path, image):
    Image.fromarray(to_uint8(image)[0]).save(path)
    return path


def test_cli_upscale_writes_a_png(sr_dir, pairs, tmp_path, capsys):
    src = write_png(tmp_path / "low.png", pairs["low_res"][:1])
    code, out, _ = run_cli(capsys, "upscale", src, "--model", sr_dir, "--out", tmp_path / "up.png", "--steps", 2)
    assert code == 0 and "32x32" in out
    with Image.open(tmp_path / "up.png") as img:
        assert img.size == (32, 32) and img.mode == "RGB"


def test_cli_upscale_rejects_bad_input_in_one_line(sr_dir, pairs, tmp_path, capsys):
    big = write_png(tmp_path / "big.png", pairs["image"][:1])
    code, _, err = run_cli(capsys, "upscale", big, "--model", sr_dir, "--out", tmp_path / "o.png")
    assert_one_line_error(code, err, "is 32x32 but this upsampler takes 8x8")
    grey = tmp_path / "grey.png"
    Image.new("L", (8, 8)).save(grey)
    code, _, err = run_cli(capsys, "upscale", grey, "--model", sr_dir, "--out", tmp_path / "o.png")
    assert_one_line_error(code, err, "is a L image but this upsampler takes RGB")
    code, _, err = run_cli(capsys, "upscale", big, "--model", "shapes-latent-t2i", "--out", tmp_path / "o.png")
    assert_one_line_error(code, err, "is not an upsampler")
    assert not (tmp_path / "o.png").exists()

