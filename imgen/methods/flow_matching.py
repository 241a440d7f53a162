"""Flow matching with the rectified-flow path (Lipman et al. 2023; Liu et al. 2023):
x_t = (1 - t) x0 + t eps, the network regresses the velocity eps - x0 (conditional flow matching loss)."""
from __future__ import annotations

from imgen.methods.diffusion import DenoisingMethod
from imgen.schedules import RectifiedFlow


def flow_matching(t_sampling: str = "uniform", **kwargs) -> DenoisingMethod:
    return DenoisingMethod(RectifiedFlow(), "velocity", t_sampling=t_sampling, **kwargs)
