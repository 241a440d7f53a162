"""What every imgen dataset shares: index checking, a counter-based RNG, and an in-memory image dataset.

The dataset contract (other code relies on it):
    len(ds); ds.get(idx) with idx a 1-D int array/LongTensor -> dict(image=(B, C, H, W) float32 in [-1, 1]
    | x=(B, 2) for 2D toys, label?=(B,) int64, caption?=list[str], attrs?=dict[str, (B,) int64]);
    attributes num_classes, class_names, channels, image_size, name.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from imgen.errors import ImgenError
from imgen.images import from_uint8, to_uint8


def as_index(idx, n: int | None, name: str) -> np.ndarray:
    """Check a batch index and return it as a 1-D int64 array; `n=None` means any index >= 0 is valid."""
    if isinstance(idx, torch.Tensor):
        idx = idx.detach().cpu().numpy()
    idx = np.asarray(idx)
    if idx.ndim != 1 or not (np.issubdtype(idx.dtype, np.integer) or idx.size == 0):
        raise ImgenError(f"{name}: get() needs a 1-D integer index array, got shape {idx.shape} dtype {idx.dtype}; "
                         "pass e.g. np.arange(16) or torch.arange(16)")
    idx = idx.astype(np.int64)
    if idx.size and (idx.min() < 0 or (n is not None and idx.max() >= n)):
        bound = "any index >= 0" if n is None else f"indices in [0, {n})"
        raise ImgenError(f"{name}: index {int(idx.min() if idx.min() < 0 else idx.max())} is out of range; "
                         f"this dataset takes {bound}")
    return idx


# ---- counter-based RNG: item i is a pure function of (seed, i), whatever batch it is drawn in ----
_GOLDEN = np.uint64(0x9E3779B97F4A7C15)


def _splitmix64(z: np.ndarray) -> np.ndarray:
    # SplitMix64 finaliser (Steele, Lea & Flood 2014), vectorised; uint64 arithmetic wraps by design.
    z = z + _GOLDEN
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


def hash_uniform(seed: int, idx: np.ndarray, stream: int) -> np.ndarray:
    """Uniform floats in [0, 1), one per index: a pure function of (seed, idx, stream)."""
    with np.errstate(over="ignore"):
        key = _splitmix64(np.array([seed & 0xFFFFFFFFFFFFFFFF], dtype=np.uint64))
        z = _splitmix64(key + np.asarray(idx, dtype=np.int64).astype(np.uint64))
        z = _splitmix64(z + np.uint64(stream))
    return (z >> np.uint64(11)).astype(np.float64) * 2.0 ** -53


def hash_normal(seed: int, idx: np.ndarray, stream: int) -> np.ndarray:
    """Standard normals via Box-Muller on two hash_uniform streams (uses streams `stream` and `stream + 1`)."""
    u1 = 1.0 - hash_uniform(seed, idx, stream)  # in (0, 1], so log is finite
    u2 = hash_uniform(seed, idx, stream + 1)
    return np.sqrt(-2.0 * np.log(u1)) * np.cos(2.0 * np.pi * u2)


def resize_images(x: torch.Tensor, size: int) -> torch.Tensor:
    """(N, C, H, W) in [-1, 1] -> (N, C, size, size), bilinear (antialiased when shrinking)."""
    if x.shape[-2:] == (size, size):
        return x
    shrink = size < max(x.shape[-2:])
    return F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=shrink).clamp(-1, 1)


def check_image_size(image_size, name: str) -> int | None:
    if image_size is None:
        return None
    if isinstance(image_size, bool) or not isinstance(image_size, (int, np.integer)) or not 4 <= image_size <= 1024:
        raise ImgenError(f"{name}: image_size must be an integer in [4, 1024], got {image_size!r}; e.g. image_size=32")
    return int(image_size)


def check_choice(value, choices, what: str, name: str):
    if value not in choices:
        raise ImgenError(f"{name}: {what} must be one of {list(choices)}, got {value!r}")
    return value


class ArrayDataset:
    """A finite in-memory image dataset.

    `images` is either uint8 (N, H, W, C) numpy (converted per batch, 4x less memory) or a float32
    (N, C, H, W) tensor in [-1, 1]. Optional int labels (N,) and captions (N strings).
    """

    infinite = False

    def __init__(self, name: str, images, labels=None, captions=None, class_names=None, image_size=None):
        if image_size is not None:  # resize once, keep the compact storage
            as_float = images if isinstance(images, torch.Tensor) else from_uint8(images)
            resized = resize_images(as_float, image_size)
            images = resized if isinstance(images, torch.Tensor) else to_uint8(resized)
        self.name = name
        self.images = images
        self.labels = None if labels is None else torch.as_tensor(np.asarray(labels), dtype=torch.int64)
        self.captions = None if captions is None else list(captions)
        self.class_names = None if class_names is None else list(class_names)
        self.num_classes = None if class_names is None else len(self.class_names)
        if isinstance(images, torch.Tensor):
            _, self.channels, h, w = images.shape
        else:
            _, h, w, self.channels = images.shape
        self.image_size = h if h == w else (h, w)

    def __len__(self) -> int:
        return len(self.images)

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(name={self.name!r}, n={len(self)}, channels={self.channels}, "
                f"image_size={self.image_size}, num_classes={self.num_classes})")

    def get(self, idx) -> dict:
        idx = as_index(idx, len(self), self.name)
        if isinstance(self.images, torch.Tensor):
            image = self.images[torch.from_numpy(idx)]
        else:
            image = from_uint8(self.images[idx])
        out = {"image": image}
        if self.labels is not None:
            out["label"] = self.labels[torch.from_numpy(idx)]
        if self.captions is not None:
            out["caption"] = [self.captions[i] for i in idx]
        return out


def caption_corpus(dataset, n: int = 4096) -> list[str]:
    """The captions of the first `n` items (all of a smaller dataset), e.g. to build a tokenizer's vocabulary."""
    idx = np.arange(n if getattr(dataset, "infinite", False) else min(n, len(dataset)))
    if hasattr(dataset, "captions") and callable(dataset.captions):
        return list(dataset.captions(idx))
    captions = dataset.get(idx).get("caption")
    if captions is None:
        raise ImgenError(f"dataset {getattr(dataset, 'name', dataset)!r} has no captions, so it cannot train a "
                         "text-to-image model; use 'shapes' or an image folder with captions.jsonl")
    return list(captions)
