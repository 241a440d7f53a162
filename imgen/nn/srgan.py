"""SRGAN's nets (Ledig et al. 2017, fig. 4; the losses are in imgen.methods.srgan).

    SRResNet          the generator: a 9x9 conv + PReLU, B residual blocks (conv3x3-PReLU-conv3x3 + skip), a 3x3
                      conv and the long skip, then log2(scale) sub-pixel blocks (conv3x3 -> PixelShuffle(2) -> PReLU,
                      Shi et al. 2016) and a 9x9 conv to the image
    SRDiscriminator   the paper's D: 3x3 convs with LeakyReLU(0.2), widths doubling every second conv, every second
                      conv stride 2, then Dense(1024 -> d_dense) - LeakyReLU - Dense(1): one logit per image
    SRGAN             both, in one module the Trainer builds and EMAs; it knows the low-res input's size and
                      channels (low_res_size, low_res_channels), as SR3's nets do, so `imgen upscale` takes it

Two changes for a 2-core CPU, each an option: no batch norm in the generator (EDSR, Lim et al. 2017, sec. 3.1:
it removes range flexibility, and a batch of 16 gives noisy statistics), and a bicubic global skip (VDSR, Kim et
al. 2016, sec. 3.1: the net learns only the residual over bicubic, so an untrained generator already gives
bicubic's image).
"""
from __future__ import annotations

import math

import torch
from torch import nn

from imgen.errors import ImgenError, check_int
from imgen.nn.superres import upsample


class ResidualBlock(nn.Module):
    """x + conv(PReLU(conv(x))): SRGAN fig. 4's block (k3n64s1, without its batch norm, as EDSR)."""

    def __init__(self, channels: int):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(channels, channels, 3, 1, 1), nn.PReLU(channels),
                                  nn.Conv2d(channels, channels, 3, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


class SRResNet(nn.Module):
    """low-res (B, C, h, w) -> (B, C, scale h, scale w); scale a power of two. Not clamped (the method clamps)."""

    def __init__(self, channels: int = 3, scale: int = 4, width: int = 64, num_blocks: int = 16,
                 bicubic_skip: bool = True):
        super().__init__()
        if scale < 2 or scale & (scale - 1):
            raise ImgenError(f"SRGAN's generator upsamples by a power of two (x2 sub-pixel blocks), got x{scale}; "
                             "pick image_size / low_res_size in 2, 4, 8, ...")
        self.scale, self.bicubic_skip = scale, bool(bicubic_skip)
        self.head = nn.Sequential(nn.Conv2d(channels, width, 9, 1, 4), nn.PReLU(width))  # k9n64s1
        self.blocks = nn.Sequential(*[ResidualBlock(width) for _ in range(num_blocks)])
        self.fuse = nn.Conv2d(width, width, 3, 1, 1)  # then the long skip (fig. 4's elementwise sum)
        ups = []
        for _ in range(int(math.log2(scale))):  # k3n256s1 -> PixelShuffle x2 -> PReLU
            ups += [nn.Conv2d(width, 4 * width, 3, 1, 1), nn.PixelShuffle(2), nn.PReLU(width)]
        self.up = nn.Sequential(*ups)
        self.tail = nn.Conv2d(width, channels, 9, 1, 4)
        if self.bicubic_skip:  # start at bicubic: the residual head begins at zero
            nn.init.zeros_(self.tail.weight)
            nn.init.zeros_(self.tail.bias)

    def forward(self, low_res: torch.Tensor) -> torch.Tensor:
        h = self.head(low_res)
        h = self.tail(self.up(h + self.fuse(self.blocks(h))))
        if self.bicubic_skip:
            h = h + upsample(low_res, h.shape[-2:])  # VDSR sec. 3.1: residual learning over the interpolated input
        return h


class SRDiscriminator(nn.Module):
    """images (B, C, S, S) -> logits (B,). `num_convs` 3x3 convs (widths base * 2 ** (i // 2), stride 2 on every
    second), batch norm after all but the first (fig. 4), then the two dense layers."""

    def __init__(self, channels: int = 3, image_size: int = 32, base_channels: int = 64, num_convs: int = 8,
                 dense: int = 1024):
        super().__init__()
        layers, ch, side = [], channels, image_size
        for i in range(num_convs):
            out, stride = base_channels * 2 ** (i // 2), 2 if i % 2 else 1
            layers += [nn.Conv2d(ch, out, 3, stride, 1), *([nn.BatchNorm2d(out)] if i else []), nn.LeakyReLU(0.2)]
            ch, side = out, (side - 1) // stride + 1
        self.features = nn.Sequential(*layers)
        self.head = nn.Sequential(nn.Flatten(), nn.Linear(ch * side * side, dense), nn.LeakyReLU(0.2),
                                  nn.Linear(dense, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x)).squeeze(1)


class SRGAN(nn.Module):
    """generator: low-res (B, low_res_channels, low_res_size, low_res_size) -> (B, in_channels, image_size,
    image_size); discriminator: such images -> (B,) logits. Options: the image's in_channels/image_size (filled
    from the data), low_res_size (the data's low_res) and low_res_channels, g_channels/num_blocks (the
    generator's width and residual blocks; the paper's 64/16), bicubic_skip, d_channels/d_convs/d_dense (the
    paper's 64/8/1024). num_classes must stay None."""

    def __init__(self, in_channels: int = 3, image_size: int = 32, low_res_size: int = 8, low_res_channels: int = 3,
                 g_channels: int = 64, num_blocks: int = 16, bicubic_skip: bool = True, d_channels: int = 64,
                 d_convs: int = 8, d_dense: int = 1024, num_classes: None = None):
        super().__init__()
        if num_classes is not None:
            raise ImgenError("SRGAN is conditioned on its low-res image, not on class labels; set "
                             "net.options.num_classes to null")
        for value, name in ((in_channels, "in_channels"), (image_size, "image_size"), (low_res_size, "low_res_size"),
                            (g_channels, "g_channels"), (d_channels, "d_channels"), (d_convs, "d_convs"),
                            (d_dense, "d_dense")):
            check_int(value, f"srgan {name}")
        check_int(num_blocks, "srgan num_blocks", minimum=0)
        if low_res_channels != in_channels:
            raise ImgenError(f"srgan low_res_channels={low_res_channels} must equal the image's in_channels="
                             f"{in_channels}")
        if image_size % low_res_size:
            raise ImgenError(f"srgan image_size={image_size} must be a multiple of low_res_size={low_res_size}")
        self.image_channels, self.image_size = in_channels, image_size
        self.low_res_channels, self.low_res_size = low_res_channels, low_res_size
        self.generator = SRResNet(in_channels, image_size // low_res_size, g_channels, num_blocks, bicubic_skip)
        self.discriminator = SRDiscriminator(in_channels, image_size, d_channels, d_convs, d_dense)

    def forward(self, low_res: torch.Tensor) -> torch.Tensor:
        return self.generator(low_res)
