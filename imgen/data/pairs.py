"""Fixed (noise, sample) couplings drawn from a trained flow by its ODE (imgen.recipes.reflow.make_reflow_pairs), for reflow (Liu et al. 2023, sec. 2.2,
Algorithm 1: "draw (X0, X1) ~ (Z0^k, Z1^k)" of the k-th rectified flow).

A pair file is one safetensors file: `noise` (N, *shape), `sample` (N, *shape) = ODE(noise), optional `label` (N,),
and metadata naming the teacher and the sampler. `load_dataset("pairs", path=...)` serves it with the usual
dataset contract plus the pair's noise: get(idx) -> dict(image | x, noise, label?).
"""
from __future__ import annotations

from pathlib import Path

import torch

from imgen.checkpoint import load_tensors, save_tensors
from imgen.data.base import as_index
from imgen.errors import ImgenError


class PairDataset:
    """In-memory (noise, sample) pairs; item i is (noise[i], sample[i], label[i]) whatever batch it is drawn in."""

    infinite = False
    name = "pairs"

    def __init__(self, noise: torch.Tensor, sample: torch.Tensor, label: torch.Tensor | None = None,
                 meta: dict | None = None):
        if noise.shape != sample.shape or noise.ndim not in (2, 4) or len(noise) == 0:
            raise ImgenError(f"pairs: noise {tuple(noise.shape)} and sample {tuple(sample.shape)} must share one shape, "
                             "(N, 2) points or (N, C, H, W) images, N >= 1; rebuild them with make_reflow_pairs")
        if label is not None and label.shape != (len(noise),):
            raise ImgenError(f"pairs: label shape {tuple(label.shape)} must be ({len(noise)},); "
                             "rebuild them with make_reflow_pairs")
        self.noise, self.sample = noise.float().contiguous(), sample.float().contiguous()
        self.label = None if label is None else label.long()
        self.meta = dict(meta or {})
        self.num_classes = self.meta.get("num_classes") if self.label is not None else None
        self.class_names = None if self.num_classes is None else [str(i) for i in range(self.num_classes)]
        self.is_image = noise.ndim == 4
        self.channels = noise.shape[1]  # the point dimension for 2D toys, as ToyDataset
        self.image_size = noise.shape[-1] if self.is_image else None
        if not self.is_image:
            self.dim = noise.shape[1]

    def __len__(self) -> int:
        return len(self.noise)

    def __repr__(self) -> str:
        return f"PairDataset(n={len(self)}, shape={tuple(self.noise.shape[1:])}, num_classes={self.num_classes})"

    def get(self, idx) -> dict:
        i = torch.from_numpy(as_index(idx, len(self), self.name))
        out = {"image" if self.is_image else "x": self.sample[i], "noise": self.noise[i]}
        if self.label is not None:
            out["label"] = self.label[i]
        return out

    def save(self, path: str | Path) -> None:
        tensors = {"noise": self.noise, "sample": self.sample}
        if self.label is not None:
            tensors["label"] = self.label
        save_tensors(tensors, path, self.meta)


def pairs(path: str) -> PairDataset:
    """Load a pair file written by `make_reflow_pairs(...).save(path)`."""
    tensors, meta = load_tensors(path, with_metadata=True)
    if "noise" not in tensors or "sample" not in tensors:
        raise ImgenError(f"{path!r} is not a reflow pair file (needs 'noise' and 'sample' tensors); "
                         "write one with imgen.recipes.reflow.make_reflow_pairs(model, n, path=path)")
    return PairDataset(tensors["noise"], tensors["sample"], tensors.get("label"), meta)
