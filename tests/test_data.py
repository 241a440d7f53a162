"""Datasets: the contract, shapes' ground truth and splits, digits, 2D toys, and file loaders on files written here."""
import gzip
import json
import pickle
import struct
import urllib.error
import urllib.request
import warnings

import numpy as np
import pytest
import torch
from PIL import Image

from imgen.data import list_datasets, load_dataset
from imgen.data import shapes as S
from imgen.data.files import read_cifar_batch, read_idx
from imgen.errors import ImgenError


# ---------------------------------------------------------------- the factory and the contract
def test_list_datasets_names_every_dataset():
    assert set(list_datasets()) == {"shapes", "digits", "moons", "8gaussians", "swissroll", "checkerboard",
                                    "mnist", "fashion-mnist", "cifar10", "folder", "pairs", "shapes-pairs",
                                    "shapes-domains", "shapes-control", "shapes-inpaint"}


@pytest.mark.parametrize("name", ["shapes", "digits", "moons", "8gaussians", "swissroll", "checkerboard",
                                  "shapes-pairs", "shapes-domains"])
def test_builtin_datasets_follow_the_contract(name):
    ds = load_dataset(name)
    for attr in ("num_classes", "class_names", "channels", "image_size", "name"):
        assert hasattr(ds, attr)
    assert ds.name == name and len(ds) > 0
    assert ds.infinite == (name != "digits")  # streams take any index >= 0; the trainer reads this flag
    if ds.infinite:  # an index past the epoch length is a new item, not a repeat
        key = "x" if ds.image_size is None else "image"
        assert not torch.equal(ds.get(np.array([len(ds) + 7]))[key], ds.get(np.array([7]))[key])
    batch = ds.get(torch.arange(5))
    again = ds.get(np.arange(5))
    if ds.image_size is None:
        assert batch["x"].shape == (5, 2) and batch["x"].dtype == torch.float32
        assert torch.equal(batch["x"], again["x"])
    else:
        img = batch["image"]
        assert img.shape == (5, ds.channels, ds.image_size, ds.image_size) and img.dtype == torch.float32
        assert img.min() >= -1 and img.max() <= 1
        assert torch.equal(img, again["image"])
    if "label" in batch:
        assert batch["label"].dtype == torch.int64 and ds.num_classes == len(ds.class_names)
        assert 0 <= batch["label"].min() and batch["label"].max() < ds.num_classes


def test_load_dataset_rejects_unknown_names_and_options():
    with pytest.raises(ImgenError, match="unknown dataset 'imagenet'.*shapes.*cifar10.*folder"):
        load_dataset("imagenet")
    with pytest.raises(ImgenError, match="no option 'colour'.*image_size"):
        load_dataset("shapes", colour="red")
    with pytest.raises(ImgenError, match="split must be one of"):
        load_dataset("digits", split="validation")
    with pytest.raises(ImgenError, match="image_size must be an integer"):
        load_dataset("shapes", image_size="big")


def test_bad_indices_raise():
    ds = load_dataset("digits")
    with pytest.raises(ImgenError, match="out of range"):
        ds.get(np.array([0, len(ds)]))
    with pytest.raises(ImgenError, match="out of range"):
        load_dataset("shapes").get(np.array([-1]))
    with pytest.raises(ImgenError, match="1-D integer index"):
        ds.get(np.zeros((2, 2), np.int64))


# ---------------------------------------------------------------- shapes
def test_shapes_item_is_a_pure_function_of_seed_and_index():
    a = load_dataset("shapes", seed=3).get(np.array([5, 100000, 7]))
    b = load_dataset("shapes", seed=3).get(np.array([7, 5, 9, 100000]))  # other batch, other order
    assert torch.equal(a["image"][[0, 1, 2]], b["image"][[1, 3, 0]])
    assert [a["caption"][i] for i in (0, 1, 2)] == [b["caption"][i] for i in (1, 3, 0)]
    for k in S.ATTRIBUTES:
        assert torch.equal(a["attrs"][k][[0, 1, 2]], b["attrs"][k][[1, 3, 0]])
    c = load_dataset("shapes", seed=4).get(np.array([5, 100000, 7]))
    assert not torch.equal(a["image"], c["image"]) and a["caption"] != c["caption"]


