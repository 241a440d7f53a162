"""imgen's shipped evaluator networks (digits-eval, shapes-eval): cards, held-out accuracy, predict(), and the
behaviour of FID / precision / recall in their feature spaces (the course figure: FID rises with noise and blur)."""
import json

import numpy as np
import pytest
import scipy.ndimage
import torch

from imgen.data import load_dataset
from imgen.metrics.evaluators import EVALUATOR_DIR, load_evaluator
from imgen.metrics.features import get_extractor
from imgen.metrics.fid import fid
from imgen.metrics.precision_recall import manifold_metrics

THRESHOLDS = {"digits-eval": 0.97, "shapes-eval": 0.99}


@pytest.mark.parametrize("name", ["digits-eval", "shapes-eval"])
def test_card_reports_heldout_accuracy_and_training_command(name):
    folder = EVALUATOR_DIR / name
    meta = json.loads((folder / "config.json").read_text())
    card = (folder / "CARD.md").read_text()
    assert (folder / "model.safetensors").stat().st_size < 2 * 1024 * 1024
    assert meta["command"].startswith("python scripts/train_evaluators.py") and meta["command"] in card
    for head, acc in meta["heldout_accuracy"].items():
        assert acc >= THRESHOLDS[name], (head, acc)
        assert f"| {head} | {acc * 100:.2f}% |" in card


def test_digits_heldout_accuracy_recomputed_from_shipped_weights():
    ev = load_evaluator("digits-eval")
    test = load_dataset("digits", split="test")
    batch = test.get(np.arange(len(test)))
    acc = float((ev.predict(batch["image"])["label"] == batch["label"]).double().mean())
    assert acc == pytest.approx(ev.meta["heldout_accuracy"]["label"], abs=1e-9)
    assert acc >= 0.97
    # larger images are area-downsampled to 8x8: the 16x16 upsampled test set reads almost as well
    big = load_dataset("digits", split="test", image_size=16).get(np.arange(len(test)))
    assert float((ev.predict(big["image"])["label"] == batch["label"]).double().mean()) >= 0.9


def test_shapes_heldout_accuracy_recomputed_from_shipped_weights():
    ev = load_evaluator("shapes-eval")
    seed = ev.meta["seed"] + 1000  # the card's held-out set
    ds = load_dataset("shapes", n=2000, split="heldout", max_objects=1, seed=seed)
    batch = ds.get(np.arange(2000))
    pred = ev.predict(batch["image"])
    assert set(pred) == {"shape", "color", "size", "pos", "bg"}
    for attr, p in pred.items():
        assert p.dtype == torch.int64 and p.shape == (2000,)
        acc = float((p == batch["attrs"][attr]).double().mean())
        assert acc == pytest.approx(ev.meta["heldout_accuracy"][attr], abs=1e-9) and acc >= 0.99, attr
    assert ev.value_names["color"][int(pred["color"][0])] in ("red", "orange", "yellow", "green", "cyan", "blue",
                                                              "magenta", "white")


# ---- the course figure, in digits-eval feature space ----

@pytest.fixture(scope="module")
def digits_halves():
    ds = load_dataset("digits", split="all")
    batch = ds.get(np.arange(len(ds)))
    return batch["image"], batch["label"]


@pytest.fixture(scope="module")
def digits_features():
    return get_extractor("digits-eval")


def feats(extractor, images):
    return extractor(images)[0]


def noisy(x, sigma, seed=0):
    return (x + sigma * torch.randn(x.shape, generator=torch.Generator().manual_seed(seed))).clamp(-1, 1)


def blurred(x, sigma):
    return torch.from_numpy(scipy.ndimage.gaussian_filter(x.numpy(), sigma=(0, 0, sigma, sigma), mode="nearest"))


def test_fid_rises_monotonically_with_noise_and_blur(digits_halves, digits_features):
    images, _ = digits_halves
    a, b = images[0::2], images[1::2]
    fa = feats(digits_features, a)
    same = fid(fa, fa)
    halves = fid(fa, feats(digits_features, b))
    noise = [fid(fa, feats(digits_features, noisy(b, s))) for s in (0.1, 0.25, 0.5, 0.75, 1.0)]
    blur = [fid(fa, feats(digits_features, blurred(b, s))) for s in (0.4, 0.6, 0.8, 1.0, 1.5)]
    assert same < 1e-6
    assert all(x < y for x, y in zip(noise, noise[1:])), noise
    assert all(x < y for x, y in zip(blur, blur[1:])), blur
    assert halves < 0.05 * noise[-1], (halves, noise[-1])
    assert halves < noise[0] and halves < blur[0]


