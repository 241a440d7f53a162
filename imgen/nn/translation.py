"""Image-to-image translation nets (the losses are in imgen.methods.translation).

    UNetGenerator   pix2pix's encoder-decoder with skips (Isola et al. 2017, sec. 3.2.1 and app. 6.1.1): 4x4 stride-2
                    convs C(k) = Conv-BatchNorm-LeakyReLU(0.2) down to a bottleneck, transposed convs back up with
                    ReLU, each decoder layer fed the mirrored encoder layer's features (the "U-Net" skips); dropout
                    on the innermost decoder layers; tanh output
    Pix2Pix         a UNetGenerator and a conditional PatchGAN (imgen.nn.discriminator.PatchDiscriminator) that
                    judges (source, image) concatenated on channels, in one module the Trainer builds and EMAs
    CycleGAN        two generators G: A -> B and F: B -> A and two unconditional PatchGANs D_A, D_B (Zhu et al.
                    2017, sec. 3); U-Net generators (the CycleGAN authors' code offers them beside the ResNet one)
"""
from __future__ import annotations

import torch
from torch import nn

from imgen.errors import ImgenError, check_int
from imgen.nn.discriminator import PatchDiscriminator
from imgen.nn.gan import dcgan_init


class UNetGenerator(nn.Module):
    """source (B, in_channels, S, S) -> image (B, out_channels, S, S) in [-1, 1]. `depth` stride-2 levels (S must
    be divisible by 2**depth); widths base * (1, 2, 4, 8, 8, ...). Dropout 0.5 on the `dropout_layers` innermost
    decoder layers (pix2pix's only noise source; off in eval mode, so translation is deterministic)."""

    def __init__(self, in_channels: int = 3, out_channels: int = 3, base_channels: int = 32, depth: int = 4,
                 dropout_layers: int = 1, full_res_skip: bool = False):
        super().__init__()
        for value, name in ((in_channels, "in_channels"), (out_channels, "out_channels"),
                            (base_channels, "base_channels"), (depth, "depth")):
            check_int(value, f"UNetGenerator {name}")
        check_int(dropout_layers, "UNetGenerator dropout_layers", minimum=0)
        self.depth, self.full_res_skip = depth, bool(full_res_skip)
        widths = [base_channels * min(2 ** i, 8) for i in range(depth)]
        ch = in_channels
        # full_res_skip (not in pix2pix, whose outermost skip is at half resolution): a stride-1 3x3 conv at full
        # resolution whose features the output conv sees too, so a 32px image's edges need not pass a x2 upsampling
        self.stem = nn.Sequential(nn.Conv2d(ch, base_channels, 3, 1, 1), nn.LeakyReLU(0.2)) if full_res_skip else None
        ch = base_channels if full_res_skip else ch
        self.down = nn.ModuleList()
        for i, w in enumerate(widths):  # C64-C128-...: no batch norm on the first or the innermost layer
            norm = nn.BatchNorm2d(w) if 0 < i < depth - 1 else nn.Identity()
            self.down.append(nn.Sequential(nn.Conv2d(ch, w, 4, 2, 1, bias=not 0 < i < depth - 1), norm,
                                           nn.LeakyReLU(0.2)))
            ch = w
        self.up = nn.ModuleList()
        for i in reversed(range(depth)):  # decoder layer i maps to the resolution of encoder layer i's input
            skip_in = ch if i == depth - 1 else 2 * ch  # after the bottleneck, concat(decoder, mirrored encoder)
            out = widths[i - 1] if i > 0 else (base_channels if full_res_skip else out_channels)
            if i == 0 and not full_res_skip:
                self.up.append(nn.Sequential(nn.ConvTranspose2d(skip_in, out, 4, 2, 1), nn.Tanh()))
            else:
                drop = nn.Dropout(0.5) if depth - 1 - i < dropout_layers else nn.Identity()
                self.up.append(nn.Sequential(nn.ConvTranspose2d(skip_in, out, 4, 2, 1, bias=False),
                                             nn.BatchNorm2d(out), drop, nn.ReLU()))
            ch = out
        self.head = nn.Sequential(nn.Conv2d(2 * ch, out_channels, 3, 1, 1), nn.Tanh()) if full_res_skip else None
        dcgan_init(self)  # pix2pix app. 6.2: N(0, 0.02), as DCGAN

    def forward(self, source: torch.Tensor) -> torch.Tensor:
        if source.shape[-1] % 2 ** self.depth or source.shape[-2] % 2 ** self.depth:
            raise ImgenError(f"the U-Net generator needs sides divisible by {2 ** self.depth}, got "
                             f"{tuple(source.shape[-2:])}")
        h = stem = self.stem(source) if self.stem is not None else source
        skips = []
        for layer in self.down:
            h = layer(h)
            skips.append(h)
        for j, layer in enumerate(self.up):
            h = layer(h if j == 0 else torch.cat([h, skips[-1 - j]], 1))  # U-Net skip (pix2pix fig. 3)
        return self.head(torch.cat([h, stem], 1)) if self.head is not None else h