def test_shapes_attributes_cover_their_ranges():
    batch = load_dataset("shapes", split="all").get(np.arange(3000))
    at = {k: v.numpy() for k, v in batch["attrs"].items()}
    assert all(v.dtype == np.int64 for v in at.values())
    for k, n in [("shape", 5), ("color", 8), ("size", 2), ("pos", 9), ("bg", 4)]:
        assert set(at[k]) == set(range(n)), k
    assert set(at["n_objects"]) == {1, 2}
    two = at["n_objects"] == 2
    for k, n in [("shape2", 5), ("color2", 8), ("size2", 2), ("pos2", 9)]:
        assert set(at[k][two]) == set(range(n)) and (at[k][~two] == -1).all(), k
    assert (at["pos2"][two] != at["pos"][two]).all()
    assert torch.equal(batch["label"], batch["attrs"]["shape"])
    assert len(S.SHAPES) >= 5 and len(S.COLORS) >= 8 and len(S.POSITIONS) == 9


def test_heldout_shape_colour_pairs_never_appear_in_train():
    heldout = {(S.SHAPES.index(s), S.COLOR_NAMES.index(c)) for s, c in S.HELDOUT_PAIRS}
    train = load_dataset("shapes", split="train").get(np.arange(4000))["attrs"]
    seen = set(zip(train["shape"].tolist(), train["color"].tolist()))
    seen2 = set(zip(train["shape2"].tolist(), train["color2"].tolist())) - {(-1, -1)}
    assert not (seen | seen2) & heldout
    assert len(seen) == 5 * 8 - len(heldout)  # every other pair does appear
    test = load_dataset("shapes", split="heldout").get(np.arange(1000))["attrs"]
    assert set(zip(test["shape"].tolist(), test["color"].tolist())) == heldout
    # every shape and every colour on its own is still seen in training
    assert {s for s, _ in seen} == set(range(5)) and {c for _, c in seen} == set(range(8))


def test_caption_templates_are_split_and_several_are_used():
    train = load_dataset("shapes", split="train").attributes(np.arange(600))["template"]
    test = load_dataset("shapes", split="heldout").attributes(np.arange(600))["template"]
    assert set(train.tolist()) == set(S.TRAIN_TEMPLATES) and set(test.tolist()) == set(S.HELDOUT_TEMPLATES)
    assert not set(S.TRAIN_TEMPLATES) & set(S.HELDOUT_TEMPLATES)
    captions = load_dataset("shapes", split="train").get(np.arange(600))["caption"]
    assert len(set(captions)) > 500  # templates x synonyms x attributes give varied text
    assert any(c.startswith("top-left:") for c in captions) and any(" in the " in c for c in captions)


def test_bg_captions_name_the_background_that_is_drawn_and_touch_nothing_else():
    plain = load_dataset("shapes", split="train").get(np.arange(600))
    data = load_dataset("shapes", split="train", bg_captions=0.6)
    recap = data.get(np.arange(600))
    for k in ("shape", "color", "bg", "pos2"):  # the same scenes: only the wording changes
        assert torch.equal(plain["attrs"][k], recap["attrs"][k])
    assert torch.equal(plain["image"], recap["image"])
    t = data.attributes(np.arange(600))["template"]
    names = [any(f"{w} background" in c for w in S.BACKGROUND_WORDS[S.BACKGROUND_NAMES[b]])
        for c, b in zip(recap["caption"], recap["attrs"]["bg"].tolist())]
    stated = ["bg" in S.stated_attributes(int(k)) for k in t]
    assert names == stated  # a caption names the background exactly when its template says so, and names it right
    # 1/6 of plain captions (template 2) name it; with p=0.6 also 60% of the other five sixths: 2/3 in all
    assert abs(np.mean(stated) - (1 / 6 + 5 / 6 * 0.6)) < 0.06
    assert set(t.tolist()) == set(S.TRAIN_TEMPLATES) | set(S.RECAPTIONED.values())
    held = load_dataset("shapes", split="heldout", bg_captions=1.0).attributes(np.arange(300))["template"]
    assert set(held.tolist()) == set(S.HELDOUT_TEMPLATES)  # held-out phrasing is never recaptioned
    with pytest.raises(ImgenError, match="bg_captions is a probability"):
        load_dataset("shapes", bg_captions=1.5)


