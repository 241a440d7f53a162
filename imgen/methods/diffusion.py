"""Denoising on a Gaussian path: DDPM (Ho et al. 2020) and, with the straight path and velocity target,
flow matching. One loss for the family: regress the network onto its parameterization's target."""
from __future__ import annotations

import torch

from imgen.denoiser import PREDICTIONS, NetDenoiser, _bcast, target
from imgen.errors import ImgenError
from imgen.methods.inpainting import inpaint_condition
from imgen.schedules import Schedule, build_schedule

T_SAMPLING = ("uniform", "logit_normal")


class DenoisingMethod:
    """loss(net, batch) and denoiser(net) for any (schedule, prediction) pair.

    cond_drop: probability of replacing the condition by the null embedding during training, which
    trains the unconditional model classifier-free guidance needs (Ho & Salimans 2022, Algorithm 1)."""

    def __init__(self, schedule: Schedule, prediction: str = "eps", t_sampling: str = "uniform",
                 cond_drop: float = 0.1, t_eps: float = 1e-3):
        if prediction not in PREDICTIONS:
            raise ImgenError(f"unknown prediction {prediction!r}; valid: {', '.join(PREDICTIONS)}")
        if t_sampling not in T_SAMPLING:
            raise ImgenError(f"unknown t_sampling {t_sampling!r}; valid: {', '.join(T_SAMPLING)}")
        if not 0.0 <= cond_drop <= 1.0:
            raise ImgenError(f"cond_drop must be in [0, 1], got {cond_drop}")
        self.schedule, self.prediction = schedule, prediction
        self.t_sampling, self.cond_drop, self.t_eps = t_sampling, cond_drop, t_eps

    def sample_t(self, n: int, generator=None) -> torch.Tensor:
        if self.t_sampling == "logit_normal":  # Esser et al. 2024 (SD3), eq. 19 with m=0, s=1
            return torch.sigmoid(torch.randn(n, generator=generator, dtype=torch.float64))
        return self.t_eps + (1 - self.t_eps) * torch.rand(n, generator=generator, dtype=torch.float64)

    def condition(self, batch: dict, generator=None) -> dict | None:
        """The net's `cond` for a training batch, with classifier-free dropout applied."""
        keys = [k for k in ("label", "caption") if k in batch]  # each net reads the keys it was built for
        # a ControlNet's map and an inpainting model's mask + masked image: never dropped
        extra = {k: batch[k] for k in ("control", "inpaint") if k in batch}
        if "mask" in batch and "inpaint" not in batch:  # a pixel inpainting model (imgen.methods.inpainting)
            extra["inpaint"] = inpaint_condition(batch["image"], batch["mask"])
        if not keys or self.cond_drop >= 1.0:  # unconditional model
            return extra or None
        drop = torch.rand(len(batch[keys[0]]), generator=generator) < self.cond_drop
        return {**{k: batch[k] for k in keys}, "drop": drop, **extra}

    def loss(self, net, batch: dict, generator=None) -> torch.Tensor:
        x0 = batch["image"] if "image" in batch else batch["x"]
        cond = self.condition(batch, generator)
        t = self.sample_t(len(x0), generator)
        eps = torch.randn(x0.shape, generator=generator, dtype=x0.dtype)
        x_t = _bcast(self.schedule.alpha(t), x0) * x0 + _bcast(self.schedule.sigma(t), x0) * eps
        out = net(x_t, t.to(x0.dtype), cond)
        return torch.mean((out - target(self.prediction, self.schedule, x0, eps, t)) ** 2)  # DDPM eq. 14 ("simple")

    def denoiser(self, net) -> NetDenoiser:
        return NetDenoiser(net, self.schedule, self.prediction)


def ddpm(schedule: str = "linear", prediction: str = "eps", **kwargs) -> DenoisingMethod:
    """DDPM: variance-preserving path (linear or cosine), eps-prediction by default."""
    return DenoisingMethod(build_schedule(schedule), prediction, **kwargs)
