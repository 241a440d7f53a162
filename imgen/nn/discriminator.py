"""Discriminator nets for adversarial losses (the losses live in imgen.methods.gan_losses).

    PatchDiscriminator    pix2pix's PatchGAN (Isola et al. 2017, sec. 3.2.2 and app. 6.1.2): a conv stack whose
                          output is a grid of logits, one per overlapping image patch, so it judges local texture
Any discriminator may wrap its convs in spectral normalisation (Miyato et al. 2018) with `spectral_norm=True`, via
torch's parametrization (imgen.nn.discriminator.spectral_normed).
"""
from __future__ import annotations

import torch
from torch import nn

from imgen.errors import ImgenError, check_int

NORMS = ("batch", "instance", "none")


def spectral_normed(module: nn.Module) -> nn.Module:
    """`module` with every Conv2d/Linear/Embedding weight divided by its largest singular value (Miyato et al. 2018,
    eq. 8; one power iteration per forward in training), through torch.nn.utils.parametrizations.spectral_norm."""
    for m in list(module.modules()):
        if isinstance(m, (nn.Conv2d, nn.Linear, nn.Embedding)):
            nn.utils.parametrizations.spectral_norm(m)
    return module


def _norm(kind: str, channels: int) -> nn.Module:
    if kind == "batch":
        return nn.BatchNorm2d(channels)
    if kind == "instance":
        return nn.InstanceNorm2d(channels, affine=True)
    return nn.Identity()


class PatchDiscriminator(nn.Module):
    """C(base)-C(2 base)-...: 4x4 convs with LeakyReLU(0.2), stride 2 for the first num_layers, then one stride-1
    conv and a stride-1 conv to one logit map (pix2pix app. 6.1.2; num_layers=3 is the 70x70 PatchGAN). Widths
    double per layer up to 8 * base_channels. No norm after the first conv; weights N(0, 0.02), norm scales
    N(1, 0.02), as pix2pix initialises them; spectral_norm=True wraps every conv (use it with norm="none", as
    SNGAN does). forward: images (B, C, H, W) -> logits (B, 1, h, w)."""

    def __init__(self, in_channels: int = 3, base_channels: int = 64, num_layers: int = 3, norm: str = "batch",
                 spectral_norm: bool = False):
        super().__init__()
        check_int(in_channels, "PatchDiscriminator in_channels")
        check_int(base_channels, "PatchDiscriminator base_channels")
        check_int(num_layers, "PatchDiscriminator num_layers")
        if norm not in NORMS:
            raise ImgenError(f"PatchDiscriminator norm must be one of {', '.join(NORMS)}, got {norm!r}")
        layers: list[nn.Module] = [nn.Conv2d(in_channels, base_channels, 4, 2, 1), nn.LeakyReLU(0.2)]
        ch = base_channels
        for i in range(1, num_layers + 1):
            out = base_channels * min(2 ** i, 8)
            stride = 2 if i < num_layers else 1
            layers += [nn.Conv2d(ch, out, 4, stride, 1, bias=norm == "none"), _norm(norm, out), nn.LeakyReLU(0.2)]
            ch = out
        layers.append(nn.Conv2d(ch, 1, 4, 1, 1))
        self.layers = nn.Sequential(*layers)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.normal_(m.weight, 0.0, 0.02)
            elif isinstance(m, (nn.BatchNorm2d, nn.InstanceNorm2d)):
                nn.init.normal_(m.weight, 1.0, 0.02)
                nn.init.zeros_(m.bias)
        if spectral_norm:
            spectral_normed(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)