def test_captions_name_the_main_objects_attributes():
    batch = load_dataset("shapes", split="all").get(np.arange(400))
    synonyms_used = set()
    for caption, i in zip(batch["caption"], range(400)):
        at = {k: int(v[i]) for k, v in batch["attrs"].items()}
        words = S.COLOR_WORDS[S.COLOR_NAMES[at["color"]]]
        assert any(w in caption for w in words), caption
        assert any(w in caption for w in S.SHAPE_WORDS[S.SHAPES[at["shape"]]]), caption
        pos_words = S.POSITION_PHRASES[at["pos"]] + (S.POSITION_LABELS[at["pos"]],)
        assert any(w in caption for w in pos_words), caption
        synonyms_used.update(w for w in words if w in caption)
    assert len(synonyms_used) > 8  # synonyms, not just the canonical colour names


def test_make_caption_from_attributes():
    one = dict(shape=0, color=S.COLOR_NAMES.index("orange"), size=0, pos=0, bg=0)
    text = S.make_caption(one, template=0, variant=0)
    assert text.startswith(("a ", "an ")) and " a orange" not in text and "a orange" not in text
    assert any(p in text for p in S.POSITION_PHRASES[0])
    assert S.make_caption(one, template=1).startswith("top-left: ")
    two = dict(one, n_objects=2, shape2=3, color2=5, size2=1, pos2=8)
    text2 = S.make_caption(two, template=3, variant=2)
    assert any(w in text2 for w in S.SHAPE_WORDS["star"]) and any(w in text2 for w in S.POSITION_PHRASES[8])
    with pytest.raises(ImgenError, match="template 99"):
        S.make_caption(one, template=99)
    with pytest.raises(ImgenError, match="cannot caption"):
        S.make_caption(dict(shape=0, color=1), template=0)


def _alpha(img, bg):
    """Per-pixel distance from the background colour, (B, H, W)."""
    return (img - torch.as_tensor(bg)[None, :, None, None]).abs().sum(1)


@pytest.mark.parametrize("size", [32, 16])
def test_rendered_object_is_where_pos_says(size):
    ds = load_dataset("shapes", image_size=size, split="all", max_objects=1)
    batch = ds.get(np.arange(300))
    at, img = batch["attrs"], batch["image"]
    bg = S._BG_PALETTE[at["bg"].numpy()]
    ys, xs = torch.meshgrid(torch.arange(size) + 0.5, torch.arange(size) + 0.5, indexing="ij")
    cell = size / 3
    for i in range(len(img)):
        w = _alpha(img[i:i + 1], bg[i])[0]
        cy, cx = (w * ys).sum() / w.sum(), (w * xs).sum() / w.sum()
        row, col = divmod(int(at["pos"][i]), 3)
        assert abs(cx - (col + 0.5) * cell) < 0.12 * cell and abs(cy - (row + 0.5) * cell) < 0.12 * cell


