"""The VQ-VAE / VQGAN tokenizer net (van den Oord et al. 2017; Esser et al. 2021): the LDM autoencoder's conv
stacks (imgen.nn.autoencoder) around one of imgen.nn.quantize's quantizers, so an image becomes an
(H/f, W/f) grid of integer tokens and a token grid decodes back to pixels. f = 2**(len(channel_mults) - 1).

    net = VQAutoencoder(in_channels=3, image_size=32, quantizer="vq_ema", codebook_size=256)  # 8x8 tokens
    x_hat, indices, aux_loss = net(x)            # training: straight-through reconstruction
    ids = net.encode_tokens(x)                   # (B, 8, 8) int64 in [0, 256)
    x_hat = net.decode_tokens(ids)               # (B, 3, 32, 32), not clipped

With `discriminator` options the net also holds a PatchDiscriminator (VQGAN); the losses that use it live in
imgen.methods.vqgan, and the token interface does not touch it.
"""
from __future__ import annotations

import math

import torch
from torch import nn

from imgen.errors import ImgenError, check_int
from imgen.nn.autoencoder import decoder_stack, encoder_stack
from imgen.nn.layers import ConfigMixin
from imgen.nn.quantize import FSQ, LFQ, EMAVectorQuantizer, ResidualVectorQuantizer, VectorQuantizer

QUANTIZERS = ("vq", "vq_ema", "rvq", "fsq", "lfq")


def build_quantizer(kind: str, codebook_size: int, code_dim: int, options: dict | None = None) -> nn.Module:
    """One of imgen.nn.quantize's quantizers with `codebook_size` codes: vq, vq_ema, rvq (codebook_size per level)
    of `code_dim`-dimensional codes; fsq with options["levels"] whose product is codebook_size (default [8, 8, 4]
    for 256); lfq with log2(codebook_size) binary channels. `options` go to the quantizer's constructor."""
    options = dict(options or {})
    check_int(codebook_size, "codebook_size", minimum=2)
    check_int(code_dim, "code_dim")
    try:
        if kind == "vq":
            return VectorQuantizer(codebook_size, code_dim, **options)
        if kind == "vq_ema":
            return EMAVectorQuantizer(codebook_size, code_dim, **options)
        if kind == "rvq":
            return ResidualVectorQuantizer(codebook_size, code_dim, **options)
        if kind == "fsq":
            levels = options.pop("levels", [8, 8, 4] if codebook_size == 256 else None)
            if levels is None or math.prod(levels) != codebook_size:
                raise ImgenError(f"fsq needs quantizer_options.levels whose product is codebook_size {codebook_size} "
                                 f"(e.g. [8, 8, 4] for 256), got {levels}")
            return FSQ(levels, **options)
        if kind == "lfq":
            dim = codebook_size.bit_length() - 1
            if 2 ** dim != codebook_size:
                raise ImgenError(f"lfq needs a power-of-two codebook_size (2**dim codes), got {codebook_size}")
            return LFQ(dim, **options)
    except TypeError as e:
        raise ImgenError(f"bad quantizer_options {options} for quantizer {kind!r}: {e}") from None
    raise ImgenError(f"unknown quantizer {kind!r}; valid: {', '.join(QUANTIZERS)}")


