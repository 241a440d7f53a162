"""Text-to-image plumbing: captions -> text encoder -> cross-attention net, null-text dropout, CFG with negative
prompts, `Model.generate`, `imgen generate`, and the bad-input messages the issue asks for."""
import json
import warnings

import numpy as np
import pytest
import torch

import imgen
from imgen.cli import main
from imgen.config import Config, DataConfig, MethodConfig, NetConfig, SampleConfig, TrainConfig
from imgen.data import load_dataset
from imgen.errors import ImgenError
from imgen.metrics.adherence import READ, adherence_prompts, score_images
from imgen.methods import build_method
from imgen.nn import build_net_from_config
from imgen.train import resolve_config, train

TINY_UNET = {"base_channels": 8, "channel_mults": [1, 2], "num_res_blocks": 1, "attn_resolutions": [6],
             "cross_attn_resolutions": [6], "num_heads": 2}


def t2i_config(steps=4, backbone="unet", backbone_options=None) -> Config:
    return Config(
        data=DataConfig("shapes", {"image_size": 12, "max_objects": 1}, batch_size=8),
        net=NetConfig("text2img", {"backbone": backbone, "backbone_options": backbone_options or dict(TINY_UNET),
                                   "encoder_options": {"dim": 16, "depth": 1, "heads": 2}, "max_len": 20}),
        method=MethodConfig("flow_matching", {"cond_drop": 0.2}),
        train=TrainConfig(steps=steps, lr=2e-3, warmup=1, ckpt_every=steps, log_every=1),
        sample=SampleConfig("euler", steps=3, cfg=2.0))


@pytest.fixture(scope="module")
def tiny_t2i(tmp_path_factory):
    out = tmp_path_factory.mktemp("t2i") / "model"
    train(t2i_config(), out, progress=False)
    return out


def test_vocabulary_comes_from_the_captions_and_is_saved(tiny_t2i):
    cfg = json.loads((tiny_t2i / "config.json").read_text())
    vocab = cfg["net"]["options"]["vocab"]
    assert {"red", "circle", "left", "top"} <= set(vocab)
    assert "num_classes" not in cfg["net"]["options"]  # conditioned on text, not on the shape label


def test_text_changes_the_prediction_and_dropped_rows_use_the_null_text():
    ds = load_dataset("shapes", image_size=12, max_objects=1)
    net = build_net_from_config(resolve_config(t2i_config(), ds))
    torch.manual_seed(0)
    with torch.no_grad():  # zero-initialised layers (output conv, attention projections) would hide the text
        for p in net.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    x, t = torch.randn(2, 3, 12, 12), torch.full((2,), 0.5)
    caps = ["a red circle in the top left", "a blue star at the bottom"]
    keep = torch.zeros(2, dtype=torch.bool)
    out = net(x, t, {"caption": caps, "drop": keep})
    swapped = net(x, t, {"caption": caps[::-1], "drop": keep})
    assert not torch.allclose(out, swapped)
    d1 = net(x, t, {"caption": caps, "drop": torch.ones(2, dtype=torch.bool)})
    d2 = net(x, t, {"caption": caps[::-1], "drop": torch.ones(2, dtype=torch.bool)})
    torch.testing.assert_close(d1, d2)  # a dropped caption is invisible: the learned null text replaces it
    torch.testing.assert_close(d1, net(x, t, {"drop": torch.ones(2, dtype=torch.bool)}))
    enc = net.encode(caps)  # precomputed text gives the same output as captions
    torch.testing.assert_close(out, net(x, t, {**enc, "drop": keep}))


def test_method_passes_captions_and_drops_them_at_the_configured_rate():
    method = build_method("flow_matching", cond_drop=0.25)
    batch = {"image": torch.zeros(4000, 1), "caption": ["x"] * 4000}
    cond = method.condition(batch, torch.Generator().manual_seed(0))
    assert cond["caption"] is batch["caption"]
    assert abs(cond["drop"].float().mean().item() - 0.25) < 0.03