def test_rendered_colours_areas_and_antialiasing():
    n = len(S.SHAPES)
    at = dict(shape=np.arange(n), color=np.arange(n), size=np.ones(n, int), pos=np.full(n, 4), bg=np.zeros(n, int))
    img = S.render_scenes(at, 32, supersample=8)
    coverage = _alpha(img, S._BG_PALETTE[0]) / _alpha(torch.from_numpy(S._PALETTE[:n, :, None, None]),
                                                        S._BG_PALETTE[0])[:, 0, 0][:, None, None]
    r = S.SIZE_RADIUS[1] * 32 / 3
    # 8x8 supersampled coverage integrates the exact areas: circle pi r^2, square (1.7 r)^2
    assert coverage[0].sum().item() == pytest.approx(np.pi * r * r, rel=0.02)
    side = 1.7 * r  # 8 samples per pixel count any interval's length to within 1/8 px
    assert coverage[1].sum().item() == pytest.approx(side ** 2, abs=2 * side / 8 + 1 / 64)
    # the object's centre pixel has exactly its palette colour; edges are blended (anti-aliased)
    for i in range(n):
        assert torch.allclose(img[i, :, 16, 16], torch.from_numpy(S._PALETTE[i]), atol=1e-6)
        partial = ((coverage[i] > 0.05) & (coverage[i] < 0.95)).sum()
        assert partial >= 8


@pytest.mark.parametrize("size", [32, 16])
def test_shapes_are_distinguishable(size):
    n = len(S.SHAPES)
    for s in (0, 1):
        at = dict(shape=np.arange(n), color=np.zeros(n, int), size=np.full(n, s), pos=np.full(n, 4))
        mask = _alpha(S.render_scenes(at, size), S._BG_PALETTE[0]) / 2  # coverage-like
        for a in range(n):
            for b in range(a + 1, n):
                diff = (mask[a] - mask[b]).abs().sum() / torch.maximum(mask[a].sum(), mask[b].sum())
                # every pair differs in >= 15% of its area (circle vs square, both round-ish, is the closest)
                assert diff > 0.15, (S.SHAPES[a], S.SHAPES[b], size, s)


def test_two_object_scenes_show_both_objects():
    at = dict(shape=[1], color=[0], size=[1], pos=[0], bg=[1], n_objects=[2], shape2=[0], color2=[5], size2=[1],
              pos2=[8])
    img = S.render_scenes(at, 32)[0]
    assert torch.allclose(img[:, 5, 5], torch.from_numpy(S._PALETTE[0]))
    assert torch.allclose(img[:, 26, 26], torch.from_numpy(S._PALETTE[5]))
    assert torch.allclose(img[:, 16, 16], torch.from_numpy(S._BG_PALETTE[1]))
    with pytest.raises(ImgenError, match="'color' has value"):
        S.render_scenes(dict(shape=[0], color=[8], size=[0], pos=[0]), 32)


# ---------------------------------------------------------------- digits
def test_digits_match_sklearn():
    from sklearn.datasets import load_digits

    ref = load_digits()
    ds = load_dataset("digits")
    batch = ds.get(np.arange(len(ds)))
    assert len(ds) == len(ref.images) and ds.channels == 1 and ds.image_size == 8 and ds.num_classes == 10
    assert torch.allclose(batch["image"][:, 0], torch.from_numpy((ref.images / 8 - 1).astype(np.float32)))
    assert batch["image"].min() == -1 and batch["image"].max() == 1
    assert torch.equal(batch["label"], torch.from_numpy(ref.target))
    train, test = load_dataset("digits", split="train"), load_dataset("digits", split="test")
    assert len(train) + len(test) == len(ref.images) and len(test) == round(0.2 * len(ref.images))
    assert torch.equal(test.get(np.arange(len(test)))["label"], torch.from_numpy(ref.target[len(train):]))


def test_digits_upsampling_is_bilinear():
    big = load_dataset("digits", image_size=32, split="test")
    small = load_dataset("digits", split="test")
    x = big.get(np.arange(4))["image"]
    assert x.shape == (4, 1, 32, 32) and x.min() >= -1 and x.max() <= 1
    # PIL's bilinear resize on float images uses the same pixel-centre convention
    ref = np.stack([np.asarray(Image.fromarray(a[0].numpy(), "F").resize((32, 32), Image.BILINEAR))
                    for a in small.get(np.arange(4))["image"]])
    assert np.abs(x[:, 0].numpy() - ref).max() < 1e-4


