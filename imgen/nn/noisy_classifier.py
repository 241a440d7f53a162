"""A noise-aware classifier p(y | x_t, t) for classifier guidance (Dhariwal & Nichol 2021, sec. 4).

Same call shape as every imgen net, `net(x_t, t, cond=None)`, but it returns class logits (B, num_classes):
a small conv encoder (the U-Net's down path without its decoder, as ADM's classifier) whose residual blocks
read the time embedding through AdaGN, then global average pooling and a linear head. Losses live in
imgen.methods.classifier.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from imgen.errors import ImgenError, check_int
from imgen.nn.layers import ConfigMixin, Downsample, ResBlock, TimestepEmbedding, as_time_batch, group_norm


class NoisyClassifier(ConfigMixin, nn.Module):
    """x_t (B, C, H, W), t (B,) in [0, 1] -> logits (B, num_classes). One ResBlock per level, channels
    base_channels * channel_mults[i], a 2x downsample between levels."""

    name = "noisy_classifier"

    def __init__(self, in_channels: int = 1, num_classes: int = 10, image_size: int = 8, base_channels: int = 32,
                 channel_mults=(1, 2), dropout: float = 0.0):
        super().__init__()
        self.save_config(locals())
        for key, v in (("in_channels", in_channels), ("num_classes", num_classes), ("image_size", image_size),
                       ("base_channels", base_channels)):
            check_int(v, f"NoisyClassifier {key}")
        if num_classes < 2:
            raise ImgenError(f"NoisyClassifier needs num_classes >= 2 to classify, got {num_classes}")
        if image_size % 2 ** (len(channel_mults) - 1):
            raise ImgenError(f"NoisyClassifier image_size {image_size} must be divisible by 2**(len(channel_mults)-1); "
                             "use fewer channel_mults or a larger image")
        self.in_channels, self.num_classes = in_channels, num_classes
        emb_dim = 4 * base_channels
        self.time_embed = TimestepEmbedding(base_channels, emb_dim)
        self.conv_in = nn.Conv2d(in_channels, base_channels, 3, padding=1)
        blocks, ch = [], base_channels
        for level, mult in enumerate(channel_mults):
            if level > 0:
                blocks.append(Downsample(ch))
            blocks.append(ResBlock(ch, base_channels * mult, emb_dim, dropout))
            ch = base_channels * mult
        self.blocks = nn.ModuleList(blocks)
        self.norm_out = group_norm(ch)
        self.head = nn.Linear(ch, num_classes)

    def forward(self, x: torch.Tensor, t: torch.Tensor, cond: dict | None = None) -> torch.Tensor:
        if x.ndim != 4 or x.shape[1] != self.in_channels:
            raise ImgenError(f"NoisyClassifier expects images of shape (B, {self.in_channels}, H, W), got {tuple(x.shape)}")
        emb = self.time_embed(as_time_batch(t, x.shape[0], x.device))
        h = self.conv_in(x)
        for block in self.blocks:
            h = block(h) if isinstance(block, Downsample) else block(h, emb)
        return self.head(F.silu(self.norm_out(h)).mean((2, 3)))  # global average pool, then logits


def noisy_classifier_small(in_channels: int = 1, num_classes: int = 10, image_size: int = 8) -> NoisyClassifier:
    """The digits-sized classifier (about 0.1M parameters)."""
    return NoisyClassifier(in_channels, num_classes, image_size, base_channels=32, channel_mults=(1, 2))
