"""Adversarial losses on discriminator logits (the discriminators are in imgen.nn.discriminator).

    hinge_discriminator_loss(real, fake)   0.5 (E[max(0, 1 - D(x))] + E[max(0, 1 + D(G(z)))])
    hinge_generator_loss(fake)             -E[D(G(z))]
The hinge pair of Geometric GAN (Lim & Ye 2017, sec. 3) as used by SAGAN and VQGAN; the discriminator's is halved
as in the VQGAN authors' code.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


def hinge_discriminator_loss(real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
    return 0.5 * (F.relu(1.0 - real_logits).mean() + F.relu(1.0 + fake_logits).mean())


def hinge_generator_loss(fake_logits: torch.Tensor) -> torch.Tensor:
    return -fake_logits.mean()
