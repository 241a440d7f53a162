"""The KL-regularised autoencoder of latent diffusion (Rombach et al. 2022, sec. 3 and appendix G): a conv
encoder maps an image (C, H, W) to the mean and log-variance of a diagonal Gaussian posterior over a
(latent_channels, H/f, W/f) latent, a conv decoder maps a latent back to pixels. f = 2**(len(channel_mults) - 1).

    net = AutoencoderKL(in_channels=3, image_size=32)           # 32x32 RGB <-> 4x8x8 latents (f = 4)
    z = net.encode(x).mean                                        # or .sample(generator)
    x_hat = net.decode(z)

The loss (reconstruction + KL) lives in imgen.methods.autoencoder; nothing here knows about training.
"""
from __future__ import annotations

import torch
from torch import nn

from imgen.errors import ImgenError, check_int
from imgen.nn.layers import ConfigMixin, Downsample, Upsample, group_norm

LOGVAR_RANGE = (-30.0, 20.0)  # clamp as in LDM's DiagonalGaussianDistribution


class DiagonalGaussian:
    """q(z | x) = N(mean, diag(exp(logvar))), each (B, C, h, w)."""

    def __init__(self, mean: torch.Tensor, logvar: torch.Tensor):
        self.mean, self.logvar = mean, logvar.clamp(*LOGVAR_RANGE)
        self.std = torch.exp(0.5 * self.logvar)

    def sample(self, generator: torch.Generator | None = None) -> torch.Tensor:
        eps = torch.randn(self.mean.shape, generator=generator, dtype=self.mean.dtype).to(self.mean.device)
        return self.mean + self.std * eps  # reparameterisation trick (Kingma & Welling 2014, eq. 10)

    def kl(self) -> torch.Tensor:
        """KL(q(z|x) || N(0, I)) per image, summed over latent dims: 0.5 sum(mu^2 + var - 1 - logvar) (VAE, app. B)."""
        return 0.5 * (self.mean ** 2 + self.logvar.exp() - 1.0 - self.logvar).flatten(1).sum(1)


