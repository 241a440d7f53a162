"""GAN nets (the losses are in imgen.methods.gan_losses, the method in imgen.methods.gan).

    DCGANGenerator       z (+ class or text embedding) -> 4x4 -> stride-2 transposed convs -> tanh image (Radford
                         et al. 2016)
    DCGANDiscriminator   stride-2 convs with LeakyReLU(0.2) -> one logit; optional projection of the class or text
                         embedding (Miyato & Koyama 2018, eq. 3), spectral norm (Miyato et al. 2018) and a
                         minibatch-stddev feature (Karras et al. 2018, sec. 3) against mode collapse
    GAN                  one module holding `generator` and `discriminator`, so the Trainer builds, EMAs and
                         checkpoints both; the method gives each its own optimizer
    TextGAN              a GAN conditioned on a frozen text encoder's pooled caption feature (GAN-INT-CLS, Reed et
                         al. 2016; the matching-aware loss and the interpolation are imgen.methods.gan's)

A condition `y` is class ids (B,) int64 (num_classes) or a continuous embedding (B, cond_dim) such as a text feature.
"""
from __future__ import annotations

import math
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from imgen.checkpoint import load_tensors, read_json
from imgen.errors import ImgenError, check_int
from imgen.images import adapt_images
from imgen.nn.discriminator import spectral_normed
from imgen.nn.image_encoder import ImageEncoder
from imgen.nn.text import check_prompts, encode_prompts
from imgen.nn.text2img import build_text_transformer

G_NORMS = ("batch", "conditional_batch", "none")
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
        elif isinstance(m, nn.BatchNorm2d) and m.affine:
            nn.init.normal_(m.weight, 1.0, 0.02)
            nn.init.zeros_(m.bias)


def condition_embedding(num_classes: int | None, cond_dim: int | None, dim: int) -> nn.Module | None:
    """A class embedding table, or for a continuous condition (a text feature) a linear map to `dim` with a
    LeakyReLU(0.2) (Reed et al. 2016, sec. 4: the text feature is compressed by a fully connected layer and a leaky
    ReLU before it joins z); None when unconditional."""
    if num_classes and cond_dim:
        raise ImgenError("a GAN is conditioned on class labels (num_classes) or on an embedding (cond_dim), not both")
    if num_classes:
        return nn.Embedding(num_classes, dim)
    return nn.Sequential(nn.Linear(cond_dim, dim), nn.LeakyReLU(0.2)) if cond_dim else None


def _check_condition(y: torch.Tensor | None, what: str) -> None:
    if y is None:
        raise ImgenError(f"this {what} is conditional; give labels (a class GAN) or text (a text GAN)")


class ConditionalBatchNorm2d(nn.Module):
    """Batch norm whose scale and shift come from the condition (de Vries et al. 2017; the class-conditional BN of
    Miyato & Koyama 2018's generator): BN(h) * (1 + W_g e) + W_b e, so every layer of G sees the condition e."""

    def __init__(self, channels: int, cond_dim: int):
        super().__init__()
        self.bn = nn.BatchNorm2d(channels, affine=False)
        self.gain, self.shift = nn.Linear(cond_dim, channels), nn.Linear(cond_dim, channels)

    def forward(self, h: torch.Tensor, e: torch.Tensor) -> torch.Tensor:
        return self.bn(h) * (1 + self.gain(e))[:, :, None, None] + self.shift(e)[:, :, None, None]


