"""Every path argument of every `imgen` subcommand: a bad one ends in one `imgen: error:` line (`imgen eval:
error:` for eval, as argparse names it) that names the path and the fix, exit code 2, no traceback, and nothing
written or lost. (Tests run as root, where chmod cannot make a directory unwritable, so "cannot be created" is
a path under a regular file.)"""
import json
import subprocess
import sys

import pytest

from conftest import tiny_config
from imgen.cli import main


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("model")
    (root / "tiny.json").write_text(json.dumps(tiny_config(steps=2).to_dict()))
    assert main(["train", str(root / "tiny.json"), "--out", str(root / "m"), "--quiet"]) == 0
    return root / "m"


def snapshot(root):
    return {str(p.relative_to(root)): p.read_bytes() if p.is_file() else None for p in sorted(root.rglob("*"))}


# {file}: an existing regular file (kept as is); {dir}: an existing empty folder; {model}: a trained model
@pytest.mark.parametrize("argv,needles", [
    (["train", "{config}", "--out", "{file}"], ["--out '{file}' is a file, not a directory", "new or existing directory"]),
    (["train", "{config}", "--out", "{file}/sub"], ["cannot create --out '{file}/sub': '{file}' is a file",
                                                    "not inside a file"]),
    (["train", "{dir}", "--out", "{dir}/m"], ["config '{dir}' is a directory", ".json/.toml config file"]),
    (["train", "{dir}/missing.json", "--out", "{dir}/m"], ["'{dir}/missing.json' not found", "preset name"]),
    (["sample", "{model}", "--out", "{file}/sub/grid.png"], ["cannot create --out '{file}/sub/grid.png': '{file}' is a file"]),
    (["sample", "{model}", "--out", "{file}"], ["--out '{file}' is a file, not a directory"]),
    (["sample", "{model}", "--out", "{dir}.png"], ["--out '{dir}.png' is a directory, not a file"]),
    (["sample", "{file}", "--out", "{dir}/grid.png"], ["'{file}' is not a model directory", "imgen train"]),
    (["sample", "{dir}/missing", "--out", "{dir}/grid.png"], ["'{dir}/missing' is not a model directory"]),
    (["generate", "a red circle", "--out", "{file}/sub/x.png"], ["cannot create --out '{file}/sub/x.png'"]),
    (["generate", "a red circle", "--out", "{file}"], ["--out '{file}' is a file, not a directory"]),
    (["generate", "a red circle", "--model", "{file}", "--out", "{dir}/x.png"],
     ["--model '{file}' is neither a shipped model", "imgen train"]),
    (["demo", "--out", "{file}"], ["--out '{file}' is a file, not a directory"]),
    (["demo", "--out", "{file}/sub"], ["cannot create --out '{file}/sub': '{file}' is a file"]),
    (["eval", "{file}", "--ref", "digits"], ["GENERATED '{file}' is a file", "folder of images"]),
    (["eval", "{model}", "--ref", "{file}"], ["--ref '{file}' is a file"]),
    (["eval", "{dir}", "--ref", "digits"], ["no images", "{dir}"]),
    (["eval", "{model}", "--ref", "{dir}/missing"], ["--ref '{dir}/missing' is neither a folder", "check the path"]),
    (["eval", "{model}", "--ref", "digits", "--features", "inception", "--inception-weights", "{dir}"],
     ["--inception-weights '{dir}' is a directory; give the weights file itself"]),
])
def test_bad_path_is_one_line_naming_the_path_and_the_fix(capsys, tmp_path, model_dir, argv, needles):
    subs = {"file": str(tmp_path / "notes.txt"), "dir": str(tmp_path / "empty"), "model": str(model_dir),
            "config": str(tmp_path / "tiny.json")}
    (tmp_path / "notes.txt").write_text("keep me")
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty.png").mkdir()
    (tmp_path / "tiny.json").write_text(json.dumps(tiny_config(steps=2).to_dict()))
    before, model_before = snapshot(tmp_path), snapshot(model_dir)
    code = main([a.format(**subs) for a in argv] + (["--no-progress"] if argv[0] == "eval" else []))
    out, err = capsys.readouterr()
    lines = err.strip().splitlines()
    prefix = "imgen eval: error: " if argv[0] == "eval" else "imgen: error: "
    assert code == 2 and len(lines) == 1 and lines[0].startswith(prefix), err
    for needle in needles:
        assert needle.format(**subs) in lines[0], (needle, lines[0])
    assert "Traceback" not in err and "Traceback" not in out
    assert snapshot(tmp_path) == before and snapshot(model_dir) == model_before  # nothing written, nothing lost


def test_train_out_is_a_file_from_a_real_process(tmp_path):
    """The issue's case: `imgen train PRESET --out FILE` ended in a NotADirectoryError traceback."""
    out = tmp_path / "model"
    out.write_text("my notes")
    r = subprocess.run([sys.executable, "-m", "imgen", "train", "digits-flow", "--out", str(out)],
                       capture_output=True, text=True)
    assert r.returncode == 2 and r.stdout == "" and "Traceback" not in r.stderr
    assert r.stderr == (f"imgen: error: --out {str(out)!r} is a file, not a directory; give a new or existing "
                        "directory (the file is left untouched)\n")
    assert out.read_text() == "my notes"


def test_a_write_that_fails_anyway_is_one_line(capsys, tmp_path, model_dir, monkeypatch):
    """A failure no check can foresee (disk full mid-write) still ends in one line naming the file."""
    import imgen.images

    def disk_full(x, path, **kwargs):
        raise OSError(28, "No space left on device", str(path))
    monkeypatch.setattr(imgen.images, "save_grid", disk_full)
    code = main(["sample", str(model_dir), "--n", "2", "--steps", "2", "--out", str(tmp_path / "grid.png")])
    _, err = capsys.readouterr()
    assert code == 2 and err.splitlines()[-1] == (
        f"imgen: error: cannot use {str(tmp_path / 'grid.png')!r}: No space left on device; check the path, "
        "its permissions and the free disk space")
    assert "Traceback" not in err