# ---------------------------------------------------------------- 2D toys
def test_eight_gaussians_match_their_mixture():
    ds = load_dataset("8gaussians", n=1000)
    batch = ds.get(np.arange(40000))
    x, label = batch["x"].double().numpy(), batch["label"].numpy()
    assert ds.means.shape == (8, 2) and np.allclose(ds.weights, 1 / 8) and ds.weights.sum() == pytest.approx(1)
    counts = np.bincount(label, minlength=8)
    assert np.all(np.abs(counts / len(x) - ds.weights) < 4 * np.sqrt(ds.weights * (1 - ds.weights) / len(x)))
    for k in range(8):
        xk = x[label == k]
        assert np.all(np.abs(xk.mean(0) - ds.means[k]) < 4 * ds.std / np.sqrt(len(xk)))
        assert xk.std(0) == pytest.approx([ds.std, ds.std], rel=0.05)
        assert np.argmin(((xk.mean(0) - ds.means) ** 2).sum(1)) == k
    # the nearest mean is the label for almost every point (components are well separated)
    nearest = np.argmin(((x[:, None] - ds.means[None]) ** 2).sum(-1), 1)
    assert (nearest == label).mean() > 0.99
    assert np.abs(x).max() < 3.5


def test_moons_and_swissroll_match_sklearn():
    from sklearn.datasets import make_moons, make_swiss_roll

    moons = load_dataset("moons").get(np.arange(20000))
    ref, ref_label = make_moons(20000, noise=0.1, random_state=0)
    ref = (ref - [0.5, 0.25]) * 2
    for k in (0, 1):
        ours = moons["x"].numpy()[moons["label"].numpy() == k]
        theirs = ref[ref_label == k]
        assert np.allclose(ours.mean(0), theirs.mean(0), atol=0.05)
        assert np.allclose(ours.std(0), theirs.std(0), atol=0.05)
    roll = load_dataset("swissroll").get(np.arange(20000))["x"].numpy()
    ref3, _ = make_swiss_roll(20000, noise=0.5, random_state=0)
    ref2 = ref3[:, [0, 2]] / 5
    assert np.allclose(roll.mean(0), ref2.mean(0), atol=0.05) and np.allclose(roll.std(0), ref2.std(0), atol=0.05)
    assert np.quantile(np.abs(roll), 0.999) < 3.2 and 0.5 < roll.std() < 2


def test_checkerboard_fills_only_the_dark_squares():
    x = load_dataset("checkerboard").get(np.arange(20000))["x"].numpy()
    assert x.min() >= -3 and x.max() < 3
    cells = np.floor(x / 1.5).astype(int) + 2  # 4x4 board
    parity = (cells[:, 0] + cells[:, 1]) % 2
    assert len(set(parity)) == 1
    counts = np.bincount(cells[:, 0] * 4 + cells[:, 1], minlength=16)
    occupied = counts[counts > 0]
    assert len(occupied) == 8 and occupied.min() > 0.9 * occupied.mean()


def test_toys_are_deterministic_streams():
    a = load_dataset("moons", seed=1).get(np.array([3, 10 ** 9]))
    b = load_dataset("moons", seed=1).get(np.array([10 ** 9, 3]))
    assert torch.equal(a["x"], b["x"].flip(0)) and torch.equal(a["label"], b["label"].flip(0))
    assert not torch.equal(a["x"], load_dataset("moons", seed=2).get(np.array([3, 10 ** 9]))["x"])


# ---------------------------------------------------------------- MNIST / Fashion-MNIST (IDX)
def _idx_bytes(arr: np.ndarray) -> bytes:
    return struct.pack(">BBBB", 0, 0, 0x08, arr.ndim) + struct.pack(f">{arr.ndim}I", *arr.shape) + arr.tobytes()