@pytest.mark.parametrize("backbone,opts", [
    ("unet", TINY_UNET),
    ("dit", {"patch_size": 3, "dim": 32, "depth": 1, "num_heads": 2, "conditioning": "cross_attn"}),
])
def test_text_conditioned_loss_falls(backbone, opts):
    """A few dozen steps on a fixed batch: the joint text encoder + backbone learn (loss falls by a third)."""
    cfg = t2i_config(backbone=backbone, backbone_options=dict(opts))
    ds = load_dataset("shapes", image_size=12, max_objects=1)
    net = build_net_from_config(resolve_config(cfg, ds))
    method = build_method("flow_matching", cond_drop=0.0)
    batch = ds.get(np.arange(16))
    opt = torch.optim.Adam(net.parameters(), lr=3e-3)
    gen = torch.Generator().manual_seed(0)
    losses = []
    for _ in range(40):
        gen.manual_seed(0)  # the same noise and times each step: a pure overfit check
        loss = method.loss(net, batch, gen)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert np.mean(losses[-5:]) < 0.67 * np.mean(losses[:3])


def test_generate_shapes_seeds_negative_and_unconditional(tiny_t2i):
    m = imgen.load(tiny_t2i)
    x = m.generate(["a red circle in the top left", "a blue star"], n=2, seed=3)
    assert x.shape == (4, 3, 12, 12) and x.min() >= -1 and x.max() <= 1
    torch.testing.assert_close(x, m.generate(["a red circle in the top left", "a blue star"], n=2, seed=3))
    neg = m.generate(["a red circle in the top left"], negative="a green square", seed=3)
    assert not torch.allclose(neg, x[:1])  # the negative prompt replaces the null text in CFG
    assert m.generate("café 日本 zzzunknownword", seed=0).shape == (1, 3, 12, 12)  # unknown / non-ASCII work
    assert m.generate(["anything"], n=3, unconditional=True).shape == (3, 3, 12, 12)


def test_generate_bad_input(tiny_t2i):
    m = imgen.load(tiny_t2i)
    with pytest.raises(ImgenError, match="empty prompt"):
        m.generate(["   "])
    with pytest.raises(ImgenError, match="text-to-image model; use generate"):
        m.sample(2)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        m.generate(" ".join(["red circle"] * 10))
    assert sum("longer than max_len" in str(w.message) for w in caught) == 1


def test_cli_generate(tiny_t2i, tmp_path, capsys):
    out = tmp_path / "g.png"
    assert main(["generate", "a red circle in the top left", "--model", str(tiny_t2i), "--n", "2",
                 "--steps", "2", "--cfg", "3", "--negative", "a blue square", "--out", str(out)]) == 0
    assert out.is_file()
    assert main(["generate", "a red circle", "--model", str(tiny_t2i), "--out", str(tmp_path / "pngs")]) == 0
    assert len(list((tmp_path / "pngs").glob("*.png"))) == 1
    capsys.readouterr()
    assert main(["generate", "", "--model", str(tiny_t2i), "--out", str(out)]) == 2
    assert "--unconditional" in capsys.readouterr().err
    assert main(["generate", "", "--unconditional", "--model", str(tiny_t2i), "--out", str(out)]) == 0
    assert main(["generate", " ".join(["red"] * 30), "--model", str(tiny_t2i), "--out", str(out)]) == 0
    assert "warning: a prompt is longer than max_len=20 tokens: truncated" in capsys.readouterr().err


def test_generate_refuses_a_model_that_is_not_text_conditional(tmp_path, capsys, tiny_config_file):
    assert main(["train", str(tiny_config_file(2)), "--out", str(tmp_path / "d"), "--quiet"]) == 0
    with pytest.raises(ImgenError, match="not text-conditional"):
        imgen.load(tmp_path / "d").generate(["a red circle"])
    assert main(["generate", "a red circle", "--model", str(tmp_path / "d"), "--out", str(tmp_path / "x.png")]) == 2
    assert "not text-conditional" in capsys.readouterr().err
    assert main(["generate", "a red circle", "--model", str(tmp_path / "nope"), "--out", str(tmp_path / "x.png")]) == 2
    assert "neither a shipped model" in capsys.readouterr().err


