"""The denoising U-Net (Ronneberger et al. 2015 as adapted by DDPM, Ho et al. 2020, and ADM, Dhariwal &
Nichol 2021): residual blocks with a time(+label) embedding, GroupNorm, self-attention at chosen
resolutions, skip connections from each down-path block to the matching up-path block.

Forward: `net(x, t, cond=None)`; x (B, C, H, W), t (B,) continuous time in [0, 1], cond an optional dict
with "label" int64 (B,) and "drop" bool (B,) (True = learned null embedding, for classifier-free
guidance); an unconditional net (num_classes=None) ignores cond["label"]. A text-conditioned net
(context_dim set) also reads cond["text"] (B, L, context_dim), cond["text_mask"] (B, L) bool and
cond["text_pooled"] (B, context_dim): cross-attention to the tokens (LDM, Rombach et al. 2022) and the
pooled vector added to the time embedding (AdaGN); dropped rows use a learned null text embedding.
A super-resolution net (low_res_channels set) reads cond["low_res"] (B, low_res_channels, low_res_size,
low_res_size) and cond["low_res_level"] (B,) (imgen.nn.superres.LowResConditioning; SR3, Imagen).
An inpainting net (inpaint_channels set) reads cond["inpaint"] (B, inpaint_channels, H, W): the hole mask and the
masked image on x's grid (imgen.methods.inpainting), concatenated after x as extra input channels (Stable
Diffusion's inpainting model); zero_extra_inputs starts it from a base net with zero weights on those channels.
The output has x's shape; the final conv is zero-initialized, so a fresh net outputs zeros.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from imgen.errors import ImgenError, check_int
from imgen.nn.superres import LowResConditioning
from imgen.nn.layers import (
    ConfigMixin,
    Downsample,
    LabelEmbedding,
    ResBlock,
    CrossAttention,
    SelfAttention,
    TextConditioning,
    TimestepEmbedding,
    Upsample,
    as_time_batch,
    feature_map_cross_attention,
    group_norm,
    reject_text,
    zero_init,
)


class UNetBlock(nn.Module):
    """A ResBlock, followed by self-attention when `num_heads` is given, then cross-attention to the text
    tokens when `context_dim` is given."""

    def __init__(self, in_channels, out_channels, emb_dim, dropout, num_heads=None, context_dim=None,
                 cross_heads=4):
        super().__init__()
        self.res = ResBlock(in_channels, out_channels, emb_dim, dropout)
        self.attn = SelfAttention(out_channels, num_heads) if num_heads else None
        if context_dim:
            self.cross = CrossAttention(out_channels, context_dim, cross_heads)

    def forward(self, x, emb, text=None):
        x = self.res(x, emb)
        if self.attn is not None:
            x = self.attn(x)
        if hasattr(self, "cross"):
            x = feature_map_cross_attention(self.cross, x, text.tokens, text.mask)
        return x


class UNet(ConfigMixin, nn.Module):
    """U-Net denoiser. Resolution level i works at image_size / 2**i with base_channels *
    channel_mults[i] channels; attention runs at the resolutions in `attn_resolutions` and in the middle;
    with context_dim set, cross-attention to text tokens runs at `cross_attn_resolutions` (default: the
    attention resolutions) and in the middle."""

    name = "unet"

    def __init__(
        self,
        in_channels: int,
        out_channels: int | None = None,
        base_channels: int = 64,
        channel_mults=(1, 2, 2),
        num_res_blocks: int = 2,
        attn_resolutions=(8,),
        image_size: int = 32,
        num_classes: int | None = None,
        dropout: float = 0.0,
        num_heads: int = 4,
        context_dim: int | None = None,
        cross_attn_resolutions=None,
        coord_channels: bool = False,
        low_res_channels: int | None = None,
        low_res_size: int | None = None,
        inpaint_channels: int | None = None,
    ):
        super().__init__()
        self.save_config(locals())
        _validate(in_channels, out_channels, base_channels, channel_mults, num_res_blocks,
                  attn_resolutions, image_size, num_classes, dropout, num_heads)
        _validate_text(context_dim, cross_attn_resolutions, image_size, len(channel_mults))
        if cross_attn_resolutions is None:
            cross_attn_resolutions = attn_resolutions
        out_channels = out_channels or in_channels
        self.in_channels, self.image_size = in_channels, image_size
        self.downsample_factor = 2 ** (len(channel_mults) - 1)
        emb_dim = 4 * base_channels
        self.time_embed = TimestepEmbedding(base_channels, emb_dim)
        self.label_embed = LabelEmbedding(num_classes, emb_dim) if num_classes else None
        self.text_cond = TextConditioning(context_dim, emb_dim) if context_dim else None
        _validate_low_res(low_res_channels, low_res_size, image_size)
        self.low_res_channels, self.low_res_size = low_res_channels, low_res_size
        self.low_res = LowResConditioning(low_res_channels, low_res_size, base_channels, emb_dim) \
            if low_res_channels else None
        heads_at = lambda res: num_heads if res in attn_resolutions else None  # noqa: E731
        context_at = lambda res: context_dim if res in cross_attn_resolutions else None  # noqa: E731
        block = lambda cin, cout, res: UNetBlock(cin, cout, emb_dim, dropout, heads_at(res),  # noqa: E731
                                                 context_at(res), num_heads)

        # Down path: every block's output is kept as a skip for the up path.
        # CoordConv (Liu et al. 2018): x/y coordinate planes as extra inputs, so where things are is not left to
        # what zero padding leaks (convolutions and unembedded attention are translation-equivariant).
        self.coord_channels = bool(coord_channels)
        if inpaint_channels is not None:
            check_int(inpaint_channels, "UNet inpaint_channels", hint=" (1 mask channel + the image's channels)")
        self.inpaint_channels = inpaint_channels
        extra = 2 * self.coord_channels + (low_res_channels or 0)  # SR3 sec. 2.3: low-res image as input channels
        extra += inpaint_channels or 0  # SD inpainting: mask + masked image, last (zero_extra_inputs widens a base)
        self.conv_in = nn.Conv2d(in_channels + extra, base_channels, 3, padding=1)
        self.down = nn.ModuleList()
        skip_channels = [base_channels]
        ch, res = base_channels, image_size
        for level, mult in enumerate(channel_mults):
            for _ in range(num_res_blocks):
                self.down.append(block(ch, base_channels * mult, res))
                ch = base_channels * mult
                skip_channels.append(ch)
            if level < len(channel_mults) - 1:
                self.down.append(Downsample(ch))
                skip_channels.append(ch)
                res //= 2

        self.skip_channels = list(skip_channels)  # what a ControlNet's zero convs match (imgen.nn.controlnet)
        self.controlnet = None  # a ControlNet attached by imgen.nn.controlnet.add_controlnet
        self.mid = nn.ModuleList([
            UNetBlock(ch, ch, emb_dim, dropout, num_heads, context_dim, num_heads),
            UNetBlock(ch, ch, emb_dim, dropout, None),
        ])

        # Up path: num_res_blocks + 1 blocks per level, each eating one skip (concatenated on channels).
        self.up = nn.ModuleList()
        for level, mult in reversed(list(enumerate(channel_mults))):
            for _ in range(num_res_blocks + 1):
                self.up.append(block(ch + skip_channels.pop(), base_channels * mult, res))
                ch = base_channels * mult
            if level > 0:
                self.up.append(Upsample(ch))
                res *= 2

        self.norm_out = group_norm(ch)
        self.conv_out = zero_init(nn.Conv2d(ch, out_channels, 3, padding=1))

    def forward(self, x: torch.Tensor, t: torch.Tensor, cond: dict | None = None) -> torch.Tensor:
        if x.ndim != 4 or x.shape[1] != self.in_channels:
            raise ImgenError(
                f"UNet expects images of shape (B, {self.in_channels}, H, W), got {tuple(x.shape)}"
            )
        if x.shape[2] % self.downsample_factor or x.shape[3] % self.downsample_factor:
            raise ImgenError(
                f"UNet image height and width must be divisible by {self.downsample_factor} "
                f"(2**(levels-1)), got {tuple(x.shape[2:])}; resize or pad the images"
            )
        emb = self.time_embed(as_time_batch(t, x.shape[0], x.device))
        if self.label_embed is not None:
            emb = emb + self.label_embed(cond, x.shape[0], x.device)
        text = None
        if self.text_cond is not None:
            text = self.text_cond(cond, x.shape[0], x.device, what="UNet")
            emb = self.text_cond.add_pooled(emb, text)  # AdaGN: pooled text joins the time embedding
        else:
            reject_text(cond, "UNet")

        if self.low_res is not None:
            x, emb = self.low_res(x, emb, cond)
        # channels_last lets oneDNN (CPU) and cuDNN run convs and GroupNorm without layout reorders.
        if self.coord_channels:
            ys = torch.linspace(-1, 1, x.shape[2], dtype=x.dtype, device=x.device)
            xs = torch.linspace(-1, 1, x.shape[3], dtype=x.dtype, device=x.device)
            grid = torch.stack(torch.meshgrid(ys, xs, indexing="ij"))  # (2, H, W): y, x in [-1, 1]
            x = torch.cat([x, grid.expand(x.shape[0], -1, -1, -1)], dim=1)
        if self.inpaint_channels:
            x = torch.cat([x, self._inpaint_input(cond, x)], dim=1)
        x = x.contiguous(memory_format=torch.channels_last)
        h = self.conv_in(x)
        skips = [h]
        for block in self.down:
            h = block(h) if isinstance(block, Downsample) else block(h, emb, text)
            skips.append(h)
        for block in self.mid:
            h = block(h, emb, text)
        if self.controlnet is not None and cond is not None and cond.get("control") is not None:
            control_skips, control_mid = self.controlnet(x, emb, text, cond["control"])  # ControlNet eq. 2
            skips = [s + r for s, r in zip(skips, control_skips)]
            h = h + control_mid
        for block in self.up:
            if isinstance(block, Upsample):
                h = block(h)
            else:
                h = block(torch.cat([h, skips.pop()], dim=1), emb, text)
        out = self.conv_out(F.silu(self.norm_out(h)))
        return out.contiguous()

    def _inpaint_input(self, cond: dict | None, x: torch.Tensor) -> torch.Tensor:
        c = None if cond is None else cond.get("inpaint")
        want = (len(x), self.inpaint_channels, *x.shape[2:])
        if c is None or not torch.is_tensor(c) or tuple(c.shape) != want:
            got = "nothing" if c is None else tuple(getattr(c, "shape", ()))
            raise ImgenError(f"this is an inpainting net: cond['inpaint'] must be {want} (the hole mask and the "
                             f"masked image, imgen.methods.inpainting.inpaint_condition), got {got}")
        return c.to(x.dtype)


def zero_extra_inputs(net: nn.Module, state: dict) -> dict:
    """A base net's state dict made to fit `net`, whose U-Net conv_in takes extra input channels after the base's (an
    inpainting net's mask and masked image): the base's weights for its own channels and zeros for the new ones, so
    that `net` computes exactly the base's function whatever the extra inputs hold (Stable Diffusion's inpainting
    model starts so from its text-to-image base). Other keys are returned unchanged."""
    own, out = net.state_dict(), dict(state)
    for key, w in state.items():
        if not key.endswith("conv_in.weight") or key not in own or "controlnet." in key:
            continue
        new = own[key]
        if new.ndim == 4 and w.ndim == 4 and new.shape[1] > w.shape[1] and new.shape[:1] + new.shape[2:] == \
                w.shape[:1] + w.shape[2:]:
            out[key] = torch.cat([w, torch.zeros(w.shape[0], new.shape[1] - w.shape[1], *w.shape[2:],
                                                 dtype=w.dtype)], dim=1)
    return out


def _validate(in_channels, out_channels, base_channels, channel_mults, num_res_blocks, attn_resolutions,
              image_size, num_classes, dropout, num_heads):
    for name, v in (("in_channels", in_channels), ("base_channels", base_channels), ("num_res_blocks", num_res_blocks),
                    ("image_size", image_size), ("num_heads", num_heads), ("out_channels", out_channels),
                    ("num_classes", num_classes)):
        if v is not None or name not in ("out_channels", "num_classes"):  # those two are optional
            check_int(v, f"UNet {name}")
    if not isinstance(channel_mults, (list, tuple)) or not channel_mults:
        raise ImgenError(f"UNet channel_mults must be a non-empty list like (1, 2, 2), got {channel_mults!r}")
    for m in channel_mults:
        check_int(m, "UNet channel_mults entries")
    if not 0.0 <= dropout < 1.0:
        raise ImgenError(f"UNet dropout must be in [0, 1), got {dropout!r}")
    factor = 2 ** (len(channel_mults) - 1)
    if image_size % factor:
        raise ImgenError(
            f"UNet image_size {image_size} is not divisible by 2**(levels-1) = {factor} for "
            f"{len(channel_mults)} levels (channel_mults={tuple(channel_mults)}); use fewer levels or "
            f"an image_size that is a multiple of {factor}"
        )
    resolutions = [image_size // 2**i for i in range(len(channel_mults))]
    bad = [r for r in attn_resolutions if r not in resolutions]
    if bad:
        raise ImgenError(
            f"UNet attn_resolutions {list(attn_resolutions)} include {bad}, which this net never reaches; "
            f"its resolutions are {resolutions}"
        )
    for ch in {base_channels * m for m in channel_mults}:
        if ch % num_heads:
            raise ImgenError(
                f"UNet width {ch} (base_channels * mult) is not divisible by num_heads={num_heads}; "
                f"choose num_heads dividing every level's width"
            )


def _validate_low_res(channels, size, image_size):
    if channels is None and size is None:
        return
    if channels is None or size is None:
        raise ImgenError("UNet low_res_channels and low_res_size go together (a super-resolution net); set both")
    check_int(channels, "UNet low_res_channels")
    check_int(size, "UNet low_res_size")
    if size > image_size:
        raise ImgenError(f"UNet low_res_size {size} is larger than image_size {image_size}; an upsampler's input is "
                         "smaller than its output")


def _validate_text(context_dim, cross_attn_resolutions, image_size, levels):
    if context_dim is not None:
        check_int(context_dim, "UNet context_dim", hint=" (the text encoder's width)")
    if cross_attn_resolutions is None:
        return
    if context_dim is None:
        raise ImgenError("UNet cross_attn_resolutions needs context_dim (the text encoder's width); "
                         "set context_dim or leave cross_attn_resolutions out")
    resolutions = [image_size // 2**i for i in range(levels)]
    bad = [r for r in cross_attn_resolutions if r not in resolutions]
    if bad:
        raise ImgenError(
            f"UNet cross_attn_resolutions {list(cross_attn_resolutions)} include {bad}, which this net never "
            f"reaches; its resolutions are {resolutions}"
        )


# Presets: named constructors (pass in_channels, image_size, num_classes, ... as needed). Their widths
# grow toward low resolution, where a parameter costs few FLOPs (a 3x3 conv weight does H*W MACs per image),
# and attention runs only at <= 8x8: that is what keeps training fast on a CPU.
def unet_tiny(in_channels: int = 1, image_size: int = 8, **kw) -> UNet:
    """~1.1M params; for 8x8 digits: levels at 8 and 4 pixels, attention at 4."""
    kw = {"base_channels": 32, "channel_mults": (1, 2), "num_res_blocks": 2,
          "attn_resolutions": (image_size // 2,), **kw}
    return UNet(in_channels, image_size=image_size, **kw)


def unet_small(in_channels: int = 3, image_size: int = 32, **kw) -> UNet:
    """~6.6M params; the CPU default for 16-32 px images: 4 levels of 32/64/128/128 channels,
    attention at image_size/4 (8x8 for 32 px) and in the middle block."""
    kw = {"base_channels": 32, "channel_mults": (1, 2, 4, 4), "num_res_blocks": 2,
          "attn_resolutions": (image_size // 4,), **kw}
    return UNet(in_channels, image_size=image_size, **kw)
