"""Denoising score matching over many noise levels: NCSN (Song & Ermon 2019).

The net predicts the score s(x, sigma) ~ grad_x log p_sigma(x) (the "score" parameterization of
imgen.denoiser), trained at L geometric noise levels sigma_1 > ... > sigma_L on the VE path, and samples
with annealed Langevin dynamics (imgen.samplers.sample_langevin on `time_grid(num_levels)`) or any other
sampler, since the denoiser interface turns the score into x0_hat by Tweedie's formula.
"""
from __future__ import annotations

import torch

from imgen.denoiser import _bcast, target
from imgen.errors import ImgenError, check_int
from imgen.methods.diffusion import DenoisingMethod
from imgen.schedules import VE


class ScoreMatching(DenoisingMethod):
    """NCSN's objective (Song & Ermon 2019, eq. 6): (1/L) sum_i lambda(sigma_i) l(theta; sigma_i), with
    l(theta; sigma) = 1/2 E || s(x + sigma z, sigma) + z / sigma ||^2 (eq. 5) and lambda(sigma) = sigma^2.

    The levels are the L points t = i / L (i = 1..L) of a VE path chosen so that they are exactly the
    paper's geometric sequence from sigma_min to sigma_max; the net's time input is that t."""

    def __init__(self, sigma_min: float = 0.01, sigma_max: float = 1.0, num_levels: int = 10, cond_drop: float = 0.1):
        check_int(num_levels, "num_levels", 2, " (NCSN uses 10)")
        if not 0 < sigma_min < sigma_max:
            raise ImgenError(f"need 0 < sigma_min < sigma_max, got sigma_min={sigma_min}, sigma_max={sigma_max}")
        ratio = (sigma_max / sigma_min) ** (1 / (num_levels - 1))  # sigma_{i} / sigma_{i+1}
        # VE sigma(t) = (sigma_min / ratio) * ratio^(L t): sigma(i / L) = sigma_min ratio^(i - 1), sigma(1) = sigma_max
        super().__init__(VE(sigma_min / ratio, sigma_max), prediction="score", cond_drop=cond_drop)
        self.num_levels = num_levels

    def levels(self) -> torch.Tensor:
        """The noise levels sigma_1 > ... > sigma_L (float64)."""
        return self.schedule.sigma(torch.arange(self.num_levels, 0, -1, dtype=torch.float64) / self.num_levels)

    def sample_t(self, n: int, generator=None) -> torch.Tensor:
        i = torch.randint(1, self.num_levels + 1, (n,), generator=generator)  # a level uniformly (eq. 6's 1/L sum)
        return i.double() / self.num_levels

    def loss(self, net, batch: dict, generator=None) -> torch.Tensor:
        x0 = batch["image"] if "image" in batch else batch["x"]
        cond = self.condition(batch, generator)
        t = self.sample_t(len(x0), generator)
        z = torch.randn(x0.shape, generator=generator, dtype=x0.dtype)
        sigma = _bcast(self.schedule.sigma(t), x0)
        score = net(x0 + sigma * z, t.to(x0.dtype), cond)  # x_tilde = x + sigma z (VE: alpha = 1)
        # eq. 5-6 with lambda(sigma) = sigma^2; target = -z / sigma. Averaged over elements like every imgen loss
        # (the paper's 1/2 ||.||^2 sums them), so learning rates carry over between methods.
        return torch.mean(sigma**2 * (score - target("score", self.schedule, x0, z, t)) ** 2)


def ncsn(sigma_min: float = 0.01, sigma_max: float = 1.0, num_levels: int = 10, **kwargs) -> ScoreMatching:
    """NCSN (Song & Ermon 2019): 10 geometric levels from 1 to 0.01 by default (their CIFAR-10 setting).
    Choose sigma_max about the largest distance between training points (Song & Ermon 2020, technique 1)."""
    return ScoreMatching(sigma_min, sigma_max, num_levels, **kwargs)
