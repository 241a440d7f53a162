"""GAN nets (the losses are in imgen.methods.gan_losses, the method in imgen.methods.gan).

    DCGANGenerator       z (+ class embedding) -> 4x4 -> stride-2 transposed convs -> tanh image (Radford et al. 2016)
    DCGANDiscriminator   stride-2 convs with LeakyReLU(0.2) -> one logit; optional projection of the class
                         embedding (Miyato & Koyama 2018, eq. 3), spectral norm (Miyato et al. 2018) and a
                         minibatch-stddev feature (Karras et al. 2018, sec. 3) against mode collapse
    GAN                  one module holding `generator` and `discriminator`, so the Trainer builds, EMAs and
                         checkpoints both; the method gives each its own optimizer
"""
from __future__ import annotations

import math

import torch
from torch import nn

from imgen.errors import ImgenError, check_int
from imgen.nn.discriminator import spectral_normed

G_NORMS = ("batch", "none")
D_NORMS = ("batch", "layer", "none")  # WGAN-GP's critic must not batch-normalise (Gulrajani et al. sec. 4)


def _levels(image_size: int) -> int:
    """How many x2 steps lie between 4x4 and image_size (a power of two >= 8)."""
    if not isinstance(image_size, int) or image_size < 8 or image_size & (image_size - 1):
        raise ImgenError(f"DCGAN nets need an image_size that is a power of two >= 8, got {image_size!r}")
    return int(math.log2(image_size)) - 2


def minibatch_stddev(h: torch.Tensor) -> torch.Tensor:
    """h (B, C, H, W) -> (B, C + 1, H, W): one more map holding the batch's mean feature std (Karras et al. 2018,
    sec. 3, one group), so D sees how varied a batch is and a collapsed generator is easy to reject."""
    s = h.std(0, unbiased=False).mean() if len(h) > 1 else h.new_zeros(())
    return torch.cat([h, s.expand(len(h), 1, *h.shape[2:])], 1)


