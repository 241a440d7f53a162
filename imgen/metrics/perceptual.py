"""Perceptual distance on evaluator feature maps: LPIPS (Zhang et al. 2018, eq. 1) with unit layer weights.

    d(a, b) = sum_l mean_hw || f_l(a)_hw / |f_l(a)_hw| - f_l(b)_hw / |f_l(b)_hw| ||^2

`net` is any module with `feature_maps(images) -> list[(N, C, H, W)]` (imgen's evaluator networks have it).
The result names its network, e.g. perceptual[shapes-eval]: it is not LPIPS-VGG and not comparable to it.
"""
from __future__ import annotations

import torch

from imgen.metrics.psnr_ssim import _check_pair


def _unit(f: torch.Tensor, eps: float = 1e-10) -> torch.Tensor:
    return f / (f.square().sum(1, keepdim=True).sqrt() + eps)  # channel-wise unit norm, LPIPS eq. 1


def _layer_distances(a: torch.Tensor, b: torch.Tensor, net):
    """Each layer's (N,) term of d(a, b), LPIPS eq. 1: mean over positions of ||unit f_l(a) - unit f_l(b)||^2."""
    for fa, fb in zip(net.feature_maps(a), net.feature_maps(b)):
        yield (_unit(fa) - _unit(fb)).square().sum(1).flatten(1).mean(1)


@torch.no_grad()
def perceptual_distance(a: torch.Tensor, b: torch.Tensor, net) -> torch.Tensor:
    """(N,) distances between paired images a[i], b[i] in [-1, 1]."""
    _check_pair(a, b)
    total = torch.zeros(a.shape[0], dtype=torch.float64)
    for d in _layer_distances(a, b, net):
        total += d.double()
    return total


def perceptual_loss(a: torch.Tensor, b: torch.Tensor, net) -> torch.Tensor:
    """The same (N,) distances, differentiable in a and b (a training loss: VQGAN's perceptual term). `net` here
    must itself be differentiable, e.g. an Evaluator's `.net` on images of its native size."""
    _check_pair(a, b)
    return sum(_layer_distances(a, b, net))
