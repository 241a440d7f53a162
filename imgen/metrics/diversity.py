"""Within-class diversity and a mode-collapse warning for generators (a collapsed GAN draws near-copies of one image
per class, which a classifier's accuracy alone does not see).

    diversity_ratio(samples, labels, real, real_labels)   mean within-class pairwise pixel distance of the samples
                                                          over that of real images (1: as varied as the data)
    mode_collapse_warning(ratio)                          a one-line warning below MODE_COLLAPSE_RATIO, else None
"""
from __future__ import annotations

import torch

from imgen.errors import ImgenError

MODE_COLLAPSE_RATIO = 0.5


def within_class_diversity(x: torch.Tensor, labels: torch.Tensor | None = None) -> float:
    """Mean pairwise L2 distance between images of the same class (flattened), averaged over the classes with at
    least two images; labels None: one class."""
    x = torch.as_tensor(x, dtype=torch.float64).flatten(1)
    labels = torch.zeros(len(x), dtype=torch.long) if labels is None else torch.as_tensor(labels).reshape(-1)
    if len(labels) != len(x):
        raise ImgenError(f"got {len(labels)} labels for {len(x)} images; give one label per image")
    means = []
    for c in labels.unique():
        xc = x[labels == c]
        if len(xc) >= 2:
            d = torch.cdist(xc, xc)
            means.append(d.sum() / (len(xc) * (len(xc) - 1)))  # the diagonal is zero: mean over distinct pairs
    if not means:
        raise ImgenError("within-class diversity needs at least two images of one class; sample more images")
    return float(torch.stack(means).mean())


def diversity_ratio(samples: torch.Tensor, labels, real: torch.Tensor, real_labels=None) -> float:
    """within_class_diversity(samples) / within_class_diversity(real); images at one resolution."""
    if tuple(samples.shape[1:]) != tuple(real.shape[1:]):
        raise ImgenError(f"samples {tuple(samples.shape[1:])} and real images {tuple(real.shape[1:])} differ in shape")
    return within_class_diversity(samples, labels) / within_class_diversity(real, real_labels)


def mode_collapse_warning(ratio: float, threshold: float = MODE_COLLAPSE_RATIO) -> str | None:
    if ratio >= threshold:
        return None
    return (f"possible mode collapse: within-class diversity is {ratio:.2f} of the real data's (< {threshold}); "
            "train longer, lower the learning rate, or use a gradient penalty / spectral norm")


def model_diversity_ratio(model, samples: torch.Tensor, labels=None) -> float | None:
    """diversity_ratio of a model's samples against its own training data (config.data); None when no class has
    two samples. `labels`: the samples' requested labels (None for an unconditional model)."""
    import numpy as np

    from imgen.data import load_dataset

    ds = load_dataset(model.config.data.name, **model.config.data.options)
    real = ds.get(np.arange(min(len(ds), 2000)))
    real_labels = real.get("label") if labels is not None else None
    try:
        return diversity_ratio(samples, labels, real["image"], real_labels)
    except ImgenError:
        return None
