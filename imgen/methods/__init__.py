"""Generator families: each owns a training loss and a way to sample. Networks stay in imgen.nn."""
from imgen.errors import build
from imgen.methods.autoencoder import kl_autoencoder
from imgen.methods.cold import cold
from imgen.methods.denoising import DENOISING_METHODS
from imgen.methods.distill import progressive_distillation
from imgen.methods.latent import latent

METHODS = dict(DENOISING_METHODS)  # ddpm, flow_matching, ncsn, edm, reflow
METHODS.update(progressive_distillation=progressive_distillation)  # few-step family
METHODS.update(cold=cold)  # off the Gaussian path: samples with its own Algorithms 1-2
METHODS.update(kl_autoencoder=kl_autoencoder, latent=latent)  # latent models (LDM)


def build_method(name: str, **kwargs):
    return build(METHODS, "method", name, **kwargs)
