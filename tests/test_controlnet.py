"""ControlNet-lite (Zhang et al. 2023; imgen.nn.controlnet, imgen.recipes.controlnet) on the shipped shapes-latent-t2i."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

import imgen
from conftest import assert_one_line_error, run_cli
from imgen.checkpoint import load_tensors
from imgen.data.shapes import sample_scene_attributes
from imgen.data.translation import label_maps
from imgen.errors import ImgenError
from imgen.images import to_uint8
from imgen.nn.controlnet import (ControlNet, add_controlnet, apply_controlnet, controlnet_of, read_controlnet,
                                 save_controlnet)
from imgen.nn.unet import UNet
from imgen.pretrained import resolve_model_path

BASE = "shapes-latent-t2i"


def _maps(n: int, seed: int = 3) -> torch.Tensor:
    a = sample_scene_attributes(seed, np.arange(n), "train", max_objects=1)
    return label_maps(a, 32, a["offset"])


def _net_inputs(model, n: int = 4):
    g = torch.Generator().manual_seed(0)
    x, t = torch.randn(n, *model.shape, generator=g), torch.rand(n, generator=g)
    cond = {**model.net.encode(["a red circle on the left", "a small blue star", "a big green square at the top",
                                "a white cross"][:n]), "drop": torch.tensor([False, False, True, False][:n])}
    return x, t, cond


def test_an_untrained_controlnet_leaves_the_base_output_unchanged():
    """Zero convs (ControlNet eq. 2 with Z = 0): with any map the net's output and the generated images are the base's."""
    model = imgen.load(BASE)
    x, t, cond = _net_inputs(model)
    with torch.no_grad():
        before = model.net(x, t, cond)
        images = model.generate(["a red circle", "a small blue star"], steps=4, seed=1)
    cn = add_controlnet(model.net, control_size=32)
    assert all(p.requires_grad for p in cn.parameters())
    assert not any(p.requires_grad for n, p in model.net.named_parameters() if ".controlnet." not in n)
    with torch.no_grad():
        after = model.net(x, t, {**cond, "control": _maps(4)})
        controlled = model.generate(["a red circle", "a small blue star"], steps=4, seed=1, control=_maps(2))
    assert (after - before).abs().max() <= 1e-6 and (controlled - images).abs().max() <= 1e-6
    with torch.no_grad():  # and it is wired in: once the zero convs move, the output moves
        cn.zero_mid.weight.add_(0.1)
        assert (model.net(x, t, {**cond, "control": _maps(4)}) - before).abs().max() > 1e-3


def test_adapter_file_round_trip_and_its_errors(tmp_path):
    model = imgen.load(BASE)
    cn = add_controlnet(model.net, control_size=32)
    with torch.no_grad():
        for p in cn.parameters():
            p.add_(0.01 * torch.randn_like(p))
    path = save_controlnet(model.net, tmp_path / "c.safetensors", {"base": BASE, "steps": 0})
    meta = json.loads(path.with_suffix(".json").read_text())
    assert meta["kind"] == "controlnet" and meta["control_size"] == 32 and meta["control_channels"] == 3
    tensors, header = read_controlnet(path)
    assert header == meta and all(torch.equal(tensors[k], v) for k, v in cn.state_dict().items())
    base_bytes = (resolve_model_path(BASE) / "ema.safetensors").stat().st_size
    assert path.stat().st_size < 0.5 * base_bytes  # a copy of the encoder only, not of the whole net
    x, t, cond = _net_inputs(model)
    cond["control"] = _maps(4)
    with torch.no_grad():
        want = model.net(x, t, cond)
    fresh = imgen.load(BASE)
    assert fresh.load_controlnet(path)["base"] == BASE
    with torch.no_grad():
        assert torch.equal(fresh.net(x, t, cond), want)
    fresh.unload_controlnet()
    assert controlnet_of(fresh.net) is None
    with pytest.raises(ImgenError, match="needs a ControlNet|need a ControlNet"):
        fresh.generate(["a red circle"], steps=2, control=_maps(1))
    small = UNet(4, base_channels=16, channel_mults=(1, 2), num_res_blocks=1, attn_resolutions=(), image_size=8)
    other = tmp_path / "other.safetensors"
    add_controlnet(small, control_size=32)
    save_controlnet(small, other, {"base": "tiny"})
    with pytest.raises(ImgenError, match="another base model"):
        apply_controlnet(imgen.load(BASE).net, other)
    with pytest.raises(ImgenError, match="control map must be"):
        fresh.load_controlnet(path)
        fresh.generate(["a red circle"], steps=2, control=torch.zeros(1, 3, 16, 16))


def test_controlnet_needs_a_unet_and_a_map_of_its_size():
    from imgen.nn.dit import dit_tiny

    with pytest.raises(ImgenError, match="U-Net"):
        add_controlnet(dit_tiny(4, image_size=8))
    unet = UNet(4, base_channels=16, channel_mults=(1, 2), num_res_blocks=1, attn_resolutions=(), image_size=8)
    with pytest.raises(ImgenError, match="power of two"):
        ControlNet(unet, control_size=24)


def _write_map(path, maps: torch.Tensor, mode: str = "RGB"):
    Image.fromarray(to_uint8(maps)[0]).convert(mode).save(path)
    return path


def test_cli_trains_a_controlnet_in_two_steps_and_generate_reads_the_map(capsys, tmp_path):
    out = tmp_path / "layout.safetensors"
    code, stdout, err = run_cli(capsys, "finetune", "controlnet", BASE, "--out", out, "--steps", 2, "--batch-size", 4,
                                "--quiet")
    assert code == 0, err
    assert "wrote" in stdout and out.is_file()
    meta = json.loads(out.with_suffix(".json").read_text())
    assert meta["base"] == BASE and meta["steps"] == 2 and meta["kind"] == "controlnet"
    base = load_tensors(resolve_model_path(BASE) / "ema.safetensors")
    run = load_tensors(tmp_path / "layout.run" / "model.safetensors")
    assert all(torch.equal(run[k], base[k]) for k in base)  # the base is frozen
    zero = [k for k in run if ".controlnet.zero_" in k and k.endswith("weight")]
    assert zero and any(run[k].abs().sum() > 0 for k in zero)  # the zero convs trained
    png = _write_map(tmp_path / "map.png", _maps(1))
    code, stdout, err = run_cli(capsys, "generate", "a red circle", "--controlnet", out, "--control", png,
                                "--steps", 2, "--out", tmp_path / "g.png")
    assert code == 0, err
    assert (tmp_path / "g.png").is_file()


def test_cli_rejects_a_control_map_of_the_wrong_size_or_mode_in_one_line(capsys, tmp_path):
    model = imgen.load(BASE)
    add_controlnet(model.net, control_size=32)
    cn = save_controlnet(model.net, tmp_path / "c.safetensors", {"base": BASE})
    small = _write_map(tmp_path / "small.png", torch.nn.functional.interpolate(_maps(1), size=16))
    grey = _write_map(tmp_path / "grey.png", _maps(1), mode="L")
    for png, pattern in ((small, "16x16 but the ControlNet reads 32x32"), (grey, "is a L image")):
        code, _, err = run_cli(capsys, "generate", "a red circle", "--controlnet", cn, "--control", png, "--out",
                               tmp_path / "g.png")
        assert_one_line_error(code, err, pattern)
    code, _, err = run_cli(capsys, "generate", "a red circle", "--control", grey, "--out", tmp_path / "g.png")
    assert_one_line_error(code, err, "--control MAP and --controlnet FILE go together")
    code, _, err = run_cli(capsys, "generate", "a red circle", "--controlnet", tmp_path / "none.safetensors",
                           "--control", small, "--out", tmp_path / "g.png")
    assert_one_line_error(code, err, "not found")
    code, _, err = run_cli(capsys, "finetune", "controlnet", BASE, "--out", tmp_path / "a.pt")
    assert_one_line_error(code, err, "must be a .safetensors")


def test_shapes_control_gives_each_scene_its_exact_label_map_and_can_misname_positions():
    from imgen.data import load_dataset

    true = load_dataset("shapes-control", image_size=32, max_objects=1).get(list(range(16)))
    pairs = load_dataset("shapes-pairs", image_size=32, max_objects=1).get(list(range(16)))
    assert torch.equal(true["control"], pairs["source"]) and torch.equal(true["image"], pairs["image"])
    mixed = load_dataset("shapes-control", image_size=32, max_objects=1, wrong_positions=0.5).get(list(range(16)))
    assert torch.equal(mixed["control"], true["control"]) and torch.equal(mixed["image"], true["image"])
    changed = sum(a != b for a, b in zip(mixed["caption"], true["caption"]))
    assert 3 <= changed <= 13  # about half name another cell
    with pytest.raises(ImgenError, match="wrong_positions"):
        load_dataset("shapes-control", wrong_positions=2.0)
