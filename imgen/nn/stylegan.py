"""StyleGAN-lite (Karras et al. 2019, "StyleGAN"; 2020, "StyleGAN2") in plain PyTorch, no custom ops:

    MappingNetwork      z -> w: pixel norm, then an MLP with LeakyReLU (StyleGAN sec. 2); tracks w_avg
    ModulatedConv2d     weights scaled per sample by the style s = A(w), then demodulated (StyleGAN2 eq. 1-3)
    StyleGenerator      a learned 4x4 constant, per resolution x2 upsampling and two modulated convs with per-pixel
                        noise inputs (StyleGAN sec. 2), skip toRGB outputs summed across resolutions (StyleGAN2
                        fig. 7b); style mixing in training (StyleGAN sec. 3.1); truncation psi at sampling (sec. 5.1)
                        toward w_avg or, with truncation_clusters K, toward the nearest of K k-means centres of w
                        (multimodal truncation, Mokady et al. 2022, "Self-Distilled StyleGAN", sec. 3.3)
    StyleDiscriminator  StyleGAN2's residual discriminator (fig. 7c) with minibatch stddev (ProGAN sec. 3) and, for
                        labels, a projection (Miyato & Koyama 2018)
    StyleGAN            the two in one module, trained by method gan (StyleGAN2's loss: non-saturating + R1)
Every weight has an equalised learning rate (ProGAN sec. 4.1: stored N(0, 1), scaled by 1/sqrt(fan_in) at run time),
the mapping network's at 1/100 of the learning rate (StyleGAN app. C), and every LeakyReLU has StyleGAN2's gain
sqrt(2). Without them (imgen's first StyleGAN-lite) Adam's steps at lr 2e-3 were ~10% of D's N(0, 0.02) weights per
step, w_avg chased a mapping that moved each step, and the signal halved at each synthesis layer until the noise
inputs drowned it: 2000 steps drew blobs (recall[shapes-eval] 0.006).
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from imgen.errors import ImgenError, check_int
from imgen.nn.gan import (FeatureProjectionHead, TextGANDiscriminator, _check_condition, _levels, clip_image_tower,
                          condition_embedding, minibatch_stddev)


def lrelu(x: torch.Tensor) -> torch.Tensor:
    """LeakyReLU(0.2) times sqrt(2), the gain that keeps the variance of equalised layers (StyleGAN2's bias_act)."""
    return F.leaky_relu(x, 0.2) * math.sqrt(2)


class EqualLinear(nn.Module):
    """A linear layer with an equalised learning rate (ProGAN sec. 4.1): weights stored N(0, 1/lr_mul^2) and
    scaled by lr_mul/sqrt(in) at run time, the bias by lr_mul, so Adam's step is lr_mul x lr on the effective
    weights whatever their fan-in (StyleGAN app. C: lr_mul 0.01 for the mapping network)."""

    def __init__(self, in_features: int, out_features: int, bias_init: float = 0.0, lr_mul: float = 1.0):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(out_features, in_features) / lr_mul)
        self.bias = nn.Parameter(torch.full((out_features,), float(bias_init) / lr_mul))
        self.scale, self.lr_mul = lr_mul / math.sqrt(in_features), lr_mul

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.weight * self.scale, self.bias * self.lr_mul)


