"""ControlNet-lite (Zhang et al. 2023): steer a frozen U-Net with a control image (a layout / label map).

    add_controlnet(net, control_size=32)     # net: a UNet or a text2img net with a U-Net backbone; base frozen
    net(x, t, {..., "control": (B, 3, 32, 32) in [-1, 1]})
    save_controlnet(net, path, meta) / apply_controlnet(net, path)

A trainable copy of the U-Net's encoder (conv_in, down blocks, middle), initialised from the base's weights, reads
x_t plus the control map's features c_f = E(c_i) from a small conv hint encoder (sec. 3.2; added after conv_in).
Each copied block's output goes through a zero-initialised 1x1 conv Z and is added to the frozen U-Net's skip of the
same block, and the copy's middle output to the base's middle output (eq. 2: y_c = F(x) + Z(F_c(x + c_f))). With Z = 0
an untrained ControlNet leaves the base's output exactly unchanged. "Lite": the copy shares the base's time and text
embeddings (emb, cross-attention tokens) instead of copying the embedding nets too.
"""
from __future__ import annotations

import copy
import json
from pathlib import Path

import torch
from torch import nn

from imgen.checkpoint import atomic_write_text, load_tensors, save_tensors
from imgen.errors import ImgenError, check_int
from imgen.nn.layers import Downsample, zero_init
from imgen.nn.unet import UNet

PREFIX = "controlnet."  # the ControlNet's keys in the U-Net's state dict


class HintEncoder(nn.Module):
    """E: the control image (B, C, S, S) -> features (B, base_channels, S / f, S / f) on the U-Net's grid
    (ControlNet sec. 3.2: four convs, 16-32-96-256 channels there; here one stride-2 conv per halving).
    Unlike the paper's Z(c_f) its last conv is not zero: the copy sees the map from step one (the output zero convs
    alone keep the base unchanged at init), which a budget of hundreds of steps needs."""

    def __init__(self, in_channels: int, out_channels: int, factor: int, width: int = 32):
        super().__init__()
        layers, ch = [nn.Conv2d(in_channels, 16, 3, padding=1), nn.SiLU()], 16
        for _ in range(factor.bit_length() - 1):  # log2(factor) halvings
            layers += [nn.Conv2d(ch, width, 3, stride=2, padding=1), nn.SiLU()]
            ch = width
        layers += [nn.Conv2d(ch, width, 3, padding=1), nn.SiLU(), nn.Conv2d(width, out_channels, 3, padding=1)]
        for conv in layers[::2]:  # He init (He et al. 2015, eq. 10): c_f as strong as conv_in's features, not ~1/25
            nn.init.kaiming_normal_(conv.weight, nonlinearity="relu")
            nn.init.zeros_(conv.bias)
        self.net = nn.Sequential(*layers)

    def forward(self, c: torch.Tensor) -> torch.Tensor:
        return self.net(c)


class ControlNet(nn.Module):
    """The trainable encoder copy of `unet` plus the hint encoder and the zero convs (one per skip + the middle)."""

    def __init__(self, unet: UNet, control_channels: int = 3, control_size: int | None = None):
        super().__init__()
        control_size = unet.image_size if control_size is None else control_size
        check_int(control_channels, "ControlNet control_channels")
        check_int(control_size, "ControlNet control_size")
        factor = control_size // unet.image_size
        if control_size % unet.image_size or factor & (factor - 1):
            raise ImgenError(f"ControlNet control_size {control_size} must be the U-Net's grid ({unet.image_size}) "
                             f"times a power of two (e.g. 32 for a 4x8x8 latent of 32 px images)")
        self.control_channels, self.control_size = control_channels, control_size
        self.hint = HintEncoder(control_channels, unet.conv_in.out_channels, factor)
        self.conv_in = copy.deepcopy(unet.conv_in)  # the trainable copy starts as the base (sec. 3.1)
        self.down = copy.deepcopy(unet.down)
        self.mid = copy.deepcopy(unet.mid)
        self.zero_skips = nn.ModuleList(zero_init(nn.Conv2d(c, c, 1)) for c in unet.skip_channels)
        mid_ch = unet.skip_channels[-1]
        self.zero_mid = zero_init(nn.Conv2d(mid_ch, mid_ch, 1))

    def check_control(self, c) -> torch.Tensor:
        """A control batch (B, C, S, S) in [-1, 1], else one error naming the shape this ControlNet takes."""
        want = (self.control_channels, self.control_size, self.control_size)
        if not torch.is_tensor(c) or c.ndim != 4 or tuple(c.shape[1:]) != want:
            got = tuple(c.shape) if torch.is_tensor(c) else type(c).__name__
            raise ImgenError(f"the control map must be (B, {', '.join(map(str, want))}) in [-1, 1] (a "
                             f"{self.control_size}x{self.control_size} {'RGB' if want[0] == 3 else 'L'} image), got {got}")
        return c

    def forward(self, x_in: torch.Tensor, emb, text, control: torch.Tensor):
        """x_in: the U-Net's conv_in input; emb, text: its embeddings -> (skip residuals, middle residual)."""
        c = self.check_control(control).to(x_in.dtype)
        h = self.conv_in(x_in) + self.hint(c)  # eq. 2: F_c(x + Z(c_f))
        outs = [h]
        for block in self.down:
            h = block(h) if isinstance(block, Downsample) else block(h, emb, text)
            outs.append(h)
        for block in self.mid:
            h = block(h, emb, text)
        return [z(o) for z, o in zip(self.zero_skips, outs)], self.zero_mid(h)  # eq. 2: Z(...) added to the base


