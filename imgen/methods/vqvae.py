"""VQ-VAE (van den Oord et al. 2017): an image tokenizer trained by reconstruction through a vector quantizer,
    L = ||x - D(z_q)||^2 + the quantizer's own term (codebook + commitment, eq. 3; EMA-VQ: commitment only)
with the straight-through gradient of imgen.nn.quantize. The net (imgen.nn.vqvae, net "vqvae") chooses the
quantizer: vq, vq_ema, rvq, fsq or lfq. A tokenizer has no prior to sample: a token model (a transformer over
its token grid) is trained on encode_tokens of the data and decoded with decode_tokens.

    m = imgen.load("runs/shapes-vqvae")
    ids = m.encode_tokens(x)            # (B, 8, 8) int64 in [0, m.vocab_size); m.token_grid == (8, 8)
    x_hat = m.decode_tokens(ids)         # (B, 3, 32, 32) in [-1, 1]
"""
from __future__ import annotations

import torch

from imgen.errors import ImgenError
from imgen.nn.quantize import codebook_stats

RECON_LOSSES = ("l1", "l2")


def reconstruction_error(x_hat: torch.Tensor, x: torch.Tensor, recon: str) -> torch.Tensor:
    """Mean per-pixel |x - x_hat| (l1) or (x - x_hat)^2 (l2, VQ-VAE eq. 3's log p(x|z_q) up to scale)."""
    return (x_hat - x).abs().mean() if recon == "l1" else (x_hat - x).square().mean()


class VQVAEMethod:
    """loss(net, batch) = reconstruction_error + aux_loss. Codebook usage and perplexity of the tokens of the
    batches since the last log line are logged (log_stats), one codebook per level for residual VQ (averaged)."""

    def __init__(self, recon: str = "l2"):
        if recon not in RECON_LOSSES:
            raise ImgenError(f"unknown reconstruction loss {recon!r}; valid: {', '.join(RECON_LOSSES)}")
        self.recon = recon
        self._counts: torch.Tensor | None = None  # (levels, codebook_size) token counts since the last log line

    def _check(self, net):
        if not hasattr(net, "encode_tokens"):
            raise ImgenError(f"method {type(self).__name__} trains a tokenizer net (net name 'vqvae'), got "
                             f"{type(net).__name__}")

    def _count(self, indices: torch.Tensor, codebook_size: int) -> None:
        levels = indices.reshape(-1, indices.shape[-1]) if indices.ndim == 4 else indices.reshape(-1, 1)  # RVQ: last dim
        counts = torch.stack([torch.bincount(levels[:, i], minlength=codebook_size) for i in range(levels.shape[1])])
        self._counts = counts if self._counts is None else self._counts + counts

    def log_stats(self) -> dict:
        """{"usage", "perplexity"} of the codes chosen since the last call (imgen.nn.quantize.codebook_stats)."""
        if self._counts is None:
            return {}
        stats = [codebook_stats(torch.repeat_interleave(torch.arange(len(c)), c), len(c)) for c in self._counts]
        self._counts = None
        return {k: sum(s[k] for s in stats) / len(stats) for k in ("usage", "perplexity")}

    def reconstruct(self, net, x: torch.Tensor):
        """(x_hat, aux_loss) through the straight-through quantizer, counting the chosen codes."""
        self._check(net)
        x_hat, indices, aux_loss = net(x)
        self._count(indices.detach(), net.codebook_size)
        return x_hat, aux_loss

    def loss(self, net, batch: dict, generator=None) -> torch.Tensor:
        x = batch["image"]
        x_hat, aux_loss = self.reconstruct(net, x)
        return reconstruction_error(x_hat, x, self.recon) + aux_loss  # VQ-VAE eq. 3

    def denoiser(self, net):
        raise ImgenError("this is an image tokenizer (VQ-VAE/VQGAN): it has no prior to sample from; train a token "
                         "model on its tokens (imgen.load(DIR).encode_tokens), or use reconstruct / decode_tokens")


def vqvae(recon: str = "l2") -> VQVAEMethod:
    return VQVAEMethod(recon)