def _write_mnist(folder, n=6, gz=True, rng=np.random.default_rng(0)):
    folder.mkdir(parents=True, exist_ok=True)
    data = {}
    for split, prefix in (("train", "train"), ("test", "t10k")):
        images = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
        labels = rng.integers(0, 10, n).astype(np.uint8)
        for stem, arr in ((f"{prefix}-images-idx3-ubyte", images), (f"{prefix}-labels-idx1-ubyte", labels)):
            raw = _idx_bytes(arr)
            if gz:
                (folder / (stem + ".gz")).write_bytes(gzip.compress(raw))
            else:
                (folder / stem).write_bytes(raw)
        data[split] = images, labels
    return data


@pytest.mark.parametrize("gz", [True, False])
def test_mnist_reads_idx_files(tmp_path, gz):
    data = _write_mnist(tmp_path, gz=gz)
    for split in ("train", "test"):
        ds = load_dataset("mnist", path=str(tmp_path), split=split)
        batch = ds.get(np.arange(len(ds)))
        images, labels = data[split]
        assert len(ds) == 6 and ds.channels == 1 and ds.image_size == 28 and ds.num_classes == 10
        assert torch.allclose(batch["image"][:, 0], torch.from_numpy(images).float() / 127.5 - 1)
        assert torch.equal(batch["label"], torch.from_numpy(labels.astype(np.int64)))
    big = load_dataset("mnist", path=tmp_path, image_size=32)
    assert big.get(np.arange(2))["image"].shape == (2, 1, 32, 32)


def test_fashion_mnist_in_raw_subfolder(tmp_path):
    _write_mnist(tmp_path / "raw")
    ds = load_dataset("fashion-mnist", path=tmp_path, split="test")
    assert ds.name == "fashion-mnist" and ds.class_names[9] == "Ankle boot" and len(ds) == 6


def test_idx_errors_name_the_file_and_the_fix(tmp_path):
    with pytest.raises(ImgenError, match=r"train-images-idx3-ubyte.*not found.*download=True"):
        load_dataset("mnist", path=tmp_path)
    _write_mnist(tmp_path, gz=False)
    f = tmp_path / "train-images-idx3-ubyte"
    f.write_bytes(f.read_bytes()[:-100])
    with pytest.raises(ImgenError, match=r"train-images-idx3-ubyte is truncated.*ossci"):
        load_dataset("mnist", path=tmp_path)
    f.write_bytes(b"GIF89a" + bytes(100))
    with pytest.raises(ImgenError, match="not an IDX file"):
        read_idx(f)
    g = tmp_path / "cut.gz"
    g.write_bytes(gzip.compress(_idx_bytes(np.zeros((4, 28, 28), np.uint8)))[:-30])
    with pytest.raises(ImgenError, match="cut.gz is truncated or corrupt"):
        read_idx(g)
    (tmp_path / "t10k-labels-idx1-ubyte").write_bytes(_idx_bytes(np.zeros(3, np.uint8)))
    with pytest.raises(ImgenError, match="labels of shape"):
        load_dataset("mnist", path=tmp_path, split="test")


def test_download_without_network_says_where_to_put_files(tmp_path, monkeypatch):
    def offline(*args, **kwargs):
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(urllib.request, "urlopen", offline)
    with pytest.raises(ImgenError, match=r"could not download .*train-images-idx3-ubyte.gz.*put them in"):
        load_dataset("mnist", path=tmp_path / "m", download=True)
    with pytest.raises(ImgenError, match=r"could not download .*cifar-10-python.tar.gz.*cifar-10-batches-py"):
        load_dataset("cifar10", path=tmp_path / "c", download=True)
    assert not list(tmp_path.rglob("*.part"))


