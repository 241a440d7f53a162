"""The normalizing-flow method (imgen.methods.normalizing_flow) in imgen's layers: Trainer, model directory,
imgen.load(...).sample(temperature=...), exact log_prob, `imgen sample --temperature`, exact resume."""
import json
import math
import sys

import pytest
import torch

import imgen
from conftest import kill9_and_rerun, tiny_config
from imgen.cli import main as cli_main
from imgen.config import Config, DataConfig, MethodConfig, NetConfig, TrainConfig
from imgen.data import load_dataset
from imgen.errors import ImgenError
from imgen.nn.flow import dequantization_bin_width, dequantize_uniform
from imgen.presets import get_preset
from imgen.train import train


def tiny_flow_config(net: str = "glow", steps: int = 30) -> Config:
    options = {"levels": 2, "steps": 1, "hidden": 16} if net == "glow" else {"num_scales": 1, "hidden": 16}
    return Config(description="tiny flow", data=DataConfig("digits", {"split": "train"}, batch_size=32),
                  net=NetConfig(net, options), method=MethodConfig("normalizing_flow", {"n_bins": 17}),
                  train=TrainConfig(steps=steps, lr=3e-3, warmup=2, ema_decay=0.9, ckpt_every=2, log_every=1))


@pytest.fixture(scope="module")
def flow_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("flow") / "glow"
    train(tiny_flow_config("glow", steps=30), out, progress=False)
    return out


def test_the_nll_in_bits_per_dim_falls_over_30_trainer_steps_and_actnorm_is_initialized(flow_dir):
    log = [json.loads(line) for line in (flow_dir / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log] == list(range(1, 31))
    first, last = sum(r["loss"] for r in log[:5]) / 5, sum(r["loss"] for r in log[-5:]) / 5
    assert last < first - 0.3, (first, last)
    m = imgen.load(flow_dir)
    assert all(bool(b) for name, b in m.net.named_buffers() if name.endswith("initialized"))


def test_flows_are_unconditional_resolve_config_adds_no_num_classes(flow_dir):
    config = json.loads((flow_dir / "config.json").read_text())
    assert "num_classes" not in config["net"]["options"]
    assert config["net"]["options"]["in_channels"] == 1 and config["net"]["options"]["image_size"] == 8
    with pytest.raises(ImgenError, match="unconditional"):
        imgen.load(flow_dir).sample(2, labels=[1, 2])


def test_lower_temperature_samples_a_narrower_prior_and_seeds_are_deterministic(flow_dir):
    m = imgen.load(flow_dir)
    a, b = m.sample(16, temperature=0.7, seed=0), m.sample(16, temperature=0.7, seed=0)
    assert a.shape == (16, 1, 8, 8) and torch.equal(a, b) and a.abs().max() <= 1
    gen = torch.Generator().manual_seed(0)
    spread = {}
    for t in (0.3, 1.0):
        x = m.method.sample(m.net, (256, 1, 8, 8), generator=gen, temperature=t)  # unclipped: f^-1(z)
        zs, _ = m.net(x)
        spread[t] = torch.cat([z.flatten(1) for z in zs], 1).std().item()
    assert spread[0.3] == pytest.approx(0.3, rel=0.05) and spread[1.0] == pytest.approx(1.0, rel=0.05)
    assert not torch.equal(m.sample(4, temperature=0.3, seed=0), m.sample(4, temperature=1.0, seed=0))


def test_log_prob_is_exact_and_the_loss_is_minus_log_prob_in_bits_per_dim(flow_dir):
    m = imgen.load(flow_dir)
    images = load_dataset("digits", split="test").get(list(range(32)))["image"]
    x = dequantize_uniform(images, 17, torch.Generator().manual_seed(1))
    log_p = m.log_prob(x)
    assert log_p.shape == (32,) and torch.isfinite(log_p).all()
    D = 64
    bpd = m.method.bits_per_dim(m.net, images, torch.Generator().manual_seed(1))
    # loss = -(log p(x) + D log(2 / n_bins)) / (D ln 2) on the same dequantized x
    expected = -(log_p + D * math.log(dequantization_bin_width(17))) / (D * math.log(2))
    torch.testing.assert_close(bpd, expected, rtol=1e-5, atol=1e-5)
    with pytest.raises(ImgenError, match="shape"):
        m.log_prob(torch.zeros(2, 1, 4, 4))


def test_imgen_sample_temperature_cli_round_trip(flow_dir, tmp_path, capsys):
    from PIL import Image

    out = tmp_path / "x.png"
    assert cli_main(["sample", str(flow_dir), "--n", "4", "--temperature", "0.7", "--out", str(out)]) == 0
    assert Image.open(out).size[0] > 0
    other = tmp_path / "fm"
    train(tiny_config(steps=1), other, progress=False)
    assert cli_main(["sample", str(other), "--n", "2", "--temperature", "0.7", "--out", str(tmp_path / "y.png")]) == 2
    assert "temperature" in capsys.readouterr().err
    assert not (tmp_path / "y.png").exists()


def test_flow_presets_are_registered_and_unconditional():
    for name, net in (("digits-realnvp", "realnvp"), ("digits-glow", "glow")):
        c = get_preset(name)
        assert c.net.name == net and c.method.name == "normalizing_flow" and c.method.options["n_bins"] == 17
        assert c.data.options["split"] == "train"


@pytest.mark.slow  # ~40 s: several process starts (the rest of this file takes ~5 s)
def test_a_killed_glow_run_resumes_byte_identical(tmp_path):
    cfg = tmp_path / "glow.json"
    cfg.write_text(json.dumps(tiny_flow_config("glow", steps=40).to_dict()))
    cmd = [sys.executable, "-m", "imgen", "train", str(cfg), "--quiet", "--out"]
    out = tmp_path / "killed"
    assert kill9_and_rerun(cmd, tmp_path / "straight", out, kills=2) >= 1
    for name in ("model.safetensors", "ema.safetensors"):
        assert (out / name).read_bytes() == (tmp_path / "straight" / name).read_bytes(), name
