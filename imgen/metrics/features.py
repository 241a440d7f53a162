"""Feature extractors by name, batched extraction into streaming statistics, and a cache of reference
features keyed by dataset + extractor fingerprint.

Every extractor has `name` (what metric keys show: fid[inception], fid[shapes-eval]), `dim`, `fingerprint`
(hash of its weights, part of every cache key) and `__call__(images in [-1, 1]) -> (features (N, D),
logits (N, K) or None)`.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable

import torch
from tqdm.auto import tqdm

from imgen.errors import ImgenError
from imgen.images import to_uint8
from imgen.metrics.stats import RunningStats


class InceptionExtractor:
    """FID InceptionV3 pool features (2048) and bias-free logits (1008) for IS; images are quantized to uint8
    first, exactly like FID computed from PNG files."""

    name, dim = "inception", 2048

    def __init__(self, weights: str | None = None, download: bool = False):
        from imgen.metrics.inception import file_fingerprint, find_weights, load_inception

        path = find_weights(weights, download)
        self.net = load_inception(path)
        self.fingerprint = file_fingerprint(path)

    @torch.no_grad()
    def __call__(self, images: torch.Tensor):
        x = torch.from_numpy(to_uint8(images)).permute(0, 3, 1, 2).float()  # (N, C, H, W) values 0..255
        if x.shape[1] == 1:
            x = x.repeat(1, 3, 1, 1)
        return self.net(x[:, :3])


class EvaluatorExtractor:
    """Penultimate features of an imgen evaluator net; logits of its first head (digits: the label) for IS."""

    def __init__(self, name: str):
        from imgen.metrics.evaluators import load_evaluator

        self.evaluator = load_evaluator(name)
        self.name, self.dim, self.fingerprint = name, self.evaluator.dim, self.evaluator.fingerprint
        self.is_head = self.evaluator.meta.get("is_head", self.evaluator.attributes[0])

    def __call__(self, images: torch.Tensor):
        feats, logits = self.evaluator.features_and_logits(images)
        return feats, logits[self.is_head]

    def feature_maps(self, images):
        return self.evaluator.feature_maps(images)


class PixelExtractor:
    """Raw pixels as features (a debugging baseline; dimension C*H*W of the first batch)."""

    name, fingerprint = "pixels", "pixels-v1"

    def __init__(self):
        self.dim = None

    def __call__(self, images: torch.Tensor):
        feats = torch.as_tensor(images).float().flatten(1)
        if self.dim is None:
            self.dim = feats.shape[1]
        return feats, None


EXTRACTORS: dict[str, Callable] = {
    "inception": InceptionExtractor,
    "digits-eval": lambda **kw: EvaluatorExtractor("digits-eval"),
    "shapes-eval": lambda **kw: EvaluatorExtractor("shapes-eval"),
    "pixels": lambda **kw: PixelExtractor(),
}


def get_extractor(name: str, weights: str | None = None, download: bool = False):
    """Build an extractor by name; `weights`/`download` only concern "inception"."""
    if name not in EXTRACTORS:
        raise ImgenError(f"unknown features {name!r}; choose one of {sorted(EXTRACTORS)}")
    if name == "inception":
        return InceptionExtractor(weights, download)
    return EXTRACTORS[name]()


@dataclass
class FeatureSet:
    """Everything the metrics need from one image set: streaming stats, and (if kept) features and logits."""

    extractor: str
    stats: RunningStats
    features: torch.Tensor | None = None  # (N, D) float32, kept for KID / precision-recall
    logits: torch.Tensor | None = None  # (N, K) float32, kept for IS

    @property
    def n(self) -> int:
        return self.stats.n


def extract(extractor, batches: Iterable[torch.Tensor], total: int | None = None, keep_features: bool = True,
            keep_logits: bool = False, progress: bool = True, desc: str = "features") -> FeatureSet:
    """Run `extractor` over an iterable of image batches; images are dropped after each batch."""
    stats, feats, logits = None, [], []
    with tqdm(total=total, desc=f"{desc} [{extractor.name}]", unit="img", disable=not progress, leave=False) as bar:
        for images in batches:
            f, lg = extractor(images)
            f = f.float()
            if stats is None:
                stats = RunningStats(f.shape[1])
            stats.update(f)
            if keep_features:
                feats.append(f)
            if keep_logits and lg is not None:
                logits.append(lg.float())
            bar.update(f.shape[0])
    if stats is None:
        raise ImgenError(f"no images to compute {desc} from; check that the folder or dataset is not empty")
    return FeatureSet(extractor.name, stats, torch.cat(feats) if feats else None,
                      torch.cat(logits) if logits else None)


# ---- reference cache ----

def cache_dir() -> Path:
    return Path(os.environ.get("IMGEN_CACHE", Path.home() / ".cache" / "imgen")) / "ref_features"


def cache_path(dataset_key: str, extractor) -> Path:
    slug = re.sub(r"[^A-Za-z0-9._=-]+", "_", dataset_key).strip("_")[:120]
    return cache_dir() / f"{slug}__{extractor.name}-{extractor.fingerprint}.safetensors"


def cached_extract(dataset_key: str, extractor, batches_fn: Callable[[], Iterable[torch.Tensor]],
                   total: int | None = None, use_cache: bool = True, progress: bool = True) -> FeatureSet:
    """extract() for a reference set, saved under a key of dataset spec + extractor name + weights hash and
    reused next time. Features and logits are always kept (they are what KID/PR/IS need)."""
    from safetensors.torch import load_file, save_file

    path = cache_path(dataset_key, extractor)
    if use_cache and path.is_file():
        sd = load_file(str(path))
        return FeatureSet(extractor.name, RunningStats.from_state_dict(sd), sd["features"], sd.get("logits"))
    fs = extract(extractor, batches_fn(), total, keep_features=True, keep_logits=True, progress=progress,
                 desc="reference")
    if use_cache:
        path.parent.mkdir(parents=True, exist_ok=True)
        sd = {**fs.stats.state_dict(), "features": fs.features.contiguous()}
        if fs.logits is not None:
            sd["logits"] = fs.logits.contiguous()
        tmp = path.with_suffix(".tmp")
        save_file(sd, str(tmp))
        tmp.replace(path)
    return fs
