"""VQGAN (Esser et al. 2021, sec. 3.1): the VQ-VAE tokenizer trained with a perceptual reconstruction loss and
a patch-based adversarial loss, so that a coarse token grid still decodes to sharp images:

    L = L_rec + L_VQ + lambda * L_GAN,   L_rec = |x - x_hat| + perceptual(x, x_hat)           (eq. 5-6)
    lambda = ||grad_GL[L_rec]|| / (||grad_GL[L_GAN]|| + 1e-4) * disc_weight                  (eq. 7)

GL is the decoder's last layer. The perceptual term is LPIPS's formula on the feature maps of imgen's own
`shapes-eval` evaluator (imgen.metrics.perceptual; no download, so "perceptual[shapes-eval]", not LPIPS-VGG). The
discriminator is the net's PatchDiscriminator (pix2pix's PatchGAN, Isola et al. 2017) with the hinge loss, as in the
authors' taming-transformers code; it and the GAN term start at step `disc_start`, once reconstructions are
reasonable. Two optimizers ("autoencoder", "discriminator") step in turn through the Trainer's hooks.
"""
from __future__ import annotations

import torch

from imgen.errors import ImgenError, check_int, check_nonnegative
from imgen.images import adapt_images
from imgen.methods.gan_losses import hinge_discriminator_loss, hinge_generator_loss
from imgen.methods.vqvae import VQVAEMethod, reconstruction_error

ADAPTIVE_WEIGHT_MAX = 1e4  # the authors' clamp of eq. 7's ratio


def adaptive_weight(rec_loss: torch.Tensor, gan_loss: torch.Tensor, last_layer: torch.Tensor) -> torch.Tensor:
    """Esser et al. 2021, eq. 7: ||grad_GL[L_rec]|| / (||grad_GL[L_GAN]|| + 1e-4), detached, at the decoder's last
    layer GL, so the adversarial gradient there is as large as the reconstruction gradient."""
    g_rec = torch.autograd.grad(rec_loss, last_layer, retain_graph=True)[0]
    g_gan = torch.autograd.grad(gan_loss, last_layer, retain_graph=True)[0]
    return (g_rec.norm() / (g_gan.norm() + 1e-4)).clamp(0.0, ADAPTIVE_WEIGHT_MAX).detach()


class VQGANMethod(VQVAEMethod):
    """updates(): ("autoencoder", eq. 5's L_rec + L_VQ + lambda L_GAN), then ("discriminator", the hinge loss on
    the real batch and the reconstructions of the autoencoder update of the same step)."""

    def __init__(self, recon: str = "l1", perceptual_weight: float = 1.0, perceptual_net: str = "shapes-eval",
                 disc_weight: float = 0.8, disc_start: int = 250, disc_lr_scale: float = 1.0):
        super().__init__(recon)
        for name, value in (("perceptual_weight", perceptual_weight), ("disc_weight", disc_weight),
                            ("disc_lr_scale", disc_lr_scale)):
            check_nonnegative(value, f"vqgan {name}")
        check_int(disc_start, "vqgan disc_start (the step the discriminator starts at)", minimum=0)
        self.perceptual_weight, self.disc_weight = float(perceptual_weight), float(disc_weight)
        self.disc_lr_scale, self.disc_start, self.perceptual_net = float(disc_lr_scale), disc_start, perceptual_net
        self.step, self._evaluator, self._fake = 0, None, None

    def set_step(self, step: int) -> None:
        self.step = step

    def _check(self, net):
        super()._check(net)
        if not hasattr(net, "discriminator"):
            raise ImgenError("method vqgan needs a tokenizer net with a discriminator; set net.options.discriminator "
                             "(e.g. {} for the defaults, as the shapes-vqgan preset does)")

    def optimizers(self, net, t) -> dict[str, torch.optim.Optimizer]:
        self._check(net)
        return {"autoencoder": t.adamw(net.autoencoder_parameters()),
                "discriminator": t.adamw(net.discriminator.parameters(), t.lr * self.disc_lr_scale)}

    def updates(self):
        return [("autoencoder", self.loss), ("discriminator", self.discriminator_loss)]

    def perceptual(self, x_hat: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """Mean perceptual[shapes-eval] distance, differentiable in x_hat (the frozen evaluator loads once)."""
        from imgen.metrics.evaluators import load_evaluator
        from imgen.metrics.perceptual import perceptual_loss

        if self._evaluator is None:
            self._evaluator = load_evaluator(self.perceptual_net)
        cfg = self._evaluator.cfg
        a, b = (adapt_images(v, cfg.in_channels, cfg.image_size) for v in (x_hat, x))
        return perceptual_loss(a, b, self._evaluator.net).mean()

    def loss(self, net, batch: dict, generator=None) -> torch.Tensor:
        x = batch["image"]
        x_hat, aux_loss = self.reconstruct(net, x)
        self._fake = x_hat.detach()  # the discriminator's fakes of this step
        rec = reconstruction_error(x_hat, x, self.recon)  # eq. 6: |x - x_hat| ...
        if self.perceptual_weight > 0:
            rec = rec + self.perceptual_weight * self.perceptual(x_hat, x)  # ... + perceptual loss
        if self.step < self.disc_start or self.disc_weight == 0:
            return rec + aux_loss
        gan = hinge_generator_loss(net.discriminator(x_hat))
        lam = adaptive_weight(rec, gan, net.last_layer) * self.disc_weight  # eq. 7
        return rec + aux_loss + lam * gan  # eq. 5

    def discriminator_loss(self, net, batch: dict, generator=None) -> torch.Tensor:
        if self._fake is None:
            raise ImgenError("vqgan's discriminator update runs after its autoencoder update of the same step")
        if self.step < self.disc_start:  # delayed start: a zero loss, so the discriminator does not move
            return sum(p.sum() for p in net.discriminator.parameters()) * 0.0
        return hinge_discriminator_loss(net.discriminator(batch["image"]), net.discriminator(self._fake))


def vqgan(recon: str = "l1", perceptual_weight: float = 1.0, perceptual_net: str = "shapes-eval",
          disc_weight: float = 0.8, disc_start: int = 250, disc_lr_scale: float = 1.0) -> VQGANMethod:
    return VQGANMethod(recon, perceptual_weight, perceptual_net, disc_weight, disc_start, disc_lr_scale)
