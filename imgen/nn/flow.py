"""Normalizing flows: RealNVP (Dinh et al. 2017) and Glow (Kingma & Dhariwal 2018) on NCHW images.

Every layer maps `forward(x) -> (y, logdet)` with logdet (B,) = log|det dy/dx| per sample, and
`inverse(y) -> x`. A model maps an image to a list of latents (one per factored-out scale) and scores it
exactly: log p(x) = sum_i log N(z_i; 0, I) + logdet (change of variables, Dinh et al. 2017, eq. 3).

Discretization (the standard one, Theis et al. 2016; Dinh et al. 2017, sec. 4.1): data are integers
k in {0, .., n_bins - 1}; add u ~ U[0, 1) and scale, x = 2 (k + u) / n_bins - 1, so every bin of the
discrete data is an interval of width 2 / n_bins in [-1, 1). Then
    bits/dim = -(log p(x) + D log(2 / n_bins)) / (D ln 2),
which is `imgen.metrics.bits_per_dim(-log_prob, D, bin_width=dequantization_bin_width(n_bins))`.
8-bit images use n_bins = 256; sklearn's digits have 17 grey levels (n_bins = 17).
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from imgen.errors import ImgenError, check_int
from imgen.nn.layers import ConfigMixin, zero_init

LOG_2PI = math.log(2 * math.pi)


# ---------------------------------------------------------------------------------------------------------
# Dequantization
# ---------------------------------------------------------------------------------------------------------
def dequantization_bin_width(n_bins: int = 256) -> float:
    """Width in [-1, 1] of one bin of `n_bins`-level data: the `bin_width` of imgen.metrics.bits_per_dim."""
    check_int(n_bins, "n_bins", minimum=2)
    return 2.0 / n_bins


def dequantize_uniform(x: torch.Tensor, n_bins: int = 256, generator: torch.Generator | None = None) -> torch.Tensor:
    """Uniform dequantization of images in [-1, 1] on an `n_bins`-level grid (x = 2 k / (n_bins - 1) - 1):
    k + u, u ~ U[0, 1), mapped to 2 (k + u) / n_bins - 1 in [-1, 1) (module docstring: the discretization)."""
    check_int(n_bins, "n_bins", minimum=2)
    k = torch.round((x.clamp(-1, 1) + 1) / 2 * (n_bins - 1))  # the integer level of each pixel
    device = x.device if generator is None else generator.device
    u = torch.rand(x.shape, generator=generator, dtype=x.dtype, device=device)
    return 2 * (k + u.to(x.device)) / n_bins - 1  # x = (k + u) / n_bins, then affine [0, 1) -> [-1, 1)


def standard_normal_log_prob(z: torch.Tensor) -> torch.Tensor:
    """log N(z; 0, I) summed over all but the batch dimension -> (B,)."""
    return (-0.5 * (z.pow(2) + LOG_2PI)).flatten(1).sum(1)


# ---------------------------------------------------------------------------------------------------------
# Layers
# ---------------------------------------------------------------------------------------------------------
class ActNorm(nn.Module):
    """y = (x + b) * exp(log_s) per channel (Glow, sec. 3.1); b and log_s are set from the first training batch
    so its output has zero mean and unit variance per channel. logdet = H W sum(log_s) (Glow, Table 1)."""

    def __init__(self, channels: int):
        super().__init__()
        check_int(channels, "ActNorm channels")
        self.bias = nn.Parameter(torch.zeros(1, channels, 1, 1))
        self.log_scale = nn.Parameter(torch.zeros(1, channels, 1, 1))
        self.register_buffer("initialized", torch.tensor(False))  # saved in checkpoints: init happens once

    @torch.no_grad()
    def initialize(self, x: torch.Tensor) -> None:
        """Data-dependent init (Glow, sec. 3.1): zero mean, unit variance per channel on this batch."""
        mean = x.mean(dim=(0, 2, 3), keepdim=True)
        std = x.std(dim=(0, 2, 3), keepdim=True, unbiased=False)
        self.bias.copy_(-mean)
        self.log_scale.copy_(-torch.log(std.clamp_min(1e-6)))
        self.initialized.fill_(True)

    def forward(self, x: torch.Tensor):
        if self.training and not bool(self.initialized):
            self.initialize(x)
        y = (x + self.bias) * torch.exp(self.log_scale)
        logdet = x.shape[2] * x.shape[3] * self.log_scale.sum()  # Glow, Table 1: h * w * sum(log|s|)
        return y, logdet.expand(x.shape[0])

    def inverse(self, y: torch.Tensor) -> torch.Tensor:
        return y * torch.exp(-self.log_scale) - self.bias


class InvConv1x1(nn.Module):
    """Invertible 1x1 convolution in LU form (Glow, sec. 3.2): W = P L (U + diag(sign(s) exp(log|s|))) with P a
    fixed permutation, L unit lower triangular, U strictly upper; log|det W| = sum(log|s|), so
    logdet = H W sum(log|s|) (Glow, Table 1). Starts as a random rotation, as in Glow."""

    def __init__(self, channels: int):
        super().__init__()
        check_int(channels, "InvConv1x1 channels")
        w = torch.linalg.qr(torch.randn(channels, channels))[0]  # a random rotation (Glow, sec. 3.2)
        p, lower, upper = torch.linalg.lu(w)
        s = torch.diagonal(upper)
        self.register_buffer("p", p)
        self.register_buffer("sign_s", torch.sign(s))
        self.register_buffer("lower_mask", torch.tril(torch.ones(channels, channels), -1))
        self.register_buffer("eye", torch.eye(channels))
        self.lower = nn.Parameter(lower * self.lower_mask)
        self.upper = nn.Parameter(torch.triu(upper, 1))
        self.log_s = nn.Parameter(torch.log(s.abs()))

    def weight(self) -> torch.Tensor:
        """W = P L (U + diag(s)) (Glow, sec. 3.2), (C, C)."""
        lower = self.lower * self.lower_mask + self.eye
        upper = self.upper * self.lower_mask.T + torch.diag(self.sign_s * torch.exp(self.log_s))
        return self.p @ lower @ upper

    def forward(self, x: torch.Tensor):
        w = self.weight()
        y = F.conv2d(x, w[:, :, None, None])
        logdet = x.shape[2] * x.shape[3] * self.log_s.sum()  # log|det W| = sum(log|s|) (Glow, sec. 3.2)
        return y, logdet.expand(x.shape[0])

    def inverse(self, y: torch.Tensor) -> torch.Tensor:
        w_inv = torch.linalg.inv(self.weight().double()).to(y.dtype)
        return F.conv2d(y, w_inv[:, :, None, None])


class Squeeze(nn.Module):
    """Space to depth: (B, C, H, W) -> (B, 4C, H/2, W/2), each 2x2 block into channels (RealNVP, sec. 3.6);
    a permutation, so logdet = 0."""

    def forward(self, x: torch.Tensor):
        b, c, h, w = x.shape
        if h % 2 or w % 2:
            raise ImgenError(f"Squeeze needs an even height and width, got {h}x{w}; use an image size divisible "
                             "by 2 ** (number of scales)")
        y = x.reshape(b, c, h // 2, 2, w // 2, 2).permute(0, 1, 3, 5, 2, 4).reshape(b, 4 * c, h // 2, w // 2)
        return y, x.new_zeros(b)

    def inverse(self, y: torch.Tensor) -> torch.Tensor:
        b, c4, h, w = y.shape
        c = c4 // 4
        return y.reshape(b, c, 2, 2, h, w).permute(0, 1, 4, 2, 5, 3).reshape(b, c, 2 * h, 2 * w)


def checkerboard(height: int, width: int, parity: int, device=None) -> torch.Tensor:
    """(1, 1, H, W) mask b with b[i, j] = 1 where (i + j + parity) is even (RealNVP, Figure 3, left)."""
    i = torch.arange(height, device=device)[:, None]
    j = torch.arange(width, device=device)[None, :]
    return ((i + j + parity) % 2 == 0).float()[None, None]


class AffineCoupling(nn.Module):
    """Affine coupling (RealNVP, eq. 7-9): y = b x + (1 - b) (x exp(s(b x)) + t(b x)), logdet = sum((1 - b) s).

    `mask="checkerboard"` uses the spatial mask b of `checkerboard(.., parity)`; `mask="channel"` keeps one half
    of the channels (the first if parity is 0) and transforms the other. The log-scale is bounded,
    s = scale * tanh(raw) with a learned per-channel `scale` (as in the RealNVP code), for stability. The
    conditioner is conv3x3 -> ReLU -> conv1x1 -> ReLU -> conv3x3, the last conv zero-initialised so the layer
    starts as the identity (Glow, sec. 3.3). `dropout` > 0 adds dropout after each ReLU (a regulariser for small
    data, as in Flow++'s coupling nets, Ho et al. 2019)."""

    def __init__(self, channels: int, hidden: int = 64, mask: str = "channel", parity: int = 0, dropout: float = 0.0):
        super().__init__()
        check_int(channels, "AffineCoupling channels")
        check_int(hidden, "AffineCoupling hidden")
        if mask not in ("checkerboard", "channel"):
            raise ImgenError(f"AffineCoupling mask must be 'checkerboard' or 'channel', got {mask!r}")
        if parity not in (0, 1):
            raise ImgenError(f"AffineCoupling parity must be 0 or 1, got {parity!r}")
        if isinstance(dropout, bool) or not isinstance(dropout, (int, float)) or not 0 <= dropout < 1:
            raise ImgenError(f"AffineCoupling dropout must be in [0, 1), got {dropout!r}")
        if mask == "channel" and channels < 2:
            raise ImgenError(f"a channel-mask AffineCoupling needs >= 2 channels, got {channels}; "
                             "use mask='checkerboard' or squeeze first")
        self.mask, self.parity = mask, parity
        self.channels = channels
        if mask == "checkerboard":
            c_in = c_out = channels
        else:
            n_first = channels // 2
            c_in, c_out = (n_first, channels - n_first) if parity == 0 else (channels - n_first, n_first)
        drop = lambda: [nn.Dropout(dropout)] if dropout else []  # noqa: E731
        self.net = nn.Sequential(
            nn.Conv2d(c_in, hidden, 3, padding=1), nn.ReLU(), *drop(),
            nn.Conv2d(hidden, hidden, 1), nn.ReLU(), *drop(),
            zero_init(nn.Conv2d(hidden, 2 * c_out, 3, padding=1)),
        )
        self.scale = nn.Parameter(torch.ones(1, c_out, 1, 1))

    def _split(self, x: torch.Tensor):
        """(kept, transformed) halves of a channel-mask input."""
        n_first = self.channels // 2
        a, b = x[:, :n_first], x[:, n_first:]
        return (a, b) if self.parity == 0 else (b, a)

    def _join(self, kept: torch.Tensor, transformed: torch.Tensor) -> torch.Tensor:
        return torch.cat([kept, transformed] if self.parity == 0 else [transformed, kept], dim=1)

    def _scale_shift(self, h: torch.Tensor):
        raw_s, t = self.net(h).chunk(2, dim=1)
        return self.scale * torch.tanh(raw_s), t  # bounded log-scale s, shift t

    def forward(self, x: torch.Tensor):
        if self.mask == "checkerboard":
            b = checkerboard(x.shape[2], x.shape[3], self.parity, x.device).to(x.dtype)
            s, t = self._scale_shift(x * b)
            s, t = s * (1 - b), t * (1 - b)
            y = x * b + (1 - b) * (x * torch.exp(s) + t)  # RealNVP eq. 9
            return y, s.flatten(1).sum(1)  # RealNVP eq. 6: log|det| = sum_j s_j over the transformed units
        kept, x2 = self._split(x)
        s, t = self._scale_shift(kept)
        y2 = x2 * torch.exp(s) + t  # RealNVP eq. 5
        return self._join(kept, y2), s.flatten(1).sum(1)

    def inverse(self, y: torch.Tensor) -> torch.Tensor:
        if self.mask == "checkerboard":
            b = checkerboard(y.shape[2], y.shape[3], self.parity, y.device).to(y.dtype)
            s, t = self._scale_shift(y * b)
            s, t = s * (1 - b), t * (1 - b)
            return y * b + (1 - b) * ((y - t) * torch.exp(-s))  # RealNVP eq. 8 inverted
        kept, y2 = self._split(y)
        s, t = self._scale_shift(kept)
        return self._join(kept, (y2 - t) * torch.exp(-s))


class FlowSequential(nn.Sequential):
    """Layers applied in order; logdets add (chain rule). inverse runs them backwards."""

    def forward(self, x: torch.Tensor):
        logdet = x.new_zeros(x.shape[0])
        for layer in self:
            x, ld = layer(x)
            logdet = logdet + ld
        return x, logdet

    def inverse(self, y: torch.Tensor) -> torch.Tensor:
        for layer in reversed(self):
            y = layer.inverse(y)
        return y


def glow_step(channels: int, hidden: int, parity: int = 0, dropout: float = 0.0) -> FlowSequential:
    """One step of flow: ActNorm -> invertible 1x1 conv -> affine coupling (Glow, Figure 2a)."""
    return FlowSequential(ActNorm(channels), InvConv1x1(channels),
                          AffineCoupling(channels, hidden, mask="channel", parity=parity, dropout=dropout))


# ---------------------------------------------------------------------------------------------------------
# Multi-scale models
# ---------------------------------------------------------------------------------------------------------
class SplitPrior(nn.Module):
    """Glow's learned prior for a factored-out half (the official code's split2d): z ~ N(mu(h), exp(log_sigma(h))^2)
    given the half h that goes on, from a zero-initialised conv3x3 (so it starts as N(0, I)). Written as a flow
    step on z, eps = (z - mu) / sigma with log|det| = -sum(log_sigma), so latents stay standard normal."""

    def __init__(self, kept_channels: int, out_channels: int):
        super().__init__()
        self.conv = zero_init(nn.Conv2d(kept_channels, 2 * out_channels, 3, padding=1))

    def forward(self, z: torch.Tensor, h: torch.Tensor):
        mean, log_sigma = self.conv(h).chunk(2, dim=1)
        return (z - mean) * torch.exp(-log_sigma), -log_sigma.flatten(1).sum(1)

    def inverse(self, eps: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        mean, log_sigma = self.conv(h).chunk(2, dim=1)
        return mean + eps * torch.exp(log_sigma)


class MultiScaleFlow(nn.Module):
    """Shared multi-scale plumbing (RealNVP, sec. 3.6): `self.scales[i]` is a FlowSequential; after every scale
    but the last, half of the channels are factored out as a latent z_i and the rest go on. The latents are standard
    normal: a model with `self.split_priors` (Glow's learned conditional prior) returns them standardised.
    forward(x) -> (list of z, logdet); inverse(list of z) -> x."""

    def _split_priors(self):
        """The nn.ModuleList of SplitPrior (one per factored-out half) of a model that has them, else None."""
        return self._modules.get("split_priors")

    def _check_input(self, x: torch.Tensor) -> None:
        c, s = self.in_channels, self.image_size
        if x.ndim != 4 or tuple(x.shape[1:]) != (c, s, s):
            raise ImgenError(f"{type(self).__name__} expects images of shape (B, {c}, {s}, {s}), "
                             f"got {tuple(x.shape)}; build it with in_channels and image_size of your data")

    def forward(self, x: torch.Tensor):
        self._check_input(x)
        zs, logdet, priors = [], x.new_zeros(x.shape[0]), self._split_priors()
        h = x
        for i, scale in enumerate(self.scales):
            h, ld = scale(h)
            logdet = logdet + ld
            if i < len(self.scales) - 1:
                half = h.shape[1] // 2
                z, h = h[:, :half], h[:, half:]  # factor out half the channels (RealNVP, sec. 3.6, eq. 13)
                if priors is not None:
                    z, ld = priors[i](z, h)
                    logdet = logdet + ld
                zs.append(z)
        zs.append(h)
        return zs, logdet

    def inverse(self, zs) -> torch.Tensor:
        zs = list(zs)
        if len(zs) != len(self.scales):
            raise ImgenError(f"{type(self).__name__}.inverse needs {len(self.scales)} latents (one per scale, as "
                             f"forward returns), got {len(zs)}")
        h, priors = zs[-1], self._split_priors()
        for i in reversed(range(len(self.scales))):
            if i < len(self.scales) - 1:
                z = zs[i] if priors is None else priors[i].inverse(zs[i], h)
                h = torch.cat([z, h], dim=1)
            h = self.scales[i].inverse(h)
        return h

    def z_shapes(self) -> list[tuple[int, int, int]]:
        """(C, H, W) of each latent forward returns, computed by running a dummy image (no init side effects)."""
        if not hasattr(self, "_z_shapes"):
            p = next(self.parameters())
            training = self.training
            self.eval()
            with torch.no_grad():
                zs, _ = self.forward(torch.zeros(1, self.in_channels, self.image_size, self.image_size,
                                                 device=p.device, dtype=p.dtype))
            self.train(training)
            self._z_shapes = [tuple(z.shape[1:]) for z in zs]
        return self._z_shapes

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        """Exact log density in nats per sample, (B,): sum_i log N(z_i; 0, I) + log|det dz/dx| (RealNVP, eq. 3)."""
        zs, logdet = self.forward(x)
        return sum(standard_normal_log_prob(z) for z in zs) + logdet

    @torch.no_grad()
    def sample(self, n: int, temperature: float = 1.0, generator: torch.Generator | None = None) -> torch.Tensor:
        """n images x = f^-1(z), z ~ N(0, temperature^2 I) (Glow, sec. 5: reduced temperature); temperature 0
        gives the image of the prior's mode z = 0."""
        check_int(n, "n")
        if isinstance(temperature, bool) or not isinstance(temperature, (int, float)) or temperature < 0:
            raise ImgenError(f"temperature must be a number >= 0, got {temperature!r}; 1.0 samples the model, "
                             "0.7 gives smoother samples")
        p = next(self.parameters())
        gen_device = "cpu" if generator is None else generator.device
        zs = [temperature * torch.randn((n, *shape), generator=generator, device=gen_device, dtype=p.dtype).to(p.device)
              for shape in self.z_shapes()]
        return self.inverse(zs)


def _check_sizes(name: str, in_channels: int, image_size: int, hidden: int, num_squeezes: int, what: str) -> None:
    check_int(in_channels, f"{name} in_channels")
    check_int(image_size, f"{name} image_size")
    check_int(hidden, f"{name} hidden")
    if image_size % (2 ** num_squeezes):
        raise ImgenError(f"{name} image_size must be divisible by 2 ** {what} = {2 ** num_squeezes}, got "
                         f"{image_size}; lower {what} or resize the images")


class RealNVP(ConfigMixin, MultiScaleFlow):
    """Multi-scale RealNVP (Dinh et al. 2017, sec. 3.6): each of `num_scales` scales is 3 checkerboard couplings,
    a squeeze, 3 channel couplings, then half the channels are factored out; a final scale of 4 checkerboard
    couplings. Masks alternate so every unit is transformed. Defaults fit 8x8 grey digits on a CPU."""

    name = "realnvp"

    def __init__(self, in_channels: int = 1, image_size: int = 8, num_scales: int = 1, hidden: int = 64):
        super().__init__()
        self.save_config(locals())
        check_int(num_scales, "RealNVP num_scales")
        _check_sizes("RealNVP", in_channels, image_size, hidden, num_scales, "num_scales")
        self.in_channels, self.image_size = in_channels, image_size
        scales, c = [], in_channels
        for _ in range(num_scales):
            layers = [AffineCoupling(c, hidden, "checkerboard", parity=i % 2) for i in range(3)]
            layers.append(Squeeze())
            c *= 4
            layers += [AffineCoupling(c, hidden, "channel", parity=i % 2) for i in range(3)]
            scales.append(FlowSequential(*layers))
            c -= c // 2  # the factored-out half leaves
        scales.append(FlowSequential(*[AffineCoupling(c, hidden, "checkerboard", parity=i % 2) for i in range(4)]))
        self.scales = nn.ModuleList(scales)


class Glow(ConfigMixin, MultiScaleFlow):
    """Glow (Kingma & Dhariwal 2018, Figure 2b): `levels` levels of squeeze -> `steps` x (ActNorm -> InvConv1x1 ->
    AffineCoupling) -> split (no split after the last). `split_prior`: each factored-out half under Glow's learned
    conditional prior N(mu(h), sigma(h)^2) given the half that goes on (SplitPrior); else all latents N(0, I).
    `dropout` in the coupling nets (AffineCoupling) during training.
    Defaults fit 8x8 grey digits on a CPU."""

    name = "glow"

    def __init__(self, in_channels: int = 1, image_size: int = 8, levels: int = 2, steps: int = 4, hidden: int = 64,
                 split_prior: bool = False, dropout: float = 0.0):
        super().__init__()
        self.save_config(locals())
        check_int(levels, "Glow levels")
        check_int(steps, "Glow steps")
        _check_sizes("Glow", in_channels, image_size, hidden, levels, "levels")
        self.in_channels, self.image_size = in_channels, image_size
        scales, priors, c = [], [], in_channels
        for level in range(levels):
            c *= 4
            scales.append(FlowSequential(Squeeze(), *[glow_step(c, hidden, k % 2, dropout) for k in range(steps)]))
            if level < levels - 1:
                priors.append(SplitPrior(c - c // 2, c // 2))
                c -= c // 2
        self.scales = nn.ModuleList(scales)
        if split_prior:
            self.split_priors = nn.ModuleList(priors)


__all__ = ["ActNorm", "AffineCoupling", "FlowSequential", "Glow", "InvConv1x1", "MultiScaleFlow", "RealNVP",
           "SplitPrior", "Squeeze", "checkerboard", "dequantization_bin_width", "dequantize_uniform", "glow_step",
           "standard_normal_log_prob"]
