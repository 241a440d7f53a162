"""Generator families: each owns a training loss and a way to sample. Networks stay in imgen.nn."""
from imgen.errors import build
from imgen.methods.autoencoder import kl_autoencoder
from imgen.methods.cold import cold
from imgen.methods.diffusion import ddpm
from imgen.methods.edm import edm
from imgen.methods.flow_matching import flow_matching
from imgen.methods.latent import latent
from imgen.methods.distill import progressive_distillation
from imgen.methods.reflow import reflow
from imgen.methods.score import ncsn

METHODS = {"ddpm": ddpm, "flow_matching": flow_matching, "ncsn": ncsn, "edm": edm}
METHODS.update(reflow=reflow, progressive_distillation=progressive_distillation)  # few-step family
METHODS.update(cold=cold)  # off the Gaussian path: samples with its own Algorithms 1-2
METHODS.update(kl_autoencoder=kl_autoencoder, latent=latent)  # latent models (LDM)


def build_method(name: str, **kwargs):
    return build(METHODS, "method", name, **kwargs)