def dcgan_init(module: nn.Module) -> None:
    """Radford et al. 2016, sec. 4 (and pix2pix, app. 6.2): weights N(0, 0.02); batch-norm scales N(1, 0.02)."""
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)):
            nn.init.normal_(m.weight, 0.0, 0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.normal_(m.weight, 1.0, 0.02)
            nn.init.zeros_(m.bias)


class DCGANGenerator(nn.Module):
    """z (B, latent_dim) [, labels (B,)] -> images (B, C, S, S) in [-1, 1]. A conditional generator appends a
    learned class embedding to z (Mirza & Osindero 2014). Widths halve per x2 step, ending at base_channels."""

    def __init__(self, latent_dim: int, out_channels: int, image_size: int, base_channels: int = 64,
                 num_classes: int | None = None, norm: str = "batch"):
        super().__init__()
        levels = _levels(image_size)
        if norm not in G_NORMS:
            raise ImgenError(f"generator norm (net option g_norm) must be one of {', '.join(G_NORMS)}, got {norm!r}")
        self.latent_dim, self.num_classes = latent_dim, num_classes
        self.embed = nn.Embedding(num_classes, latent_dim) if num_classes else None
        norm_fn = (lambda c: nn.BatchNorm2d(c)) if norm == "batch" else (lambda c: nn.Identity())
        ch = base_channels * 2 ** levels
        in_dim = latent_dim * (2 if num_classes else 1)
        self.project = nn.Sequential(nn.Linear(in_dim, ch * 16), nn.Unflatten(1, (ch, 4, 4)), norm_fn(ch), nn.ReLU())
        blocks: list[nn.Module] = []
        for _ in range(levels):  # DCGAN: fractionally-strided 4x4 convs, BN, ReLU
            blocks += [nn.ConvTranspose2d(ch, ch // 2, 4, 2, 1, bias=norm == "none"), norm_fn(ch // 2), nn.ReLU()]
            ch //= 2
        blocks += [nn.Conv2d(ch, out_channels, 3, 1, 1), nn.Tanh()]
        self.blocks = nn.Sequential(*blocks)
        dcgan_init(self)

    def forward(self, z: torch.Tensor, labels: torch.Tensor | None = None, generator=None) -> torch.Tensor:
        if self.embed is not None:  # (`generator` is unused: a DCGAN draws nothing beyond z)
            if labels is None:
                raise ImgenError("this generator is class-conditional; give labels")
            z = torch.cat([z, self.embed(labels)], 1)
        return self.blocks(self.project(z))


class DCGANDiscriminator(nn.Module):
    """images (B, C, S, S) [, labels (B,)] -> logits (B,). Stride-2 4x4 convs with LeakyReLU(0.2) down to 4x4
    (no norm on the first, Radford et al. sec. 3), features phi(x) = the global sum of the last map, then
    f(x, y) = psi(phi(x)) + <embed(y), phi(x)> (the projection discriminator, Miyato & Koyama 2018, eq. 3)."""

    def __init__(self, in_channels: int, image_size: int, base_channels: int = 64, num_classes: int | None = None,
                 norm: str = "batch", spectral_norm: bool = False, minibatch_std: bool = False):
        super().__init__()
        levels = _levels(image_size)
        self.minibatch_std = minibatch_std
        if norm not in D_NORMS:
            raise ImgenError(f"discriminator norm (net option d_norm) must be one of {', '.join(D_NORMS)}, got "
                             f"{norm!r} (spectral norm is net option spectral_norm=true)")
        layers: list[nn.Module] = [nn.Conv2d(in_channels, base_channels, 3, 1, 1), nn.LeakyReLU(0.2)]
        ch = base_channels
        for _ in range(levels):
            out = ch * 2
            layers.append(nn.Conv2d(ch, out, 4, 2, 1, bias=norm != "batch"))
            if norm == "batch":
                layers.append(nn.BatchNorm2d(out))
            elif norm == "layer":
                layers.append(nn.GroupNorm(1, out))
            layers.append(nn.LeakyReLU(0.2))
            ch = out
        self.features = nn.Sequential(*layers)
        ch += int(minibatch_std)
        self.linear = nn.Linear(ch, 1)  # psi
        self.embed = nn.Embedding(num_classes, ch) if num_classes else None  # the projection's V
        dcgan_init(self)
        if spectral_norm:
            spectral_normed(self)

    def forward(self, x: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        h = self.features(x)
        phi = (minibatch_stddev(h) if self.minibatch_std else h).sum((2, 3))  # (B, ch), SNGAN's global sum pooling
        out = self.linear(phi).squeeze(1)
        if self.embed is not None:
            if labels is None:
                raise ImgenError("this discriminator is class-conditional; give labels")
            out = out + (self.embed(labels) * phi).sum(1)  # Miyato & Koyama eq. 3: y^T V phi(x)
        return out


class GAN(nn.Module):
    """A generator and a discriminator in one module (the Trainer builds one net per model). Options: the image's
    in_channels/image_size/num_classes (filled from the data), latent_dim, g_channels/d_channels (base widths),
    g_norm, d_norm, spectral_norm and minibatch_std (on D)."""

    def __init__(self, in_channels: int = 1, image_size: int = 8, num_classes: int | None = None,
                 latent_dim: int = 64, g_channels: int = 64, d_channels: int = 64, g_norm: str = "batch",
                 d_norm: str = "batch", spectral_norm: bool = False, minibatch_std: bool = False):
        super().__init__()
        for value, name in ((in_channels, "in_channels"), (latent_dim, "latent_dim"), (g_channels, "g_channels"),
                            (d_channels, "d_channels")):
            check_int(value, f"gan {name}")
        if num_classes is not None:
            check_int(num_classes, "gan num_classes", minimum=2)
        self.latent_dim, self.num_classes = latent_dim, num_classes
        self.generator = DCGANGenerator(latent_dim, in_channels, image_size, g_channels, num_classes, g_norm)
        self.discriminator = DCGANDiscriminator(in_channels, image_size, d_channels, num_classes, d_norm,
                                                spectral_norm, minibatch_std)
