"""EDM (Karras et al. 2022, "Elucidating the design space of diffusion-based generative models"):
a preconditioned denoiser D(x; sigma) trained with the weighted denoising loss on log-normal noise levels.

The net is wrapped by `imgen.denoiser.EDMDenoiser` (Table 1 preconditioning; the net's time input is
c_noise = ln(sigma) / 4), so an EDM net is one more denoiser and every sampler runs it; Heun
(`sample_heun`, Algorithm 1) on `make_grid(schedule, steps, "karras")` is the paper's own sampler.
"""
from __future__ import annotations

import torch

from imgen.denoiser import EDMDenoiser, _bcast, edm_preconditioning
from imgen.errors import ImgenError
from imgen.methods.diffusion import DenoisingMethod
from imgen.schedules import VE


class EDMMethod:
    """loss(net, batch) and denoiser(net) for EDM. sigma_min/sigma_max only bound the VE path samplers walk
    (EDM Table 1, sampling: 0.002 and 80); training sees every sigma of the log-normal."""

    condition = DenoisingMethod.condition  # the same classifier-free dropout of the condition

    def __init__(self, sigma_data: float = 0.5, p_mean: float = -1.2, p_std: float = 1.2, sigma_min: float = 0.002,
                 sigma_max: float = 80.0, cond_drop: float = 0.1):
        if not sigma_data > 0:
            raise ImgenError(f"sigma_data must be > 0 (the data's std; 0.5 for images in [-1, 1]), got {sigma_data}")
        if not p_std > 0:
            raise ImgenError(f"p_std must be > 0 (EDM uses 1.2), got {p_std}")
        if not 0.0 <= cond_drop <= 1.0:
            raise ImgenError(f"cond_drop must be in [0, 1], got {cond_drop}")
        self.schedule = VE(sigma_min, sigma_max)
        self.sigma_data, self.p_mean, self.p_std, self.cond_drop = float(sigma_data), float(p_mean), float(p_std), cond_drop

    def sample_sigma(self, n: int, generator=None) -> torch.Tensor:
        """ln(sigma) ~ N(P_mean, P_std^2) (EDM Table 1, training noise distribution p_train)."""
        return torch.exp(self.p_mean + self.p_std * torch.randn(n, generator=generator, dtype=torch.float64))

    def loss(self, net, batch: dict, generator=None) -> torch.Tensor:
        y = batch["image"] if "image" in batch else batch["x"]
        cond = self.condition(batch, generator)
        sigma = self.sample_sigma(len(y), generator)
        n = torch.randn(y.shape, generator=generator, dtype=y.dtype) * _bcast(sigma, y)  # n ~ N(0, sigma^2 I)
        d = self.denoiser(net).denoise(y + n, sigma, cond)  # D(y + n; sigma), eq. 7
        weight = _bcast(edm_preconditioning(sigma, self.sigma_data).weight, y)  # lambda(sigma), Table 1
        return torch.mean(weight * (d - y) ** 2)  # eq. 2 weighted as eq. 8; averaged over elements, not summed

    def denoiser(self, net) -> EDMDenoiser:
        return EDMDenoiser(net, self.schedule, self.sigma_data)


def edm(**kwargs) -> EDMMethod:
    """EDM with the paper's defaults (sigma_data = 0.5, P_mean = -1.2, P_std = 1.2)."""
    return EDMMethod(**kwargs)