# ---------------------------------------------------------------- CIFAR-10
def _write_cifar(folder, n=3):
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(1)
    out = {}
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        data = rng.integers(0, 256, (n, 3072), dtype=np.uint8)
        labels = rng.integers(0, 10, n).tolist()
        with open(folder / name, "wb") as f:
            pickle.dump({b"batch_label": b"x", b"labels": labels, b"data": data, b"filenames": [b"a"] * n}, f,
                        protocol=2)
        out[name] = data, labels
    return out


def test_cifar10_reads_python_batches(tmp_path):
    written = _write_cifar(tmp_path / "cifar-10-batches-py")
    ds = load_dataset("cifar10", path=tmp_path)
    assert len(ds) == 15 and ds.channels == 3 and ds.image_size == 32 and ds.class_names[0] == "airplane"
    batch = ds.get(np.arange(15))
    data, labels = written["data_batch_2"]
    # each row is the 1024 red, then green, then blue values of a 32x32 image, row-major
    k, c, y, x = 4, 2, 7, 30  # image 1 of data_batch_2 is item 4
    assert batch["image"][k, c, y, x].item() == pytest.approx(data[1, c * 1024 + y * 32 + x] / 127.5 - 1)
    assert batch["label"][3:6].tolist() == labels
    test = load_dataset("cifar10", path=tmp_path / "cifar-10-batches-py", split="test")
    assert len(test) == 3