def test_mode_dropping_keeps_precision_and_loses_recall_while_blur_loses_precision(digits_halves, digits_features):
    images, labels = digits_halves
    ref, gen, gen_labels = images[0::2], images[1::2], labels[1::2]
    f_ref = feats(digits_features, ref)
    full = manifold_metrics(f_ref, feats(digits_features, gen), k=5)
    dropped = manifold_metrics(f_ref, feats(digits_features, gen[gen_labels < 5]), k=5)
    blur = manifold_metrics(f_ref, feats(digits_features, blurred(gen, 1.0)), k=5)
    assert full["precision"] > 0.9 and full["recall"] > 0.9
    assert dropped["precision"] > 0.9 and dropped["recall"] < 0.6
    assert dropped["coverage"] < 0.6 * full["coverage"]
    assert blur["precision"] < 0.6 * full["precision"]


@pytest.mark.slow
def test_shapes_fid_rises_with_noise_and_blur():
    ext = get_extractor("shapes-eval")
    a = load_dataset("shapes", n=2000, seed=0).get(np.arange(2000))["image"]
    b = load_dataset("shapes", n=2000, seed=1).get(np.arange(2000))["image"]
    fa = feats(ext, a)
    halves = fid(fa, feats(ext, b))
    noise = [fid(fa, feats(ext, noisy(b, s))) for s in (0.1, 0.25, 0.5, 0.75, 1.0)]
    blur = [fid(fa, feats(ext, blurred(b, s))) for s in (0.5, 0.75, 1.0, 1.5, 2.0)]
    assert fid(fa, fa) < 1e-6
    assert all(x < y for x, y in zip(noise, noise[1:])), noise
    assert all(x < y for x, y in zip(blur, blur[1:])), blur
    assert halves < 0.05 * noise[-1]


def test_evaluator_reads_larger_and_grayscale_inputs():
    ev = load_evaluator("shapes-eval")
    ds = load_dataset("shapes", n=64, image_size=64, split="train", max_objects=1, seed=5)
    batch = ds.get(np.arange(64))
    pred = ev.predict(batch["image"])  # 64x64 area-downsampled to 32x32
    assert float((pred["shape"] == batch["attrs"]["shape"]).double().mean()) >= 0.9
    assert ev.features(batch["image"].mean(1, keepdim=True)).shape == (64, ev.dim)  # gray -> RGB


def test_inception_score_in_digits_eval_space_counts_the_modes(digits_halves, digits_features):
    from imgen.metrics.inception_score import inception_score

    images, labels = digits_halves
    all_classes = inception_score(digits_features(images)[1], splits=5)[0]
    five_classes = inception_score(digits_features(images[labels < 5])[1], splits=5)[0]
    assert 6.5 < all_classes <= 10.0 and 3.5 < five_classes <= 5.0  # label smoothing softens p(y|x)
    assert all_classes > 1.6 * five_classes


def test_perceptual_distance_on_evaluator_features_grows_with_noise(digits_halves, digits_features):
    from imgen.metrics.perceptual import perceptual_distance

    images, _ = digits_halves
    x = images[:200]
    assert float(perceptual_distance(x, x, digits_features).max()) < 1e-12
    d = [float(perceptual_distance(x, noisy(x, s), digits_features).mean()) for s in (0.1, 0.3, 0.6)]
    assert 0 < d[0] < d[1] < d[2], d


def test_loading_an_evaluator_leaves_the_global_rng_as_it_was():
    """Methods load a frozen evaluator mid-training (VQGAN's perceptual loss, SRGAN's content loss): drawing the
    discarded init weights from the global RNG would make a resumed run differ from an uninterrupted one."""
    from imgen.metrics.evaluators import load_evaluator

    torch.manual_seed(3)
    before = torch.get_rng_state()
    load_evaluator("shapes-eval")
    assert torch.equal(torch.get_rng_state(), before)