class DCGANGenerator(nn.Module):
    """z (B, latent_dim) [, y] -> images (B, C, S, S) in [-1, 1]. A conditional generator appends a learned class
    embedding (Mirza & Osindero 2014), or the compressed text feature (Reed et al. 2016, sec. 4), to z; with
    norm="conditional_batch" that embedding also sets every batch norm's scale and shift. Widths halve per x2 step,
    ending at base_channels."""

    def __init__(self, latent_dim: int, out_channels: int, image_size: int, base_channels: int = 64,
                 num_classes: int | None = None, norm: str = "batch", cond_dim: int | None = None):
        super().__init__()
        levels = _levels(image_size)
        if norm not in G_NORMS:
            raise ImgenError(f"generator norm (net option g_norm) must be one of {', '.join(G_NORMS)}, got {norm!r}")
        self.latent_dim, self.num_classes = latent_dim, num_classes
        self.embed = condition_embedding(num_classes, cond_dim, latent_dim)
        if norm == "conditional_batch" and self.embed is None:
            raise ImgenError("g_norm 'conditional_batch' needs a conditional GAN (class labels or text); use 'batch'")
        norm_fn = {"batch": lambda c: nn.BatchNorm2d(c), "none": lambda c: nn.Identity(),
                   "conditional_batch": lambda c: ConditionalBatchNorm2d(c, latent_dim)}[norm]
        ch = base_channels * 2 ** levels
        in_dim = latent_dim * (2 if self.embed is not None else 1)
        self.project = nn.Sequential(nn.Linear(in_dim, ch * 16), nn.Unflatten(1, (ch, 4, 4)), norm_fn(ch), nn.ReLU())
        blocks: list[nn.Module] = []
        for _ in range(levels):  # DCGAN: fractionally-strided 4x4 convs, BN, ReLU
            blocks += [nn.ConvTranspose2d(ch, ch // 2, 4, 2, 1, bias=norm == "none"), norm_fn(ch // 2), nn.ReLU()]
            ch //= 2
        blocks += [nn.Conv2d(ch, out_channels, 3, 1, 1), nn.Tanh()]
        self.blocks = nn.Sequential(*blocks)
        dcgan_init(self)

    def forward(self, z: torch.Tensor, labels: torch.Tensor | None = None, generator=None) -> torch.Tensor:
        e = None
        if self.embed is not None:  # (`generator` is unused: a DCGAN draws nothing beyond z)
            _check_condition(labels, "generator")
            e = self.embed(labels)
            z = torch.cat([z, e], 1)
        h = z
        for m in (*self.project, *self.blocks):
            h = m(h, e) if isinstance(m, ConditionalBatchNorm2d) else m(h)
        return h


class DCGANDiscriminator(nn.Module):
    """images (B, C, S, S) [, y] -> logits (B,). Stride-2 4x4 convs with LeakyReLU(0.2) down to 4x4 (no norm on
    the first, Radford et al. sec. 3), features phi(x) = the global sum of the last map, then
    f(x, y) = psi(phi(x)) + <embed(y), phi(x)> (the projection discriminator, Miyato & Koyama 2018, eq. 3; for a
    text feature y, embed(y) is its compression, as the class embedding's V for one-hot y)."""

    def __init__(self, in_channels: int, image_size: int, base_channels: int = 64, num_classes: int | None = None,
                 norm: str = "batch", spectral_norm: bool = False, minibatch_std: bool = False,
                 cond_dim: int | None = None):
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
        self.embed = condition_embedding(num_classes, cond_dim, ch)  # the projection's V
        dcgan_init(self)
        if spectral_norm:
            spectral_normed(self)

    def forward(self, x: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        h = self.features(x)
        phi = (minibatch_stddev(h) if self.minibatch_std else h).sum((2, 3))  # (B, ch), SNGAN's global sum pooling
        out = self.linear(phi).squeeze(1)
        if self.embed is not None:
            _check_condition(labels, "discriminator")
            out = out + (self.embed(labels) * phi).sum(1)  # Miyato & Koyama eq. 3: y^T V phi(x)
        return out


class GAN(nn.Module):
    """A generator and a discriminator in one module (the Trainer builds one net per model). Options: the image's
    in_channels/image_size/num_classes (filled from the data), latent_dim, g_channels/d_channels (base widths),
    g_norm, d_norm, spectral_norm and minibatch_std (on D)."""

    def __init__(self, in_channels: int = 1, image_size: int = 8, num_classes: int | None = None,
                 latent_dim: int = 64, g_channels: int = 64, d_channels: int = 64, g_norm: str = "batch",
                 d_norm: str = "batch", spectral_norm: bool = False, minibatch_std: bool = False,
                 cond_dim: int | None = None):
        super().__init__()
        for value, name in ((in_channels, "in_channels"), (latent_dim, "latent_dim"), (g_channels, "g_channels"),
                            (d_channels, "d_channels")):
            check_int(value, f"gan {name}")
        if num_classes is not None:
            check_int(num_classes, "gan num_classes", minimum=2)
        self.latent_dim, self.num_classes = latent_dim, num_classes
        self.generator = DCGANGenerator(latent_dim, in_channels, image_size, g_channels, num_classes, g_norm, cond_dim)
        self.discriminator = DCGANDiscriminator(in_channels, image_size, d_channels, num_classes, d_norm,
                                                spectral_norm, minibatch_std, cond_dim)


class TextGAN(GAN):
    """GAN-INT-CLS's nets (Reed et al. 2016): the DCGAN generator and the projection discriminator, both conditioned
    on the pooled caption feature of a frozen text encoder (eos token, dim D) — the text tower of a CLIP trained on
    the same captions and images (encoder_init, e.g. the shipped shapes-clip; Reed et al. likewise pre-train their
    text encoder with a joint image-text objective and keep it fixed while the GAN trains). Options: vocab, max_len
    and encoder_options (training fills them from encoder_init's CLIP), then the GAN's. encode(prompts) returns
    {"text", "text_mask", "text_pooled"} as TextToImageNet.encode does, so imgen.Model.generate drives it.

    With clip_discriminator=true, D also scores the same CLIP's frozen image-tower embedding of the image with a
    second projection head (a discriminator on fixed pretrained features, Sauer et al. 2021, Projected GANs): D's
    logit is the sum of the pixel head's and the feature head's (TextGANDiscriminator)."""

    text_conditional = True

    def __init__(self, in_channels: int = 3, image_size: int = 16, vocab: list | None = None, max_len: int = 32,
                 encoder_options: dict | None = None, encoder_init: str = "", latent_dim: int = 64,
                 g_channels: int = 64, d_channels: int = 64, g_norm: str = "batch", d_norm: str = "none",
                 spectral_norm: bool = True, minibatch_std: bool = False, clip_discriminator: bool = False,
                 image_encoder: dict | None = None):
        tokenizer, encoder = build_text_transformer(vocab, encoder_options, max_len, encoder_init, freeze=True,
                                                    what="text_gan")
        super().__init__(in_channels, image_size, None, latent_dim, g_channels, d_channels, g_norm, d_norm,
                         spectral_norm, minibatch_std, cond_dim=encoder.dim)
        self.tokenizer, self.text_encoder = tokenizer, encoder  # frozen: neither player's optimizer holds it
        if clip_discriminator:
            tower = clip_image_tower(encoder_init, image_encoder)
            features = FeatureProjectionHead(tower, encoder.dim, 4 * d_channels)
            if spectral_norm:
                spectral_normed(features.head)
            self.discriminator = TextGANDiscriminator(self.discriminator, features)

    def encode(self, prompts) -> dict:
        """{"text": (B, L, D), "text_mask": (B, L) bool, "text_pooled": (B, D)} of the prompts (no gradient)."""
        with torch.no_grad():
            tokens, mask, pooled = encode_prompts(check_prompts(prompts), self.text_encoder, self.tokenizer)
        return {"text": tokens, "text_mask": mask, "text_pooled": pooled}


def clip_image_tower(clip_dir: str, options: dict | None = None) -> nn.Module:
    """The frozen image encoder of the CLIP in `clip_dir` (options: its ImageEncoder config, read from the directory
    when not given; at load time the model's state dict brings the weights)."""
    found = bool(clip_dir) and (Path(clip_dir) / "config.json").is_file()
    if options is None and not found:
        raise ImgenError("clip_discriminator needs the CLIP of encoder_init (its image tower); give encoder_init as a "
                         "CLIP directory such as the shipped shapes-clip, or its image_encoder options")
    tower = ImageEncoder(**(options or read_json(Path(clip_dir) / "config.json")["image_encoder"]))
    if found:
        state = load_tensors(Path(clip_dir) / "model.safetensors")
        tower.load_state_dict({k[len("image_encoder."):]: v for k, v in state.items() if k.startswith("image_encoder.")})
    return tower.requires_grad_(False)


class FeatureProjectionHead(nn.Module):
    """images (B, C, S, S), y (B, cond_dim) -> logits (B,): a frozen image encoder's embedding e(x) (resized to its
    input size), h = LeakyReLU(W e(x)), then psi(h) + <V y, h> (the projection, Miyato & Koyama eq. 3); with
    cond_dim None (an unconditional GAN) psi(h) alone."""

    def __init__(self, tower: nn.Module, cond_dim: int | None, hidden: int):
        super().__init__()
        self.tower = tower
        self.head = nn.ModuleDict({"hidden": nn.Linear(tower.dim, hidden), "linear": nn.Linear(hidden, 1)})
        if cond_dim is not None:
            self.head["embed"] = nn.Linear(cond_dim, hidden)

    def forward(self, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        h = F.leaky_relu(self.head["hidden"](self.tower(adapt_images(x, self.tower.in_channels,
                                                                      self.tower.image_size))), 0.2)
        logit = self.head["linear"](h).squeeze(1)
        if "embed" not in self.head:
            return logit
        _check_condition(y, "discriminator")
        return logit + (self.head["embed"](y) * h).sum(1)


class TextGANDiscriminator(nn.Module):
    """The pixel discriminator's logit plus the feature head's: D(x, y) = D_pixel(x, y) + D_features(x, y) (the text
    GAN's and, unconditional, a StyleGAN's with clip_discriminator)."""

    def __init__(self, pixel: nn.Module, features: FeatureProjectionHead):
        super().__init__()
        self.pixel, self.features = pixel, features

    def forward(self, x: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        return self.pixel(x, labels) + self.features(x, labels)
