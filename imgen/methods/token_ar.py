"""Autoregressive token prior (DALL-E, Ramesh et al. 2021; Parti, Yu et al. 2022): the condition's prefix, then
a frozen tokenizer's image tokens in raster order, modelled by a causal transformer (net token_transformer,
causal=True) with the next-token cross-entropy

    L = -sum_i log p(z_i | z_<i, c)                          (DALL-E sec. 2.2, the image-token term)

The condition is dropped with probability cond_drop for classifier-free guidance on the logits (Parti sec. 2.4).
Sampling draws one token per network call from softmax(logits / temperature) filtered by top-k / top-p, with a
KV cache so each call computes only the new token (use_cache=False recomputes the whole prefix: the benchmark's
peer). A sample costs N = h * w network calls; `steps` does not apply. `sample_wide` draws scenes wider than the
trained grid through a sliding window (VQGAN sec. 3.2).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from imgen.errors import ImgenError, check_int
from imgen.methods.token_prior import TokenPrior, check_sampling, sample_logits


class TokenAR(TokenPrior):
    name = "token_ar"
    takes_steps = False  # one network call per token, in raster order

    def _check(self, net):
        if not getattr(net, "causal", False) or not hasattr(net, "num_tokens"):
            raise ImgenError("method token_ar trains a causal token_transformer (net token_transformer with "
                             "causal=true)")

    def loss(self, net, batch: dict, generator=None) -> torch.Tensor:
        self._check(net)
        ids = self.encode(batch["image"])  # (B, N)
        prefix = self.train_prefix(net, batch, generator)  # (B, P, D)
        logits = net(ids[:, :-1], prefix)[:, prefix.shape[1] - 1:]  # position P-1+i predicts z_i: (B, N, V)
        return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), ids.reshape(-1))

    @torch.no_grad()
    def sample_tokens(self, net, n: int, cond: dict | None = None, generator=None, cfg: float = 1.0,
                      temperature: float | None = None, top_k: int | None = None, top_p: float | None = None,
                      use_cache: bool = True, callback=None) -> torch.Tensor:
        """Token ids (n, N), one network call per token."""
        self._check(net)
        check_sampling(temperature, top_k, top_p)
        prefix = self.sample_prefix(net, cond, n, cfg)
        rows = len(prefix)  # 2n when guided: [cond; null]
        device = prefix.device
        ids = torch.zeros(n, 0, dtype=torch.long, device=device)
        cache = net.new_cache(rows) if use_cache else None
        new = ids  # the inputs this call adds to the cache
        for i in range(net.num_tokens):
            if use_cache:
                logits = net(new.repeat(rows // n, 1), prefix if i == 0 else None, cache)[:, -1]
            else:
                logits = net(ids.repeat(rows // n, 1), prefix)[:, -1]
            logits = self.guide(logits.float(), cfg)
            token = sample_logits(logits, generator, temperature or 1.0, top_k, top_p).to(device)
            new = token[:, None]
            ids = torch.cat([ids, new], dim=1)
            if callback is not None:
                callback(i, ids)
        return ids

    @torch.no_grad()
    def sample_wide(self, net, n: int, width: int, cond: dict | None = None, generator=None, cfg: float = 1.0,
                    temperature: float | None = None, top_k: int | None = None,
                    top_p: float | None = None) -> torch.Tensor:
        """Token ids (n, h, width) of a scene `width` tokens wide, wider than the trained w: each token is drawn
        from the prior over the h x w window around it, its context the window's tokens before it in raster order
        (VQGAN's sliding attention window, Esser et al. 2021, sec. 3.2 and fig. 3). h * width network calls, not
        cached (the window moves). width == w draws what sample_tokens(use_cache=False) draws."""
        self._check(net)
        check_sampling(temperature, top_k, top_p)
        h, w = net.token_grid
        check_int(width, "width (tokens)", minimum=w, hint=f" (the trained token grid is {w} wide)")
        prefix = self.sample_prefix(net, cond, n, cfg)
        ids = torch.zeros(n, h, width, dtype=torch.long, device=prefix.device)
        for r in range(h):
            for c in range(width):
                c0 = min(max(c - w // 2, 0), width - w)  # the window's first column, centred on c where it fits
                context = ids[:, :, c0:c0 + w].reshape(n, h * w)[:, :r * w + c - c0]
                logits = self.guide(net(context.repeat(len(prefix) // n, 1), prefix)[:, -1].float(), cfg)
                ids[:, r, c] = sample_logits(logits, generator, temperature or 1.0, top_k, top_p)
        return ids

    @torch.no_grad()
    def decode_wide(self, ids: torch.Tensor) -> torch.Tensor:
        """Token ids (n, h, W) of any width -> images (n, C, H, W * f) (the tokenizer's decoder is convolutional)."""
        tok = self.tokenizer.to(ids.device)
        return tok.decode(tok.quantizer.indices_to_codes(ids)).clamp(-1, 1)

    @torch.no_grad()
    def sample(self, net, shape: tuple, cond: dict | None = None, steps: int | None = None, generator=None,
               cfg: float = 1.0, temperature: float | None = None, top_k: int | None = None,
               top_p: float | None = None, callback=None, use_cache: bool = True, **_) -> torch.Tensor:
        """shape[0] images: tokens sampled in raster order, decoded by the tokenizer (`steps` does not apply)."""
        ids = self.sample_tokens(net, shape[0], cond, generator, cfg, temperature, top_k, top_p, use_cache, callback)
        return self.decode_tokens(net, ids)


def token_ar(tokenizer: str = "", cond_drop: float = 0.1, condition: str = "auto") -> TokenAR:
    return TokenAR(tokenizer, cond_drop, condition)