class Block(nn.Module):
    """GroupNorm-SiLU-conv twice with a residual (the LDM autoencoder's ResnetBlock, no time embedding)."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.body = nn.Sequential(group_norm(in_channels), nn.SiLU(), nn.Conv2d(in_channels, out_channels, 3, padding=1),
                                  group_norm(out_channels), nn.SiLU(), nn.Conv2d(out_channels, out_channels, 3, padding=1))
        self.skip = nn.Conv2d(in_channels, out_channels, 1) if in_channels != out_channels else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.skip(x) + self.body(x)


def encoder_stack(in_channels: int, widths: list[int], num_res_blocks: int, out_channels: int) -> nn.Sequential:
    """The LDM encoder's conv stack: level i has width widths[i] and num_res_blocks Blocks, a Downsample between
    levels (f = 2**(len(widths) - 1)), then a middle Block, GroupNorm-SiLU and a conv to out_channels maps."""
    enc: list[nn.Module] = [nn.Conv2d(in_channels, widths[0], 3, padding=1)]
    ch = widths[0]
    for i, w in enumerate(widths):
        for _ in range(num_res_blocks):
            enc.append(Block(ch, w))
            ch = w
        if i < len(widths) - 1:
            enc.append(Downsample(ch))
    enc += [Block(ch, ch), group_norm(ch), nn.SiLU(), nn.Conv2d(ch, out_channels, 3, padding=1)]
    return nn.Sequential(*enc)


def decoder_stack(in_channels: int, widths: list[int], num_res_blocks: int, out_channels: int) -> nn.Sequential:
    """The mirror of encoder_stack: a conv from in_channels latent maps, a middle Block, the levels from the
    widest up with an Upsample between them, GroupNorm-SiLU and a last conv to out_channels (pixels)."""
    ch = widths[-1]
    dec: list[nn.Module] = [nn.Conv2d(in_channels, ch, 3, padding=1), Block(ch, ch)]
    for i, w in reversed(list(enumerate(widths))):
        for _ in range(num_res_blocks):
            dec.append(Block(ch, w))
            ch = w
        if i > 0:
            dec.append(Upsample(ch))
    dec += [group_norm(ch), nn.SiLU(), nn.Conv2d(ch, out_channels, 3, padding=1)]
    return nn.Sequential(*dec)


class AutoencoderKL(ConfigMixin, nn.Module):
    """Level i works at image_size / 2**i with base_channels * channel_mults[i] channels and
    `num_res_blocks` residual blocks; the encoder ends in 2 * latent_channels maps (mean, log-variance)."""

    name = "autoencoder"

    def __init__(self, in_channels: int, image_size: int, latent_channels: int = 4, base_channels: int = 32,
                 channel_mults=(1, 2, 2), num_res_blocks: int = 1):
        super().__init__()
        self.save_config(locals())
        mults = list(channel_mults)
        if not mults or any(not isinstance(m, int) or m < 1 for m in mults):
            raise ImgenError(f"autoencoder channel_mults must be a non-empty list of positive ints, got {channel_mults}")
        for name, v in (("in_channels", in_channels), ("latent_channels", latent_channels),
                        ("base_channels", base_channels), ("num_res_blocks", num_res_blocks)):
            check_int(v, f"autoencoder {name}")
        self.factor = 2 ** (len(mults) - 1)
        if not isinstance(image_size, int) or image_size % self.factor:
            raise ImgenError(f"autoencoder image_size {image_size} is not divisible by its downsampling factor "
                             f"{self.factor} (2**(len(channel_mults) - 1)); use fewer channel_mults or another size")
        self.in_channels, self.image_size, self.latent_channels = in_channels, image_size, latent_channels
        self.latent_size = image_size // self.factor
        widths = [base_channels * m for m in mults]
        self.encoder = encoder_stack(in_channels, widths, num_res_blocks, 2 * latent_channels)
        self.decoder = decoder_stack(latent_channels, widths, num_res_blocks, in_channels)

    @property
    def latent_shape(self) -> tuple[int, int, int]:
        return (self.latent_channels, self.latent_size, self.latent_size)

    def encode(self, x: torch.Tensor) -> DiagonalGaussian:
        """Images (B, C, H, W) in [-1, 1] -> the posterior over (B, latent_channels, H/f, W/f) latents."""
        if x.ndim != 4 or tuple(x.shape[1:]) != (self.in_channels, self.image_size, self.image_size):
            raise ImgenError(f"this autoencoder encodes images shaped (B, {self.in_channels}, {self.image_size}, "
                             f"{self.image_size}), got {tuple(x.shape)}; resize the images or train an autoencoder "
                             f"on data of that size")
        mean, logvar = self.encoder(x).chunk(2, dim=1)
        return DiagonalGaussian(mean, logvar)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Latents (B, latent_channels, h, w) -> images (B, C, h*f, w*f), not clipped."""
        if z.ndim != 4 or z.shape[1] != self.latent_channels:
            raise ImgenError(f"this autoencoder decodes latents shaped (B, {self.latent_channels}, h, w), got "
                             f"{tuple(z.shape)}")
        return self.decoder(z)

    def forward(self, x: torch.Tensor, generator: torch.Generator | None = None):
        """(reconstruction, posterior) of x, decoding a posterior sample."""
        posterior = self.encode(x)
        return self.decode(posterior.sample(generator)), posterior


def burgess_encoder(in_channels: int, image_size: int, width: int, hidden: int, out_features: int) -> nn.Sequential:
    """The beta-VAE conv encoder (Higgins et al. 2017, app. A; Burgess et al. 2018, sec. 4): 4x4 stride-2 convs of
    `width` channels with ReLU down to a 4x4 map, then two linear layers of `hidden` units and a linear map out."""
    layers: list[nn.Module] = []
    ch, size = in_channels, image_size
    while size > 4:
        layers += [nn.Conv2d(ch, width, 4, stride=2, padding=1), nn.ReLU()]
        ch, size = width, size // 2
    return nn.Sequential(*layers, nn.Flatten(), nn.Linear(ch * size * size, hidden), nn.ReLU(),
                         nn.Linear(hidden, hidden), nn.ReLU(), nn.Linear(hidden, out_features))


