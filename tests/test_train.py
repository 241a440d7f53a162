"""The trainer: losses fall, checkpoints are safetensors written atomically, resume is exact, failures lose nothing."""
import json
import math
import sys

import pytest
import torch
from safetensors.torch import load_file

import imgen
from conftest import kill9_and_rerun, tiny_config
from imgen.errors import ImgenError
from imgen.train import Trainer, batch_indices, train


def test_loss_falls_and_a_model_directory_is_written(tmp_path):
    cfg = tiny_config(steps=60)
    cfg.train.ckpt_every = 30
    train(cfg, tmp_path / "m", progress=False)
    files = sorted(p.name for p in (tmp_path / "m").iterdir())
    assert files == ["config.json", "ema.safetensors", "log.jsonl", "model.safetensors",
                     "train_state.json", "train_state.safetensors"]
    log = [json.loads(line) for line in (tmp_path / "m" / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log] == list(range(1, 61))
    first, last = sum(r["loss"] for r in log[:10]) / 10, sum(r["loss"] for r in log[-10:]) / 10
    assert last < 0.8 * first
    assert all(k in log[0] for k in ("loss", "lr", "grad_norm", "images_per_s"))
    m = imgen.load(tmp_path / "m")
    x = m.sample(4, labels=[1, 2, 3, 4], steps=3, seed=0)
    assert x.shape == (4, 1, 8, 8) and x.min() >= -1 and x.max() <= 1
    assert torch.equal(x, m.sample(4, labels=[1, 2, 3, 4], steps=3, seed=0))  # same seed, same samples


def test_batches_depend_only_on_seed_and_step():
    a = [batch_indices(100, 32, 0, s) for s in range(8)]
    b = [batch_indices(100, 32, 0, s) for s in range(8)]
    assert all((x == y).all() for x, y in zip(a, b))
    first_epoch = torch.tensor(list(a[0]) + list(a[1]) + list(a[2]) + list(a[3][:4]))
    assert sorted(first_epoch.tolist()) == list(range(100))  # each item once per epoch
    assert not (batch_indices(100, 32, 1, 0) == a[0]).all()


def test_kill_9_and_rerun_is_byte_identical_to_an_uninterrupted_run(tmp_path, tiny_config_file):
    cfg = tiny_config_file(steps=40)
    cmd = [sys.executable, "-m", "imgen", "train", str(cfg), "--quiet", "--out"]
    out = tmp_path / "killed"
    assert kill9_and_rerun(cmd, tmp_path / "straight", out) >= 1
    assert json.loads((out / "train_state.json").read_text())["step"] == 40
    for name in ("model.safetensors", "ema.safetensors"):
        assert (out / name).read_bytes() == (tmp_path / "straight" / name).read_bytes(), name


def test_resume_continues_from_the_checkpoint_not_from_scratch(tmp_path):
    train(tiny_config(steps=4), tmp_path / "m", progress=False)
    t = Trainer(tiny_config(steps=8), tmp_path / "m", progress=False)
    assert t.step == 4
    t.fit()
    steps = [json.loads(line)["step"] for line in (tmp_path / "m" / "log.jsonl").read_text().splitlines()]
    assert steps == list(range(1, 9))


def test_nan_loss_stops_and_keeps_the_last_good_checkpoint(tmp_path):
    cfg = tiny_config(steps=200)
    cfg.train.lr, cfg.train.grad_clip, cfg.train.warmup, cfg.train.ckpt_every = 1e12, 0.0, 0, 1
    with pytest.raises(ImgenError, match=r"became .* at step \d+; the last good checkpoint \(step \d+\) is kept"):
        train(cfg, tmp_path / "m", progress=False)
    saved = json.loads((tmp_path / "m" / "train_state.json").read_text())["step"]
    weights = load_file(tmp_path / "m" / "model.safetensors")
    assert saved >= 1 and all(torch.isfinite(v).all() for v in weights.values())
    imgen.load(tmp_path / "m").sample(2, steps=2)  # still loads and samples


def test_out_directory_holding_a_different_model_is_refused_and_untouched(tmp_path):
    train(tiny_config(steps=2), tmp_path / "m", progress=False)
    before = {p.name: p.read_bytes() for p in (tmp_path / "m").iterdir()}
    other = tiny_config(steps=2)
    other.net.options["base_channels"] = 16
    with pytest.raises(ImgenError, match="holds a different model .*net.*choose another --out"):
        train(other, tmp_path / "m", progress=False)
    assert before == {p.name: p.read_bytes() for p in (tmp_path / "m").iterdir()}


def test_non_model_directory_is_refused(tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(ImgenError, match="not empty and holds no imgen model"):
        train(tiny_config(steps=2), tmp_path, progress=False)


@pytest.mark.parametrize("key,value,message", [
    ("steps", 0, "train.steps must be > 0"),
    ("steps", -5, "train.steps must be > 0"),
    ("lr", -1.0, "train.lr must be a positive number"),
])
def test_bad_training_numbers_are_rejected(tmp_path, key, value, message):
    cfg = tiny_config()
    setattr(cfg.train, key, value)
    with pytest.raises(ImgenError, match=message):
        train(cfg, tmp_path / "m", progress=False)
    assert not (tmp_path / "m").exists()


def test_missing_dataset_file_is_a_clear_error(tmp_path):
    cfg = tiny_config()
    cfg.data.name, cfg.data.options = "mnist", {"path": str(tmp_path / "nowhere")}
    with pytest.raises(ImgenError, match="mnist|MNIST"):
        train(cfg, tmp_path / "m", progress=False)


def test_checkpoint_writes_leave_no_temp_files(tmp_path):
    train(tiny_config(steps=4), tmp_path / "m", progress=False)
    assert not [p for p in (tmp_path / "m").iterdir() if p.name.startswith(".")]


def test_written_files_get_the_usual_permissions_not_private_temp_ones(tmp_path):
    import os
    import stat

    from imgen.checkpoint import atomic_write_text, copy_model_files, save_tensors
    old = os.umask(0o022)
    try:
        save_tensors({"w": torch.zeros(2)}, tmp_path / "m" / "ema.safetensors")
        atomic_write_text(tmp_path / "m" / "config.json", "{}")
        copy_model_files(tmp_path / "m", tmp_path / "copy")
    finally:
        os.umask(old)
    for p in (tmp_path / "m" / "ema.safetensors", tmp_path / "m" / "config.json", tmp_path / "copy" / "config.json"):
        assert stat.S_IMODE(p.stat().st_mode) == 0o644, p  # mkstemp's 0600 would hide a model from other users
    assert stat.S_IMODE((tmp_path / "copy").stat().st_mode) == 0o755


def test_a_2d_toy_preset_trains_and_samples_points(tmp_path):
    from imgen.config import apply_overrides
    from imgen.presets import get_preset

    cfg = apply_overrides(get_preset("moons-flow"), ["train.steps=30", "train.log_every=10", "train.ckpt_every=30"])
    train(cfg, tmp_path / "m", progress=False)
    x = imgen.load(tmp_path / "m").sample(100, steps=5, seed=0)
    assert x.shape == (100, 2) and torch.isfinite(x).all()


def test_train_preset_trains_once_then_reuses_and_reports_the_summed_training_time(tmp_path, monkeypatch):
    import imgen.train as T
    from imgen.train import train_preset

    first = train_preset("moons-flow", tmp_path / "m", steps=20)
    assert first > 0 and (tmp_path / "m" / "wall_s.json").is_file()
    monkeypatch.setattr(T, "train", lambda *a, **k: pytest.fail("a finished model is retrained"))
    assert train_preset("moons-flow", tmp_path / "m", steps=20) == first  # reused: the time it cost, not 0
    with pytest.raises(ImgenError, match="holds a model of another digits-ddpm config"):
        train_preset("digits-ddpm", tmp_path / "m", steps=2)


def test_image_folder_with_mixed_sizes_is_rejected_before_anything_is_written(tmp_path):
    from PIL import Image

    folder = tmp_path / "imgs"
    folder.mkdir()
    Image.new("RGB", (8, 8), "red").save(folder / "a.png")
    Image.new("RGB", (16, 16), "blue").save(folder / "b.png")
    cfg = tiny_config()
    cfg.data.name, cfg.data.options = "folder", {"path": str(folder)}
    with pytest.raises(ImgenError, match="size"):
        train(cfg, tmp_path / "m", progress=False)
    assert not (tmp_path / "m").exists()
    cfg.data.options["image_size"] = 8  # the fix the message suggests: resize everything
    cfg.train.steps = 2
    train(cfg, tmp_path / "m", progress=False)
    assert imgen.load(tmp_path / "m").sample(2, steps=2).shape == (2, 3, 8, 8)


def test_a_torn_log_line_and_stale_temp_files_from_a_kill_do_not_block_the_rerun(tmp_path):
    train(tiny_config(steps=4), tmp_path / "m", progress=False)
    with (tmp_path / "m" / "log.jsonl").open("a") as f:
        f.write('{"step": 5, "lo')  # killed mid-write
    (tmp_path / "m" / ".model.safetensors.abc123.tmp").write_bytes(b"half")
    train(tiny_config(steps=6), tmp_path / "m", progress=False)
    steps = [json.loads(line)["step"] for line in (tmp_path / "m" / "log.jsonl").read_text().splitlines()]
    assert steps == list(range(1, 7))
    assert not list((tmp_path / "m").glob(".*.tmp"))


def test_log_lines_of_a_run_killed_before_its_first_checkpoint_are_not_repeated(tmp_path):
    train(tiny_config(steps=3), tmp_path / "m", progress=False)
    for name in ("train_state.safetensors", "train_state.json", "model.safetensors", "ema.safetensors"):
        (tmp_path / "m" / name).unlink()  # as if killed after logging 2 steps, before the first checkpoint
    (tmp_path / "m" / "log.jsonl").write_text('{"step": 1, "loss": 9.0}\n{"step": 2, "loss": 9.0}\n')
    train(tiny_config(steps=3), tmp_path / "m", progress=False)
    log = [json.loads(line) for line in (tmp_path / "m" / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log] == [1, 2, 3] and all(r["loss"] != 9.0 for r in log)


def test_a_kill_during_the_very_first_write_leaves_a_rerunnable_directory(tmp_path):
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / ".config.json.xyz.tmp").write_text("{")
    train(tiny_config(steps=2), tmp_path / "m", progress=False)
    assert (tmp_path / "m" / "model.safetensors").exists()


def test_a_trained_model_runs_with_every_sampler_and_grid(tmp_path):
    from imgen.samplers import SAMPLERS

    train(tiny_config(steps=2), tmp_path / "m", progress=False)
    m = imgen.load(tmp_path / "m")
    for name in SAMPLERS:
        for grid in ("uniform", "karras", "logsnr"):
            if name == "langevin" and grid == "uniform":  # t = 1 of rectified flow is pure noise: no finite sigma
                with pytest.raises(ImgenError, match="annealed Langevin needs a finite noise level"):
                    m.sample(2, sampler=name, steps=3, grid=grid)
                continue
            x = m.sample(2, labels=[0, 1], sampler=name, steps=3, grid=grid, seed=1)
            assert x.shape == (2, 1, 8, 8) and torch.isfinite(x).all(), (name, grid)


class TwoOptimizerToy:
    """The GAN pattern on a toy: optimizer "first" owns the first half of the net's parameters, "second" the
    rest (with its own lr and kind); each step updates "first" then "second", each on a flow-matching loss."""

    def __init__(self):
        from imgen.methods.flow_matching import flow_matching

        self.fm, self.snapshots = flow_matching(), []

    def optimizers(self, net, train):
        params = list(net.parameters())
        half = len(params) // 2
        return {"first": torch.optim.AdamW(params[:half], lr=train.lr),
                "second": torch.optim.SGD(params[half:], lr=10 * train.lr, momentum=0.9)}

    def updates(self):
        return [("first", self.loss), ("second", self.loss)]

    def loss(self, net, batch, generator=None):
        self.snapshots.append([p.detach().clone() for p in net.parameters()])
        return self.fm.loss(net, batch, generator)

    def denoiser(self, net):
        return self.fm.denoiser(net)


def toy_two_optimizer_config(steps: int):
    from imgen.config import Config, DataConfig, MethodConfig, NetConfig, TrainConfig

    return Config(data=DataConfig("moons", {}, batch_size=32), net=NetConfig("mlp", {"hidden": 32, "depth": 2}),
                  method=MethodConfig("two_opt_toy", {}),
                  train=TrainConfig(steps=steps, lr=1e-3, warmup=2, ckpt_every=3, log_every=1))


def test_two_optimizers_step_in_turn_each_on_its_own_parameters_and_resume_exactly(tmp_path, monkeypatch):
    from imgen.methods import METHODS

    monkeypatch.setitem(METHODS, "two_opt_toy", TwoOptimizerToy)
    t = Trainer(toy_two_optimizer_config(2), tmp_path / "a", progress=False)
    half = len(list(t.net.parameters())) // 2
    t.fit()
    s = t.method.snapshots  # before first@1, before second@1, before first@2, before second@2
    changed = [[not torch.equal(x, y) for x, y in zip(a, b)] for a, b in zip(s, s[1:])]
    # "first" stepped only its own parameters, and "second" computed its loss after that step (alternating updates)
    assert any(changed[0][:half]) and not any(changed[0][half:])
    assert not any(changed[1][:half]) and any(changed[1][half:])  # "second" stepped only its own
    log = [json.loads(line) for line in (tmp_path / "a" / "log.jsonl").read_text().splitlines()]
    assert all(k in log[0] for k in ("loss_first", "loss_second", "grad_norm_first", "grad_norm_second"))
    assert t.optimizers["first"].param_groups[0]["lr"] == 1e-3  # each optimizer keeps its own base lr
    assert t.optimizers["second"].param_groups[0]["lr"] == pytest.approx(1e-2)

    train(toy_two_optimizer_config(8), tmp_path / "straight", progress=False)
    train(toy_two_optimizer_config(5), tmp_path / "resumed", progress=False)
    resumed = Trainer(toy_two_optimizer_config(8), tmp_path / "resumed", progress=False)
    assert resumed.step == 5
    resumed.fit()
    for name in ("model.safetensors", "ema.safetensors"):
        assert (tmp_path / "resumed" / name).read_bytes() == (tmp_path / "straight" / name).read_bytes(), name
    a, b = (load_file(tmp_path / d / "train_state.safetensors") for d in ("resumed", "straight"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)  # optimizer states too
    assert any(k.startswith("opt[second].") for k in a) and any(k.startswith("opt[first].") for k in a)


def test_lr_schedule_warms_up_then_stays_constant_or_decays_by_a_cosine_to_zero():
    from imgen.train import lr_at

    assert [lr_at(s, 1.0, 4) for s in range(6)] == [0.25, 0.5, 0.75, 1.0, 1.0, 1.0]
    cos = [lr_at(s, 2.0, 2, 10, "cosine") for s in range(10)]
    assert cos[:3] == [1.0, 2.0, 2.0] and cos[-1] == pytest.approx(2.0 * 0.5 * (1 + math.cos(math.pi * 7 / 8)))
    assert all(a >= b for a, b in zip(cos[1:], cos[2:]))
    cfg = toy_two_optimizer_config(2)
    cfg.train.lr_schedule = "linear"
    with pytest.raises(ImgenError, match="lr_schedule must be one of constant, cosine"):
        Trainer(cfg, "unused", progress=False)
