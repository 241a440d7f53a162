"""Cold diffusion (Bansal et al. 2022): generation by inverting a deterministic degradation D(x0, t).

D(x0, 0) = x0 and D(x0, 1) is the fully degraded image (blur: every pixel the image's mean colour; masking:
every pixel the mask value). A restoration net R(x_t, t) ~ x0 is trained with ||R(D(x0, t), t) - x0||_1
(the l1 norm of their experiments) and sampled by one of the paper's two algorithms.

Why these do not go through imgen's denoiser interface and samplers: those assume a Gaussian path
x_t = alpha(t) x0 + sigma(t) eps, from which eps_hat, the score and the probability-flow ODE follow. A blur
or a mask has no eps and no alpha/sigma: x_t is a deterministic function of x0, so the sampler must apply D
itself to the estimate (Algorithms 1 and 2 below). Hence a degradation object and two sample functions here,
and `ColdDiffusion.sample`, which `imgen.Model.sample` (so `imgen sample DIR`) calls for a cold model.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from tqdm.auto import tqdm

from imgen.errors import ImgenError, check_int, build
from imgen.methods.diffusion import DenoisingMethod


def _times(t, x: torch.Tensor) -> torch.Tensor:
    """t as a float64 (B,) tensor in [0, 1]."""
    t = torch.as_tensor(t, dtype=torch.float64, device=x.device)
    t = t.expand(len(x)) if t.ndim == 0 else t
    if t.shape != (len(x),) or bool(((t < 0) | (t > 1)).any()):
        raise ImgenError(f"cold diffusion times must be a scalar or ({len(x)},) tensor in [0, 1], got {tuple(t.shape)}")
    return t


def _dct_matrix(n: int, device=None) -> torch.Tensor:
    """Orthonormal DCT-II matrix C (n, n): coefficients = C @ signal, signal = C.T @ coefficients."""
    k = torch.arange(n, dtype=torch.float64, device=device)[:, None]
    i = torch.arange(n, dtype=torch.float64, device=device)[None]
    c = torch.cos(math.pi * (i + 0.5) * k / n) * math.sqrt(2.0 / n)
    c[0] /= math.sqrt(2.0)
    return c


def _laplacian_eigenvalues(n: int, device=None) -> torch.Tensor:
    """Eigenvalues 4 sin^2(pi k / (2 n)) of the 1-D pixel Laplacian with reflecting ends, in DCT-II order."""
    return 4 * torch.sin(math.pi * torch.arange(n, dtype=torch.float64, device=device) / (2 * n)) ** 2


class Blur:
    """Blur of std sigma(t) = blur_scale * tan(pi t / 2) pixels: the discrete heat equation run for time
    sigma^2 / 2 with reflecting borders, exp(-sigma^2 / 2 L) x for the pixel-grid Laplacian L, computed exactly in
    the DCT basis that diagonalises L (Rissanen et al. 2023, eq. 4): coefficient (k, l) is multiplied by
    exp(-(lam_k + lam_l) sigma^2 / 2), lam_k = 4 sin^2(pi k / (2 size)) (the discrete Gaussian kernel: no
    ringing, close to a Gaussian filter for sigma >~ 1). sigma(1) = inf leaves only the DC term: the mean colour.
    (Bansal et al. blur by iterated fixed Gaussian kernels; the heat form reaches the mean exactly at t = 1.)"""

    name = "blur"

    def __init__(self, blur_scale: float = 1.0):
        if not blur_scale > 0:
            raise ImgenError(f"blur_scale must be > 0 (the blur std in pixels at t = 0.5), got {blur_scale}")
        self.blur_scale = float(blur_scale)

    def sigma(self, t: torch.Tensor) -> torch.Tensor:
        return self.blur_scale * torch.tan(math.pi * t.clamp(max=1.0) / 2)

    def __call__(self, x0: torch.Tensor, t) -> torch.Tensor:
        t = _times(t, x0)
        h, w = x0.shape[-2:]
        ch, cw = _dct_matrix(h, x0.device), _dct_matrix(w, x0.device)
        freq2 = _laplacian_eigenvalues(h, x0.device)[:, None] + _laplacian_eigenvalues(w, x0.device)[None]  # (H, W)
        sig2 = self.sigma(t)[:, None, None] ** 2
        gain = torch.where(t[:, None, None] >= 1, (freq2 == 0).double().expand(len(t), h, w),
                           torch.exp(-0.5 * freq2 * torch.nan_to_num(sig2, posinf=0.0)))  # (B, H, W)
        coef = ch @ x0.double() @ cw.T  # DCT-II over H and W
        return (ch.T @ (gain[:, None] * coef) @ cw).to(x0.dtype)

    def config(self) -> dict:
        return {"name": self.name, "blur_scale": self.blur_scale}


class Mask:
    """Pixels are masked (set to `value`, 0 = mid-grey) one by one in a fixed random order (seeded): pixel p is
    masked at time t when u_p < t, with u the pixel ranks spread evenly over (0, 1). t = 1 masks every pixel.
    (Bansal et al.'s inpainting degradation, with a pixel order in place of their growing Gaussian mask.)"""

    name = "mask"

    def __init__(self, seed: int = 0, value: float = 0.0):
        self.seed, self.value = int(seed), float(value)

    def order(self, h: int, w: int, device=None) -> torch.Tensor:
        """u (H, W): the time at which each pixel gets masked."""
        rank = torch.randperm(h * w, generator=torch.Generator().manual_seed(self.seed))
        return ((rank.double() + 0.5) / (h * w)).reshape(h, w).to(device)

    def mask(self, t: torch.Tensor, h: int, w: int) -> torch.Tensor:
        return (self.order(h, w, t.device)[None] < t[:, None, None]).double()  # (B, H, W), 1 = masked

    def __call__(self, x0: torch.Tensor, t) -> torch.Tensor:
        m = self.mask(_times(t, x0), *x0.shape[-2:])[:, None].to(x0.dtype)
        return (1 - m) * x0 + m * self.value

    def config(self) -> dict:
        return {"name": self.name, "seed": self.seed, "value": self.value}


DEGRADATIONS = {"blur": Blur, "mask": Mask}


def build_degradation(name: str, **options):
    return build(DEGRADATIONS, "degradation", name, **options)


class ColdDiffusion:
    """loss(net, batch) for a restoration net R(x_t, t, cond) -> x0_hat (any imgen image net, e.g. the U-Net),
    and sample(net, shape, cond, steps) from the fully degraded start.

    start_mean, start_std: the start x_1 = D(c, 1) with a colour c ~ N(start_mean, start_std^2) per image and
    channel. For blur x_1 is that flat colour: Bansal et al. draw it from a GMM fitted to the training
    images' mean colours, one Gaussian here (8x8 digits: mean -0.39, std 0.067). A mask's x_1 is the mask value
    whatever c is, so a masked model's samples differ only by their condition (the paper's known lack of diversity).
    cond_drop: as every imgen method, the probability of training on the null label (1 = unconditional)."""

    condition = DenoisingMethod.condition  # the same label dropout as every method

    def __init__(self, degradation, t_eps: float = 0.0, start_mean: float = 0.0, start_std: float = 0.0,
                 cond_drop: float = 0.1):
        if not 0.0 <= cond_drop <= 1.0:
            raise ImgenError(f"cond_drop must be in [0, 1], got {cond_drop}")
        if not start_std >= 0:
            raise ImgenError(f"start_std must be >= 0 (the std of the start colour), got {start_std}")
        self.degradation, self.t_eps, self.cond_drop = degradation, float(t_eps), cond_drop
        self.start_mean, self.start_std = float(start_mean), float(start_std)

    def loss(self, net, batch: dict, generator=None) -> torch.Tensor:
        if "image" not in batch:
            raise ImgenError("cold diffusion degrades images (blur/mask); train it on an image dataset such as 'digits'")
        x0 = batch["image"]
        t = self.t_eps + (1 - self.t_eps) * torch.rand(len(x0), generator=generator, dtype=torch.float64)
        cond = self.condition(batch, generator)
        x_t = self.degradation(x0, t)
        return (net(x_t, t.to(x0.dtype), cond) - x0).abs().mean()  # min ||R(D(x0, t), t) - x0||_1 (Bansal et al.)

    def restorer(self, net, cond: dict | None = None):
        """R(x, t) with t a float or (B,) tensor, as the sample functions call it."""
        def restore(x, t):
            return net(x, _times(t, x).to(x.dtype), cond)
        return restore

    def start(self, images: torch.Tensor) -> torch.Tensor:
        """The fully degraded x_1 = D(x0, 1) of real images: where sampling starts (the paper draws blur's mean
        colours from a GMM fitted to them; a mask start is the same for every image)."""
        return self.degradation(images, 1.0)

    @torch.no_grad()
    def sample(self, net, shape: tuple, cond: dict | None = None, steps: int = 20, generator=None, *,
               sampler: str = "improved", callback=None, progress: bool = False) -> torch.Tensor:
        """shape (n, C, H, W) samples: x_1 = D(c, 1) (see the class doc), restored by the named algorithm
        ("improved" = Algorithm 2, "naive" = Algorithm 1) in `steps` steps (= network evaluations)."""
        if sampler not in COLD_SAMPLERS:
            raise ImgenError(f"unknown cold diffusion sampler {sampler!r}; valid: {', '.join(COLD_SAMPLERS)} "
                             "(a cold model has no Gaussian path, so the diffusion samplers do not apply)")
        n, c = shape[:2]
        colour = self.start_mean + self.start_std * torch.randn((n, c, 1, 1), generator=generator)
        x1 = self.degradation(colour.expand(shape).contiguous(), 1.0)
        return COLD_SAMPLERS[sampler](self.restorer(net, cond), self.degradation, x1, steps, callback=callback,
                                      progress=progress)


def cold(degradation: str = "blur", t_eps: float = 0.0, start_mean: float = 0.0, start_std: float = 0.0,
         cond_drop: float = 0.1, **options) -> ColdDiffusion:
    """Cold diffusion with the named degradation ("blur": blur_scale; "mask": seed, value)."""
    return ColdDiffusion(build_degradation(degradation, **options), t_eps, start_mean, start_std, cond_drop)


def _cold_grid(steps: int) -> torch.Tensor:
    check_int(steps, "steps", hint="; e.g. steps=20")
    return torch.linspace(1.0, 0.0, steps + 1, dtype=torch.float64)


@torch.no_grad()
def sample_cold_naive(restorer, degradation, x, steps: int, *, callback=None, progress=False) -> torch.Tensor:
    """Bansal et al. 2022, Algorithm 1 (naive sampling): x0_hat = R(x_t, t); x_s = D(x0_hat, s), from t = 1 to 0.
    Each step re-degrades the estimate, so a restorer error at one step feeds the next one as an input it was
    never trained on."""
    ts = _cold_grid(steps)
    for i in tqdm(range(steps), desc="cold-naive", disable=not progress, leave=False):
        t, s = ts[i], ts[i + 1]
        x0_hat = restorer(x, t)
        x = degradation(x0_hat, s)  # Algorithm 1, line 3
        if callback is not None:
            callback({"i": i, "t": s, "x": x, "x0_hat": x0_hat})
    return x


@torch.no_grad()
def sample_cold_improved(restorer, degradation, x, steps: int, *, callback=None, progress=False) -> torch.Tensor:
    """Bansal et al. 2022, Algorithm 2 (improved sampling): x_s = x_t - D(x0_hat, t) + D(x0_hat, s).
    Only the change of degradation between t and s is taken from the estimate. For D(x, s) = x + s e (the
    paper's first-order analysis of Algorithm 2) the restorer cancels: x_s = D(x0, s) exactly whatever R returns.
    Given x_1 = D(x0, 1) and the true x0 it returns x0 exactly."""
    ts = _cold_grid(steps)
    for i in tqdm(range(steps), desc="cold-improved", disable=not progress, leave=False):
        t, s = ts[i], ts[i + 1]
        x0_hat = restorer(x, t)
        x = x - degradation(x0_hat, t) + degradation(x0_hat, s)  # Algorithm 2, line 3
        if callback is not None:
            callback({"i": i, "t": s, "x": x, "x0_hat": x0_hat})
    return x


COLD_SAMPLERS = {"naive": sample_cold_naive, "improved": sample_cold_improved}
