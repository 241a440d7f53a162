"""VAE and beta-VAE (Kingma & Welling 2014; Higgins et al. 2017): maximise the evidence lower bound
    ELBO(x) = E_q(z|x)[log p(x | z)] - KL(q(z | x) || N(0, I))        (Kingma & Welling 2014, eq. 3)
with beta * KL in training (Higgins et al. 2017, eq. 4): beta = 1 is the VAE, beta > 1 the beta-VAE, and beta = 0 a
plain deterministic autoencoder (z = the posterior mean, no sampling noise).

Likelihood p(x | z): a *discretized Gaussian* per pixel with mean decode(z) and one learned std sigma (the net's
`log_sigma`), over the `levels` grey levels of the data, evenly spaced on [-1, 1] (17 for sklearn's digits, 256
for 8-bit images): P(x) = Phi((x + d/2 - mu) / sigma) - Phi((x - d/2 - mu) / sigma), d = 2 / (levels - 1), with the
first and last bins open to -inf / +inf (the discretization of PixelCNN++, Salimans et al. 2017, sec. 2.1, with a
Gaussian in place of the logistic). It is a probability mass, so ELBO and IWAE are bounds on the discrete
log-likelihood in nats and bits/dim = -bound / (D ln 2) (imgen.metrics.discrete_bits_per_dim), with no bin-width
term.

    m = imgen.load("runs/digits-vae")
    z = m.encode(x); x_hat = m.decode(z); m.sample(64, seed=0)     # from the prior N(0, I)
    m.method.elbo(m.net, x), m.method.iwae(m.net, x, k=64)          # (B,) nats per image
"""
from __future__ import annotations

import math

import torch

from imgen.errors import ImgenError, check_int
from imgen.nn.flow import LOG_2PI, standard_normal_log_prob


def discretized_gaussian_log_prob(x: torch.Tensor, mean: torch.Tensor, log_sigma: torch.Tensor,
                                  levels: int) -> torch.Tensor:
    """log P(x) per image (summed over pixels) of a discretized N(mean, sigma^2) on `levels` levels in [-1, 1]."""
    half = 1.0 / (levels - 1)  # half a bin: the levels are 2 / (levels - 1) apart
    inv_sigma = torch.exp(-log_sigma)
    c = (x - mean) * inv_sigma
    upper, lower = c + half * inv_sigma, c - half * inv_sigma
    # Phi(upper) - Phi(lower), computed in the tail where it is not a difference of two numbers near 1
    flip = c > 0
    la = torch.special.log_ndtr(torch.where(flip, -lower, upper))
    lb = torch.special.log_ndtr(torch.where(flip, -upper, lower))
    mid = la + torch.log(-torch.expm1((lb - la).clamp(max=-1e-12)))
    logp = torch.where(x < -1 + half, torch.special.log_ndtr(upper),  # first bin: (-inf, -1 + d/2]
                       torch.where(x > 1 - half, torch.special.log_ndtr(-lower), mid))  # last bin: [1 - d/2, inf)
    return logp.flatten(1).sum(1)


def gaussian_log_prob(z: torch.Tensor, mean: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    return -0.5 * ((z - mean) ** 2 * torch.exp(-logvar) + logvar + LOG_2PI).flatten(1).sum(1)


class VAEMethod:
    """loss(net, batch) = (-E_q[log p(x|z)] + beta * KL(q(z|x) || N(0, I))) / D, a one-sample estimate of the
    negative beta-ELBO per pixel (the scale keeps Adam's LR and grad clipping in range; beta keeps its meaning)."""
    takes_steps = False  # x = decoder(z) in one pass

    def __init__(self, beta: float = 1.0, levels: int = 256):
        if not (isinstance(beta, (int, float)) and beta >= 0):
            raise ImgenError(f"vae beta must be a number >= 0 (1: VAE, >1: beta-VAE, 0: plain autoencoder), got {beta}")
        check_int(levels, "vae levels (grey levels of the data)", minimum=2)
        self.beta, self.levels = float(beta), levels

    def _check(self, net):
        if not hasattr(net, "log_sigma"):
            raise ImgenError(f"method vae trains a VAE net (net name 'vae'), got {type(net).__name__}")

    def terms(self, net, x: torch.Tensor, generator=None) -> tuple[torch.Tensor, torch.Tensor]:
        """(log p(x | z) for one z ~ q(z | x), KL(q(z | x) || N(0, I))), each (B,) in nats."""
        self._check(net)
        q = net.encode(x)
        z = q.mean if self.beta == 0 and net.training else q.sample(generator)  # beta = 0: a deterministic AE
        return discretized_gaussian_log_prob(x, net.decode(z), net.log_sigma, self.levels), q.kl()

    def loss(self, net, batch: dict, generator=None) -> torch.Tensor:
        x = batch["image"]
        log_px, kl = self.terms(net, x, generator)
        return (-log_px + self.beta * kl).sum() / x.numel()  # Higgins et al. 2017, eq. 4 (beta = 1: K&W eq. 3)

    @torch.no_grad()
    def elbo(self, net, x: torch.Tensor, generator=None, samples: int = 1) -> torch.Tensor:
        """The ELBO (beta = 1) per image in nats, (B,), averaged over `samples` draws of z ~ q(z | x)."""
        check_int(samples, "samples")
        return torch.stack([(lp - kl) for lp, kl in (self.terms(net, x, generator) for _ in range(samples))]).mean(0)

    @torch.no_grad()
    def iwae(self, net, x: torch.Tensor, k: int = 64, generator=None) -> torch.Tensor:
        """The importance-weighted bound L_k per image in nats, (B,) (Burda et al. 2016, eq. 8):
        log (1/k) sum_i p(x, z_i) / q(z_i | x), z_i ~ q(z | x). L_1 is the ELBO; L_k rises with k."""
        self._check(net)
        check_int(k, "k (importance samples)")
        q = net.encode(x)
        log_w = []
        for _ in range(k):
            z = q.sample(generator)
            log_w.append(discretized_gaussian_log_prob(x, net.decode(z), net.log_sigma, self.levels)
                         + standard_normal_log_prob(z) - gaussian_log_prob(z, q.mean, q.logvar))
        return torch.logsumexp(torch.stack(log_w), 0) - math.log(k)  # Burda et al. 2016, eq. 8

    @torch.no_grad()
    def sample(self, net, shape: tuple, cond: dict | None = None, steps: int | None = None, generator=None,
               **_) -> torch.Tensor:
        """shape[0] images decoded from z ~ N(0, I), the prior (the mean of p(x | z), as is usual for pictures)."""
        if cond is not None:
            raise ImgenError("this VAE is unconditional; sample it without labels")
        z = torch.randn((shape[0], *net.latent_shape), generator=generator)
        return net.decode(z)

    def denoiser(self, net):
        raise ImgenError("a VAE is not a diffusion model: it has no denoiser; sample it with imgen.load(DIR).sample")


def vae(beta: float = 1.0, levels: int = 256) -> VAEMethod:
    return VAEMethod(beta, levels)
