"""benchmarks/t2i_backbones.py: the four text-to-image backbones build from preset shapes-t2i, cost roughly the same
(MACs per image within +-25% of the U-Net's) and each runs a forward pass on captioned shapes."""
import importlib.util
from pathlib import Path

import numpy as np
import torch

from imgen.data import load_dataset
from imgen.nn import build_net_from_config
from imgen.presets import get_preset
from imgen.train import resolve_config


def _bench():
    path = Path(__file__).resolve().parents[1] / "benchmarks" / "t2i_backbones.py"
    spec = importlib.util.spec_from_file_location("t2i_backbones", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_four_backbones_differ_only_in_the_backbone_and_cost_about_the_same():
    bench = _bench()
    configs = bench.backbone_configs(steps=10)
    assert list(configs) == ["unet", "dit_adaln", "dit_cross", "dit_context"]
    preset = get_preset("shapes-t2i").to_dict()
    conditionings = set()
    for name, c in configs.items():
        d = c.to_dict()
        for section in ("data", "method", "sample"):
            assert d[section] == preset[section], (name, section)
        assert {k: v for k, v in d["train"].items() if k not in ("steps", "ckpt_every")} == \
            {k: v for k, v in preset["train"].items() if k not in ("steps", "ckpt_every")}
        assert d["train"]["steps"] == 10
        assert {k: v for k, v in d["net"]["options"].items() if not k.startswith("backbone")} == \
            {k: v for k, v in preset["net"]["options"].items() if not k.startswith("backbone")}
        conditionings.add(d["net"]["options"]["backbone_options"].get("conditioning"))
    assert conditionings == {None, "adaln_zero", "cross_attn", "in_context"}

    cost = bench.measure_cost(configs)
    unet = cost["unet"]["backbone_macs_per_image"]
    assert unet > 50e6  # the preset's U-Net, not a toy
    for name, row in cost.items():
        assert abs(row["backbone_macs_per_image"] / unet - 1) <= 0.25, (name, row)
        assert row["macs_within_25pct"]
        assert row["text_encoder_macs_per_image"] == cost["unet"]["text_encoder_macs_per_image"]  # same encoder


def test_each_backbone_runs_a_forward_pass_on_captions():
    configs = _bench().backbone_configs()
    first = configs["unet"]
    ds = load_dataset(first.data.name, **first.data.options)
    batch = ds.get(np.arange(3))
    t = torch.tensor([0.1, 0.5, 0.9])
    cond = {"caption": batch["caption"], "drop": torch.tensor([False, True, False])}
    outputs = {}
    for name, c in configs.items():
        torch.manual_seed(0)
        net = build_net_from_config(resolve_config(c, ds))
        with torch.no_grad():
            for p in net.parameters():  # zero-initialised output layers would make every net return zeros
                p.add_(torch.randn_like(p) * 0.02)
            out = net(batch["image"], t, cond)
        assert out.shape == batch["image"].shape and torch.isfinite(out).all(), name
        outputs[name] = out
    assert not torch.allclose(outputs["dit_cross"], outputs["dit_context"])  # the conditioning really differs
