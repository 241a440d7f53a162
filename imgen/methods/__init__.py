"""Generator families: each owns a training loss and a way to sample. Networks stay in imgen.nn."""
from imgen.errors import build
from imgen.methods.autoencoder import kl_autoencoder
from imgen.methods.classifier import attribute_classifier
from imgen.methods.clip import clip_method
from imgen.methods.cold import cold
from imgen.methods.consistency import consistency_distillation
from imgen.methods.denoising import DENOISING_METHODS
from imgen.methods.distill import progressive_distillation
from imgen.methods.gan import gan
from imgen.methods.latent import latent
from imgen.methods.maskgit import maskgit
from imgen.methods.normalizing_flow import normalizing_flow
from imgen.methods.token_ar import token_ar
from imgen.methods.translation import cyclegan, pix2pix
from imgen.methods.unclip import unclip_decoder, unclip_prior
from imgen.methods.srgan import srgan
from imgen.methods.superres import super_resolution
from imgen.methods.vae import vae
from imgen.methods.vqgan import vqgan
from imgen.methods.vqvae import vqvae

METHODS = dict(DENOISING_METHODS)  # ddpm, flow_matching, ncsn, edm, reflow
METHODS.update(progressive_distillation=progressive_distillation,  # few-step family
               consistency_distillation=consistency_distillation)
METHODS.update(cold=cold)  # off the Gaussian path: samples with its own Algorithms 1-2
METHODS.update(kl_autoencoder=kl_autoencoder, latent=latent)  # latent models (LDM)
METHODS["super_resolution"] = super_resolution  # SR3 / Imagen cascade upsampler (net unet with low_res_channels)
METHODS["vae"] = vae  # VAE, beta-VAE, plain AE (beta = 0)
METHODS["attribute_classifier"] = attribute_classifier  # imgen's evaluator nets (scripts/train_evaluators.py)
METHODS.update(clip=clip_method, unclip_prior=unclip_prior, unclip_decoder=unclip_decoder)  # CLIP and unCLIP stages
METHODS["normalizing_flow"] = normalizing_flow  # RealNVP, Glow: exact likelihood, own sampler
METHODS.update(vqvae=vqvae, vqgan=vqgan)  # image tokenizers (net vqvae)
METHODS["gan"] = gan  # GANs: DCGAN, conditional (projection D), WGAN-GP (net gan)
METHODS.update(pix2pix=pix2pix, cyclegan=cyclegan)  # image-to-image translation (nets pix2pix, cyclegan)
METHODS["srgan"] = srgan  # SRGAN super-resolution (net srgan; imgen upscale)

METHODS.update(token_ar=token_ar, maskgit=maskgit)  # token priors over a VQ tokenizer (net token_transformer)


def build_method(name: str, **kwargs):
    return build(METHODS, "method", name, **kwargs)