def _unet(net: nn.Module) -> UNet:
    unet = net if isinstance(net, UNet) else getattr(net, "backbone", None)
    if not isinstance(unet, UNet):
        raise ImgenError(f"ControlNet-lite copies a U-Net's encoder; this model's net is {type(unet or net).__name__} "
                         f"(a DiT backbone or another family); use a U-Net model such as shapes-latent-t2i")
    return unet


def add_controlnet(net: nn.Module, control_channels: int = 3, control_size: int | None = None) -> ControlNet:
    """Attach a fresh ControlNet (copied from the base's current weights) to the U-Net of `net`, freeze the base.
    The U-Net then adds its residuals whenever cond["control"] is given."""
    unet = _unet(net)
    if getattr(unet, "controlnet", None) is not None:
        raise ImgenError("this net already carries a ControlNet; remove it (remove_controlnet) before adding another")
    net.requires_grad_(False)
    unet.controlnet = ControlNet(unet, control_channels, control_size).requires_grad_(True)  # the copy trains
    return unet.controlnet


def remove_controlnet(net: nn.Module) -> None:
    unet = _unet(net)
    if getattr(unet, "controlnet", None) is not None:
        del unet.controlnet
    unet.controlnet = None


def controlnet_of(net: nn.Module) -> ControlNet | None:
    unet = net if isinstance(net, UNet) else getattr(net, "backbone", None)
    return getattr(unet, "controlnet", None)


def add_controlnet_from_options(net: nn.Module, options: dict) -> ControlNet:
    """add_controlnet with a config's dict {control_channels?, control_size?} (train.control)."""
    unknown = sorted(set(options) - {"control_channels", "control_size"})
    if unknown:
        raise ImgenError(f"train.control has unknown keys {unknown}; it takes control_channels and control_size")
    return add_controlnet(net, **options)


# ---- adapter files (as LoRA's: imgen.nn.lora.save_adapter) ------------------------------------------------------
def controlnet_json_path(path: str | Path) -> Path:
    return Path(path).with_suffix(".json")


def save_controlnet(net: nn.Module, path: str | Path, meta: dict) -> Path:
    """Write the ControlNet of `net` to `path` (safetensors; meta with control_channels/control_size in its header)
    and meta to path.json, each atomically."""
    cn, path = controlnet_of(net), Path(path)
    meta = {**meta, "kind": "controlnet", "control_channels": cn.control_channels, "control_size": cn.control_size}
    save_tensors(cn.state_dict(), path, meta)
    atomic_write_text(controlnet_json_path(path), json.dumps(meta, indent=2) + "\n")
    return path


def read_controlnet(path: str | Path) -> tuple[dict[str, torch.Tensor], dict]:
    path = Path(path)
    if not path.is_file():
        raise ImgenError(f"ControlNet {str(path)!r} not found; give the .safetensors file `imgen finetune controlnet` "
                         f"wrote (--out)")
    tensors, meta = load_tensors(path, with_metadata=True)
    if meta.get("kind") != "controlnet" or not all(k in meta for k in ("control_channels", "control_size")):
        raise ImgenError(f"{str(path)!r} is not a ControlNet (no kind=controlnet in its header); give a file written "
                         f"by `imgen finetune controlnet`")
    return tensors, meta


def apply_controlnet(net: nn.Module, path: str | Path) -> dict:
    """Attach the ControlNet of file `path` to `net` (replacing one already attached). -> its meta."""
    tensors, meta = read_controlnet(path)
    remove_controlnet(net)
    cn = add_controlnet(net, meta["control_channels"], meta["control_size"])
    try:
        cn.load_state_dict(tensors)
    except RuntimeError:
        remove_controlnet(net)
        raise ImgenError(f"ControlNet {str(path)!r} was trained for another base model (its weights do not fit this "
                         f"U-Net); load it on the base its JSON names ({meta.get('base')!r})") from None
    cn.requires_grad_(False)
    return meta

