"""Adversarial losses on discriminator logits (the discriminators are in imgen.nn.discriminator and imgen.nn.gan).

    minimax        D: -E[log D(x)] - E[log(1 - D(G(z)))]    G: E[log(1 - D(G(z)))]     Goodfellow et al. 2014, eq. 1
    nonsaturating  D: as minimax                             G: -E[log D(G(z))]        Goodfellow et al. 2014, sec. 3
    wgan           D: E[D(G(z))] - E[D(x)]                   G: -E[D(G(z))]            Arjovsky et al. 2017, eq. 3
    hinge          D: 0.5 (E[max(0, 1 - D(x))] + E[max(0, 1 + D(G(z)))])   G: -E[D(G(z))]   Lim & Ye 2017, sec. 3
    least_squares  D: 0.5 E[(D(x) - 1)^2] + 0.5 E[D(G(z))^2]   G: 0.5 E[(D(G(z)) - 1)^2]   Mao et al. 2017, eq. 2
                   (LSGAN with a = 0, b = c = 1; CycleGAN's adversarial loss, Zhu et al. 2017, sec. 4)
plus two penalties on D's input gradient: WGAN-GP's E[(||grad D(x_hat)|| - 1)^2] on interpolates (Gulrajani et
al. 2017, eq. 3) and R1's E[||grad D(x)||^2] on real data (Mescheder et al. 2018, eq. 9; the caller scales it by
gamma / 2). D(x) = sigmoid(logit) for the logistic losses, so log D = -softplus(-logit), log(1 - D) = -softplus(logit).
The hinge discriminator loss is halved as in the VQGAN authors' code (imgen.methods.vqgan uses it).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


def minimax_discriminator_loss(real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
    return F.softplus(-real_logits).mean() + F.softplus(fake_logits).mean()  # Goodfellow eq. 1, D ascends V


def minimax_generator_loss(fake_logits: torch.Tensor) -> torch.Tensor:
    return -F.softplus(fake_logits).mean()  # E[log(1 - D(G(z)))]: saturates when D rejects G's samples


def nonsaturating_generator_loss(fake_logits: torch.Tensor) -> torch.Tensor:
    return F.softplus(-fake_logits).mean()  # -E[log D(G(z))]: strong gradients early (Goodfellow sec. 3)


def wasserstein_discriminator_loss(real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
    return fake_logits.mean() - real_logits.mean()  # the critic maximises E[D(x)] - E[D(G(z))]


def wasserstein_generator_loss(fake_logits: torch.Tensor) -> torch.Tensor:
    return -fake_logits.mean()


def hinge_discriminator_loss(real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
    return 0.5 * (F.relu(1.0 - real_logits).mean() + F.relu(1.0 + fake_logits).mean())


def hinge_generator_loss(fake_logits: torch.Tensor) -> torch.Tensor:
    return -fake_logits.mean()


def least_squares_discriminator_loss(real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
    return 0.5 * ((real_logits - 1) ** 2).mean() + 0.5 * (fake_logits ** 2).mean()  # LSGAN eq. 2, a = 0, b = 1


def least_squares_generator_loss(fake_logits: torch.Tensor) -> torch.Tensor:
    return 0.5 * ((fake_logits - 1) ** 2).mean()  # LSGAN eq. 2, c = 1


# name -> (discriminator loss, generator loss)
LOSSES = {
    "minimax": (minimax_discriminator_loss, minimax_generator_loss),
    "nonsaturating": (minimax_discriminator_loss, nonsaturating_generator_loss),
    "wgan": (wasserstein_discriminator_loss, wasserstein_generator_loss),
    "hinge": (hinge_discriminator_loss, hinge_generator_loss),
    "least_squares": (least_squares_discriminator_loss, least_squares_generator_loss),
}


def input_gradient_norms(critic, x: torch.Tensor) -> torch.Tensor:
    """||grad_x sum D(x)|| per sample, (B,), differentiable (create_graph) so a penalty on it trains D."""
    x = x.detach().requires_grad_(True)
    (grad,) = torch.autograd.grad(critic(x).sum(), x, create_graph=True)
    return grad.flatten(1).norm(dim=1)


def gradient_penalty(critic, real: torch.Tensor, fake: torch.Tensor,
                     generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """WGAN-GP (Gulrajani et al. 2017, Algorithm 1): x_hat = eps x + (1 - eps) x_fake, eps ~ U[0, 1] per sample;
    -> (E[(||grad D(x_hat)|| - 1)^2], the norms (B,) detached). `critic` maps images to logits."""
    eps = torch.rand((real.shape[0],) + (1,) * (real.dim() - 1), generator=generator, dtype=real.dtype)
    x_hat = eps * real.detach() + (1 - eps) * fake.detach()
    norms = input_gradient_norms(critic, x_hat)
    return ((norms - 1) ** 2).mean(), norms.detach()  # eq. 3's penalty, lambda applied by the caller


def r1_penalty(critic, real: torch.Tensor) -> torch.Tensor:
    """E[||grad D(x)||^2] on real data (Mescheder et al. 2018, eq. 9, without its gamma / 2)."""
    return (input_gradient_norms(critic, real) ** 2).mean()
