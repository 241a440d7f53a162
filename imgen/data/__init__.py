"""Datasets: every one answers len(ds) and ds.get(idx) -> dict(image=(B, C, H, W) float32 in [-1, 1] | x=(B, 2),
label?, caption?, attrs?), and has num_classes, class_names, channels, image_size, name.

`load_dataset(name, **options)` is the one factory the CLI and configs use; `list_datasets()` names them.
"""
from __future__ import annotations

import inspect

from imgen.data.base import ArrayDataset
from imgen.data.builtin import digits
from imgen.data.files import cifar10, fashion_mnist, image_folder, mnist
from imgen.data.masks import ShapesInpaint
from imgen.data.pairs import pairs
from imgen.data.shapes import ShapesDataset
from imgen.data.translation import ShapesControl, ShapesDomains, ShapesPairs
from imgen.data.toys import ToyDataset, checkerboard, eight_gaussians, swiss_roll, two_moons
from imgen.errors import ImgenError

DATASETS = {
    "shapes": ShapesDataset,
    "digits": digits,
    "moons": two_moons,
    "8gaussians": eight_gaussians,
    "swissroll": swiss_roll,
    "checkerboard": checkerboard,
    "mnist": mnist,
    "fashion-mnist": fashion_mnist,
    "cifar10": cifar10,
    "folder": image_folder,
    "pairs": pairs,  # reflow (noise, sample) couplings
    "shapes-pairs": ShapesPairs,  # (label map, image) pairs for pix2pix
    "shapes-domains": ShapesDomains,  # unpaired background domains for CycleGAN
    "shapes-control": ShapesControl,  # (image, caption, label map) for ControlNet
    "shapes-inpaint": ShapesInpaint,  # (image, caption, hole mask) for an inpainting model
}


def list_datasets() -> list[str]:
    """Names accepted by load_dataset."""
    return list(DATASETS)


def load_dataset(name: str, **options):
    """Build the dataset `name` with keyword `options` (see each constructor for the ones it takes)."""
    key = str(name).strip().lower().replace("_", "-")
    if key not in DATASETS:
        raise ImgenError(f"unknown dataset {name!r}; valid names: {', '.join(DATASETS)}")
    build = DATASETS[key]
    valid = list(inspect.signature(build).parameters)
    for option in options:
        if option not in valid:
            raise ImgenError(f"dataset {key!r} has no option {option!r}; valid options: {', '.join(valid)}")
    return build(**options)


__all__ = ["ArrayDataset", "DATASETS", "ShapesDataset", "ToyDataset", "checkerboard", "cifar10", "digits",
           "eight_gaussians", "fashion_mnist", "image_folder", "list_datasets", "load_dataset", "mnist",
           "swiss_roll", "two_moons"]