class EqualConv2d(nn.Module):
    """A k x k conv with an equalised learning rate (ProGAN sec. 4.1)."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, bias: bool = True):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(out_channels, in_channels, kernel_size, kernel_size))
        self.bias = nn.Parameter(torch.zeros(out_channels)) if bias else None
        self.scale, self.padding = 1 / math.sqrt(in_channels * kernel_size ** 2), kernel_size // 2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, self.weight * self.scale, self.bias, padding=self.padding)


def kmeans(x: torch.Tensor, k: int, iters: int = 25, generator: torch.Generator | None = None) -> torch.Tensor:
    """(k, D) centres of the rows of x (N, D) by Lloyd's algorithm from k distinct random rows; an empty cluster keeps
    its centre."""
    c = x[torch.randperm(len(x), generator=generator)[:k].to(x.device)]
    for _ in range(iters):
        nearest = torch.cdist(x, c).argmin(1)
        counts = torch.bincount(nearest, minlength=k)[:, None]
        sums = torch.zeros_like(c).index_add_(0, nearest, x)
        c = torch.where(counts > 0, sums / counts.clamp(min=1), c)
    return c


class MappingNetwork(nn.Module):
    """z (B, z_dim) [, labels] -> w (B, w_dim). A conditional mapping concatenates a class embedding to z (as
    StyleGAN2-ADA's conditional mapping does). `w_avg` is the running mean of w, the centre of truncation."""

    def __init__(self, z_dim: int, w_dim: int, depth: int = 4, num_classes: int | None = None,
                 w_avg_beta: float = 0.995, lr_mul: float = 0.01):
        super().__init__()
        self.embed = nn.Embedding(num_classes, z_dim) if num_classes else None
        dims = [z_dim * (2 if num_classes else 1)] + [w_dim] * depth
        self.mlp = nn.ModuleList([EqualLinear(a, b, lr_mul=lr_mul) for a, b in zip(dims[:-1], dims[1:])])
        self.w_avg_beta = w_avg_beta
        self.register_buffer("w_avg", torch.zeros(w_dim))

    def forward(self, z: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        z = z * torch.rsqrt(z.pow(2).mean(1, keepdim=True) + 1e-8)  # pixel norm of z (StyleGAN app. C)
        if self.embed is not None:
            if labels is None:
                raise ImgenError("this StyleGAN is class-conditional; give labels")
            e = self.embed(labels)
            z = torch.cat([z, e * torch.rsqrt(e.pow(2).mean(1, keepdim=True) + 1e-8)], 1)
        w = z
        for layer in self.mlp:
            w = lrelu(layer(w))
        if self.training:
            with torch.no_grad():
                self.w_avg.lerp_(w.mean(0), 1 - self.w_avg_beta)
        return w


class ModulatedConv2d(nn.Module):
    """A k x k conv whose weights are scaled per sample: w'_ijk = s_i w_ijk (StyleGAN2 eq. 1), then
    w''_ijk = w'_ijk / sqrt(sum_ik w'_ijk^2 + eps) (eq. 3). Run as StyleGAN2's non-fused path: the input scaled by
    s, one shared conv, the output scaled by each sample's demodulation 1/sqrt(...) (the same sums; one plain conv
    is several times faster on a CPU than the grouped conv over the batch)."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, w_dim: int, demodulate: bool = True):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(out_channels, in_channels, kernel_size, kernel_size))
        self.scale = 1 / math.sqrt(in_channels * kernel_size ** 2)  # equalised learning rate (ProGAN sec. 4.1)
        self.affine = EqualLinear(w_dim, in_channels, bias_init=1.0)  # A: w -> style s, starting at 1
        self.bias = nn.Parameter(torch.zeros(out_channels))
        self.demodulate, self.padding = demodulate, kernel_size // 2

    def modulated_weight(self, w: torch.Tensor) -> torch.Tensor:
        """(B, out, in, k, k): the per-sample weights."""
        s = self.affine(w)  # (B, in)
        weight = self.scale * self.weight[None] * s[:, None, :, None, None]  # eq. 1
        if self.demodulate:
            weight = weight * torch.rsqrt(weight.pow(2).sum((2, 3, 4), keepdim=True) + 1e-8)  # eq. 3
        return weight

    def forward(self, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        s = self.affine(w)  # (B, in)
        weight = self.scale * self.weight
        out = F.conv2d(x * s[:, :, None, None], weight, padding=self.padding)  # eq. 1 on the input side
        if self.demodulate:  # eq. 3: sigma_j = sqrt(sum_ik (s_i w_ijk)^2) = sqrt(s^2 . sum_k w_ijk^2)
            out = out * torch.rsqrt(s.pow(2) @ weight.pow(2).sum((2, 3)).T + 1e-8)[:, :, None, None]
        return out + self.bias[None, :, None, None]


class StyleLayer(nn.Module):
    """Modulated 3x3 conv, per-pixel noise scaled by a learned per-channel strength (StyleGAN fig. 1b, "B"),
    LeakyReLU(0.2) with StyleGAN2's gain sqrt(2): demodulation keeps unit variance only for unit-variance inputs,
    and without the gain each layer halved the signal, so by the 16 px layers the noise was as strong as it."""

    def __init__(self, in_channels: int, out_channels: int, w_dim: int):
        super().__init__()
        self.conv = ModulatedConv2d(in_channels, out_channels, 3, w_dim)
        self.noise_strength = nn.Parameter(torch.zeros(out_channels))

    def forward(self, x, w, generator=None):
        x = self.conv(x, w)
        noise = torch.randn((x.shape[0], 1, *x.shape[2:]), generator=generator)
        return lrelu(x + self.noise_strength[None, :, None, None] * noise)


class StyleGenerator(nn.Module):
    """z (B, latent_dim) [, labels] -> images (B, C, S, S) in [-1, 1]; one w per layer (num_ws of them)."""

    def __init__(self, latent_dim: int, out_channels: int, image_size: int, channels: int = 64,
                 num_classes: int | None = None, mapping_depth: int = 4, mixing_prob: float = 0.9,
                 truncation_clusters: int = 0):
        super().__init__()
        levels = _levels(image_size)
        self.latent_dim, self.num_classes, self.mixing_prob = latent_dim, num_classes, mixing_prob
        self.truncation_clusters, self._centres = truncation_clusters, (None, None)
        self.mapping = MappingNetwork(latent_dim, latent_dim, mapping_depth, num_classes)
        self.const = nn.Parameter(torch.randn(1, channels, 4, 4))
        self.layers = nn.ModuleList([StyleLayer(channels, channels, latent_dim)])
        self.to_rgb = nn.ModuleList([ModulatedConv2d(channels, out_channels, 1, latent_dim, demodulate=False)])
        for _ in range(levels):
            self.layers.extend([StyleLayer(channels, channels, latent_dim), StyleLayer(channels, channels, latent_dim)])
            self.to_rgb.append(ModulatedConv2d(channels, out_channels, 1, latent_dim, demodulate=False))
        self.num_ws = len(self.layers)

    def ws(self, z: torch.Tensor, labels=None, truncation: float = 1.0, generator=None) -> torch.Tensor:
        """(B, num_ws, w_dim): one w per layer; in training a second z takes over after a random layer with
        probability mixing_prob (style mixing, StyleGAN sec. 3.1); truncation psi pulls w toward a centre c:
        w' = c + psi (w - c) (StyleGAN sec. 5.1, eq. 3), c = w_avg, or with truncation_clusters the nearest
        truncation_centres() (multimodal truncation: the mean of a multimodal w lies between modes, so pulling every
        w toward it blends objects and precision falls; the nearest mode's centre keeps each sample in its mode)."""
        w = self.mapping(z, labels)
        if truncation != 1.0:
            if self.truncation_clusters:
                centres = self.truncation_centres()
                c = centres[torch.cdist(w, centres).argmin(1)]
            else:
                c = self.mapping.w_avg
            w = c + truncation * (w - c)
        ws = w[:, None].repeat(1, self.num_ws, 1)
        if self.training and self.mixing_prob > 0:
            w2 = self.mapping(torch.randn(z.shape, generator=generator), labels)
            cut = torch.randint(1, self.num_ws, (z.shape[0], 1), generator=generator)
            mix = torch.rand((z.shape[0], 1), generator=generator) < self.mixing_prob
            later = (torch.arange(self.num_ws)[None] >= cut) & mix  # (B, num_ws): layers that take w2
            ws = torch.where(later[..., None], w2[:, None], ws)
        return ws

    def truncation_centres(self, n: int = 10_000) -> torch.Tensor:
        """(truncation_clusters, w_dim): k-means centres of the w of n seeded z (random labels for a conditional
        mapping; Mokady et al. 2022 sec. 3.3), recomputed whenever the mapping's weights changed (cached on their
        in-place versions: a training step, an EMA update or a load)."""
        params = list(self.mapping.parameters())
        key = tuple(p._version for p in params) + tuple(p.data_ptr() for p in params)
        if self._centres[0] != key:
            g = torch.Generator().manual_seed(0)
            device = params[0].device
            z = torch.randn(n, self.latent_dim, generator=g).to(device)
            labels = torch.randint(self.num_classes, (n,), generator=g).to(device) if self.num_classes else None
            training = self.mapping.training
            with torch.no_grad():
                w = self.mapping.eval()(z, labels)  # eval: no w_avg update
            self.mapping.train(training)
            self._centres = (key, kmeans(w, self.truncation_clusters, generator=g))
        return self._centres[1]

    def synthesis(self, ws: torch.Tensor, generator=None) -> torch.Tensor:
        """ws (B, num_ws, w_dim) -> images; toRGB of each resolution upsampled and summed (StyleGAN2 fig. 7b)."""
        x = self.layers[0](self.const.expand(ws.shape[0], -1, -1, -1), ws[:, 0], generator)
        rgb = self.to_rgb[0](x, ws[:, 0])
        for i in range(1, self.num_ws, 2):
            x = F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False)
            x = self.layers[i](x, ws[:, i], generator)
            x = self.layers[i + 1](x, ws[:, i + 1], generator)
            rgb = F.interpolate(rgb, scale_factor=2, mode="bilinear", align_corners=False)
            rgb = rgb + self.to_rgb[(i + 1) // 2](x, ws[:, i + 1])
        return torch.tanh(rgb)

    def forward(self, z: torch.Tensor, labels: torch.Tensor | None = None, truncation: float = 1.0,
                generator=None) -> torch.Tensor:
        return self.synthesis(self.ws(z, labels, truncation, generator), generator)


class DiscriminatorBlock(nn.Module):
    """StyleGAN2's residual D block (fig. 7c): two 3x3 convs then x0.5 (average pool), beside a pooled 1x1 skip;
    the sum scaled by 1/sqrt(2)."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.conv1, self.conv2 = EqualConv2d(in_channels, in_channels, 3), EqualConv2d(in_channels, out_channels, 3)
        self.skip = EqualConv2d(in_channels, out_channels, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.avg_pool2d(lrelu(self.conv2(lrelu(self.conv1(x)))), 2)
        return (y + self.skip(F.avg_pool2d(x, 2))) / math.sqrt(2)


class StyleDiscriminator(nn.Module):
    """images (B, C, S, S) [, labels] -> logits (B,): fromRGB (1x1), residual blocks down to 4x4 with widths doubling
    up to 4 x channels, then minibatch stddev (ProGAN sec. 3), a 3x3 conv and two dense layers (StyleGAN2 fig. 7c);
    with labels, + <embed(y), h> on the last hidden features (projection, Miyato & Koyama 2018, eq. 3)."""

    def __init__(self, in_channels: int, image_size: int, channels: int = 32, num_classes: int | None = None):
        super().__init__()
        widths = [min(channels * 2 ** i, 4 * channels) for i in range(_levels(image_size) + 1)]
        self.from_rgb = EqualConv2d(in_channels, widths[0], 1)
        self.blocks = nn.Sequential(*[DiscriminatorBlock(a, b) for a, b in zip(widths[:-1], widths[1:])])
        ch = widths[-1]
        self.conv = EqualConv2d(ch + 1, ch, 3)
        self.fc = EqualLinear(ch * 16, ch)
        self.out = EqualLinear(ch, 1)
        self.embed = condition_embedding(num_classes, None, ch)

    def forward(self, x: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        h = self.blocks(lrelu(self.from_rgb(x)))
        h = lrelu(self.fc(lrelu(self.conv(minibatch_stddev(h))).flatten(1)))  # (B, ch)
        out = self.out(h).squeeze(1)
        if self.embed is not None:
            _check_condition(labels, "discriminator")
            out = out + (self.embed(labels) * h).sum(1) / math.sqrt(h.shape[1])
        return out


class StyleGAN(nn.Module):
    """StyleGenerator + StyleDiscriminator. Options: in_channels, image_size, num_classes (from the data), latent_dim
    (= w_dim), g_channels (G's width at every resolution), d_channels (D's first width, doubling per x2 down to 4x4, at
    most 4x), mapping_depth, mixing_prob. clip_discriminator (a CLIP directory, e.g. the shipped shapes-clip): D also
    scores that CLIP's frozen image-tower embedding with a small head, D(x) = D_pixel(x) + D_features(x) (Projected
    GANs, Sauer et al. 2021, as imgen's text GAN); image_encoder: the tower's options (training fills them).
    truncation_clusters K > 0: truncation pulls w toward the nearest of K centres of w (multimodal truncation) instead
    of w_avg; a sampling choice only (no weights), so it can be set on a trained model's config."""

    def __init__(self, in_channels: int = 3, image_size: int = 32, num_classes: int | None = None,
                 latent_dim: int = 64, g_channels: int = 64, d_channels: int = 32, mapping_depth: int = 4,
                 mixing_prob: float = 0.9, clip_discriminator: str = "", image_encoder: dict | None = None,
                 truncation_clusters: int = 0):
        super().__init__()
        for value, name in ((in_channels, "in_channels"), (latent_dim, "latent_dim"), (g_channels, "g_channels"),
                            (d_channels, "d_channels"), (mapping_depth, "mapping_depth")):
            check_int(value, f"stylegan {name}")
        if not (isinstance(mixing_prob, (int, float)) and 0 <= mixing_prob <= 1):
            raise ImgenError(f"stylegan mixing_prob must be in [0, 1], got {mixing_prob!r}")
        self.latent_dim, self.num_classes = latent_dim, num_classes
        if not (isinstance(truncation_clusters, int) and not isinstance(truncation_clusters, bool)
                and 0 <= truncation_clusters <= 1000):
            raise ImgenError(f"stylegan truncation_clusters must be an int in [0, 1000] (0: truncate toward the mean w),"
                             f" got {truncation_clusters!r}")
        self.generator = StyleGenerator(latent_dim, in_channels, image_size, g_channels, num_classes, mapping_depth,
                                        mixing_prob, truncation_clusters)
        self.discriminator = StyleDiscriminator(in_channels, image_size, d_channels, num_classes)
        if clip_discriminator or image_encoder:
            if num_classes:
                raise ImgenError("stylegan clip_discriminator is for an unconditional StyleGAN; drop num_classes or "
                                 "the clip_discriminator")
            features = FeatureProjectionHead(clip_image_tower(clip_discriminator, image_encoder), None, 4 * d_channels)
            self.discriminator = TextGANDiscriminator(self.discriminator, features)
