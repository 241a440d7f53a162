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
