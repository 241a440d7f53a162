"""Evaluation metrics for image generators, each cross-checked against a reference implementation
(torchmetrics, scipy, scikit-image) in tests/test_metrics_*.py.

Feature-based metrics always name their feature space: fid[inception] (the TF FID InceptionV3 from a local
weights file) is not comparable with fid[shapes-eval] or fid[digits-eval] (imgen's own evaluator nets).

The functions named like their modules (fid, kid, inception_score) are imported from those modules
(`from imgen.metrics.fid import fid`), so the package attributes stay the modules.
"""
from imgen.metrics.bits import bits_per_dim, discrete_bits_per_dim
from imgen.metrics.clip_score import clip_score
from imgen.metrics.evaluate import METRICS, evaluate, resolve_source
from imgen.metrics.evaluators import load_evaluator
from imgen.metrics.features import EXTRACTORS, extract, get_extractor
from imgen.metrics.fid import fid_from_stats, frechet_distance
from imgen.metrics.perceptual import perceptual_distance
from imgen.metrics.precision_recall import manifold_metrics
from imgen.metrics.psnr_ssim import psnr, ssim
from imgen.metrics.stats import RunningStats

__all__ = ["EXTRACTORS", "METRICS", "RunningStats", "bits_per_dim", "clip_score", "discrete_bits_per_dim", "evaluate",
           "extract", "fid_from_stats", "frechet_distance", "get_extractor", "load_evaluator", "manifold_metrics", "perceptual_distance", "psnr", "resolve_source", "ssim"]
