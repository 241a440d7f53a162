"""imgen's networks: plain nn.Modules with forward(x, t, cond=None); no losses here. Also the two things every
layer above needs from a model directory: build its net from config.json, load its weights."""
from __future__ import annotations

from pathlib import Path

import torch

from imgen.checkpoint import load_tensors, read_json
from imgen.config import Config, load_config
from imgen.errors import ImgenError
from imgen.nn.autoencoder import VAE, AutoencoderKL
from imgen.nn.classifier import evaluator_net
from imgen.nn.clip import clip_net
from imgen.nn.dit import DiT, dit_s, dit_tiny
from imgen.nn.flow import Glow, RealNVP
from imgen.nn.gan import GAN, TextGAN
from imgen.nn.srgan import SRGAN
from imgen.nn.stylegan import StyleGAN
from imgen.nn.layers import check_kwargs
from imgen.nn.mlp import MLPDenoiser
from imgen.nn.prior import PriorTransformer
from imgen.nn.text2img import TextToImageNet
from imgen.nn.transformer import TokenTransformer
from imgen.nn.translation import CycleGAN, Pix2Pix
from imgen.nn.unet import UNet, unet_small, unet_tiny
from imgen.nn.vqvae import VQAutoencoder

NETS = {"unet": UNet, "dit": DiT, "mlp": MLPDenoiser, "text2img": TextToImageNet}
NETS["autoencoder"] = AutoencoderKL  # LDM KL autoencoder (imgen.methods.autoencoder trains it)
NETS.update(clip=clip_net, prior=PriorTransformer)  # CLIP (imgen.methods.clip) and the unCLIP prior
NETS["vae"] = VAE  # VAE / beta-VAE encoder-decoder (method vae)
NETS["evaluator"] = evaluator_net  # imgen's evaluator classifiers (method attribute_classifier)
NETS.update(realnvp=RealNVP, glow=Glow)  # normalizing flows (method normalizing_flow)
NETS["vqvae"] = VQAutoencoder  # VQ-VAE / VQGAN tokenizers (methods vqvae, vqgan)
NETS["gan"] = GAN  # generator + discriminator (method gan)
NETS["text_gan"] = TextGAN  # a GAN conditioned on a frozen CLIP text tower (method gan, GAN-INT-CLS)
NETS["stylegan"] = StyleGAN  # StyleGAN-lite generator + discriminator (method gan)
NETS["pix2pix"] = Pix2Pix  # U-Net generator + conditional PatchGAN (method pix2pix)
NETS["cyclegan"] = CycleGAN  # two generators + two PatchGANs (method cyclegan)
NETS["srgan"] = SRGAN  # SRResNet generator + SRGAN discriminator (method srgan)
NETS["token_transformer"] = TokenTransformer  # token priors over a VQ tokenizer (methods token_ar, maskgit)


def build_net(name: str, **kwargs):
    """Build a registered net by name, e.g. build_net("unet", in_channels=1, image_size=8)."""
    if name not in NETS:
        raise ImgenError(f"unknown net {name!r}; valid nets are {sorted(NETS)}")
    check_kwargs(NETS[name], kwargs, what=f"net {name!r}")  # a class or a constructor function (clip_net)
    return NETS[name](**kwargs)


def build_net_from_config(config: Config):
    """The (untrained) net of a model config: config.net.name with config.net.options."""
    try:
        return build_net(config.net.name, **config.net.options)
    except TypeError as e:
        raise ImgenError(f"bad net options {config.net.options}: {e}") from None


def load_net(path: str | Path, weights: str = "ema"):
    """(config, net) of a model directory (config.json + {weights}.safetensors), or of a shipped model by name;
    the net holds the weights, in train mode, as built."""
    from imgen.pretrained import resolve_model_path  # imgen.pretrained imports only imgen.errors

    path = resolve_model_path(path)
    if not (path / "config.json").is_file():
        raise ImgenError(f"{str(path)!r} is not a model directory (no config.json); train one with `imgen train`")
    if weights not in ("ema", "model"):
        raise ImgenError(f"weights must be 'ema' or 'model', got {weights!r}")
    kind = read_json(path / "config.json").get("kind")
    if kind is not None:  # a directory of several parts, each with a loader of its own
        loader = {"clip": "imgen.nn.clip.CLIP.load", "unclip": "imgen.methods.unclip.UnCLIP.load"}.get(kind)
        raise ImgenError(f"{str(path)!r} holds a {kind!r} model, not one imgen.load reads"
                         + (f"; load it with {loader}(path)" if loader else ""))
    config = load_config(path / "config.json")
    with torch.random.fork_rng(devices=[]):  # its init weights are overwritten: leave the caller's RNG (a resume) be
        net = build_net_from_config(config)
    try:
        net.load_state_dict(load_tensors(path / f"{weights}.safetensors"))
    except RuntimeError as e:
        raise ImgenError(f"{weights}.safetensors in {str(path)!r} does not match its config.json ({e})") from None
    return config, net


__all__ = ["NETS", "build_net", "build_net_from_config", "load_net", "UNet", "DiT", "MLPDenoiser", "TextToImageNet", "unet_tiny", "unet_small", "dit_tiny", "dit_s"]
