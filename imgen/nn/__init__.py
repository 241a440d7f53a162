"""imgen's networks: plain nn.Modules with forward(x, t, cond=None); no losses here."""
from __future__ import annotations

from imgen.errors import ImgenError
from imgen.nn.autoencoder import AutoencoderKL
from imgen.nn.dit import DiT, dit_s, dit_tiny
from imgen.nn.layers import check_kwargs
from imgen.nn.mlp import MLPDenoiser
from imgen.nn.text2img import TextToImageNet
from imgen.nn.unet import UNet, unet_small, unet_tiny

NETS = {"unet": UNet, "dit": DiT, "mlp": MLPDenoiser, "text2img": TextToImageNet}
NETS["autoencoder"] = AutoencoderKL  # LDM KL autoencoder (imgen.methods.autoencoder trains it)


def build_net(name: str, **kwargs):
    """Build a registered net by name, e.g. build_net("unet", in_channels=1, image_size=8)."""
    if name not in NETS:
        raise ImgenError(f"unknown net {name!r}; valid nets are {sorted(NETS)}")
    check_kwargs(NETS[name], kwargs, what=f"net {name!r}")
    return NETS[name](**kwargs)


__all__ = ["NETS", "build_net", "UNet", "DiT", "MLPDenoiser", "TextToImageNet", "unet_tiny", "unet_small", "dit_tiny", "dit_s"]
