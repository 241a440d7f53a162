"""Super-resolution by conditional denoising (SR3, Saharia et al. 2021) with Imagen's noise-conditioning augmentation
(Saharia et al. 2022, sec. 2.5 and app. B): the net denoises the high-res image given the low-res one
(cond["low_res"]; imgen.nn.superres concatenates it, upsampled, to the input). During training the low-res image
is first corrupted by the same forward process at a random level s ~ U[0, aug_max] and s is given to the net
(cond["low_res_level"]); at sampling a fixed level `sample_aug` is used. A net that has learned to ignore small
corruptions is robust to the artifacts of a base model's samples in a cascade.
With residual=True (SRDiff, Li et al. 2022, sec. 3.2) the denoised variable is the residual r = x - bicubic(low_res)
of the clean low-res image, not x itself: a net that outputs nothing already gives bicubic's image, and training
spends its steps on the edges (imgen.apps.upscale adds bicubic(low_res) back).

    method: {"name": "super_resolution", "options": {"method": "flow_matching", "prediction": "x0", "aug_max": 0.3,
                                                     "sample_aug": 0.1, "residual": true}}
"""
from __future__ import annotations

import torch

from imgen.denoiser import _bcast
from imgen.errors import ImgenError
from imgen.methods.denoising import build_denoising_method
from imgen.methods.diffusion import DenoisingMethod
from imgen.nn.superres import upsample


class SuperResolution(DenoisingMethod):
    """A DenoisingMethod whose condition is the (noise-augmented) low-res image of each batch; no CFG dropout."""

    def __init__(self, inner: DenoisingMethod, aug_max: float = 0.3, sample_aug: float = 0.1, residual: bool = True):
        for name, v in (("aug_max", aug_max), ("sample_aug", sample_aug)):
            if not isinstance(v, (int, float)) or isinstance(v, bool) or not 0.0 <= v <= 1.0:
                raise ImgenError(f"super_resolution {name} must be a noise level in [0, 1], got {v!r}")
        super().__init__(inner.schedule, inner.prediction, inner.t_sampling, cond_drop=0.0, t_eps=inner.t_eps)
        if not isinstance(residual, bool):
            raise ImgenError(f"super_resolution residual must be true or false, got {residual!r}")
        self.aug_max, self.sample_aug, self.residual = float(aug_max), float(sample_aug), residual

    @staticmethod
    def base(low_res: torch.Tensor, size: int) -> torch.Tensor:
        """What a residual model adds its sample to: the bicubic enlargement of the clean low-res image."""
        return upsample(low_res, size)

    def loss(self, net, batch: dict, generator=None) -> torch.Tensor:
        if self.residual and "low_res" in batch:  # SRDiff sec. 3.2: denoise r = x - bicubic(low_res)
            batch = {**batch, "image": batch["image"] - self.base(batch["low_res"], batch["image"].shape[-1])}
        return super().loss(net, batch, generator)

    def augment(self, low_res: torch.Tensor, level: torch.Tensor, generator=None) -> torch.Tensor:
        """Imagen app. B: the low-res image through the forward process at level s: alpha(s) x + sigma(s) eps."""
        level = level.to(torch.float64)
        eps = torch.randn(low_res.shape, generator=generator, dtype=low_res.dtype).to(low_res.device)
        a, s = _bcast(self.schedule.alpha(level), low_res), _bcast(self.schedule.sigma(level), low_res)
        return a * low_res + s * eps

    def low_res_condition(self, low_res: torch.Tensor, level=None, generator=None) -> dict:
        """The net's cond for low-res images (B, C, h, w): corrupted at `level` (default sample_aug), a float or (B,)."""
        level = self.sample_aug if level is None else level
        level = torch.as_tensor(level, dtype=torch.float64).expand(len(low_res)).clone()
        return {"low_res": self.augment(low_res, level, generator),
                "low_res_level": level.to(low_res.dtype).to(low_res.device)}

    def condition(self, batch: dict, generator=None) -> dict:
        if "low_res" not in batch:
            raise ImgenError("super_resolution trains on (image, low_res) pairs; use data with a low_res option "
                             "(e.g. shapes with data.options.low_res=8)")
        level = self.aug_max * torch.rand(len(batch["low_res"]), generator=generator, dtype=torch.float64)  # U[0, max]
        return self.low_res_condition(batch["low_res"], level, generator)


def super_resolution(method: str = "flow_matching", aug_max: float = 0.3, sample_aug: float = 0.1, residual: bool = True,
                     prediction: str | None = None, **method_options) -> SuperResolution:
    """An upsampler trained by the Gaussian-path method `method` (flow_matching or ddpm) with its options;
    `prediction` replaces the method's parameterization (e.g. "x0" on the flow-matching path)."""
    inner = build_denoising_method(method, **method_options)
    if type(inner) is not DenoisingMethod:
        raise ImgenError(f"super_resolution wraps flow_matching or ddpm, not {method!r}")
    if prediction is not None:
        inner = DenoisingMethod(inner.schedule, prediction, inner.t_sampling, inner.cond_drop, inner.t_eps)
    return SuperResolution(inner, aug_max, sample_aug, residual)