def burgess_decoder(in_features: int, image_size: int, width: int, hidden: int, out_channels: int) -> nn.Sequential:
    """The mirror of burgess_encoder: linear layers up to a (width, 4, 4) map, 4x4 stride-2 transposed convs."""
    ups = (image_size // 4).bit_length() - 1
    layers: list[nn.Module] = [nn.Linear(in_features, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(),
                               nn.Linear(hidden, width * 16), nn.ReLU(), nn.Unflatten(1, (width, 4, 4))]
    for i in range(ups):
        last = i == ups - 1
        layers.append(nn.ConvTranspose2d(width, out_channels if last else width, 4, stride=2, padding=1))
        if not last:
            layers.append(nn.ReLU())
    return nn.Sequential(*layers)


class BroadcastDecoder(nn.Module):
    """The spatial broadcast decoder (Watters et al. 2019, sec. 2): z is tiled over a grid, two channels of x and y
    coordinates in [-1, 1] are appended, and stride-1 3x3 convs render each pixel from (z, its position) alone, so
    a position is read off the coordinates instead of being unpacked from z by transposed convs. upsample=2: the
    grid is image_size / 2 (a quarter of the paper's cost at 32x32 pixels), brought to full size by one 4x4 stride-2
    transposed conv and a 3x3 conv; upsample=1: the paper's full-size grid and a 1x1 conv out (small maps, such as
    an autoencoder's 8x8 latents)."""

    def __init__(self, in_features: int, image_size: int, width: int, out_channels: int, layers: int = 3,
                 upsample: int = 2):
        super().__init__()
        if upsample not in (1, 2):
            raise ImgenError(f"vae upsample (the broadcast decoder's grid is image_size / upsample) must be 1 or 2, "
                             f"got {upsample!r}")
        self.grid = image_size // upsample
        axis = torch.linspace(-1, 1, self.grid)
        self.register_buffer("coords", torch.stack(torch.meshgrid(axis, axis, indexing="ij"))[None], persistent=False)
        convs: list[nn.Module] = []
        ch = in_features + 2
        for _ in range(layers):
            convs += [nn.Conv2d(ch, width, 3, padding=1), nn.ReLU()]
            ch = width
        out = ([nn.ConvTranspose2d(width, width, 4, stride=2, padding=1), nn.ReLU(),
                nn.Conv2d(width, out_channels, 3, padding=1)] if upsample == 2 else [nn.Conv2d(width, out_channels, 1)])
        self.body = nn.Sequential(*convs, *out)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        tiled = z[:, :, None, None].expand(-1, -1, self.grid, self.grid)
        return self.body(torch.cat([tiled, self.coords.expand(len(z), -1, -1, -1)], 1))


ARCHS = ("ldm", "burgess", "broadcast")


class VAE(ConfigMixin, nn.Module):
    """The VAE's encoder/decoder pair (Kingma & Welling 2014, sec. 3 and app. C). arch="ldm": AutoencoderKL's conv
    stacks with, when `latent_dim` is set, a linear map between the (latent_channels, h, w) map and a vector latent
    of `latent_dim` (2 for the classic embedding pictures); latent_dim=None keeps AutoencoderKL's latent map.
    arch="burgess": the small conv + MLP net of the beta-VAE papers (burgess_encoder / burgess_decoder: 4x4 stride-2
    convs of base_channels, two layers of `hidden` units, a vector latent of latent_dim; image_size a power of two
    >= 8), ~10x cheaper per image than "ldm" at 32x32. arch="broadcast": burgess_encoder and the spatial broadcast
    decoder (BroadcastDecoder: base_channels wide, its grid image_size / upsample).
    The decoder's observation noise is one learned scalar `log_sigma` (the scale of p(x | z); the likelihood itself
    lives in imgen.methods.vae, which may hold sigma fixed instead)."""

    name = "vae"

    def __init__(self, in_channels: int, image_size: int, latent_dim: int | None = 16, latent_channels: int = 4,
                 base_channels: int = 32, channel_mults=(1, 2), num_res_blocks: int = 1, arch: str = "ldm",
                 hidden: int = 256, upsample: int = 2):
        super().__init__()
        self.save_config(locals())
        if arch not in ARCHS:
            raise ImgenError(f"vae arch must be one of {', '.join(ARCHS)}, got {arch!r}")
        self.in_channels, self.image_size, self.latent_dim, self.arch = in_channels, image_size, latent_dim, arch
        if arch in ("burgess", "broadcast"):
            if latent_dim is None:
                raise ImgenError(f"vae arch {arch!r} has a vector latent: set latent_dim (e.g. 10)")
            if not isinstance(image_size, int) or image_size < 8 or image_size & (image_size - 1):
                raise ImgenError(f"vae arch {arch!r} needs a power-of-two image_size >= 8, got {image_size}; "
                                 f"use arch 'ldm' or resize the images")
            for name, v in (("latent_dim", latent_dim), ("base_channels", base_channels), ("hidden", hidden)):
                check_int(v, f"vae {name}")
            self.latent_shape = (latent_dim,)
            self.encoder = burgess_encoder(in_channels, image_size, base_channels, hidden, 2 * latent_dim)
            self.decoder = (burgess_decoder(latent_dim, image_size, base_channels, hidden, in_channels)
                            if arch == "burgess" else BroadcastDecoder(latent_dim, image_size, base_channels,
                                                                       in_channels, upsample=upsample))
        else:
            self.ae = AutoencoderKL(in_channels, image_size, latent_channels, base_channels, channel_mults,
                                    num_res_blocks)
            map_shape = self.ae.latent_shape
            if latent_dim is None:
                self.latent_shape = map_shape
            else:
                check_int(latent_dim, "vae latent_dim")
                self.latent_shape = (latent_dim,)
                n = map_shape[0] * map_shape[1] * map_shape[2]
                self.to_latent = nn.Linear(2 * n, 2 * latent_dim)  # (mean, logvar) maps -> (mean, logvar) vectors
                self.from_latent = nn.Sequential(nn.Linear(latent_dim, n), nn.Unflatten(1, map_shape))
        self.log_sigma = nn.Parameter(torch.tensor(-1.0))  # log std of p(x | z) = N(decode(z), sigma^2), learned

    def encode(self, x: torch.Tensor) -> DiagonalGaussian:
        """Images (B, C, H, W) in [-1, 1] -> q(z | x) over (B, *latent_shape) latents."""
        if self.arch != "ldm":
            if x.ndim != 4 or tuple(x.shape[1:]) != (self.in_channels, self.image_size, self.image_size):
                raise ImgenError(f"this VAE encodes images shaped (B, {self.in_channels}, {self.image_size}, "
                                 f"{self.image_size}), got {tuple(x.shape)}; resize the images or train a VAE on "
                                 f"data of that size")
            return DiagonalGaussian(*self.encoder(x).chunk(2, dim=1))
        q = self.ae.encode(x)
        if self.latent_dim is None:
            return q
        mean, logvar = self.to_latent(torch.cat([q.mean, q.logvar], 1).flatten(1)).chunk(2, dim=1)
        return DiagonalGaussian(mean, logvar)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Latents (B, *latent_shape) -> the mean of p(x | z), (B, C, H, W), not clipped."""
        if tuple(z.shape[1:]) != tuple(self.latent_shape):
            raise ImgenError(f"this VAE decodes latents shaped (B, {', '.join(map(str, self.latent_shape))}), "
                             f"got {tuple(z.shape)}")
        if self.arch != "ldm":
            return self.decoder(z)
        return self.ae.decode(z if self.latent_dim is None else self.from_latent(z))

    def forward(self, x: torch.Tensor, generator: torch.Generator | None = None):
        posterior = self.encode(x)
        return self.decode(posterior.sample(generator)), posterior
