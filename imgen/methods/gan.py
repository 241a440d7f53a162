"""Generative adversarial networks (Goodfellow et al. 2014): a discriminator D learns to tell data from the
generator's samples G(z), and G learns to fool it. One training step of the Trainer runs the updates in turn:

    ("discriminator", D's loss on a real batch and G(z) detached [+ gp_weight * WGAN-GP] [+ r1_weight / 2 * R1])
        x n_critic (WGAN-GP trains the critic 5 times per generator step, Gulrajani et al. Algorithm 1)
    ("generator", G's loss on D(G(z)); only G's optimizer steps)

with the losses of imgen.methods.gan_losses by name (`loss`: minimax, nonsaturating, wgan, hinge). A conditional
GAN (net option num_classes) draws G's labels from the real batch, so classes keep the data's frequencies. The
Trainer keeps an EMA of the whole net; sampling uses the EMA generator: x = G(z), z ~ N(0, I).

A text GAN (net text_gan) is conditioned on the frozen text encoder's pooled feature t of each caption (GAN-INT-CLS,
Reed et al. 2016). `matching_aware`: D also sees real images with mismatched text (`_mismatched`: the captions half
a batch away) as negatives, so it must judge whether image and text match, not only whether the image looks real
(GAN-CLS, Algorithm 1). `interpolation` (a weight; Reed et al. use 1): G also draws from t = beta t1 + (1 - beta) t2
between two captions' features, beta = 0.5, which D (matching-aware) judges with no real image of it (GAN-INT, eq. 5).

Diagnostics in each log line (window means, from log_stats): D's accuracy on real and fake (logit > 0 for the
logistic and hinge losses; for a critic, the side of the midpoint of the two mean scores), the gradient penalty
and the gradient norm on interpolates (WGAN-GP keeps it near 1), R1; the Trainer adds loss_discriminator,
loss_generator and grad_norm_discriminator/grad_norm_generator.
"""
from __future__ import annotations

import torch

from imgen.errors import ImgenError, check_int, check_nonnegative
from imgen.methods.adversarial import AdversarialMethod
from imgen.methods.gan_losses import LOSSES, gradient_penalty, r1_penalty


