"""The families on the Gaussian diffusion/flow path, by name: the methods that latent diffusion and progressive
distillation wrap (imgen.methods.METHODS adds the rest)."""
from __future__ import annotations

from imgen.errors import build
from imgen.methods.diffusion import ddpm
from imgen.methods.edm import edm
from imgen.methods.flow_matching import flow_matching
from imgen.methods.reflow import reflow
from imgen.methods.score import ncsn

DENOISING_METHODS = {"ddpm": ddpm, "flow_matching": flow_matching, "ncsn": ncsn, "edm": edm, "reflow": reflow}


def build_denoising_method(name: str, **kwargs):
    return build(DENOISING_METHODS, "diffusion/flow method", name, **kwargs)


def denoising_method_of(name: str, options: dict) -> tuple[str, dict]:
    """(name, options) of the diffusion/flow method a method config trains: latent diffusion's inner one
    (imgen.methods.latent, default flow_matching), else the method itself."""
    if name == "latent":
        return options.get("method", "flow_matching"), options.get("method_options") or {}
    return name, options
