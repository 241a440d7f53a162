"""The FID InceptionV3 architecture and preprocessing, checked against torch-fidelity's implementation with
identical random weights (no weights file exists offline, and nothing is downloaded)."""
import pytest
import torch

from imgen.errors import ImgenError
from imgen.metrics.features import InceptionExtractor, get_extractor
from imgen.metrics.inception import (FIDInceptionV3, convert_state_dict, find_weights, load_inception,
                                     resize_bilinear_tf1)
from imgen.metrics.references import import_torch_fidelity_lite

import_torch_fidelity_lite()
from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3  # noqa: E402
from torch_fidelity.interpolate_compat_tensorflow import interpolate_bilinear_2d_like_tensorflow1x  # noqa: E402


@pytest.fixture(scope="module")
def random_weights(tmp_path_factory):
    """A pt_inception-style state dict (torch-fidelity / pytorch-fid key names) with random weights and
    non-trivial batch-norm statistics, saved as .pth like the real file."""
    torch.manual_seed(0)
    sd = FIDInceptionV3().state_dict()
    for k, v in sd.items():
        if k.endswith("running_var"):
            v.uniform_(0.5, 2.0)
        elif k.endswith("running_mean") or k.endswith("bias"):
            v.normal_(0, 0.1)
        elif k.endswith("bn.weight"):
            v.uniform_(0.5, 1.5)
    sd = {k: v for k, v in sd.items() if not k.endswith("num_batches_tracked")}
    path = tmp_path_factory.mktemp("inception") / "pt_inception-2015-12-05-6726825d.pth"
    torch.save(sd, path)
    return path, sd


def test_tf1_bilinear_resize_is_bit_identical_to_torch_fidelity():
    x = torch.randint(0, 256, (2, 3, 32, 28)).float()
    ref = interpolate_bilinear_2d_like_tensorflow1x(x, size=(299, 299), align_corners=False)
    assert torch.equal(resize_bilinear_tf1(x, 299), ref)


def test_inception_features_and_logits_match_torch_fidelity_with_identical_weights(random_weights):
    path, _ = random_weights
    ours = load_inception(path)
    ref = FeatureExtractorInceptionV3("inception-v3-compat", ["2048", "logits_unbiased"],
                                      feature_extractor_weights_path=str(path))
    x = torch.randint(0, 256, (1, 3, 32, 32), dtype=torch.uint8)
    pool, logits = ours(x.float())
    ref_pool, ref_logits = ref(x)
    assert pool.shape == (1, 2048) and logits.shape == (1, 1008)
    assert pool.abs().max() > 1e-3  # non-trivial activations
    torch.testing.assert_close(pool, ref_pool, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(logits, ref_logits, rtol=1e-5, atol=1e-6)


@pytest.mark.slow
def test_extractor_quantizes_images_like_png_files(random_weights, monkeypatch):
    path, _ = random_weights
    monkeypatch.setenv("IMGEN_INCEPTION_WEIGHTS", str(path))
    ext = get_extractor("inception")
    assert isinstance(ext, InceptionExtractor) and ext.dim == 2048 and len(ext.fingerprint) == 16
    gray = torch.rand(1, 1, 16, 16) * 2 - 1
    feats, logits = ext(gray)
    direct, _ = ext.net(((gray.clamp(-1, 1) + 1) * 127.5).round().repeat(1, 3, 1, 1))
    torch.testing.assert_close(feats, direct)


def test_state_dict_mapping_accepts_pytorch_fid_and_dataparallel_layouts(random_weights):
    _, sd = random_weights
    wrapped = {"module." + k: v for k, v in sd.items()}
    wrapped["AuxLogits.fc.weight"] = torch.zeros(1)  # torchvision-style extras are dropped
    assert convert_state_dict(wrapped).keys() == sd.keys()
    blocks = {k.replace("Conv2d_1a_3x3.", "blocks.0.0.").replace("Mixed_7c.", "blocks.3.2."): v for k, v in sd.items()}
    net = FIDInceptionV3()
    net.load_state_dict(convert_state_dict(blocks))  # strict: every key mapped back
    torch.testing.assert_close(net.Mixed_7c.branch1x1.conv.weight, sd["Mixed_7c.branch1x1.conv.weight"])


def test_missing_weights_say_where_to_put_the_file(tmp_path, monkeypatch):
    monkeypatch.delenv("IMGEN_INCEPTION_WEIGHTS", raising=False)
    monkeypatch.setenv("IMGEN_CACHE", str(tmp_path))
    with pytest.raises(ImgenError) as err:
        find_weights()
    msg = str(err.value)
    assert str(tmp_path / "weights" / "pt_inception-2015-12-05-6726825d.pth") in msg
    assert "IMGEN_INCEPTION_WEIGHTS" in msg and "--download" in msg
    with pytest.raises(ImgenError, match="not found at .*nowhere.pth"):
        load_inception(tmp_path / "nowhere.pth")


def test_wrong_weights_file_is_rejected(tmp_path):
    bad = tmp_path / "bad.pth"
    torch.save({"conv.weight": torch.zeros(3)}, bad)
    with pytest.raises(ImgenError, match="not an FID InceptionV3 state dict"):
        load_inception(bad)
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"not a checkpoint")
    with pytest.raises(ImgenError, match="could not read"):
        load_inception(garbage)


@pytest.mark.slow
def test_imgen_eval_with_a_user_supplied_inception_file(random_weights, tmp_path, capsys, monkeypatch):
    import argparse
    import json

    from imgen.images import save_pngs
    from imgen.metrics.eval_cli import add_eval_arguments, run_eval

    monkeypatch.setenv("IMGEN_CACHE", str(tmp_path / "cache"))
    path, _ = random_weights
    g = torch.Generator().manual_seed(0)
    save_pngs(torch.rand(8, 3, 32, 32, generator=g) * 2 - 1, tmp_path / "gen")
    save_pngs(torch.rand(8, 3, 32, 32, generator=g) * 2 - 1, tmp_path / "ref")
    argv = [str(tmp_path / "gen"), "--ref", str(tmp_path / "ref"), "--features", "inception", "--inception-weights",
            str(path), "--metrics", "kid,is", "--is-splits", "2", "--kid-subsets", "3", "--json", "--no-progress"]
    assert run_eval(add_eval_arguments(argparse.ArgumentParser()).parse_args(argv)) == 0
    result = json.loads(capsys.readouterr().out)
    assert set(result["metrics"]) == {"kid[inception]", "kid_std[inception]", "is[inception]", "is_std[inception]"}
    assert result["features"] == "inception" and result["metrics"]["is[inception]"] >= 1.0 - 1e-9  # exp(KL) >= 1, up to rounding
