"""Normalizing flows trained by maximum likelihood: RealNVP (Dinh et al. 2017) and Glow (Kingma & Dhariwal 2018).

The net (imgen.nn.flow: "realnvp", "glow") is a bijection x -> z with a tractable log|det dz/dx|, so
    log p(x) = log N(z; 0, I) + log|det dz/dx|                      (Dinh et al. 2017, eq. 3)
is exact and the loss is its negative, in bits per dimension, on uniformly dequantized data.

Discretization (Theis et al. 2016; Dinh et al. 2017, sec. 4.1): the data are integer levels k in
{0, .., n_bins - 1} mapped to [-1, 1]; training sees x = 2 (k + u) / n_bins - 1, u ~ U[0, 1), so each level is a bin
of width 2 / n_bins and
    bits/dim = -(log p(x) + D log(2 / n_bins)) / (D ln 2),
an upper bound (in expectation over u) on the discrete model's bits/dim. sklearn's 8x8 digits have 17 grey levels
(0..16 -> [-1, 1]): n_bins=17; 8-bit images: n_bins=256.

Sampling is one inverse pass, x = f^-1(z) with z ~ N(0, T^2 I): temperature T < 1 trades diversity for smoother
samples (Glow, sec. 5). It runs off imgen's denoiser interface: `imgen.Model.sample` (so `imgen sample DIR
--temperature 0.7`) calls `NormalizingFlow.sample`, as it does for cold diffusion.
"""
from __future__ import annotations

import math

import torch

from imgen.errors import ImgenError, check_int
from imgen.nn.flow import dequantization_bin_width, dequantize_uniform


def _check_temperature(temperature) -> float:
    if isinstance(temperature, bool) or not isinstance(temperature, (int, float)) or not 0 <= temperature < math.inf:
        raise ImgenError(f"temperature must be a number >= 0, got {temperature!r}; 1.0 samples the model, "
                         "0.7 gives smoother samples")
    return float(temperature)


def _check_flow(net) -> None:
    if not (hasattr(net, "log_prob") and hasattr(net, "inverse")):
        raise ImgenError(f"method normalizing_flow needs an invertible net ('realnvp' or 'glow'), got "
                         f"{type(net).__name__}; set net.name to realnvp or glow")


class NormalizingFlow:
    """Maximum likelihood on `n_bins`-level images; `temperature` is the default sampling temperature."""
    takes_steps = False  # x = f^-1(z) in one pass

    def __init__(self, n_bins: int = 256, temperature: float = 1.0):
        check_int(n_bins, "method.options.n_bins", minimum=2)
        self.n_bins, self.temperature = n_bins, _check_temperature(temperature)
        self.bin_width = dequantization_bin_width(n_bins)

    def log_prob(self, net, x: torch.Tensor) -> torch.Tensor:
        """Exact continuous log density log p(x) in nats per image, (B,) (Dinh et al. 2017, eq. 3)."""
        _check_flow(net)
        return net.log_prob(x)

    def bits_per_dim(self, net, images: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """(B,) bits/dim of images on the n_bins grid, each dequantized once with u ~ U[0, 1) (module docstring)."""
        x = dequantize_uniform(images, self.n_bins, generator)
        num_dims = x[0].numel()
        nll = -self.log_prob(net, x)
        return (nll - num_dims * math.log(self.bin_width)) / (num_dims * math.log(2))  # Theis et al. 2016, sec. 3.1

    def loss(self, net, batch: dict, generator: torch.Generator | None = None) -> torch.Tensor:
        # ActNorm's data-dependent init (Glow, sec. 3.1) runs inside the first train-mode forward: the Trainer's
        # first batch; its `initialized` buffer is checkpointed, so a resumed run never re-initializes
        return self.bits_per_dim(net, batch["image"], generator).mean()

    @torch.no_grad()
    def sample(self, net, shape: tuple, cond=None, steps=None, generator: torch.Generator | None = None,
               sampler=None, callback=None, progress: bool = False, temperature: float | None = None) -> torch.Tensor:
        """(n, C, H, W) samples x = f^-1(z), z ~ N(0, T^2 I) (Glow, sec. 5). A flow has no steps, sampler or
        condition; `steps` and `sampler` are accepted and ignored so imgen.Model can call every method alike."""
        _check_flow(net)
        if cond is not None:
            raise ImgenError("this normalizing flow is unconditional; sample it without labels")
        temperature = self.temperature if temperature is None else _check_temperature(temperature)
        x = net.sample(shape[0], temperature=temperature, generator=generator)
        if callback is not None:
            callback({"i": 0, "x": x})
        return x


def normalizing_flow(**kwargs) -> NormalizingFlow:
    return NormalizingFlow(**kwargs)
