"""Bits per dimension for likelihood models on 8-bit images mapped to [-1, 1].

A density p(x) on x = u / 127.5 - 1 (u in {0..255}, dequantized) gives the discrete probability of a pixel bin
of width 2/255 as about p(x) * (2/255) per dimension, so
    bits/dim = (-log p(x) - D log(2/255)) / (D ln 2)    (Theis et al. 2016, sec. 3.1; Dinh et al. 2017, sec. 4)
"""
from __future__ import annotations

import math

import torch


def bits_per_dim(nll_nats: torch.Tensor | float, num_dims: int, bin_width: float = 2 / 255) -> torch.Tensor:
    """Convert a continuous negative log-likelihood in nats per image (on [-1, 1] data) to bits/dim."""
    nll = torch.as_tensor(nll_nats, dtype=torch.float64)
    return (nll - num_dims * math.log(bin_width)) / (num_dims * math.log(2))


def discrete_bits_per_dim(log_prob_nats: torch.Tensor | float, num_dims: int) -> torch.Tensor:
    """bits/dim from an exact discrete log-likelihood in nats per image (e.g. autoregressive softmax over 256)."""
    return -torch.as_tensor(log_prob_nats, dtype=torch.float64) / (num_dims * math.log(2))