class Pix2Pix(nn.Module):
    """generator: source -> image; discriminator: concat(source, image) -> patch logits (B, 1, h, w). Options: the
    image's in_channels/image_size (filled from the data), source_channels, g_channels/d_channels (base widths),
    depth (U-Net levels), d_layers (PatchGAN stride-2 layers: 2 gives 34x34 patches, wider than a 32px image's
    objects), dropout_layers, full_res_skip (UNetGenerator's). num_classes must stay None (the source map is the
    condition)."""

    def __init__(self, in_channels: int = 3, image_size: int = 32, source_channels: int = 3, g_channels: int = 32,
                 d_channels: int = 32, depth: int = 4, d_layers: int = 2, dropout_layers: int = 1,
                 full_res_skip: bool = False, num_classes: None = None):
        super().__init__()
        if num_classes is not None:
            raise ImgenError("pix2pix is conditioned on its source image, not on class labels; set "
                             "net.options.num_classes to null")
        check_int(image_size, "pix2pix image_size")
        if image_size % 2 ** depth:
            raise ImgenError(f"pix2pix image_size={image_size} must be divisible by 2**depth={2 ** depth}; "
                             f"lower net.options.depth")
        self.source_channels, self.image_channels, self.image_size = source_channels, in_channels, image_size
        self.generator = UNetGenerator(source_channels, in_channels, g_channels, depth, dropout_layers, full_res_skip)
        self.discriminator = PatchDiscriminator(source_channels + in_channels, d_channels, d_layers)

    def forward(self, source: torch.Tensor) -> torch.Tensor:
        return self.generator(source)


class CycleGAN(nn.Module):
    """generator_ab (G), generator_ba (F), discriminator_a (D_A judges domain A), discriminator_b (D_B); as
    `generators` and `discriminators` (ModuleDicts) for the two optimizers. Options as Pix2Pix's (no source_channels:
    both domains have the image's channels); dropout_layers defaults to 0 (CycleGAN's generators use none)."""

    def __init__(self, in_channels: int = 3, image_size: int = 32, g_channels: int = 16, d_channels: int = 16,
                 depth: int = 4, d_layers: int = 2, dropout_layers: int = 0, full_res_skip: bool = False,
                 num_classes: None = None):
        super().__init__()
        if num_classes is not None:
            raise ImgenError("CycleGAN translates between two image domains, not class labels; set "
                             "net.options.num_classes to null")
        check_int(image_size, "cyclegan image_size")
        if image_size % 2 ** depth:
            raise ImgenError(f"cyclegan image_size={image_size} must be divisible by 2**depth={2 ** depth}; "
                             f"lower net.options.depth")
        self.source_channels = self.image_channels = in_channels
        self.image_size = image_size
        self.generators = nn.ModuleDict({d: UNetGenerator(in_channels, in_channels, g_channels, depth, dropout_layers,
                                                          full_res_skip) for d in ("ab", "ba")})
        self.discriminators = nn.ModuleDict({d: PatchDiscriminator(in_channels, d_channels, d_layers)
                                             for d in ("a", "b")})

    def forward(self, x: torch.Tensor, direction: str = "ab") -> torch.Tensor:
        return self.generators[direction](x)
