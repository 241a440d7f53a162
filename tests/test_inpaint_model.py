"""A trained inpainting model (Stable Diffusion's inpainting model): imgen.recipes.inpaint fine-tunes shapes-latent-t2i
with the hole mask and the masked image's latent as extra U-Net input channels (imgen.methods.inpainting,
imgen.data.masks); imgen.apps.inpaint uses that condition (method "trained") and pastes the known pixels exactly."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

import imgen
from conftest import assert_one_line_error, run_cli
from imgen.apps.inpaint import inpaint
from imgen.checkpoint import load_tensors
from imgen.data import load_dataset
from imgen.data.masks import MASK_KINDS, inpaint_masks, object_box_holes
from imgen.data.shapes import sample_scene_attributes
from imgen.errors import ImgenError
from imgen.images import to_uint8
from imgen.methods.flow_matching import flow_matching
from imgen.methods.inpainting import inpaint_condition
from imgen.metrics.adherence import inpaint_tasks
from imgen.recipes.inpaint import finetune_inpaint, inpaint_config
from imgen.train import Trainer

BASE = "shapes-latent-t2i"


@pytest.fixture(scope="module")
def base():
    return imgen.load(BASE)


@pytest.fixture(scope="module")
def tuned(tmp_path_factory):
    """An inpainting model fine-tuned 2 steps from the shipped base by the CLI: the mechanics, not quality."""
    out = tmp_path_factory.mktemp("inpaint") / "model"
    from imgen.cli import main

    assert main(["finetune", "inpaint", BASE, "--out", str(out), "--steps", "2", "--batch-size", "4", "--quiet"]) == 0
    return out


@pytest.fixture(scope="module")
def task():
    return inpaint_tasks(2)


def _net_inputs(model, n: int = 4):
    g = torch.Generator().manual_seed(0)
    x, t = torch.randn(n, *model.shape, generator=g), torch.rand(n, generator=g)
    cond = {**model.net.encode(["a red circle on the left", "a small blue star", "a big green square at the top",
                                "a white cross"][:n]), "drop": torch.tensor([False, False, True, False][:n])}
    return x, t, cond


def test_the_zero_initialised_inpainting_net_computes_exactly_the_base(base, tmp_path):
    """conv_in widened by 1 + 4 input channels with zero weights (SD inpainting's init): whatever the mask and the
    masked latent hold, the untrained inpainting net's output is the base's."""
    trainer = Trainer(inpaint_config(BASE, steps=1, batch_size=4), tmp_path / "run", progress=False)
    net, unet = trainer.net.eval(), trainer.net.backbone
    assert unet.inpaint_channels == 5 and unet.conv_in.in_channels == base.net.backbone.conv_in.in_channels + 5
    new = unet.conv_in.weight
    assert torch.equal(new[:, -5:], torch.zeros_like(new[:, -5:]))
    assert torch.equal(new[:, :-5], base.net.backbone.conv_in.weight)
    x, t, cond = _net_inputs(base)
    with torch.no_grad():
        want = base.net(x, t, cond)
        for inpaint_input in (torch.randn(4, 5, 8, 8), torch.zeros(4, 5, 8, 8)):
            assert torch.equal(net(x, t, {**cond, "inpaint": inpaint_input}), want)
        unet.conv_in.weight[:, -1].add_(0.1)  # and the new channels are wired in
        assert (net(x, t, {**cond, "inpaint": torch.randn(4, 5, 8, 8)}) - want).abs().max() > 1e-3


def test_finetune_writes_a_loadable_inpainting_model_directory(tuned, base):
    m = imgen.load(tuned)
    assert m.is_inpainting and not base.is_inpainting
    assert m.config.net.options["backbone_options"]["inpaint_channels"] == 5
    assert m.config.data.name == "shapes-inpaint" and m.config.train.init_from
    assert (tuned / "autoencoder" / "config.json").is_file()
    w = load_tensors(tuned / "ema.safetensors")["backbone.conv_in.weight"]
    assert w.shape[1] == base.net.backbone.conv_in.in_channels + 5  # x (4) + coordinates (2) + hole (1) + latent (4)
    x = m.generate(["a red circle in the center"], steps=3, seed=0)  # no condition given: the whole image a hole
    assert x.shape == (1, 3, 32, 32) and torch.isfinite(x).all()


def test_trained_inpainting_reads_its_condition_and_keeps_known_pixels_exactly(tuned, task):
    m = imgen.load(tuned)
    prompts, _, inputs, holes = task
    seen = []
    m.net.backbone.register_forward_pre_hook(lambda mod, args: seen.append(args[2]["inpaint"].clone()))
    out = inpaint(m, inputs[0], holes[0], prompts[0], n=2, steps=4)  # method "trained" by default
    assert out.shape == (2, 3, 32, 32) and len(seen) == 4  # one plain sampler run, no resampling
    keep = ~holes[0].expand_as(out[0])
    assert torch.equal(out[:, keep], inputs[0][keep].expand(2, -1))
    want = m.inpaint_condition(inputs[:1], holes[0])
    assert m.config.sample.cfg > 1  # both CFG branches (2 x 2 rows) carry the condition: only the text is dropped
    assert all(torch.equal(c, want.expand(4, -1, -1, -1)) for c in seen)
    assert seen[0][:, 0].max() == 1 and seen[0][:, 0].min() == 0  # the hole on the 8x8 grid, then the latent
    seen.clear()
    unguided = inpaint(m, inputs[0], holes[0], prompts[0], steps=2, cfg=1.0)
    assert len(seen) == 2 and len(seen[0]) == 1 and torch.equal(unguided[:, keep], inputs[0][keep][None])


def test_inpaint_condition_masks_the_image_before_encoding():
    image = torch.rand(2, 3, 8, 8) * 2 - 1
    hole = torch.zeros(8, 8)
    hole[2:6, 0:4] = 1
    c = inpaint_condition(image, hole)  # identity encode: a pixel model's condition
    assert c.shape == (2, 4, 8, 8) and torch.equal(c[:, 0], hole.expand(2, -1, -1))
    assert torch.equal(c[:, 1:], image * (1 - hole))
    pooled = inpaint_condition(image, hole, lambda x: torch.nn.functional.avg_pool2d(x, 4))
    assert pooled.shape == (2, 4, 2, 2) and torch.equal(pooled[0, 0], torch.tensor([[0.5, 0.0], [0.5, 0.0]]))
    # the training loss builds it from batch["mask"] (a pixel model's flow matching: identity encode)
    cond = flow_matching().condition({"image": image, "mask": hole.expand(2, 1, 8, 8), "caption": ["a", "b"]})
    assert torch.equal(cond["inpaint"], c)


def test_shapes_inpaint_draws_every_mask_kind_from_the_index_alone():
    ds = load_dataset("shapes-inpaint", image_size=32, max_objects=1)
    b = ds.get(np.arange(400))
    assert b["mask"].shape == (400, 1, 32, 32) and set(b["mask"].unique().tolist()) == {0.0, 1.0}
    assert torch.equal(ds.get(np.arange(100, 110))["mask"], b["mask"][100:110])  # exact resume
    assert torch.equal(ds.get(np.arange(400))["image"], load_dataset("shapes", image_size=32, max_objects=1).get(
        np.arange(400))["image"])
    frac = b["mask"].mean((1, 2, 3))
    assert (frac == 1).float().mean() > 0.08 and ((frac > 0) & (frac < 1)).float().mean() > 0.7  # "all" and partial
    a = sample_scene_attributes(0, np.arange(400), "train", 1)
    edge = b["mask"][:, 0, :, 0].all(1) | b["mask"][:, 0, :, -1].all(1) | b["mask"][:, 0, 0].all(1) | \
        b["mask"][:, 0, -1].all(1)
    assert (edge & (frac < 1)).float().mean() > 0.1  # outpaint bands
    assert len(MASK_KINDS) == 4 and inpaint_masks(0, np.arange(3), {k: v[:3] for k, v in a.items()}, 32).shape[0] == 3
    square = torch.from_numpy(object_box_holes(a, 32, 0.8))
    assert square.any((1, 2)).all()


def test_finetune_resumes_exactly(tmp_path):
    """Stopped at step 2 and rerun to 4 = 4 straight: weights, EMA, optimizer and RNG states (the one Trainer)."""
    kw = {"batch_size": 4, "progress": False}
    finetune_inpaint(BASE, tmp_path / "a", steps=2, **kw)
    finetune_inpaint(BASE, tmp_path / "a", steps=4, **kw)  # resumed at step 2
    finetune_inpaint(BASE, tmp_path / "b", steps=4, **kw)
    for name in ("ema.safetensors", "model.safetensors", "train_state.safetensors"):
        a, b = load_tensors(tmp_path / "a" / name), load_tensors(tmp_path / "b" / name)
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), name


def test_errors_name_the_fix(base, tuned, task, tmp_path):
    _, _, inputs, holes = task
    with pytest.raises(ImgenError, match="method 'trained' needs an inpainting model"):
        inpaint(base, inputs[0], holes[0], "a red star", method="trained")
    with pytest.raises(ImgenError, match="this is not an inpainting model"):
        base.generate(["a red star"], steps=2, inpaint=torch.zeros(1, 5, 8, 8))
    with pytest.raises(ImgenError, match="is an inpainting model already"):
        inpaint_config(tuned)
    with pytest.raises(ImgenError, match="draws holes on the shapes stream"):
        from conftest import tiny_config
        from imgen.train import train

        train(tiny_config(steps=1), tmp_path / "digits", progress=False)
        inpaint_config(tmp_path / "digits")
    m = imgen.load(tuned)
    with pytest.raises(ImgenError, match="cond\\['inpaint'\\] must be"):
        m.net(torch.zeros(1, 4, 8, 8), torch.zeros(1), {"drop": torch.ones(1, dtype=torch.bool)})


@pytest.fixture
def files(tmp_path, task):
    _, _, inputs, holes = task
    Image.fromarray(to_uint8(inputs[:1])[0]).save(tmp_path / "in.png")
    Image.fromarray(holes[0].numpy().astype(np.uint8) * 255, mode="L").save(tmp_path / "mask.png")
    Image.fromarray(np.zeros((16, 16), np.uint8), mode="L").save(tmp_path / "small_mask.png")
    return tmp_path


def test_cli_inpaint_with_the_trained_model(capsys, tuned, files):
    out = files / "out"  # a folder: one PNG per image, no grid padding
    code, stdout, err = run_cli(capsys, "inpaint", files / "in.png", "a red star in the center", "--mask",
                                files / "mask.png", "--model", tuned, "--out", out, "--steps", 3)
    assert code == 0 and "(trained)" in stdout, err
    (png,) = sorted(out.glob("*.png"))
    got = np.asarray(Image.open(png))
    keep = ~np.asarray(Image.open(files / "mask.png")).astype(bool)
    assert np.array_equal(got[keep], np.asarray(Image.open(files / "in.png"))[keep])  # known pixels, exactly
    code, _, err = run_cli(capsys, "inpaint", files / "in.png", "x", "--mask", files / "small_mask.png", "--model",
                           tuned, "--out", files / "o.png")
    assert_one_line_error(code, err, "the mask is 16x16 but the image is 32x32")
    assert not (files / "o.png").exists()
    code, _, err = run_cli(capsys, "finetune", "inpaint", BASE, "--out", files / "in.png", "--steps", 1)
    assert_one_line_error(code, err, "is a file, not a directory")


@pytest.mark.slow
def test_a_short_finetune_learns_to_keep_the_known_region_and_fills_as_asked(tmp_path):
    """800 steps at batch 16 (~110 CPU-s): before the paste the model's own samples reproduce the known region (>= 24 dB
    mean over 8 tasks; measured 35.1, six tasks at 36-43 dB), which the same net with its mask and masked-image weights
    zeroed does not (it draws a new scene); the holes hold the prompt's object. Two tasks (a large object on the dark
    blue background, a prompt that leaves the background free) still get another background at 13-15 dB, as they did
    from the base shipped before 2026-12-07; after 200 steps the current base also missed it on four of eight (20.2 dB
    mean, 28.2 for the old base)."""
    import math

    from imgen.metrics.adherence import score_images
    from imgen.metrics.evaluators import load_evaluator

    finetune_inpaint(BASE, tmp_path / "m", steps=800, batch_size=16, progress=False)
    m = imgen.load(tmp_path / "m")
    prompts, truth, inputs, holes = inpaint_tasks(8)

    def known_psnr_before_paste(k: int) -> tuple[float, torch.Tensor]:
        ps, outs = [], []
        for i in range(k):
            out = inpaint(m, inputs[i], holes[i], prompts[i], seed=i, paste=False)
            keep = ~holes[i].expand_as(out[0])
            ps.append(10 * math.log10(4 / float((out[:, keep] - inputs[i][keep]).square().mean())))
            outs.append(torch.where(holes[i].expand_as(out), out, inputs[i:i + 1]))
        return sum(ps) / k, torch.cat(outs)

    trained, filled = known_psnr_before_paste(8)
    assert trained >= 24, trained
    assert score_images(filled, truth, load_evaluator("shapes-eval"))["shape_color"] >= 0.75
    with torch.no_grad():
        m.net.backbone.conv_in.weight[:, -5:] = 0
    blind, _ = known_psnr_before_paste(4)
    # blind, the net draws a new scene; since the base obeys background words (2026-12-07) its background matches
    # the known region's, so blind PSNR is ~21 dB, not lower: the objects in the known region are what it misses
    assert trained - blind >= 8, (trained, blind)
