"""`imgen report DIR`: every family's pictures, drawn from models trained one step (the mechanics, not quality),
on items the model was not trained on."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

import imgen
from conftest import assert_one_line_error, run_cli
from imgen.data import load_dataset
from imgen.images import make_grid, to_uint8
from imgen.model_report import held_out
from imgen.presets import get_preset
from imgen.train import train

# preset -> (net option overrides that make it tiny, the pictures its report must hold)
FAMILIES = {
    "digits-flow": ({"base_channels": 8, "channel_mults": [1, 2]}, ["samples.png", "loss.png"]),
    "digits-vae": ({}, ["reconstructions.png", "interpolations.png", "latent_map.png", "samples.png"]),
    "shapes-vae": ({"base_channels": 8}, ["reconstructions.png", "interpolations.png", "attribute_edit.png",
                                         "samples.png"]),
    "shapes-latent-vae": ({"base_channels": 8, "hidden": 16}, ["reconstructions.png", "interpolations.png",
                                                               "attribute_edit.png", "samples.png"]),
    "shapes-ae": ({"base_channels": 8}, ["reconstructions.png", "interpolations.png"]),
    "digits-realnvp": ({"hidden": 8}, ["samples.png", "temperatures.png"]),
    "digits-glow": ({"hidden": 8, "steps": 2}, ["samples.png", "temperatures.png"]),
    "shapes-stylegan": ({"g_channels": 8, "d_channels": 8}, ["samples.png", "truncation.png", "style_mixing.png"]),
    "shapes-text-gan": ({"g_channels": 8, "d_channels": 8}, ["prompts.png", "text_interpolation.png"]),
    "shapes-vqvae": ({}, ["reconstructions.png"]),
    "shapes-pix2pix": ({"g_channels": 4, "d_channels": 4}, ["translation.png"]),
    "shapes-cyclegan": ({"g_channels": 4, "d_channels": 4}, ["translation_ab.png", "translation_ba.png"]),
    "shapes-sr": ({"base_channels": 8, "channel_mults": [1, 2]}, ["upscale.png"]),
    "shapes-srgan": ({}, ["upscale.png"]),
}


def _tiny(preset: str, out):
    c = get_preset(preset)
    c.net.options.update(FAMILIES[preset][0])
    c.data.batch_size = 4
    c.train.steps, c.train.ckpt_every, c.train.log_every, c.train.warmup = 1, 1, 1, 0
    train(c, out, progress=False)
    return out


@pytest.mark.parametrize("preset", list(FAMILIES))
def test_each_familys_report_holds_its_pictures(preset, tmp_path, capsys):
    model_dir = _tiny(preset, tmp_path / preset)
    code, out, err = run_cli(capsys, "report", model_dir, "--out", tmp_path / "r", "--n", 4)
    assert code == 0, err
    page = (tmp_path / "r" / "report.html").read_text()
    for name in FAMILIES[preset][1] + ["loss.png"]:
        assert (tmp_path / "r" / name).is_file() and f'src="{name}"' in page, name
    assert "&quot;method&quot;" in page and "&quot;train&quot;" in page  # the config.json is on the page


def test_pictures_show_held_out_items_and_the_models_own_output(tmp_path, capsys):
    model_dir = _tiny("digits-vae", tmp_path / "vae")
    assert run_cli(capsys, "report", model_dir, "--out", tmp_path / "r", "--n", 4)[0] == 0
    m = imgen.load(model_dir)
    test = load_dataset("digits", split="test").get(np.arange(4))["image"]  # the test split, not the train one
    assert torch.equal(held_out(m, 4)["image"], test)
    want = make_grid(torch.cat([test, m.reconstruct(test)]), nrow=4)
    got = np.array(Image.open(tmp_path / "r" / "reconstructions.png").convert("L"))
    scale = got.shape[0] // want.shape[-2]
    assert np.array_equal(got[::scale, ::scale], to_uint8(want[None])[0][..., 0])
    shapes = imgen.load(_tiny("shapes-vae", tmp_path / "shapes"))
    train_scenes = load_dataset("shapes", **shapes.config.data.options).get(np.arange(4))["image"]
    assert not torch.equal(held_out(shapes, 4)["image"], train_scenes)  # another seed's scenes


def test_a_text_model_report_draws_held_out_prompts(tmp_path, capsys):
    code, _, err = run_cli(capsys, "report", "shapes-latent-t2i", "--out", tmp_path / "r", "--n", 3)
    assert code == 0, err
    page = (tmp_path / "r" / "report.html").read_text()
    assert (tmp_path / "r" / "prompts.png").is_file() and page.count("<tr><td>") == 1 + 3  # summary + 3 prompts


def test_bad_input_gets_one_line(tmp_path, capsys):
    assert_one_line_error(*run_cli(capsys, "report", tmp_path / "nothing", "--out", tmp_path / "r")[::2],
                          "nothing")
    (tmp_path / "f").write_text("x")
    assert_one_line_error(*run_cli(capsys, "report", "shapes-latent-t2i", "--out", tmp_path / "f")[::2],
                          "is a file, not a directory")
    assert_one_line_error(*run_cli(capsys, "report", "shapes-latent-t2i", "--n", 0, "--out", tmp_path / "r")[::2],
                          "--n must be >= 1")
