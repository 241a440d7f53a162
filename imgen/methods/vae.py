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
term. levels=None is for continuous data (a VAE on an autoencoder's latents, method `latent`): p(x | z) is then
the Gaussian density N(decode(z), sigma^2).

What beta is relative to: log p(x | z) is summed over all D = C*H*W pixels and the KL over the latent dims, so beta
prices one nat of KL against one nat of that likelihood, and the likelihood's scale sets what a nat buys. With a
learned sigma (`sigma=None`, the default: the tightest likelihood bound) sigma shrinks to the reconstruction
error, -log p(x | z) ~ (D / 2) log MSE, and every latent that lowers the MSE by a fraction f earns ~D f / 2 nats:
at D = 3072 that dwarfs beta = 4 times a few nats of KL, so beta prunes nothing (measured: 10 of 10 units active at
beta 1 and 4). A fixed `sigma` (in [-1, 1] pixel units) is the fixed-variance Gaussian decoder of the beta-VAE
papers (Higgins et al. 2017 use a fixed-variance Gaussian or a Bernoulli): -log p(x | z) = |x - mu|^2 / (2 sigma^2)
+ const, and beta then trades KL against squared error in a fixed ratio, as in the papers. `kl_warmup` ramps the
KL weight from 0 to beta over the first steps (Bowman et al. 2016; Sonderby et al. 2016) so that small objects'
shape and colour reach the latents before the KL can prune them.

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


def continuous_gaussian_log_prob(x: torch.Tensor, mean: torch.Tensor, log_sigma: torch.Tensor) -> torch.Tensor:
    """log N(x; mean, sigma^2) per item (summed): a density, for continuous data such as autoencoder latents."""
    return gaussian_log_prob(x, mean, 2 * log_sigma)


def gaussian_log_prob(z: torch.Tensor, mean: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    return -0.5 * ((z - mean) ** 2 * torch.exp(-logvar) + logvar + LOG_2PI).flatten(1).sum(1)


class VAEMethod:
    """loss(net, batch) = (-E_q[log p(x|z)] + beta * KL(q(z|x) || N(0, I))) / D, a one-sample estimate of the
    negative beta-ELBO per pixel (the scale keeps Adam's LR and grad clipping in range; beta keeps its meaning)."""
    takes_steps = False  # x = decoder(z) in one pass

    def __init__(self, beta: float = 1.0, levels: int | None = 256, sigma: float | None = None, kl_warmup: int = 0):
        if not (isinstance(beta, (int, float)) and beta >= 0):
            raise ImgenError(f"vae beta must be a number >= 0 (1: VAE, >1: beta-VAE, 0: plain autoencoder), got {beta}")
        if levels is not None:  # None: continuous data (a latent VAE on autoencoder latents), a Gaussian density
            check_int(levels, "vae levels (grey levels of the data, or null for continuous data)", minimum=2)
        if sigma is not None and not (isinstance(sigma, (int, float)) and not isinstance(sigma, bool) and sigma > 0):
            raise ImgenError(f"vae sigma must be a number > 0 (the fixed std of p(x|z) in [-1, 1] pixel units) or "
                             f"null (learned), got {sigma!r}")
        check_int(kl_warmup, "vae kl_warmup (steps over which the KL weight rises from 0 to beta)", minimum=0)
        self.beta, self.levels, self.sigma = float(beta), levels, None if sigma is None else float(sigma)
        self.kl_warmup, self.step = kl_warmup, kl_warmup  # outside the Trainer: the full weight

    def set_step(self, step: int) -> None:
        self.step = step

    @property
    def kl_weight(self) -> float:
        """beta, ramped linearly from 0 over the first kl_warmup training steps (KL annealing, Bowman et al. 2016,
        sec. 3.1; "warm-up", Sonderby et al. 2016, sec. 2.3), so the decoder learns to use the latents before the KL
        prunes them; from step kl_warmup on the loss is the beta-ELBO itself."""
        return self.beta * min(1.0, self.step / self.kl_warmup) if self.kl_warmup else self.beta

    def log_sigma(self, net) -> torch.Tensor:
        """log std of p(x | z): the fixed `sigma` when set, else the net's learned scalar."""
        return net.log_sigma if self.sigma is None else torch.tensor(math.log(self.sigma))

    def log_px(self, net, x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """log p(x | z) per item: discretized on `levels` levels, or a density when levels is None."""
        if self.levels is None:
            return continuous_gaussian_log_prob(x, net.decode(z), self.log_sigma(net))
        return discretized_gaussian_log_prob(x, net.decode(z), self.log_sigma(net), self.levels)

    def _check(self, net):
        if not hasattr(net, "log_sigma"):
            raise ImgenError(f"method vae trains a VAE net (net name 'vae'), got {type(net).__name__}")

    def terms(self, net, x: torch.Tensor, generator=None) -> tuple[torch.Tensor, torch.Tensor]:
        """(log p(x | z) for one z ~ q(z | x), KL(q(z | x) || N(0, I))), each (B,) in nats."""
        self._check(net)
        q = net.encode(x)
        z = q.mean if self.beta == 0 and net.training else q.sample(generator)  # beta = 0: a deterministic AE
        return self.log_px(net, x, z), q.kl()

    def loss(self, net, batch: dict, generator=None) -> torch.Tensor:
        x = batch["image"]
        log_px, kl = self.terms(net, x, generator)
        return (-log_px + self.kl_weight * kl).sum() / x.numel()  # Higgins et al. 2017, eq. 4 (beta = 1: K&W eq. 3)

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
            log_w.append(self.log_px(net, x, z) + standard_normal_log_prob(z) - gaussian_log_prob(z, q.mean, q.logvar))
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


def vae(beta: float = 1.0, levels: int | None = 256, sigma: float | None = None, kl_warmup: int = 0) -> VAEMethod:
    return VAEMethod(beta, levels, sigma, kl_warmup)