class GANMethod(AdversarialMethod):
    takes_steps = False  # one generator evaluation per image

    def __init__(self, loss: str = "nonsaturating", gp_weight: float = 0.0, r1_weight: float = 0.0,
                 n_critic: int = 1, d_lr_scale: float = 1.0, matching_aware: bool = False, interpolation: float = 0.0):
        if loss not in LOSSES:
            raise ImgenError(f"gan loss must be one of {', '.join(LOSSES)}, got {loss!r}")
        for name, value in (("gp_weight", gp_weight), ("r1_weight", r1_weight), ("d_lr_scale", d_lr_scale),
                            ("interpolation", interpolation)):
            check_nonnegative(value, f"gan {name}")
        check_int(n_critic, "gan n_critic (discriminator steps per generator step)")
        if not isinstance(matching_aware, bool):
            raise ImgenError(f"gan matching_aware must be true or false, got {matching_aware!r}")
        self.loss_name, self.gp_weight, self.r1_weight = loss, float(gp_weight), float(r1_weight)
        self.n_critic, self.d_lr_scale = n_critic, float(d_lr_scale)
        self.matching_aware, self.interpolation = matching_aware, float(interpolation)
        self.d_loss, self.g_loss = LOSSES[loss]

    # -- the Trainer's hooks ------------------------------------------------------------------------
    def _check(self, net):
        if not (hasattr(net, "generator") and hasattr(net, "discriminator") and hasattr(net, "latent_dim")):
            raise ImgenError(f"method gan trains a GAN net (net name 'gan'), got {type(net).__name__}")
        if (self.matching_aware or self.interpolation) and not getattr(net, "text_conditional", False):
            raise ImgenError("gan matching_aware and interpolation (GAN-INT-CLS) need a text-conditional GAN (net "
                             "text_gan, trained on captions); set them false / 0 for this net")
        if self.gp_weight > 0 and any(isinstance(m, torch.nn.BatchNorm2d) for m in net.discriminator.modules()):
            raise ImgenError("a gradient penalty needs a discriminator without batch norm (it penalises each "
                             "sample's gradient); set net.options.d_norm to 'layer' or 'none'")

    # -- losses ---------------------------------------------------------------------------------------
    def _labels(self, net, batch: dict) -> torch.Tensor | None:
        """The batch's condition y: class labels (B,), a text GAN's caption features (B, D), or None."""
        if getattr(net, "text_conditional", False):
            if not batch.get("caption"):
                raise ImgenError("a text GAN trains on captioned images; use a dataset with captions (e.g. shapes)")
            captions = tuple(batch["caption"])
            key = (id(net), captions)
            cached = self.__dict__.get("_text_cache")
            if cached is None or cached[0] != key:  # the frozen encoder's features, once per batch (D and G)
                self.__dict__["_text_cache"] = (key, net.encode(list(captions))["text_pooled"])
            return self.__dict__["_text_cache"][1]
        if net.num_classes is None:
            return None
        if "label" not in batch:
            raise ImgenError("a class-conditional GAN needs labelled data; use a dataset with labels")
        return batch["label"]

    @staticmethod
    def _mismatched(y: torch.Tensor) -> torch.Tensor:
        """GAN-CLS's "wrong text" (Reed et al. 2016, Algorithm 1, line 3): each row's condition replaced by the one
        half a batch away — another scene's caption, or, on shapes with twins=true (items then their counterfactual
        twins), the caption of the same scene with its shape, colour or background changed: a hard negative that
        only that attribute tells apart (as imgen's CLIP trains on)."""
        return y.roll(len(y) // 2, 0)

    def _fake(self, net, n: int, labels, generator, **kwargs) -> torch.Tensor:
        z = torch.randn((n, net.latent_dim), generator=generator)
        return net.generator(z, labels, generator=generator, **kwargs)  # a StyleGAN's noise and mixing draw too

    def discriminator_loss(self, net, batch: dict, generator=None) -> torch.Tensor:
        x, y = batch["image"], self._labels(net, batch)
        with torch.no_grad():
            fake = self._fake(net, len(x), y, generator)
        real_logits, fake_logits = net.discriminator(x, y), net.discriminator(fake, y)
        loss = self.d_loss(real_logits, fake_logits)
        mid = {"wgan": 0.5 * (real_logits.mean() + fake_logits.mean()).detach(), "least_squares": 0.5}.get(
            self.loss_name, 0.0)  # LSGAN's targets are 1 (real) and 0 (fake): the boundary is 0.5
        self._log(d_real_acc=(real_logits > mid).float().mean(), d_fake_acc=(fake_logits < mid).float().mean(),
                  d_real_logit=real_logits.mean(), d_fake_logit=fake_logits.mean())
        if self.matching_aware:  # s_w: a real image with the wrong text is a negative too
            wrong_logits = net.discriminator(x, self._mismatched(y))
            # Reed et al. Algorithm 1: L_D = log(s_r) + (log(1 - s_w) + log(1 - s_f)) / 2, any loss of gan_losses
            loss = 0.5 * (loss + self.d_loss(real_logits, wrong_logits))
            self._log(d_wrong_acc=(wrong_logits < mid).float().mean(), d_wrong_logit=wrong_logits.mean())
        critic = lambda v: net.discriminator(v, y)  # noqa: E731
        if self.gp_weight > 0:
            gp, norms = gradient_penalty(critic, x, fake, generator)
            loss = loss + self.gp_weight * gp  # Gulrajani et al. eq. 3, lambda = gp_weight
            self._log(gp=gp, gp_grad_norm=norms.mean())
        if self.r1_weight > 0:
            r1 = r1_penalty(critic, x)
            loss = loss + 0.5 * self.r1_weight * r1  # Mescheder et al. eq. 9, gamma = r1_weight
            self._log(r1=r1)
        return loss

    def generator_loss(self, net, batch: dict, generator=None) -> torch.Tensor:
        y = self._labels(net, batch)
        fake = self._fake(net, len(batch["image"]), y, generator)
        loss = self.g_loss(net.discriminator(fake, y))
        if self.interpolation > 0:
            y_int = 0.5 * (y + self._mismatched(y))  # GAN-INT, Reed et al. eq. 5: beta t1 + (1 - beta) t2, beta 0.5
            fake_int = self._fake(net, len(y_int), y_int, generator)
            loss = loss + self.interpolation * self.g_loss(net.discriminator(fake_int, y_int))
        return loss

    # -- sampling -------------------------------------------------------------------------------------
    @torch.no_grad()
    def sample(self, net, shape: tuple, cond: dict | None = None, steps: int | None = None, generator=None,
               truncation: float | None = None, **_) -> torch.Tensor:
        """shape[0] images G(z), z ~ N(0, I) (one network evaluation; `steps` does not apply). `truncation` psi:
        a StyleGAN's w pulled toward its mean, w_avg + psi (w - w_avg) (Karras et al. 2019, sec. 5.1)."""
        self._check(net)
        kwargs = {}
        if truncation is not None:
            if not hasattr(net.generator, "mapping"):
                raise ImgenError("truncation needs a StyleGAN (net stylegan: it truncates w toward its mean); this "
                                 "GAN has no mapping network, sample it without truncation")
            if isinstance(truncation, bool) or not isinstance(truncation, (int, float)) or not 0 <= truncation <= 1:
                raise ImgenError(f"truncation psi must be a number in [0, 1] (1: none), got {truncation!r}")
            kwargs["truncation"] = float(truncation)
        if getattr(net, "text_conditional", False):
            if cond is None or cond.get("text_pooled") is None:
                raise ImgenError("this GAN is text-conditional: give prompts with generate(prompts) (CLI: imgen "
                                 "generate \"a red circle\" --model DIR); it has no unconditional mode")
            return self._fake(net, shape[0], cond["text_pooled"], generator, **kwargs)
        labels = None if cond is None else cond.get("label")
        if net.num_classes is not None and labels is None:
            raise ImgenError("this GAN is class-conditional; give labels")
        if net.num_classes is None and labels is not None:
            raise ImgenError("this GAN is unconditional; sample it without labels")
        return self._fake(net, shape[0], labels, generator, **kwargs)

    def denoiser(self, net):
        raise ImgenError("a GAN is not a diffusion model: it has no denoiser; sample it with imgen.load(DIR).sample")


def gan(loss: str = "nonsaturating", gp_weight: float = 0.0, r1_weight: float = 0.0, n_critic: int = 1,
        d_lr_scale: float = 1.0, matching_aware: bool = False, interpolation: float = 0.0) -> GANMethod:
    return GANMethod(loss, gp_weight, r1_weight, n_critic, d_lr_scale, matching_aware, interpolation)
