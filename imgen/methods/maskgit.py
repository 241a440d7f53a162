"""MaskGIT (Chang et al. 2022): a bidirectional transformer (net token_transformer, causal=False) over the
condition's prefix and a frozen tokenizer's image tokens, trained to predict masked tokens:

    r ~ U(0, 1), gamma(r) = cos(pi r / 2), mask ceil(gamma(r) N) random tokens  (sec. 3.1-3.2, cosine schedule)
    L = -sum_{i masked} log p(z_i | z_unmasked, c)                                (eq. 1)

Sampling (sec. 3.2) decodes all N tokens in `steps` network calls: at step t every masked token is sampled,
its probability is its confidence (known tokens: +inf), and the n = floor(gamma((t + 1) / T) N) least confident
are masked again; the official implementation adds Gumbel noise to the log-confidences, scaled by
choice_temperature * (1 - (t + 1) / T), so early choices are less greedy. Classifier-free guidance on logits
(Muse, Chang et al. 2023, sec. 2.6) with the condition dropped with probability cond_drop in training.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from imgen.errors import ImgenError, check_int, check_nonnegative
from imgen.methods.token_prior import TokenPrior, check_sampling, filter_logits


def gamma_cosine(r):
    """The cosine mask schedule gamma(r) = cos(pi r / 2): the fraction of tokens masked at r in [0, 1]."""
    return math.cos(math.pi / 2 * r) if isinstance(r, (int, float)) else torch.cos(math.pi / 2 * r)


def masked_count(step: int, steps: int, n_tokens: int, unknown: int) -> int:
    """Tokens left masked after decoding step `step` (0-based) of `steps`: floor(gamma((t+1)/T) N), at least one
    token revealed per step and none masked after the last (sec. 3.2)."""
    if step == steps - 1:
        return 0
    return max(0, min(unknown - 1, math.floor(gamma_cosine((step + 1) / steps) * n_tokens)))


class MaskGIT(TokenPrior):
    name = "maskgit"

    def __init__(self, tokenizer: str = "", cond_drop: float = 0.1, condition: str = "auto",
                 choice_temperature: float = 4.5):
        super().__init__(tokenizer, cond_drop, condition)
        self.choice_temperature = check_nonnegative(choice_temperature, "maskgit choice_temperature")

    def _check(self, net):
        if getattr(net, "causal", True) or not hasattr(net, "num_tokens"):
            raise ImgenError("method maskgit trains a bidirectional token_transformer (net token_transformer with "
                             "causal=false)")

    def loss(self, net, batch: dict, generator=None) -> torch.Tensor:
        self._check(net)
        ids = self.encode(batch["image"])  # (B, N)
        b, n = ids.shape
        r = torch.rand(b, generator=generator)
        count = torch.ceil(gamma_cosine(r) * n).clamp(1, n).to(ids.device)  # tokens to mask per row
        scores = torch.rand(b, n, generator=generator).to(ids.device)
        rank = scores.argsort(dim=1).argsort(dim=1)  # a uniformly random order of positions
        masked = rank < count[:, None]  # (B, N): the `count` first positions in that order
        inputs = ids.masked_fill(masked, net.codebook_size)  # id codebook_size is [MASK]
        prefix = self.train_prefix(net, batch, generator)
        logits = net(inputs, prefix)[:, prefix.shape[1]:]  # (B, N, V)
        return F.cross_entropy(logits[masked], ids[masked])  # eq. 1: the masked tokens only

    @torch.no_grad()
    def sample_tokens(self, net, n: int, cond: dict | None = None, steps: int = 8, generator=None,
                      cfg: float = 1.0, temperature: float | None = None, top_k: int | None = None,
                      top_p: float | None = None, callback=None) -> torch.Tensor:
        """Token ids (n, N) in `steps` network calls (iterative parallel decoding, sec. 3.2)."""
        self._check(net)
        check_int(steps, "steps (MaskGIT decoding iterations)")
        check_sampling(temperature, top_k, top_p)
        if steps > net.num_tokens:
            raise ImgenError(f"steps={steps} exceeds the {net.num_tokens} tokens of an image (each step reveals at "
                             f"least one); use steps <= {net.num_tokens}")
        prefix = self.sample_prefix(net, cond, n, cfg)
        rows, p, mask_id, total = len(prefix), prefix.shape[1], net.codebook_size, net.num_tokens
        ids = torch.full((n, total), mask_id, dtype=torch.long, device=prefix.device)
        for t in range(steps):
            unknown = ids == mask_id  # (n, N)
            logits = self.guide(net(ids.repeat(rows // n, 1), prefix)[:, p:].float(), cfg)  # (n, N, V)
            logits = filter_logits(logits / (temperature or 1.0), top_k, top_p)
            probs = logits.softmax(-1)
            sampled = torch.multinomial(probs.view(-1, probs.shape[-1]), 1, generator=generator).view(n, total)
            sampled = torch.where(unknown, sampled.to(ids.device), ids)
            confidence = probs.gather(-1, sampled[..., None])[..., 0].clamp_min(1e-20).log()
            tau = self.choice_temperature * (1 - (t + 1) / steps)  # annealed randomness of the choice
            u = torch.rand(confidence.shape, generator=generator).clamp(1e-20, 1 - 1e-7).to(ids.device)
            confidence = confidence + tau * -torch.log(-torch.log(u))  # + tau * Gumbel(0, 1)
            confidence = confidence.masked_fill(~unknown, float("inf"))  # decoded tokens stay decoded
            n_mask = masked_count(t, steps, total, int(unknown.sum(1).min()))
            remask = torch.zeros_like(unknown)
            if n_mask > 0:
                remask.scatter_(1, confidence.topk(n_mask, dim=1, largest=False).indices, True)
            ids = sampled.masked_fill(remask, mask_id)
            if callback is not None:
                callback(t, ids)
        return ids

    @torch.no_grad()
    def sample(self, net, shape: tuple, cond: dict | None = None, steps: int | None = None, generator=None,
               cfg: float = 1.0, temperature: float | None = None, top_k: int | None = None,
               top_p: float | None = None, callback=None, **_) -> torch.Tensor:
        """shape[0] images decoded in `steps` iterations (default 8), then by the tokenizer."""
        ids = self.sample_tokens(net, shape[0], cond, steps or 8, generator, cfg, temperature, top_k, top_p, callback)
        return self.decode_tokens(net, ids)


def maskgit(tokenizer: str = "", cond_drop: float = 0.1, condition: str = "auto",
            choice_temperature: float = 4.5) -> MaskGIT:
    return MaskGIT(tokenizer, cond_drop, condition, choice_temperature)