class VQAutoencoder(ConfigMixin, nn.Module):
    """encoder_stack -> quantizer -> decoder_stack. The encoder ends in quantizer.dim maps (the code dimension:
    code_dim for vq/vq_ema/rvq, len(levels) for fsq, log2(codebook_size) for lfq)."""

    name = "vqvae"

    def __init__(self, in_channels: int, image_size: int, quantizer: str = "vq_ema", codebook_size: int = 256,
                 code_dim: int = 16, quantizer_options: dict | None = None, base_channels: int = 16,
                 channel_mults=(1, 2, 4), num_res_blocks: int = 1, discriminator: dict | None = None):
        super().__init__()
        self.save_config(locals())
        mults = list(channel_mults)
        if not mults or any(not isinstance(m, int) or m < 1 for m in mults):
            raise ImgenError(f"vqvae channel_mults must be a non-empty list of positive ints, got {channel_mults}")
        for name, v in (("in_channels", in_channels), ("base_channels", base_channels),
                        ("num_res_blocks", num_res_blocks)):
            check_int(v, f"vqvae {name}")
        factor = 2 ** (len(mults) - 1)
        if not isinstance(image_size, int) or image_size % factor:
            raise ImgenError(f"vqvae image_size {image_size} is not divisible by its downsampling factor {factor} "
                             f"(2**(len(channel_mults) - 1)); use fewer channel_mults or another size")
        self.in_channels, self.image_size, self.kind = in_channels, image_size, quantizer
        self.latent_size = image_size // factor
        self.quantizer = build_quantizer(quantizer, codebook_size, code_dim, quantizer_options)
        widths = [base_channels * m for m in mults]
        self.encoder = encoder_stack(in_channels, widths, num_res_blocks, self.quantizer.dim)
        self.decoder = decoder_stack(self.quantizer.dim, widths, num_res_blocks, in_channels)
        if discriminator is not None:
            from imgen.nn.discriminator import PatchDiscriminator

            if not isinstance(discriminator, dict):
                raise ImgenError(f"vqvae discriminator must be a dict of PatchDiscriminator options (or null), "
                                 f"got {discriminator!r}")
            self.discriminator = PatchDiscriminator(in_channels=in_channels, **discriminator)

    # -- the token interface --------------------------------------------------------------------------------
    @property
    def codebook_size(self) -> int:
        return self.quantizer.codebook_size

    @property
    def token_grid(self) -> tuple[int, int]:
        return (self.latent_size, self.latent_size)

    @property
    def token_shape(self) -> tuple[int, ...]:
        """The shape of one image's tokens: (h, w), or (h, w, num_quantizers) for residual VQ."""
        levels = getattr(self.quantizer, "num_quantizers", None)
        return self.token_grid if levels is None else (*self.token_grid, levels)

    @property
    def last_layer(self) -> torch.Tensor:
        """The decoder's last conv weight: VQGAN's adaptive GAN weight is measured here (Esser et al. eq. 7)."""
        return self.decoder[-1].weight

    def autoencoder_parameters(self) -> list[nn.Parameter]:
        """Everything but the discriminator: what the reconstruction (generator) optimizer trains."""
        return [p for name, p in self.named_parameters() if not name.startswith("discriminator.")]

    def _check_images(self, x: torch.Tensor) -> None:
        if x.ndim != 4 or tuple(x.shape[1:]) != (self.in_channels, self.image_size, self.image_size):
            raise ImgenError(f"this tokenizer encodes images shaped (B, {self.in_channels}, {self.image_size}, "
                             f"{self.image_size}), got {tuple(x.shape)}; resize the images or train a tokenizer on "
                             f"data of that size")

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Images (B, C, H, W) in [-1, 1] -> continuous encoder outputs (B, quantizer.dim, h, w), before quantizing."""
        self._check_images(x)
        return self.encoder(x)

    def decode(self, z_q: torch.Tensor) -> torch.Tensor:
        """Quantized codes (B, quantizer.dim, h, w) -> images (B, C, H, W), not clipped."""
        if z_q.ndim != 4 or z_q.shape[1] != self.quantizer.dim:
            raise ImgenError(f"this tokenizer decodes codes shaped (B, {self.quantizer.dim}, h, w), got "
                             f"{tuple(z_q.shape)}; to decode token ids use decode_tokens")
        return self.decoder(z_q)

    def forward(self, x: torch.Tensor):
        """(reconstruction, indices, aux_loss): the straight-through path that training differentiates."""
        z_q, indices, aux_loss = self.quantizer(self.encode(x))
        return self.decode(z_q), indices, aux_loss

    def encode_tokens(self, x: torch.Tensor) -> torch.Tensor:
        """Images -> token ids (B, *token_shape) int64 in [0, codebook_size). Call in eval mode: in training mode
        an EMA quantizer updates its codebook."""
        return self.quantizer(self.encode(x))[1]

    def decode_tokens(self, ids: torch.Tensor) -> torch.Tensor:
        """Token ids (B, *token_shape) -> images (B, C, H, W), not clipped."""
        if not isinstance(ids, torch.Tensor) or ids.dtype.is_floating_point or ids.dtype == torch.bool:
            raise ImgenError(f"decode_tokens needs an integer tensor of token ids, got "
                             f"{getattr(ids, 'dtype', type(ids).__name__)}; pass the output of encode_tokens")
        if ids.ndim != 1 + len(self.token_shape) or tuple(ids.shape[1:]) != self.token_shape:
            raise ImgenError(f"decode_tokens expects ids shaped (B, {', '.join(map(str, self.token_shape))}) "
                             f"(this tokenizer's token grid), got {tuple(ids.shape)}")
        if ids.numel() and (ids.min() < 0 or ids.max() >= self.codebook_size):
            raise ImgenError(f"token ids must lie in [0, {self.codebook_size}) (the vocabulary size), got "
                             f"[{int(ids.min())}, {int(ids.max())}]")
        return self.decode(self.quantizer.indices_to_codes(ids.long()))