def test_adherence_scoring_reads_real_renders_perfectly():
    from imgen.data.shapes import render_scenes, sample_scene_attributes

    prompts, truth = adherence_prompts(60)
    assert all(isinstance(p, str) and p for p in prompts)
    a = sample_scene_attributes(1_000_003, np.arange(60), "heldout", max_objects=1, templates="heldout")
    real = render_scenes(a, 24, a["offset"])
    scores = score_images(real, truth)
    assert scores["shape_color"] == 1.0 and scores["pos"] == 1.0
    shuffled = {k: np.roll(v, 1, axis=0) for k, v in truth.items()}
    assert score_images(real, shuffled)["all3"] < 0.2  # wrong prompts are caught


def test_adherence_counts_only_the_attributes_a_prompt_states():
    from imgen.data.shapes import TEMPLATES, render_scenes, sample_scene_attributes, stated_attributes

    assert stated_attributes(6) == {"shape", "color", "size", "pos"}  # "{size} {color} {shape}, {label}"
    assert stated_attributes(8) == {"shape", "color", "size", "pos", "bg"}
    assert stated_attributes(2, n_objects=2) == {"shape", "color", "pos", "bg", "shape2", "color2", "pos2"}
    assert all({"shape", "color", "pos"} <= stated_attributes(t) for t in range(len(TEMPLATES)))
    prompts, truth = adherence_prompts(60)
    a = sample_scene_attributes(1_000_003, np.arange(60), "heldout", max_objects=1, templates="heldout")
    bg_stated = truth["stated"][:, list(READ).index("bg")]
    assert bg_stated.any() and not bg_stated.all()
    assert all(("background" in p) == s for p, s in zip(prompts, bg_stated))
    wrong_bg = dict(truth, bg=(truth["bg"] + 1) % 4)
    free = dict(wrong_bg, bg=np.where(bg_stated, truth["bg"], wrong_bg["bg"]))  # wrong only where not stated
    real = render_scenes(a, 24, a["offset"])
    assert score_images(real, free)["bg"] == 1.0 and score_images(real, free)["all_stated"] == 1.0
    scores = score_images(real, wrong_bg)
    assert scores["bg"] == 0.0 and scores["all_stated"] == pytest.approx(1 - bg_stated.mean())


def test_split_phrases_finds_each_object_of_every_caption_template():
    from imgen.data.shapes import sample_scene_attributes, scene_captions
    from imgen.nn.text import split_phrases

    assert split_phrases("a small red circle on the left and a blue star at the top") == [
        "a small red circle on the left", "a blue star at the top"]
    assert split_phrases("a star that is red and small, top") == ["a star that is red and small, top"]
    assert split_phrases("red circle; blue star / green box | cyan cross", limit=3) == [
        "red circle", "blue star", "green box | cyan cross"]
    for split in ("train", "heldout"):  # held-out templates included: one phrase per object
        a = sample_scene_attributes(5, np.arange(300), split, max_objects=2, templates=split)
        assert [len(split_phrases(c)) for c in scene_captions(a)] == a["n_objects"].tolist()


def test_phrase_tokens_carry_each_object_phrase_bound():
    ds = load_dataset("shapes", image_size=12, max_objects=2)
    cfg = t2i_config()
    cfg.net.options["phrases"] = True
    net = build_net_from_config(resolve_config(cfg, ds)).eval()
    with torch.no_grad():
        net.phrase_emb.normal_()
    caps = ["a red circle on the left and a blue star on the right", "a red circle on the left"]
    enc = net.encode(caps)
    from imgen.nn.text import encode_prompts

    tok, mask, pooled = encode_prompts(caps, net.text_encoder, net.tokenizer)
    _, _, alone = encode_prompts(["a red circle on the left", "a blue star on the right"], net.text_encoder,
                                 net.tokenizer)
    assert enc["text"].shape == (2, 2 + tok.shape[1], tok.shape[2])
    assert enc["text_mask"][:, :2].tolist() == [[True, True], [True, False]]
    torch.testing.assert_close(enc["text"][0, :2], alone + net.phrase_emb)  # each phrase encoded on its own
    torch.testing.assert_close(enc["text"][1, 0], alone[0] + net.phrase_emb)
    torch.testing.assert_close(enc["text"][:, 2:], tok)
    torch.testing.assert_close(enc["text_pooled"], pooled)
    x, t = torch.randn(2, 3, 12, 12), torch.full((2,), 0.5)
    assert net(x, t, {"caption": caps, "drop": torch.zeros(2, dtype=torch.bool)}).shape == x.shape
