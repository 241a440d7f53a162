"""Built-in datasets that need no files: scikit-learn's 8x8 digits (shapes and 2D toys live in their own modules)."""
from __future__ import annotations

import torch

from imgen.data.base import ArrayDataset, check_choice, check_image_size

DIGITS_TEST_FRACTION = 0.2  # split="test" is the last 20% of the 1797 images, split="train" the rest


def digits(split: str = "all", image_size: int | None = None) -> ArrayDataset:
    """scikit-learn's bundled 8x8 handwritten digits (1797 images, no download), grey values 0..16 -> [-1, 1].

    `image_size` upsamples bilinearly (e.g. 16 or 32); `split` is "all", "train" (first 80%) or "test" (last 20%).
    """
    from sklearn.datasets import load_digits

    check_choice(split, ("all", "train", "test"), "split", "digits")
    image_size = check_image_size(image_size, "digits")
    bunch = load_digits()
    images = torch.from_numpy(bunch.images).float()[:, None] / 8.0 - 1.0  # (1797, 1, 8, 8), 0..16 -> [-1, 1]
    labels = bunch.target
    n_train = len(images) - round(DIGITS_TEST_FRACTION * len(images))
    part = {"all": slice(None), "train": slice(0, n_train), "test": slice(n_train, None)}[split]
    return ArrayDataset("digits", images[part].contiguous(), labels[part], class_names=[str(d) for d in range(10)],
                        image_size=image_size)
