"""The command line: the stable contract, and one clear line for every bad input."""
import json
import subprocess
import sys

import pytest
from PIL import Image

import imgen
from conftest import assert_one_line_error, run_cli


def test_version_and_console_entry_point():
    out = subprocess.run([sys.executable, "-m", "imgen", "--version"], capture_output=True, text=True)
    assert out.returncode == 0 and out.stdout.strip() == f"imgen {imgen.__version__}"


def test_presets_lists_and_shows(capsys):
    code, out, _ = run_cli(capsys, "presets")
    assert code == 0 and "digits-flow" in out and "digits-ddpm" in out and "moons-flow" in out
    code, out, _ = run_cli(capsys, "presets", "--show", "digits-flow")
    assert code == 0 and json.loads(out)["method"]["name"] == "flow_matching"


def test_train_then_sample_a_grid_and_a_folder(capsys, tmp_path, tiny_config_file):
    cfg = tiny_config_file(steps=4)
    code, out, err = run_cli(capsys, "train", cfg, "--out", tmp_path / "m", "--quiet")
    assert code == 0, err
    code, out, err = run_cli(capsys, "sample", tmp_path / "m", "--n", 6, "--label", 3, "--steps", 3,
                         "--out", tmp_path / "grid.png", "--scale", 1)
    assert code == 0, err
    assert Image.open(tmp_path / "grid.png").size == (3 * 9 + 1, 2 * 9 + 1)  # 3x2 tiles of 8 px + 1 px padding
    code, out, err = run_cli(capsys, "sample", tmp_path / "m", "--n", 3, "--label", "1,2,3", "--sampler", "ddim",
                         "--eta", 0.5, "--steps", 3, "--out", tmp_path / "pngs")
    assert code == 0, err
    assert sorted(p.name for p in (tmp_path / "pngs").iterdir()) == ["00000.png", "00001.png", "00002.png"]
    assert Image.open(tmp_path / "pngs" / "00000.png").size == (8, 8)


def test_toml_config_and_seed_and_steps_flags(capsys, tmp_path):
    toml = tmp_path / "c.toml"
    toml.write_text('[data]\nname = "digits"\nbatch_size = 8\n[net]\nname = "unet"\n'
                    '[net.options]\nbase_channels = 8\nchannel_mults = [1, 2]\nnum_res_blocks = 1\n'
                    'attn_resolutions = [4]\nnum_heads = 2\n[train]\nlog_every = 1\n')
    code, _, err = run_cli(capsys, "train", toml, "--out", tmp_path / "m", "--steps", 3, "--seed", 5, "--quiet")
    assert code == 0, err
    saved = json.loads((tmp_path / "m" / "config.json").read_text())
    assert saved["train"]["steps"] == 3 and saved["train"]["seed"] == 5 and saved["data"]["batch_size"] == 8


@pytest.mark.parametrize("argv,pattern", [
    (["train", "no-such-preset", "--out", "X"], "unknown preset 'no-such-preset'; valid presets: digits-flow"),
    (["train", "digits-flow", "--out", "X", "--set", "train.learning_rate=1"], "unknown config key 'train.learning_rate'"),
    (["train", "digits-flow", "--out", "X", "--set", "train.steps=many"], "'train.steps' must be int, got str"),
    (["train", "digits-flow", "--out", "X", "--set", "trainsteps"], "must look like section.key=value"),
    (["train", "digits-flow", "--out", "X", "--steps", "0"], "train.steps must be > 0"),
    (["train", "digits-flow", "--out", "X", "--set", "data.name=imagenet"], "unknown dataset"),
    (["train", "digits-flow", "--out", "X", "--set", "net.options.widthh=3"], "widthh"),
    (["train", "digits-flow", "--out", "X", "--set", "method.name=pixelcnn"], "unknown method 'pixelcnn'"),
    (["sample", "X", "--n", "4", "--out", "o.png"], "is not a model directory"),
])
def test_bad_input_is_one_clear_line(capsys, tmp_path, monkeypatch, argv, pattern):
    monkeypatch.chdir(tmp_path)
    code, _, err = run_cli(capsys, *argv)
    assert_one_line_error(code, err, pattern)


def test_bad_config_files(capsys, tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    code, _, err = run_cli(capsys, "train", bad, "--out", tmp_path / "m")
    assert_one_line_error(code, err, "is not valid json")
    unknown = tmp_path / "unknown.json"
    unknown.write_text(json.dumps({"trainer": {}}))
    code, _, err = run_cli(capsys, "train", unknown, "--out", tmp_path / "m")
    assert_one_line_error(code, err, "unknown config key 'trainer'")
    missing = tmp_path / "missing.toml"
    code, _, err = run_cli(capsys, "train", missing, "--out", tmp_path / "m")
    assert_one_line_error(code, err, "not found")


def test_sample_rejects_bad_options(capsys, tmp_path, tiny_config_file):
    assert run_cli(capsys, "train", tiny_config_file(steps=2), "--out", tmp_path / "m", "--quiet")[0] == 0
    for argv, pattern in [
        (["--label", "12"], "labels must be in 0..9"),
        (["--label", "seven"], "--label must be an integer"),
        (["--steps", "0"], "--steps must be >= 1"),
        (["--n", "0"], "--n must be >= 1"),
        (["--sampler", "plms"], "unknown sampler 'plms'"),
        (["--sampler", "ddim", "--eta", "2"], "eta must be in [0, 1]"),
        (["--label", "1,2"], "got 2 labels for 4 samples"),
    ]:
        code, _, err = run_cli(capsys, "sample", tmp_path / "m", "--n", 4, "--out", tmp_path / "o.png", *argv)
        assert_one_line_error(code, err, pattern)


def test_corrupt_weights_file_is_a_clear_error(capsys, tmp_path, tiny_config_file):
    assert run_cli(capsys, "train", tiny_config_file(steps=2), "--out", tmp_path / "m", "--quiet")[0] == 0
    (tmp_path / "m" / "ema.safetensors").write_bytes(b"\x00garbage")
    code, _, err = run_cli(capsys, "sample", tmp_path / "m", "--n", 2, "--out", tmp_path / "o.png")
    assert_one_line_error(code, err, "is corrupt")


def test_a_5000_word_prompt_is_truncated_with_one_warning_line(capsys, tmp_path):
    prompt = " ".join(["a red circle in the top left"] * 700)  # 4900 words
    code, out, err = run_cli(capsys, "generate", prompt, "--n", 2, "--steps", 1, "--out", tmp_path / "long.png")
    assert code == 0, err
    warnings = [line for line in err.splitlines() if line.startswith("imgen: warning:")]
    assert len(warnings) == 1 and warnings[0].startswith("imgen: warning: a prompt is longer than max_len=")
    assert "truncated to the first" in warnings[0] and "shorten it or raise max_len" in warnings[0]
    assert len(out) < 200 and (tmp_path / "long.png").is_file()  # the echo of the prompt is shortened too
