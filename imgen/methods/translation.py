"""Image-to-image translation with GANs: pix2pix on paired data, CycleGAN on unpaired domains.

pix2pix (Isola et al. 2017): image-to-image translation with a conditional GAN. The generator G maps a source
image s to an image; a conditional PatchGAN D judges (s, image) pairs patch by patch. The objective (eq. 4):

    G* = arg min_G max_D  L_cGAN(G, D) + lambda L_L1(G),   lambda = 100
    L_cGAN = E[log D(s, y)] + E[log(1 - D(s, G(s)))]   (eq. 1)      L_L1 = E[||y - G(s)||_1]   (eq. 3)

One Trainer step runs ("discriminator", D's loss on real and detached fake pairs, halved as in sec. 3.3) then
("generator", the adversarial loss on D(s, G(s)) + lambda L1). The adversarial losses are imgen.methods.gan_losses'
by name (default: non-saturating, as the paper trains G). Batches hold "source" and "image"
(imgen.data.translation's shapes-pairs). Translation uses the EMA generator in eval mode (no dropout).

CycleGAN (Zhu et al. 2017): generators G: A -> B, F: B -> A and discriminators D_A, D_B from unpaired batches a, b:

    L(G, F, D_A, D_B) = L_GAN(G, D_B) + L_GAN(F, D_A) + lambda_cyc L_cyc(G, F)                     (eq. 3)
    L_cyc = E[||F(G(a)) - a||_1] + E[||G(F(b)) - b||_1]                                            (eq. 2)
    L_identity = E[||G(b) - b||_1] + E[||F(a) - a||_1], weighted identity_weight * lambda_cyc       (sec. 5.2)

with the least-squares adversarial loss (sec. 4, LSGAN) and D's loss halved; lambda_cyc = 10. The paper's buffer of
50 past fakes for D is left out (each D step sees the current generators' fakes). Batches hold "image" (domain A)
and "image_b" (domain B) (imgen.data.translation's shapes-domains). Translation runs G (direction "ab") or F ("ba").
"""
from __future__ import annotations

import torch

from imgen.errors import ImgenError, check_nonnegative
from imgen.methods.adversarial import AdversarialMethod
from imgen.methods.gan_losses import LOSSES


