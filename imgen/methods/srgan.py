"""SRGAN (Ledig et al. 2017): super-resolution by a generator G trained with a perceptual loss (eq. 3)

    l^SR = l^SR_X + adversarial_weight * l^SR_Gen                    adversarial_weight = 1e-3 in the paper
    l^SR_X = content_weight * l_feat + pixel_weight * l_MSE
    l_feat = sum_l 1/(W_l H_l C_l) ||phi_l(I^HR) - phi_l(G(I^LR))||^2    eq. 5, phi_l a frozen classifier's conv maps
    l^SR_Gen = -log D(G(I^LR))                                          eq. 6 (the non-saturating loss)

phi_l are conv feature maps of imgen's own `shapes-eval` evaluator, not VGG19 (no download): content_layers lists
their indices, [-1] the deepest alone as the paper's VGG54, null all of them (shapes-srgan: at 300 steps the deepest
alone gave shapes-eval accuracy 0.38 and 26.7 dB on held-out scenes, all five 0.46 and 27.4 dB). l_MSE (eq. 4, the SRResNet loss, pixel_weight; 0 in the paper's
SRGAN objective) keeps the output near the ground truth where feature and adversarial terms leave it free, trading
some perceptual sharpness for PSNR (the perception-distortion trade-off of the paper's sec. 3.4). One Trainer step
runs ("discriminator", D's loss on I^HR and detached G(I^LR), eq. 2) then ("generator", l^SR). The adversarial
losses are imgen.methods.gan_losses' by name. Batches hold "image" (I^HR) and "low_res" (I^LR, area-averaged;
shapes with data.options.low_res). Upscaling uses the EMA generator, clamped to [-1, 1].
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from imgen.errors import ImgenError, check_nonnegative
from imgen.images import adapt_images
from imgen.methods.adversarial import AdversarialMethod
from imgen.methods.gan_losses import LOSSES


class SRGANMethod(AdversarialMethod):
    takes_steps = False  # one generator evaluation per image

    def __init__(self, loss: str = "nonsaturating", content_weight: float = 1.0, adversarial_weight: float = 1e-3,
                 pixel_weight: float = 0.0, content_net: str = "shapes-eval", content_layers: list | None = None):
        if loss not in LOSSES:
            raise ImgenError(f"srgan loss must be one of {', '.join(LOSSES)}, got {loss!r}")
        self.loss_name = loss
        self.content_weight = check_nonnegative(content_weight, "srgan content_weight")
        self.adversarial_weight = check_nonnegative(adversarial_weight, "srgan adversarial_weight")
        self.pixel_weight = check_nonnegative(pixel_weight, "srgan pixel_weight")
        if content_layers is not None and (not isinstance(content_layers, (list, tuple)) or not content_layers or any(
                isinstance(i, bool) or not isinstance(i, int) for i in content_layers)):
            raise ImgenError(f"srgan content_layers must be a list of integer indices of the evaluator's conv maps "
                             f"([-1]: the deepest) or null (all), got {content_layers!r}")
        self.content_net = content_net
        self.content_layers = None if content_layers is None else list(content_layers)
        self.d_loss, self.g_loss = LOSSES[loss]
        self.threshold = 0.5 if loss == "least_squares" else 0.0  # D's decision boundary for the accuracies
        self._evaluator = None

    # -- the Trainer's hooks ------------------------------------------------------------------------
    @staticmethod
    def _check(net):
        if not (hasattr(net, "generator") and hasattr(net, "discriminator") and hasattr(net, "low_res_size")):
            raise ImgenError(f"method srgan trains an srgan net (net name 'srgan'), got {type(net).__name__}")

    # -- losses ---------------------------------------------------------------------------------------
    @staticmethod
    def _pair(batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
        if "low_res" not in batch:
            raise ImgenError("srgan trains on (image, low_res) pairs; use data with a low_res option (e.g. shapes "
                             "with data.options.low_res=8)")
        return batch["low_res"], batch["image"]

    def features(self, x: torch.Tensor) -> list[torch.Tensor]:
        """[phi_l(x)]: the frozen evaluator's conv maps content_layers, differentiable in x (loaded once)."""
        from imgen.metrics.evaluators import load_evaluator  # as imgen.methods.vqgan's perceptual term

        if self._evaluator is None:
            self._evaluator = load_evaluator(self.content_net)  # leaves the global RNG as it was
            n = len(self._evaluator.cfg.widths)
            if any(not -n <= i < n for i in self.content_layers or ()):
                raise ImgenError(f"srgan content_layers={self.content_layers} must index {self.content_net}'s {n} "
                                 f"conv maps (-{n}..{n - 1})")
        cfg = self._evaluator.cfg
        maps = self._evaluator.net.feature_maps(adapt_images(x, cfg.in_channels, cfg.image_size))
        return maps if self.content_layers is None else [maps[i] for i in self.content_layers]

    def content_loss(self, sr: torch.Tensor, hr: torch.Tensor) -> torch.Tensor:
        """l_feat, eq. 5: the mean squared differences of phi_l(I^HR) and phi_l(G(I^LR)), summed over the layers."""
        with torch.no_grad():
            target = self.features(hr)
        return sum(F.mse_loss(a, b) for a, b in zip(self.features(sr), target))

    def discriminator_loss(self, net, batch: dict, generator=None) -> torch.Tensor:
        low, hr = self._pair(batch)
        with torch.no_grad():
            sr = net.generator(low)
        real_logits, fake_logits = net.discriminator(hr), net.discriminator(sr)
        self._log(d_real_acc=(real_logits > self.threshold).float().mean(),
                  d_fake_acc=(fake_logits < self.threshold).float().mean())
        return self.d_loss(real_logits, fake_logits)  # eq. 2: D maximises log D(I^HR) + log(1 - D(G(I^LR)))

    def generator_loss(self, net, batch: dict, generator=None) -> torch.Tensor:
        low, hr = self._pair(batch)
        sr = net.generator(low)
        loss = sr.new_zeros(())
        if self.content_weight > 0:
            content = self.content_loss(sr, hr)  # eq. 5
            loss = loss + self.content_weight * content
            self._log(content=content)
        if self.pixel_weight > 0:
            pixel = F.mse_loss(sr, hr)  # eq. 4
            loss = loss + self.pixel_weight * pixel
            self._log(pixel=pixel)
        adversarial = self.g_loss(net.discriminator(sr))  # eq. 6
        self._log(adversarial=adversarial)
        return loss + self.adversarial_weight * adversarial  # eq. 3

    # -- upscaling ------------------------------------------------------------------------------------
    @torch.no_grad()
    def upscale(self, net, low_res: torch.Tensor) -> torch.Tensor:
        """Low-res images (B, C, h, w) in [-1, 1] -> G(I^LR) (B, C, H, W) clamped to [-1, 1]; deterministic."""
        self._check(net)
        return net.generator(low_res).clamp(-1, 1)

    def sample(self, net, shape: tuple, cond: dict | None = None, steps: int | None = None, generator=None, **_):
        raise ImgenError("an SRGAN model upscales low-res images rather than sampling from noise; use "
                         "imgen.apps.upscale.upscale(model, low_res) (CLI: imgen upscale IMAGE --model DIR --out)")

    def denoiser(self, net):
        raise ImgenError("SRGAN is not a diffusion model: it has no denoiser; use imgen upscale")


def srgan(loss: str = "nonsaturating", content_weight: float = 1.0, adversarial_weight: float = 1e-3,
          pixel_weight: float = 0.0, content_net: str = "shapes-eval", content_layers: list | None = None) -> SRGANMethod:
    return SRGANMethod(loss, content_weight, adversarial_weight, pixel_weight, content_net, content_layers)
