"""The KL-regularised autoencoder of latent diffusion (Rombach et al. 2022, sec. 3; appendix G): a reconstruction
loss plus a small KL penalty towards N(0, I) that keeps the latent space from drifting to arbitrary scales
(LDM uses kl_weight = 1e-6 with an L1 + LPIPS + patch-GAN reconstruction; on the flat-coloured shapes world an
L1 or L2 pixel loss is enough). The trained directory is an ordinary imgen model directory (net "autoencoder");
`imgen.methods.latent` trains any diffusion/flow method in its latent space.

    ae = load_autoencoder("runs/shapes-ae")     # the EMA AutoencoderKL, frozen, eval mode
    x_hat = ae.decode(ae.encode(x).mean)
"""
from __future__ import annotations

from pathlib import Path

import torch

from imgen.config import load_config
from imgen.errors import ImgenError
from imgen.nn import load_net

RECON_LOSSES = ("l1", "l2")


class KLAutoencoder:
    """loss(net, batch): LDM's objective sum|x - x_hat| + kl_weight * KL(q(z|x) || N(0, I)), divided by the
    number of pixel values so that the loss is a per-pixel mean (the gradient direction and the meaning of
    kl_weight are LDM's; only the overall scale differs, which keeps Adam's LR and grad clipping in range)."""

    def __init__(self, kl_weight: float = 1e-6, recon: str = "l1"):
        if recon not in RECON_LOSSES:
            raise ImgenError(f"unknown reconstruction loss {recon!r}; valid: {', '.join(RECON_LOSSES)}")
        if not kl_weight >= 0:
            raise ImgenError(f"kl_weight must be >= 0, got {kl_weight}")
        self.kl_weight, self.recon = float(kl_weight), recon

    def loss(self, net, batch: dict, generator=None) -> torch.Tensor:
        if not hasattr(net, "encode") or not hasattr(net, "decode"):
            raise ImgenError(f"method kl_autoencoder trains an autoencoder net (net name 'autoencoder'), got "
                             f"{type(net).__name__}")
        x = batch["image"]
        x_hat, posterior = net(x, generator)
        err = (x_hat - x).abs() if self.recon == "l1" else (x_hat - x) ** 2
        return (err.sum() + self.kl_weight * posterior.kl().sum()) / x.numel()  # LDM appendix G: L_rec + w_kl L_reg

    def denoiser(self, net):
        raise ImgenError("this is an autoencoder (method kl_autoencoder): it encodes and decodes images but does "
                         "not sample; train a generator in its latent space with method 'latent' "
                         "(e.g. `imgen train shapes-latent-t2i --set method.options.autoencoder=THIS_DIR`)")


def kl_autoencoder(kl_weight: float = 1e-6, recon: str = "l1") -> KLAutoencoder:
    return KLAutoencoder(kl_weight, recon)


def load_autoencoder(path: str | Path, weights: str = "ema"):
    """The frozen AutoencoderKL of a model directory trained with method kl_autoencoder (eval mode, no grads)."""
    path = Path(path)
    if not (path / "config.json").is_file():
        raise ImgenError(f"autoencoder directory {str(path)!r} has no config.json; train one with "
                         f"`imgen train shapes-ae --out DIR` and pass that DIR "
                         f"(a latent model: --set method.options.autoencoder=DIR)")
    config = load_config(path / "config.json")
    if config.net.name != "autoencoder":
        raise ImgenError(f"{str(path)!r} holds a {config.net.name!r} net trained with method {config.method.name!r}, "
                         f"not an autoencoder; pass a directory trained with `imgen train shapes-ae`")
    _, net = load_net(path, weights)
    return net.eval().requires_grad_(False)