class Pix2PixMethod(AdversarialMethod):
    takes_steps = False  # one generator evaluation per image

    def __init__(self, loss: str = "nonsaturating", l1_weight: float = 100.0):
        if loss not in LOSSES:
            raise ImgenError(f"pix2pix loss must be one of {', '.join(LOSSES)}, got {loss!r}")
        self.loss_name, self.l1_weight = loss, check_nonnegative(l1_weight, "pix2pix l1_weight")
        self.d_loss, self.g_loss = LOSSES[loss]

    # -- the Trainer's hooks ------------------------------------------------------------------------
    @staticmethod
    def _check(net):
        if not (hasattr(net, "generator") and hasattr(net, "discriminator") and hasattr(net, "source_channels")):
            raise ImgenError(f"method pix2pix trains a pix2pix net (net name 'pix2pix'), got {type(net).__name__}")

    # -- losses ---------------------------------------------------------------------------------------
    @staticmethod
    def _pair(batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
        if "source" not in batch:
            raise ImgenError("pix2pix trains on paired data with a 'source' per image; use the dataset shapes-pairs")
        return batch["source"], batch["image"]

    def discriminator_loss(self, net, batch: dict, generator=None) -> torch.Tensor:
        s, y = self._pair(batch)
        with torch.no_grad():
            fake = net.generator(s)
        real_logits = net.discriminator(torch.cat([s, y], 1))  # D sees the source: a conditional GAN (eq. 1)
        fake_logits = net.discriminator(torch.cat([s, fake], 1))
        self._log(d_real_acc=(real_logits > 0).float().mean(), d_fake_acc=(fake_logits < 0).float().mean())
        return 0.5 * self.d_loss(real_logits, fake_logits)  # sec. 3.3: D's objective divided by 2

    def generator_loss(self, net, batch: dict, generator=None) -> torch.Tensor:
        s, y = self._pair(batch)
        fake = net.generator(s)
        adversarial = self.g_loss(net.discriminator(torch.cat([s, fake], 1)))
        l1 = (fake - y).abs().mean()  # eq. 3
        self._log(adversarial=adversarial, l1=l1)
        return adversarial + self.l1_weight * l1  # eq. 4

    # -- translation ----------------------------------------------------------------------------------
    directions = ("ab",)

    @torch.no_grad()
    def translate(self, net, source: torch.Tensor, direction: str = "ab") -> torch.Tensor:
        """Sources (B, source_channels, H, W) in [-1, 1] -> images (B, C, H, W) in [-1, 1]; deterministic."""
        self._check(net)
        if direction != "ab":
            raise ImgenError(f"pix2pix translates one way (source -> image, direction 'ab'), got {direction!r}")
        return net.generator(source).clamp(-1, 1)

    def sample(self, net, shape: tuple, cond: dict | None = None, steps: int | None = None, generator=None, **_):
        raise ImgenError("a pix2pix model translates source images rather than sampling from noise; use "
                         "imgen.apps.translate.translate(model, sources) (CLI: imgen translate DIR IMAGE --out)")

    def denoiser(self, net):
        raise ImgenError("pix2pix is not a diffusion model: it has no denoiser; use imgen translate")


class CycleGANMethod(AdversarialMethod):
    takes_steps = False  # one generator evaluation per image

    def __init__(self, loss: str = "least_squares", cycle_weight: float = 10.0, identity_weight: float = 0.5):
        if loss not in LOSSES:
            raise ImgenError(f"cyclegan loss must be one of {', '.join(LOSSES)}, got {loss!r}")
        self.loss_name = loss
        self.cycle_weight = check_nonnegative(cycle_weight, "cyclegan cycle_weight")
        self.identity_weight = check_nonnegative(identity_weight, "cyclegan identity_weight")
        self.d_loss, self.g_loss = LOSSES[loss]
        self.threshold = 0.5 if loss == "least_squares" else 0.0  # D's decision boundary for the accuracies

    @staticmethod
    def _check(net):
        if not (hasattr(net, "generators") and hasattr(net, "discriminators")):
            raise ImgenError(f"method cyclegan trains a cyclegan net (net name 'cyclegan'), got {type(net).__name__}")

    @staticmethod
    def players(net):
        return net.discriminators, net.generators  # both domains' nets in one optimizer each

    @staticmethod
    def _domains(batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
        if "image_b" not in batch:
            raise ImgenError("cyclegan trains on two unpaired domains ('image' and 'image_b' per batch); use the "
                             "dataset shapes-domains")
        return batch["image"], batch["image_b"]

    def discriminator_loss(self, net, batch: dict, generator=None) -> torch.Tensor:
        a, b = self._domains(batch)
        g, d = net.generators, net.discriminators
        with torch.no_grad():
            fake_b, fake_a = g["ab"](a), g["ba"](b)
        loss = 0.0
        for name, real, fake in (("a", a, fake_a), ("b", b, fake_b)):
            real_logits, fake_logits = d[name](real), d[name](fake)
            self._log(**{f"d_{name}_real_acc": (real_logits > self.threshold).float().mean(),
                         f"d_{name}_fake_acc": (fake_logits < self.threshold).float().mean()})
            loss = loss + 0.5 * self.d_loss(real_logits, fake_logits)  # sec. 4: D's objective divided by 2
        return loss

    def generator_loss(self, net, batch: dict, generator=None) -> torch.Tensor:
        a, b = self._domains(batch)
        g, d = net.generators, net.discriminators
        fake_b, fake_a = g["ab"](a), g["ba"](b)
        adversarial = self.g_loss(d["b"](fake_b)) + self.g_loss(d["a"](fake_a))  # L_GAN(G, D_B) + L_GAN(F, D_A)
        cycle = (g["ba"](fake_b) - a).abs().mean() + (g["ab"](fake_a) - b).abs().mean()  # eq. 2
        loss = adversarial + self.cycle_weight * cycle  # eq. 3
        self._log(adversarial=adversarial, cycle=cycle)
        if self.identity_weight > 0:
            identity = (g["ab"](b) - b).abs().mean() + (g["ba"](a) - a).abs().mean()  # sec. 5.2, Taigman et al.
            loss = loss + self.identity_weight * self.cycle_weight * identity
            self._log(identity=identity)
        return loss

    directions = ("ab", "ba")

    @torch.no_grad()
    def translate(self, net, source: torch.Tensor, direction: str = "ab") -> torch.Tensor:
        """Images of domain A (direction "ab", through G) or B ("ba", through F) -> the other domain, in [-1, 1]."""
        self._check(net)
        if direction not in self.directions:
            raise ImgenError(f"cyclegan direction must be 'ab' (A -> B) or 'ba' (B -> A), got {direction!r}")
        return net.generators[direction](source).clamp(-1, 1)

    def sample(self, net, shape: tuple, cond: dict | None = None, steps: int | None = None, generator=None, **_):
        raise ImgenError("a CycleGAN model translates images between two domains rather than sampling from noise; use "
                         "imgen.apps.translate.translate(model, images) (CLI: imgen translate DIR IMAGE --out)")

    def denoiser(self, net):
        raise ImgenError("CycleGAN is not a diffusion model: it has no denoiser; use imgen translate")


def cyclegan(loss: str = "least_squares", cycle_weight: float = 10.0, identity_weight: float = 0.5) -> CycleGANMethod:
    return CycleGANMethod(loss, cycle_weight, identity_weight)


def pix2pix(loss: str = "nonsaturating", l1_weight: float = 100.0) -> Pix2PixMethod:
    return Pix2PixMethod(loss, l1_weight)
