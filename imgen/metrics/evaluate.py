"""Evaluate a set of generated images against a reference set: image sources, one feature pass per set,
and the metrics by name. Every feature-based key names its feature space: fid[inception], kid[digits-eval].

Sources: a tensor, a folder of images (read by imgen.data's folder loader), a model directory (config.json
present: imgen.load(dir).sample(n)), or a built-in dataset name ("digits", "shapes", "mnist", ...).
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import torch

from imgen.errors import ImgenError
from imgen.metrics.features import cached_extract, extract, get_extractor
from imgen.metrics.fid import fid_from_stats
from imgen.metrics.inception_score import inception_score
from imgen.metrics.kid import kid
from imgen.metrics.perceptual import perceptual_distance
from imgen.metrics.precision_recall import manifold_metrics
from imgen.metrics.psnr_ssim import psnr, ssim

FEATURE_METRICS = ("fid", "kid", "is", "pr")
PAIRED_METRICS = ("psnr", "ssim", "perceptual")
METRICS = FEATURE_METRICS + PAIRED_METRICS
DEFAULT_FEATURES = {"digits": "digits-eval", "shapes": "shapes-eval"}


@dataclass
class ImageSource:
    """`n` images delivered in batches by `batches(batch_size)`; `cache_key` is set for fixed datasets."""

    description: str
    n: int
    batches: Callable[[int], Iterator[torch.Tensor]]
    cache_key: str | None = None
    dataset: str | None = None  # built-in dataset name, to pick default features


def tensor_source(images: torch.Tensor, description: str = "tensor") -> ImageSource:
    images = torch.as_tensor(images)
    if images.ndim != 4 or images.shape[0] == 0:
        raise ImgenError(f"{description}: expected a non-empty (N, C, H, W) image tensor, got {tuple(images.shape)}")
    return ImageSource(description, images.shape[0],
                       lambda bs: (images[i:i + bs] for i in range(0, images.shape[0], bs)))


def dataset_source(ds, description: str, cache_key: str | None = None, n: int | None = None,
                   dataset: str | None = None) -> ImageSource:
    n = min(len(ds), n) if n else len(ds)

    def batches(bs):
        for i in range(0, n, bs):
            yield ds.get(np.arange(i, min(i + bs, n)))["image"]

    return ImageSource(description, n, batches, cache_key, dataset)


def model_source(model_dir: Path, n: int, seed: int) -> ImageSource:
    import imgen

    model = imgen.load(model_dir)

    def batches(bs):
        for b, i in enumerate(range(0, n, bs)):
            yield model.sample(min(bs, n - i), seed=seed + b).float()

    return ImageSource(f"model {model_dir} ({n} samples, seed {seed})", n, batches)


def resolve_source(spec, n: int | None = None, split: str | None = None, image_size: int | None = None,
                   seed: int = 0, role: str = "generated") -> ImageSource:
    """A tensor, a folder, a model directory, or a built-in dataset name -> ImageSource."""
    if isinstance(spec, torch.Tensor):
        return tensor_source(spec, role)
    from imgen.data import DATASETS, load_dataset

    path = Path(str(spec)).expanduser()
    if path.is_dir():
        if (path / "config.json").is_file():
            return model_source(path, n or 1000, seed)
        opts = {"image_size": image_size} if image_size else {}
        try:
            ds = load_dataset("folder", path=str(path), **opts)
        except ImgenError as e:
            hint = " (imgen eval: --image-size N)" if "image_size=" in str(e) else ""
            raise ImgenError(f"{role}: {e}{hint}") from None
        return dataset_source(ds, f"folder {path}", n=n)
    if path.exists():
        raise ImgenError(f"{role} {spec!r} is a file; give a folder of images, a model directory, or a dataset name")
    name = str(spec).strip().lower()
    if name in DATASETS and name not in ("folder",):
        opts = {}
        if split:
            opts["split"] = split
        if image_size:
            opts["image_size"] = image_size
        if name == "shapes":
            opts["n"] = n or 10000
        ds = load_dataset(name, **opts)
        if not hasattr(ds, "channels") or getattr(ds, "image_size", None) is None:
            raise ImgenError(f"{role} {spec!r} is a 2-D toy dataset, not images; give an image dataset or folder")
        key = f"{name}-split={split or 'default'}-size={image_size or 'native'}-n={n or len(ds)}"
        return dataset_source(ds, f"dataset {name}" + (f" ({split})" if split else ""), key, n, dataset=name)
    raise ImgenError(f"{role} {spec!r} is neither a folder, a model directory (with config.json), nor a built-in "
                     f"dataset ({', '.join(k for k in DATASETS if k != 'folder')}); check the path")


def default_features(*sources: ImageSource) -> str:
    for s in sources:
        if s.dataset in DEFAULT_FEATURES:
            return DEFAULT_FEATURES[s.dataset]
    return "inception"


def check_metrics(metrics) -> list[str]:
    metrics = [m.strip().lower() for m in (metrics.split(",") if isinstance(metrics, str) else metrics) if m.strip()]
    bad = [m for m in metrics if m not in METRICS]
    if bad or not metrics:
        raise ImgenError(f"unknown metrics {bad or metrics}; choose from {', '.join(METRICS)} (comma separated)")
    return metrics


def evaluate(generated: ImageSource, reference: ImageSource, metrics=("fid", "kid", "pr"), features: str | None = None,
             weights: str | None = None, download: bool = False, batch_size: int = 100, kid_subsets: int = 100,
             kid_subset_size: int = 1000, is_splits: int = 10, k: int = 3, seed: int = 0, use_cache: bool = True,
             progress: bool = True) -> dict:
    """Compute `metrics` of `generated` against `reference`; returns {"metrics": {key: value}, ...run facts}."""
    metrics = check_metrics(metrics)
    features = features or default_features(reference, generated)
    out: dict[str, float] = {}
    t0 = time.perf_counter()
    feature_metrics = [m for m in metrics if m in FEATURE_METRICS]
    extractor = None
    if feature_metrics or "perceptual" in metrics:
        extractor = get_extractor(features, weights, download)
    if feature_metrics:
        keep = any(m in ("kid", "pr") for m in feature_metrics)
        gen = extract(extractor, generated.batches(batch_size), generated.n, keep_features=keep,
                      keep_logits="is" in feature_metrics, progress=progress, desc="generated")
        ref = None
        if any(m in ("fid", "kid", "pr") for m in feature_metrics):
            if reference.cache_key:
                ref = cached_extract(reference.cache_key, extractor, lambda: reference.batches(batch_size),
                                     reference.n, use_cache, progress)
            else:
                ref = extract(extractor, reference.batches(batch_size), reference.n, keep_features=keep,
                              progress=progress, desc="reference")
        if ref is not None and ref.stats.dim != gen.stats.dim:
            raise ImgenError(f"generated and reference {extractor.name} features differ in size ({gen.stats.dim} vs "
                             f"{ref.stats.dim}): the images differ in size or channels; resize one set to the other "
                             "(--image-size) or use features that resize for you (inception, digits-eval, shapes-eval)")
        tag = f"[{extractor.name}]"
        if "fid" in feature_metrics:
            out["fid" + tag] = fid_from_stats(gen.stats, ref.stats, extractor.name)
        if "kid" in feature_metrics:
            out["kid" + tag], out["kid_std" + tag] = kid(ref.features, gen.features, kid_subsets, kid_subset_size, seed)
        if "is" in feature_metrics:
            if gen.logits is None:
                raise ImgenError(f"Inception Score needs class logits, which features {extractor.name!r} lack; "
                                 "use --features inception, digits-eval or shapes-eval")
            out["is" + tag], out["is_std" + tag] = inception_score(gen.logits, is_splits, seed)
        if "pr" in feature_metrics:
            for name, value in manifold_metrics(ref.features, gen.features, k).items():
                out[name + tag] = value
    paired = [m for m in metrics if m in PAIRED_METRICS]
    if paired:
        out.update(_paired_metrics(generated, reference, paired, extractor, batch_size))
    seconds = time.perf_counter() - t0
    return {"metrics": out, "features": features if extractor else None,
            "fingerprint": getattr(extractor, "fingerprint", None), "n_generated": generated.n,
            "n_reference": reference.n, "generated": generated.description, "reference": reference.description,
            "seconds": round(seconds, 3), "images_per_second": round((generated.n + reference.n) / seconds, 1)}


def _paired_metrics(generated: ImageSource, reference: ImageSource, metrics, extractor, batch_size) -> dict:
    """PSNR / SSIM / perceptual distance of generated[i] against reference[i] (same count and size)."""
    if generated.n != reference.n:
        raise ImgenError(f"{', '.join(metrics)} compare image pairs, so both sets need the same count; got "
                         f"{generated.n} generated and {reference.n} reference images (use -n / --ref-n)")
    sums = {m: 0.0 for m in metrics}
    for a, b in zip(generated.batches(batch_size), reference.batches(batch_size)):
        if "psnr" in sums:
            sums["psnr"] += float(psnr(a, b).sum())
        if "ssim" in sums:
            sums["ssim"] += float(ssim(a, b).sum())
        if "perceptual" in sums:
            if not hasattr(extractor, "feature_maps"):
                raise ImgenError(f"perceptual distance needs an imgen evaluator net; features {extractor.name!r} "
                                 "have no feature maps: use --features digits-eval or shapes-eval")
            sums["perceptual"] += float(perceptual_distance(a, b, extractor).sum())
    return {(f"perceptual[{extractor.name}]" if m == "perceptual" else m): v / generated.n for m, v in sums.items()}
