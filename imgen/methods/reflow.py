"""Reflow (Liu et al. 2023, "Flow Straight and Fast", sec. 2.2, Algorithm 1): fit a new rectified flow to the
coupling (Z0, Z1) that a trained flow's ODE draws, instead of to independent (noise, data) pairs. The new flow's
paths are straighter, so few Euler steps suffice (k-rectified flow; k = 2 is "2-rectified flow").

Training data are fixed pairs from `imgen.recipes.reflow.make_reflow_pairs` (dataset "pairs"); the student starts
from the teacher's weights (train.init_from), as is standard.
"""
from __future__ import annotations

import torch

from imgen.denoiser import _bcast
from imgen.errors import ImgenError
from imgen.methods.diffusion import DenoisingMethod
from imgen.schedules import RectifiedFlow


class ReflowMethod(DenoisingMethod):
    """Rectified flow on a fixed coupling: batch["noise"] is the noise paired with batch["image"|"x"]."""

    def loss(self, net, batch: dict, generator=None) -> torch.Tensor:
        if "noise" not in batch:
            raise ImgenError("reflow trains on (noise, sample) pairs: use data name 'pairs' with path=<file written by "
                             "imgen.recipes.reflow.make_reflow_pairs>, not a plain dataset")
        x1 = batch["image"] if "image" in batch else batch["x"]  # the teacher's ODE output (data end, t = 0)
        z = batch["noise"].to(x1.dtype)  # its paired noise (t = 1)
        cond = self.condition(batch, generator)
        t = self.sample_t(len(x1), generator)
        tb = _bcast(t, x1)
        x_t = (1 - tb) * x1 + tb * z  # Liu et al. 2023, eq. 1: X_t = t X1 + (1 - t) X0 (our t runs noise <- data)
        out = net(x_t, t.to(x1.dtype), cond)
        return torch.mean((out - (z - x1)) ** 2)  # Algorithm 1: min E || (X1 - X0) - v(X_t, t) ||^2, straight target


def reflow(t_sampling: str = "uniform", **kwargs) -> ReflowMethod:
    """k-rectified flow on the pairs of a (k-1)-rectified teacher; samples like any flow-matching model."""
    return ReflowMethod(RectifiedFlow(), "velocity", t_sampling=t_sampling, **kwargs)

