"""PSNR and SSIM per image, for images in [-1, 1] (data range 2), computed in float64.

SSIM is Wang et al. 2004 (eq. 13) with an 11x11 Gaussian window (sigma 1.5, truncated at 3.5 sigma),
K1=0.01, K2=0.03, population covariances, averaged over the window's valid positions and over channels:
the same numbers as skimage's structural_similarity(gaussian_weights=True, sigma=1.5,
use_sample_covariance=False, data_range=2, channel_axis=0).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from imgen.errors import ImgenError


def _check_pair(a: torch.Tensor, b: torch.Tensor) -> None:
    if a.shape != b.shape or a.ndim != 4:
        raise ImgenError(f"PSNR/SSIM compare two (N, C, H, W) batches of equal shape; got {tuple(a.shape)} and "
                         f"{tuple(b.shape)}: resize one set to the other's size first")


def psnr(a: torch.Tensor, b: torch.Tensor, data_range: float = 2.0) -> torch.Tensor:
    """(N,) PSNR in dB: 10 log10(range^2 / MSE). Identical images give inf."""
    _check_pair(a, b)
    mse = (a.double() - b.double()).square().flatten(1).mean(1)
    return 10 * torch.log10(data_range ** 2 / mse)


def gaussian_window(sigma: float = 1.5, truncate: float = 3.5) -> torch.Tensor:
    """1-D normalised Gaussian taps, radius int(truncate * sigma + 0.5) as in scipy.ndimage.gaussian_filter."""
    radius = int(truncate * sigma + 0.5)
    x = torch.arange(-radius, radius + 1, dtype=torch.float64)
    w = torch.exp(-0.5 * (x / sigma) ** 2)
    return w / w.sum()


def ssim(a: torch.Tensor, b: torch.Tensor, data_range: float = 2.0, sigma: float = 1.5,
         k1: float = 0.01, k2: float = 0.03) -> torch.Tensor:
    """(N,) mean SSIM over valid window positions and channels (Wang et al. 2004, eq. 13)."""
    _check_pair(a, b)
    w = gaussian_window(sigma)
    size = w.numel()
    n, c, h, wd = a.shape
    if h < size or wd < size:
        raise ImgenError(f"SSIM uses a {size}x{size} Gaussian window, so images must be at least {size}x{size}; "
                         f"got {h}x{wd}. Upsample both sets first or pass a smaller sigma (radius 3.5*sigma)")
    x, y = a.double().reshape(n * c, 1, h, wd), b.double().reshape(n * c, 1, h, wd)
    wy, wx = w.view(1, 1, -1, 1), w.view(1, 1, 1, -1)

    def blur(t):  # separable valid-mode Gaussian filter
        return F.conv2d(F.conv2d(t, wy), wx)

    mu_x, mu_y = blur(x), blur(y)
    var_x = blur(x * x) - mu_x ** 2
    var_y = blur(y * y) - mu_y ** 2
    cov = blur(x * y) - mu_x * mu_y
    c1, c2 = (k1 * data_range) ** 2, (k2 * data_range) ** 2
    s = ((2 * mu_x * mu_y + c1) * (2 * cov + c2)) / ((mu_x ** 2 + mu_y ** 2 + c1) * (var_x + var_y + c2))  # eq. 13
    return s.reshape(n, c, -1).mean(2).mean(1)

