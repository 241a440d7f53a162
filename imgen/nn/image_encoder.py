"""A small CNN image encoder for CLIP-style training: images (B, C, H, W) in [-1, 1] -> (B, dim).

3x3 conv + GroupNorm + SiLU layers (the evaluator classifier's ConvLayer), halving the resolution until it is
4x4 (channels double up to 4 * width), then a linear map of the flattened feature map, so the embedding keeps
where things are, not only what they are (captions name positions).
"""
from __future__ import annotations

import torch
from torch import nn

from imgen.errors import ImgenError
from imgen.nn.classifier import ConvLayer
from imgen.nn.layers import ConfigMixin


class ImageEncoder(ConfigMixin, nn.Module):
    name = "image_encoder"

    def __init__(self, in_channels: int = 3, image_size: int = 32, width: int = 32, dim: int = 128):
        super().__init__()
        self.save_config(locals())
        if width % 8:
            raise ImgenError(f"image encoder width={width} must be a multiple of 8 (GroupNorm with 8 groups)")
        if image_size < 8 or image_size & (image_size - 1):
            raise ImgenError(f"image encoder image_size={image_size} must be a power of two >= 8 (e.g. 16 or 32)")
        self.in_channels, self.image_size, self.dim = in_channels, image_size, dim
        layers, ch, side = [ConvLayer(in_channels, width, 1)], width, image_size
        while side > 4:
            out = min(2 * ch, 4 * width)
            layers.append(ConvLayer(ch, out, 2))
            ch, side = out, side // 2
        self.layers = nn.Sequential(*layers)
        self.head = nn.Linear(ch * side * side, dim)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if images.ndim != 4 or images.shape[1:] != (self.in_channels, self.image_size, self.image_size):
            raise ImgenError(f"image encoder expects images (B, {self.in_channels}, {self.image_size}, "
                             f"{self.image_size}), got {tuple(images.shape)}; resize the images or build the "
                             f"encoder with image_size={images.shape[-1] if images.ndim == 4 else '?'}")
        return self.head(self.layers(images).flatten(1))
