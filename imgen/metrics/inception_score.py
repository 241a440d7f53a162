"""Inception Score (Salimans et al. 2016, sec. 4): exp(E_x KL(p(y|x) || p(y))), mean and std over splits.

Samples are shuffled by a seeded randperm before splitting, as torchmetrics does, so the two agree.
Computed in float64 from logits.
"""
from __future__ import annotations

import torch

from imgen.errors import ImgenError


def inception_score(logits: torch.Tensor, splits: int = 10, seed: int = 0) -> tuple[float, float]:
    """IS mean and (unbiased) std over `splits` chunks of the (N, K) class logits."""
    logits = torch.as_tensor(logits).double()
    if logits.ndim != 2 or logits.shape[0] < splits:
        raise ImgenError(f"Inception Score needs (N, K) logits with N >= splits={splits}; got {tuple(logits.shape)}. "
                         "Give it more images or fewer --is-splits")
    perm = torch.randperm(logits.shape[0], generator=torch.Generator().manual_seed(seed))
    log_p = logits[perm].log_softmax(dim=1)
    scores = []
    for lp in log_p.chunk(splits, dim=0):
        log_marginal = torch.logsumexp(lp, dim=0) - torch.log(torch.tensor(float(lp.shape[0]), dtype=lp.dtype))
        kl = (lp.exp() * (lp - log_marginal)).sum(1)  # KL(p(y|x) || p(y)) per sample
        scores.append(kl.mean().exp())
    scores = torch.stack(scores)
    return float(scores.mean()), float(scores.std()) if len(scores) > 1 else 0.0