def test_cifar10_refuses_unsafe_or_corrupt_pickles(tmp_path):
    _write_cifar(tmp_path)
    marker = tmp_path / "pwned"

    class Exploit:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    with open(tmp_path / "test_batch", "wb") as f:
        pickle.dump({b"data": Exploit()}, f)
    with pytest.raises(ImgenError, match=r"test_batch is not a readable CIFAR-10 batch.*not allowed"):
        load_dataset("cifar10", path=tmp_path, split="test")
    assert not marker.exists()
    good = (tmp_path / "data_batch_3").read_bytes()
    (tmp_path / "data_batch_3").write_bytes(good[: len(good) // 2])
    with pytest.raises(ImgenError, match="data_batch_3 is not a readable CIFAR-10 batch"):
        load_dataset("cifar10", path=tmp_path)
    (tmp_path / "data_batch_3").unlink()
    with pytest.raises(ImgenError, match="data_batch_3 not found.*cifar-10-python.tar.gz"):
        load_dataset("cifar10", path=tmp_path)
    with open(tmp_path / "data_batch_1", "wb") as f:
        pickle.dump({b"data": np.zeros((2, 10), np.uint8), b"labels": [0, 1]}, f)
    with pytest.raises(ImgenError, match=r"'data' is not an \(N, 3072\) uint8 array"):
        read_cifar_batch(tmp_path / "data_batch_1")


# ---------------------------------------------------------------- image folders
def _png(path, mode="RGB", size=(8, 8), value=100):
    path.parent.mkdir(parents=True, exist_ok=True)
    color = value if mode in ("L", "1") else tuple([value] * len(mode))
    Image.new(mode, size, color).save(path)


def test_folder_labels_captions_and_skipped_files(tmp_path):
    _png(tmp_path / "cat" / "a.png", value=10)
    _png(tmp_path / "cat" / "b.jpg", value=200)
    _png(tmp_path / "dog" / "sub" / "c.png", value=30)
    (tmp_path / "dog" / "notes.txt").write_text("not an image")
    (tmp_path / ".hidden.png").write_bytes(b"junk")
    lines = [{"file": "cat/a.png", "caption": "a dark cat"}, {"file": "cat/b.jpg", "caption": "a light cat"},
             {"file": "dog/sub/c.png", "caption": "a dog"}]
    (tmp_path / "captions.jsonl").write_text("\n".join(json.dumps(x) for x in lines) + "\n")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # uniform RGB: no conversion warning
        ds = load_dataset("folder", path=tmp_path)
    batch = ds.get(np.arange(3))
    assert ds.files == ["cat/a.png", "cat/b.jpg", "dog/sub/c.png"] and ds.class_names == ["cat", "dog"]
    assert batch["label"].tolist() == [0, 0, 1] and batch["caption"] == ["a dark cat", "a light cat", "a dog"]
    assert batch["image"].shape == (3, 3, 8, 8)
    assert batch["image"][0, 0, 0, 0].item() == pytest.approx(10 / 127.5 - 1)
    assert abs(batch["image"][1].mean().item() - (200 / 127.5 - 1)) < 0.05  # jpeg is lossy


def test_folder_mixed_modes_are_converted_with_a_warning(tmp_path):
    _png(tmp_path / "g.png", "L", value=50)
    _png(tmp_path / "c.png", "RGBA", value=90)
    with pytest.warns(UserWarning, match=r"modes \['L', 'RGBA'\]; converted all to RGB"):
        ds = load_dataset("folder", path=tmp_path)
    x = ds.get(np.arange(2))["image"]
    assert ds.channels == 3 and ds.class_names is None and "label" not in ds.get(np.arange(1))
    assert torch.allclose(x[1], torch.full((3, 8, 8), 50 / 127.5 - 1))  # sorted: c.png, g.png; grey -> equal RGB
    gray = tmp_path / "gray"
    _png(gray / "a.png", "L", value=1)
    _png(gray / "b.png", "1", value=1)
    with pytest.warns(UserWarning, match="converted all to L"):
        assert load_dataset("folder", path=gray).channels == 1


def test_folder_mixed_sizes_need_image_size(tmp_path):
    _png(tmp_path / "a.png", size=(8, 8))
    _png(tmp_path / "b.png", size=(12, 10))
    with pytest.raises(ImgenError, match=r"different sizes \(8x8 e.g. a.png, 12x10 e.g. b.png\).*image_size="):
        load_dataset("folder", path=tmp_path)
    ds = load_dataset("folder", path=tmp_path, image_size=16)
    x = ds.get(np.arange(2))["image"]
    assert x.shape == (2, 3, 16, 16) and torch.allclose(x, torch.full_like(x, 100 / 127.5 - 1), atol=1e-2)


def test_folder_errors_name_the_file_and_the_fix(tmp_path):
    with pytest.raises(ImgenError, match="cannot be downloaded"):
        load_dataset("folder", path=tmp_path, download=True)
    with pytest.raises(ImgenError, match="is not a directory"):
        load_dataset("folder", path=tmp_path / "missing")
    (tmp_path / "readme.txt").write_text("hi")
    with pytest.raises(ImgenError, match="no images .* found under"):
        load_dataset("folder", path=tmp_path)
    _png(tmp_path / "ok.png", size=(32, 32))
    noise = Image.fromarray(np.random.default_rng(0).integers(0, 256, (32, 32, 3), dtype=np.uint8))
    noise.save(tmp_path / "cut.png")
    (tmp_path / "cut.png").write_bytes((tmp_path / "cut.png").read_bytes()[:300])
    with pytest.raises(ImgenError, match=r"cut.png is truncated or corrupt.*remove it"):
        load_dataset("folder", path=tmp_path)
    (tmp_path / "cut.png").write_bytes(b"this is text, not a png")
    with pytest.raises(ImgenError, match=r"cut.png is not a readable image"):
        load_dataset("folder", path=tmp_path)
    (tmp_path / "cut.png").unlink()
    (tmp_path / "captions.jsonl").write_text('{"file": "ok.png", "caption": "fine"}\n{"file": oops}\n')
    with pytest.raises(ImgenError, match=r"captions.jsonl line 2 is not a JSON object"):
        load_dataset("folder", path=tmp_path)
    _png(tmp_path / "other.png", size=(32, 32))
    (tmp_path / "captions.jsonl").write_text('{"file": "ok.png", "caption": "fine"}\n')
    with pytest.raises(ImgenError, match=r"no caption for 1 image\(s\), e.g. other.png"):
        load_dataset("folder", path=tmp_path)
