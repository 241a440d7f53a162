"""`imgen eval` (run_eval): folders, built-in datasets, model directories, JSON and table output, and one clear
message for each kind of bad input."""
import argparse
import json

import numpy as np
import pytest
import torch
from PIL import Image

import imgen
from imgen.data import load_dataset
from imgen.images import from_uint8, save_pngs, to_uint8
from imgen.metrics.eval_cli import add_eval_arguments, main, run_eval
from imgen.metrics.fid import fid
from imgen.metrics.kid import kid, mmd2_unbiased


@pytest.fixture(autouse=True)
def isolated_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("IMGEN_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("IMGEN_INCEPTION_WEIGHTS", raising=False)


@pytest.fixture(scope="module")
def digit_folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("digits")
    images = from_uint8(to_uint8(load_dataset("digits", image_size=16).get(np.arange(600))["image"]))  # 8-bit exact
    save_pngs(images[:300], root / "a")
    save_pngs(images[300:], root / "b")
    return root / "a", root / "b", images


def run(argv, capsys):
    code = run_eval(add_eval_arguments(argparse.ArgumentParser()).parse_args(argv + ["--no-progress"]))
    out = capsys.readouterr()
    return code, out.out, out.err


def test_folder_vs_folder_json_matches_the_metric_functions(digit_folders, capsys):
    a, b, images = digit_folders
    code, out, _ = run([str(a), "--ref", str(b), "--features", "pixels", "--metrics", "fid,kid,pr",
                        "--kid-subsets", "5", "--kid-subset-size", "100", "--json"], capsys)
    assert code == 0
    result = json.loads(out)
    m = result["metrics"]
    assert set(m) == {"fid[pixels]", "kid[pixels]", "kid_std[pixels]", "precision[pixels]", "recall[pixels]",
                      "density[pixels]", "coverage[pixels]"}
    assert result["features"] == "pixels" and result["n_generated"] == 300 and result["n_reference"] == 300
    # the same numbers from the images directly (the PNG round trip is exact for 8-bit images)
    fa, fb = images[:300].flatten(1), images[300:].flatten(1)
    assert m["fid[pixels]"] == pytest.approx(fid(fa, fb), rel=1e-4)
    assert m["kid[pixels]"] == pytest.approx(kid(fb, fa, 5, 100, seed=0)[0], rel=1e-4)


def test_builtin_reference_is_cached_by_dataset_and_extractor(digit_folders, capsys, tmp_path):
    a, _, _ = digit_folders
    argv = [str(a), "--ref", "digits", "--image-size", "16", "--features", "pixels", "--metrics", "kid",
            "--kid-subsets", "3", "--kid-subset-size", "100", "--json"]
    code, out1, _ = run(argv, capsys)
    assert code == 0
    cached = list((tmp_path / "cache" / "ref_features").glob("digits-*__pixels-pixels-v1.safetensors"))
    assert len(cached) == 1
    code, out2, _ = run(argv, capsys)
    assert json.loads(out1)["metrics"] == json.loads(out2)["metrics"]


def test_table_output_names_the_features(digit_folders, capsys):
    a, b, _ = digit_folders
    code, out, _ = run([str(a), "--ref", str(b), "--features", "pixels", "--metrics", "psnr,kid",
                        "--kid-subsets", "2", "--kid-subset-size", "50"], capsys)
    assert code == 0
    assert "kid[pixels]" in out and "psnr" in out and "features:  pixels" in out


def test_model_directory_is_sampled(tmp_path, monkeypatch, digit_folders, capsys):
    _, b, _ = digit_folders
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "config.json").write_text("{}")
    calls = []

    class FakeModel:
        def sample(self, n, seed=0):
            calls.append((n, seed))
            return torch.rand(n, 1, 16, 16, generator=torch.Generator().manual_seed(seed)) * 2 - 1

    monkeypatch.setattr(imgen, "load", lambda path, device="cpu": FakeModel())
    code, out, _ = run([str(tmp_path / "model"), "-n", "250", "--batch-size", "100", "--ref", str(b),
                        "--features", "pixels", "--metrics", "kid", "--kid-subsets", "2", "--kid-subset-size", "50",
                        "--json"], capsys)
    assert code == 0 and json.loads(out)["n_generated"] == 250
    assert calls == [(100, 0), (100, 1), (50, 2)]


def test_kid_on_no_more_images_than_the_subset_size_is_one_score_without_std(digit_folders, capsys):
    """300 vs 300 images with subsets of 1000: every subset would be both whole sets (std ~1e-8 from identical
    draws), so KID is computed once over all images, kid_std is null, and one warning line says why."""
    a, b, images = digit_folders
    argv = [str(a), "--ref", str(b), "--features", "pixels", "--metrics", "kid", "--kid-subset-size", "1000"]
    code, out, err = run(argv + ["--json"], capsys)
    m = json.loads(out)["metrics"]
    assert code == 0 and m["kid_std[pixels]"] is None
    fa, fb = images[:300].flatten(1), images[300:].flatten(1)
    assert m["kid[pixels]"] == pytest.approx(float(mmd2_unbiased(fb, fa)), rel=1e-4)
    warning_lines = [line for line in err.splitlines() if "KID" in line]
    assert len(warning_lines) == 1 and warning_lines[0].startswith("imgen eval: warning: KID: both sets have 300")
    assert "no std" in warning_lines[0] and "Traceback" not in err
    code, out, _ = run(argv, capsys)
    assert code == 0 and [line.split() for line in out.splitlines() if "kid_std" in line] == [["kid_std[pixels]", "n/a"]]


