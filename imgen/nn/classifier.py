"""Evaluator networks: small CNN classifiers whose penultimate features define imgen's own feature spaces
(`digits-eval`, `shapes-eval`) for FID/KID/precision-recall, and whose conv maps feed the perceptual distance.

One module serves all: a stack of 3x3 conv layers, a feature layer, and one linear head per predicted attribute
(digits: {"label": 10}; shapes: {"shape": .., "color": .., ...}). A head given as [classes, slots] reads
`slots` things at once (shapes-cells: {"cell_shape": [6, 9], ...}, one prediction per grid cell) and gives
(N, classes, slots) logits, the layout F.cross_entropy takes with (N, slots) targets. Inputs must already be at
the net's native size and channel count; imgen.metrics.evaluators adapts other images.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field

import torch
import torch.nn as nn
import torch.nn.functional as F


@dataclass
class ClassifierConfig:
    in_channels: int = 1
    image_size: int = 8
    widths: tuple[int, ...] = (32, 64, 64)  # one 3x3 conv + GroupNorm + SiLU per entry
    strides: tuple[int, ...] = (1, 1, 2)  # its stride (2 halves the size)
    feature_dim: int = 128
    heads: dict[str, int | list[int]] = field(default_factory=lambda: {"label": 10})  # n or [n, slots]
    dropout: float = 0.1

    def to_dict(self) -> dict:
        d = asdict(self)
        d["widths"], d["strides"] = list(self.widths), list(self.strides)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "ClassifierConfig":
        d = dict(d)
        d["widths"], d["strides"] = tuple(d["widths"]), tuple(d["strides"])
        return cls(**d)


class ConvLayer(nn.Module):
    """3x3 conv (optionally strided) + GroupNorm + SiLU."""

    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, 3, stride=stride, padding=1)
        self.norm = nn.GroupNorm(8, cout)

    def forward(self, x):
        return F.silu(self.norm(self.conv(x)))


class EvaluatorClassifier(nn.Module):
    def __init__(self, cfg: ClassifierConfig):
        super().__init__()
        self.cfg = cfg
        chans = (cfg.in_channels,) + tuple(cfg.widths)
        self.layers = nn.ModuleList(ConvLayer(chans[i], chans[i + 1], s) for i, s in enumerate(cfg.strides))
        side = cfg.image_size
        for s in cfg.strides:
            side = (side - 1) // s + 1
        self.to_features = nn.Linear(cfg.widths[-1] * side * side, cfg.feature_dim)
        self.dropout = nn.Dropout(cfg.dropout)
        self.slots = {name: (n[1] if isinstance(n, (list, tuple)) else None) for name, n in cfg.heads.items()}
        self.heads = nn.ModuleDict({name: nn.Linear(cfg.feature_dim, n[0] * n[1] if isinstance(n, (list, tuple)) else n)
                                    for name, n in cfg.heads.items()})

    def feature_maps(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Activations after each conv layer, (N, C_i, H_i, W_i)."""
        maps = []
        for layer in self.layers:
            x = layer(x)
            maps.append(x)
        return maps

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """(N, feature_dim) penultimate features: the evaluator feature space."""
        return F.silu(self.to_features(self.feature_maps(x)[-1].flatten(1)))

    def head_logits(self, h: torch.Tensor) -> dict[str, torch.Tensor]:
        """Logits of every head from (N, feature_dim) features: (N, classes), or (N, classes, slots)."""
        return {name: head(h) if self.slots[name] is None else head(h).view(len(h), -1, self.slots[name])
                for name, head in self.heads.items()}

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        return self.head_logits(self.dropout(self.features(x)))


def digits_classifier() -> EvaluatorClassifier:
    """8x8 grayscale digit classifier (sklearn digits)."""
    return EvaluatorClassifier(ClassifierConfig(in_channels=1, image_size=8, widths=(32, 64, 64), strides=(1, 1, 2),
                                                feature_dim=128, heads={"label": 10}))


def shapes_classifier(heads: dict[str, int]) -> EvaluatorClassifier:
    """32x32 RGB attribute classifier for the procedural shapes scenes, one head per attribute."""
    return EvaluatorClassifier(ClassifierConfig(in_channels=3, image_size=32, widths=(16, 32, 32, 64, 64),
                                                strides=(1, 2, 1, 2, 2), feature_dim=128, heads=dict(heads)))


def evaluator_net(in_channels: int = 1, image_size: int = 8, widths: list | tuple = (32, 64, 64),
                  strides: list | tuple = (1, 1, 2), feature_dim: int = 128, heads: dict | None = None,
                  dropout: float = 0.1) -> EvaluatorClassifier:
    """An EvaluatorClassifier from JSON-able options (net "evaluator" of a model config)."""
    return EvaluatorClassifier(ClassifierConfig(in_channels, image_size, tuple(widths), tuple(strides), feature_dim,
                                                dict(heads or {"label": 10}), dropout))