def test_kid_subset_size_above_the_smaller_set_is_capped_and_keeps_a_real_spread(digit_folders, capsys):
    a, b, _ = digit_folders
    code, out, err = run([str(a), "--ref", str(b), "--ref-n", "200", "--features", "pixels", "--metrics", "kid",
                          "--kid-subsets", "10", "--kid-subset-size", "1000", "--json"], capsys)
    m = json.loads(out)["metrics"]
    assert code == 0 and m["kid_std[pixels]"] > 1e-3 * abs(m["kid[pixels]"]) and m["kid_std[pixels]"] > 1e-6
    assert "imgen eval: warning: KID: subset size 1000 is more than the smaller set's 200 samples" in err


def test_main_entry_point_returns_error_code(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    assert main([str(tmp_path / "empty"), "--ref", "digits", "--no-progress"]) == 2


# ---- bad input: each a clear message, exit code 2, no traceback ----

def check_error(argv, capsys, *needles):
    code, out, err = run(argv, capsys)
    assert code == 2 and out == ""
    assert err.startswith("imgen eval: error:") and "Traceback" not in err
    for needle in needles:
        assert needle in err, (needle, err)
    return err


def test_empty_folder(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    check_error([str(tmp_path / "empty"), "--ref", "digits"], capsys, "no images", str(tmp_path / "empty"))


def test_folder_with_only_non_image_files(tmp_path, capsys):
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "notes.txt").write_text("hello")
    check_error([str(tmp_path / "docs"), "--ref", "digits"], capsys, "no images")


def test_file_with_image_extension_that_is_not_an_image(tmp_path, digit_folders, capsys):
    _, b, _ = digit_folders
    (tmp_path / "gen").mkdir()
    (tmp_path / "gen" / "fake.png").write_text("not a png")
    check_error([str(tmp_path / "gen"), "--ref", str(b)], capsys, "fake.png", "not a readable image")


def test_mixed_sizes_suggest_image_size(tmp_path, digit_folders, capsys):
    _, b, _ = digit_folders
    (tmp_path / "gen").mkdir()
    Image.new("RGB", (16, 16)).save(tmp_path / "gen" / "a.png")
    Image.new("RGB", (20, 20)).save(tmp_path / "gen" / "b.png")
    check_error([str(tmp_path / "gen"), "--ref", str(b)], capsys, "different sizes", "--image-size")


def test_mixed_modes_are_converted_with_a_warning(tmp_path, digit_folders, capsys):
    _, b, images = digit_folders
    gen = tmp_path / "gen"
    gen.mkdir()
    for i, img in enumerate(images[:120]):
        pil = Image.fromarray(((img[0].numpy() + 1) * 127.5).round().astype(np.uint8))
        pil.convert(["L", "RGB", "RGBA"][i % 3]).save(gen / f"{i:03d}.png")
    (gen / "README.txt").write_text("non-image files are skipped")
    code, out, err = run([str(gen), "--ref", str(b), "--features", "digits-eval", "--metrics", "kid",
                          "--kid-subsets", "2", "--kid-subset-size", "50", "--json"], capsys)
    assert [line for line in err.splitlines() if "modes" in line][0].startswith("imgen eval: warning: folder")
    # all became RGB; the evaluator averages RGB to gray, so the score equals that of the grayscale originals
    assert code == 0 and json.loads(out)["n_generated"] == 120
    save_pngs(images[:120], tmp_path / "gray")
    code, gray_out, _ = run([str(tmp_path / "gray"), "--ref", str(b), "--features", "digits-eval", "--metrics", "kid",
                             "--kid-subsets", "2", "--kid-subset-size", "50", "--json"], capsys)
    assert json.loads(out)["metrics"]["kid[digits-eval]"] == pytest.approx(
        json.loads(gray_out)["metrics"]["kid[digits-eval]"], rel=1e-4)


def test_rgb_against_grayscale_pixels_is_a_clear_error(tmp_path, digit_folders, capsys):
    _, b, images = digit_folders
    save_pngs(images[:60].repeat(1, 3, 1, 1), tmp_path / "rgb")
    check_error([str(tmp_path / "rgb"), "--ref", str(b), "--features", "pixels", "--metrics", "kid"], capsys,
                "differ in size", "--image-size")


def test_fewer_samples_than_feature_dimension_suggests_kid(digit_folders, capsys):
    a, b, _ = digit_folders
    check_error([str(a), "--ref", str(b), "--features", "pixels", "--metrics", "fid", "--ref-n", "100"], capsys,
                "more samples than feature dimensions", "KID")


def test_missing_inception_weights(digit_folders, capsys, tmp_path):
    a, b, _ = digit_folders
    check_error([str(a), "--ref", str(b), "--features", "inception", "--inception-weights",
                 str(tmp_path / "missing.pth")], capsys, "missing.pth", "--download", "pt_inception-2015-12-05")


def test_unknown_metric_and_unknown_reference(digit_folders, capsys):
    a, b, _ = digit_folders
    check_error([str(a), "--ref", str(b), "--metrics", "fid,bogus"], capsys, "bogus", "psnr")
    check_error([str(a), "--ref", "no-such-dataset-or-folder"], capsys, "neither a folder", "digits")


def test_paired_metrics_need_equal_counts(digit_folders, capsys):
    a, b, _ = digit_folders
    check_error([str(a), "--ref", str(b), "--ref-n", "50", "--metrics", "psnr"], capsys, "same count")
