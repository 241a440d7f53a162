"""Vector quantizers for image tokenizers, one class each with one interface:

    z_q, indices, aux_loss = quantizer(z)      # z (B, C, H, W), C = the code dimension
    z_q = quantizer.indices_to_codes(indices)  # decode tokens

z_q has z's shape and a straight-through gradient (van den Oord et al. 2017, sec. 3.1): in the backward
pass it is z + (z_q - z).detach(), so the encoder receives the decoder's gradient unchanged (FSQ passes it
through its tanh bound, as the paper does). indices are (B, H, W) int64, for ResidualVectorQuantizer
(B, H, W, num_quantizers). aux_loss is a scalar: each quantizer's own codebook/commitment/entropy term,
already weighted, to be added to the reconstruction loss by the method that trains it.

    VectorQuantizer       VQ-VAE codebook + commitment loss (van den Oord et al. 2017, eq. 3)
    EMAVectorQuantizer    codebook by exponential moving averages (ibid. app. A.1; Razavi et al. 2019),
                          with dead-code restart
    ResidualVectorQuantizer  EMA quantizers on successive residuals (SoundStream, Zeghidour et al. 2021, Alg. 1)
    FSQ                   finite scalar quantization (Mentzer et al. 2023)
    LFQ                   lookup-free quantization with an entropy loss (MAGVIT-v2, Yu et al. 2023)

codebook_stats(indices, codebook_size) gives the usage and perplexity to log.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from imgen.errors import ImgenError, check_int, check_nonnegative

LFQ_EXACT_MAX_DIM = 12  # up to 2**12 codes the LFQ entropies are computed over the full softmax


def codebook_stats(indices: torch.Tensor, codebook_size: int) -> dict:
    """{"usage": fraction of the codebook_size codes that occur in indices, "perplexity": exp(entropy of
    the code frequencies)} (perplexity = codebook_size when all codes are used equally). For residual VQ pass
    one level at a time, indices[..., i]."""
    check_int(codebook_size, "codebook_stats codebook_size")
    flat = indices.reshape(-1).long()
    if flat.numel() == 0:
        raise ImgenError("codebook_stats got no indices; pass the (B, H, W) indices of at least one image")
    if flat.min() < 0 or flat.max() >= codebook_size:
        raise ImgenError(f"codebook_stats: indices must lie in [0, {codebook_size}), got [{int(flat.min())}, {int(flat.max())}]; "
                         "pass the quantizer's codebook_size")
    counts = torch.bincount(flat, minlength=codebook_size).double()
    p = counts / counts.sum()
    entropy = -(p[p > 0] * p[p > 0].log()).sum()
    return {"usage": float((counts > 0).sum()) / codebook_size, "perplexity": float(entropy.exp())}


def _check_z(z: torch.Tensor, dim: int, who: str) -> None:
    if not isinstance(z, torch.Tensor) or z.ndim != 4 or z.shape[1] != dim:
        got = tuple(z.shape) if isinstance(z, torch.Tensor) else type(z).__name__
        raise ImgenError(f"{who} expects z of shape (B, {dim}, H, W) (channels = code dimension), got {got}; "
                         f"project the encoder output to {dim} channels or build the quantizer for its channel count")


def _check_positive(value, name: str, upper: float | None = None) -> float:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0 and (upper is None or value < upper)
    if not ok:
        raise ImgenError(f"{name} must be a number > 0{f' and < {upper}' if upper is not None else ''}, got {value!r}")
    return float(value)


def _check_indices(indices: torch.Tensor, codebook_size: int, who: str) -> None:
    if indices.dtype.is_floating_point or indices.dtype == torch.bool:
        raise ImgenError(f"{who}.indices_to_codes needs integer indices, got dtype {indices.dtype}")
    if indices.numel() and (indices.min() < 0 or indices.max() >= codebook_size):
        raise ImgenError(f"{who}.indices_to_codes: indices must lie in [0, {codebook_size}), "
                         f"got [{int(indices.min())}, {int(indices.max())}]")


def _to_vectors(z: torch.Tensor) -> torch.Tensor:
    return z.permute(0, 2, 3, 1).reshape(-1, z.shape[1])  # (B, C, H, W) -> (B*H*W, C)


def _to_map(vectors: torch.Tensor, shape) -> torch.Tensor:
    b, c, h, w = shape
    return vectors.reshape(b, h, w, c).permute(0, 3, 1, 2)  # (B*H*W, C) -> (B, C, H, W)


def _straight_through(z: torch.Tensor, z_q: torch.Tensor) -> torch.Tensor:
    return z + (z_q - z).detach()  # VQ-VAE sec. 3.1: copy the decoder's gradient to the encoder


def _nearest_code(x: torch.Tensor, codebook: torch.Tensor) -> torch.Tensor:
    """argmin_k ||x - e_k||^2 for each row of x (N, D) over codebook (K, D), as (N,) int64."""
    x, codebook = x.float(), codebook.float()
    d = x.pow(2).sum(1, keepdim=True) - 2 * x @ codebook.t() + codebook.pow(2).sum(1)  # (N, K)
    return d.argmin(1)


class _Codebook(nn.Module):
    """Shared by the quantizers with an explicit codebook (K, D): nearest-code lookup and decoding."""

    codebook: torch.Tensor

    @property
    def codebook_size(self) -> int:
        return self.codebook.shape[0]

    @property
    def dim(self) -> int:
        return self.codebook.shape[1]

    def indices_to_codes(self, indices: torch.Tensor) -> torch.Tensor:
        """(B, H, W) int -> (B, dim, H, W) code vectors."""
        _check_indices(indices, self.codebook_size, type(self).__name__)
        return self.codebook[indices.long()].permute(0, 3, 1, 2)


class VectorQuantizer(_Codebook):
    """VQ-VAE (van den Oord et al. 2017): nearest of codebook_size learned codes of dimension dim.
    aux_loss = ||sg[z] - e||^2 + beta ||z - sg[e]||^2 (eq. 3, means over elements); indices (B, H, W)."""

    def __init__(self, codebook_size: int, dim: int, beta: float = 0.25):
        super().__init__()
        check_int(codebook_size, "VectorQuantizer codebook_size")
        check_int(dim, "VectorQuantizer dim")
        self.beta = check_nonnegative(beta, "VectorQuantizer beta", " (the paper uses 0.25)")
        self.codebook = nn.Parameter(torch.empty(codebook_size, dim).uniform_(-1 / codebook_size, 1 / codebook_size))

    def forward(self, z: torch.Tensor):
        _check_z(z, self.dim, "VectorQuantizer")
        indices = _nearest_code(_to_vectors(z.detach()), self.codebook)
        z_q = _to_map(self.codebook[indices], z.shape).to(z.dtype)
        codebook_loss = F.mse_loss(z_q, z.detach())  # eq. 3, ||sg[z] - e||^2
        commitment = F.mse_loss(z, z_q.detach())  # eq. 3, beta ||z - sg[e]||^2
        aux_loss = codebook_loss + self.beta * commitment
        return _straight_through(z, z_q), indices.view(z.shape[0], *z.shape[2:]), aux_loss


class EMAVectorQuantizer(_Codebook):
    """VQ with the codebook kept as exponential moving averages of the assigned counts N_k and sums m_k,
    e_k = m_k / N_k with Laplace-smoothed N_k (van den Oord et al. 2017, app. A.1; Razavi et al. 2019,
    sec. 2.1). Only the commitment loss beta ||z - sg[e]||^2 is returned. Updates happen in training mode
    only, after the lookup (z_q uses the codebook before this step's update). A code unassigned for
    restart_after consecutive updates is re-initialised to a random encoder output of the current batch.
    With data_init the codebook starts as random encoder outputs of the first training batch.
    The statistics are buffers, so they checkpoint with the weights. Under torch.distributed the counts
    and sums are summed over processes and restarts come from rank 0, so every copy stays identical."""

    def __init__(self, codebook_size: int, dim: int, beta: float = 0.25, decay: float = 0.99, eps: float = 1e-5,
                 restart_after: int = 100, data_init: bool = True):
        super().__init__()
        check_int(codebook_size, "EMAVectorQuantizer codebook_size")
        check_int(dim, "EMAVectorQuantizer dim")
        check_int(restart_after, "EMAVectorQuantizer restart_after", hint=" (updates a code may go unused before restart)")
        self.beta = check_nonnegative(beta, "EMAVectorQuantizer beta", " (the paper uses 0.25)")
        self.decay = _check_positive(decay, "EMAVectorQuantizer decay", upper=1.0)
        self.eps = _check_positive(eps, "EMAVectorQuantizer eps")
        self.restart_after = restart_after
        codebook = torch.randn(codebook_size, dim)
        self.register_buffer("codebook", codebook)
        self.register_buffer("cluster_size", torch.ones(codebook_size))  # EMA of N_k, consistent with codebook
        self.register_buffer("embed_sum", codebook.clone())  # EMA of m_k = sum of assigned z
        self.register_buffer("unused_steps", torch.zeros(codebook_size, dtype=torch.long))
        self.register_buffer("initialized", torch.tensor(not data_init))

    def forward(self, z: torch.Tensor):
        _check_z(z, self.dim, "EMAVectorQuantizer")
        flat = _to_vectors(z.detach()).float()
        if self.training and not bool(self.initialized):
            self._set_codes(torch.arange(self.codebook_size, device=flat.device), flat)
            self.initialized.fill_(True)
        indices = _nearest_code(flat, self.codebook)
        z_q = _to_map(self.codebook[indices], z.shape).to(z.dtype)
        aux_loss = self.beta * F.mse_loss(z, z_q.detach())  # commitment term of eq. 3; no codebook gradient
        if self.training:
            self._ema_update(flat, indices)
        return _straight_through(z, z_q), indices.view(z.shape[0], *z.shape[2:]), aux_loss

    @torch.no_grad()
    def _ema_update(self, flat: torch.Tensor, indices: torch.Tensor) -> None:
        onehot = F.one_hot(indices, self.codebook_size).float()  # (N, K)
        counts, sums = onehot.sum(0), onehot.t() @ flat  # n_k and sum of assigned z_j
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.all_reduce(counts)
            torch.distributed.all_reduce(sums)
        self.cluster_size.mul_(self.decay).add_(counts, alpha=1 - self.decay)  # app. A.1: N_k
        self.embed_sum.mul_(self.decay).add_(sums, alpha=1 - self.decay)  # app. A.1: m_k
        n = self.cluster_size.sum()
        # Laplace smoothing of N_k, so no code divides by zero (as in Sonnet's VectorQuantizerEMA)
        smoothed = (self.cluster_size + self.eps) / (n + self.codebook_size * self.eps) * n
        self.codebook.copy_(self.embed_sum / smoothed[:, None])  # app. A.1: e_k = m_k / N_k
        self.unused_steps.add_(1).masked_fill_(counts > 0, 0)
        dead = (self.unused_steps >= self.restart_after).nonzero().flatten()
        if dead.numel():
            self._set_codes(dead, flat)

    @torch.no_grad()
    def _set_codes(self, which: torch.Tensor, flat: torch.Tensor) -> None:
        """Codes `which` <- random rows of flat (the batch's encoder outputs), with fresh statistics."""
        picks = torch.randint(flat.shape[0], (which.numel(),), device=flat.device)
        new = flat[picks].to(self.codebook.dtype)
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.broadcast(new, src=0)
        self.codebook[which] = new
        self.embed_sum[which] = new
        self.cluster_size[which] = 1.0
        self.unused_steps[which] = 0


class ResidualVectorQuantizer(nn.Module):
    """Residual VQ (SoundStream, Zeghidour et al. 2021, Alg. 1): num_quantizers EMA quantizers, the i-th
    quantizing what the first i-1 left over; z_q = sum of their codes. indices are (B, H, W, num_quantizers),
    coarse to fine; codebook_size is the size of each level's codebook. aux_loss sums the levels' commitment
    losses. Keyword options (beta, decay, eps, restart_after, data_init) go to every EMAVectorQuantizer."""

    def __init__(self, codebook_size: int, dim: int, num_quantizers: int = 4, **ema_options):
        super().__init__()
        check_int(num_quantizers, "ResidualVectorQuantizer num_quantizers")
        try:
            self.quantizers = nn.ModuleList(EMAVectorQuantizer(codebook_size, dim, **ema_options) for _ in range(num_quantizers))
        except TypeError as e:
            raise ImgenError(f"ResidualVectorQuantizer: bad option ({e}); valid: beta, decay, eps, restart_after, data_init") from None

    @property
    def codebook_size(self) -> int:
        return self.quantizers[0].codebook_size

    @property
    def dim(self) -> int:
        return self.quantizers[0].dim

    @property
    def num_quantizers(self) -> int:
        return len(self.quantizers)

    def forward(self, z: torch.Tensor):
        _check_z(z, self.dim, "ResidualVectorQuantizer")
        residual, quantized, all_indices, aux_loss = z, torch.zeros_like(z), [], z.new_zeros(())
        for quantizer in self.quantizers:  # Alg. 1: y_hat += Q_i(r); r -= Q_i(r)
            z_q_i, indices, loss = quantizer(residual)
            z_q_i = z_q_i.detach()
            quantized = quantized + z_q_i
            residual = residual - z_q_i  # keeps z's gradient, so each commitment loss reaches the encoder
            all_indices.append(indices)
            aux_loss = aux_loss + loss
        return _straight_through(z, quantized), torch.stack(all_indices, -1), aux_loss

    def indices_to_codes(self, indices: torch.Tensor) -> torch.Tensor:
        """(B, H, W, n) int with n <= num_quantizers -> (B, dim, H, W), the sum of the first n levels' codes."""
        if indices.ndim != 4 or not 1 <= indices.shape[-1] <= self.num_quantizers:
            raise ImgenError(f"ResidualVectorQuantizer.indices_to_codes expects (B, H, W, n) indices with "
                             f"1 <= n <= {self.num_quantizers}, got shape {tuple(indices.shape)}")
        return sum(q.indices_to_codes(indices[..., i]) for i, q in enumerate(self.quantizers[:indices.shape[-1]]))


class FSQ(nn.Module):
    """Finite scalar quantization (Mentzer et al. 2023): channel i is bounded to levels[i] values by a
    tanh (sec. 3, with the half-step shift for even levels) and rounded with a straight-through gradient;
    codes are the rounded values scaled into [-1, 1]. The codebook is implicit, codebook_size = prod(levels);
    index = mixed-radix number of the per-channel level indices (channel 0 least significant, as in the
    paper's reference code). No auxiliary loss (aux_loss = 0). indices (B, H, W)."""

    def __init__(self, levels, eps: float = 1e-3):
        super().__init__()
        if isinstance(levels, (str, bytes)) or not hasattr(levels, "__len__") or len(levels) == 0:
            raise ImgenError(f"FSQ levels must be a non-empty list of integers >= 2 like [8, 5, 5, 5], got {levels!r}")
        for level in levels:
            check_int(level, "FSQ levels entries", minimum=2, hint=" (the paper uses e.g. [8, 5, 5, 5])")
        self.levels = [int(level) for level in levels]
        self.eps = _check_positive(eps, "FSQ eps", upper=1.0)
        self.register_buffer("_levels", torch.tensor(self.levels), persistent=False)
        self.register_buffer("_basis", torch.cumprod(torch.tensor([1] + self.levels[:-1]), 0), persistent=False)

    @property
    def codebook_size(self) -> int:
        return math.prod(self.levels)

    @property
    def dim(self) -> int:
        return len(self.levels)

    def _shape(self, z: torch.Tensor) -> torch.Tensor:
        return self._levels.view(1, -1, 1, 1).to(z.dtype)  # (1, C, 1, 1)

    def bound(self, z: torch.Tensor) -> torch.Tensor:
        """Channel i squashed into (-L_i/2, L_i/2) so that rounding gives exactly L_i integers (sec. 3)."""
        levels = self._shape(z)
        half_l = (levels - 1) * (1 + self.eps) / 2
        offset = torch.where(levels % 2 == 0, 0.5, 0.0)  # even L: the integers are -L/2 .. L/2-1
        shift = torch.atanh(offset / half_l)
        return torch.tanh(z + shift) * half_l - offset

    def forward(self, z: torch.Tensor):
        _check_z(z, self.dim, "FSQ")
        bounded = self.bound(z)
        rounded = bounded + (bounded.round() - bounded).detach()  # straight-through round (sec. 3)
        half_width = self._shape(z) // 2
        z_q = rounded / half_width
        level_indices = (rounded.detach() + half_width).long()  # (B, C, H, W) in [0, L_i)
        indices = (level_indices * self._basis.view(1, -1, 1, 1)).sum(1)
        return z_q, indices, z.new_zeros(())

    def indices_to_codes(self, indices: torch.Tensor) -> torch.Tensor:
        """(B, H, W) int -> (B, C, H, W) codes."""
        _check_indices(indices, self.codebook_size, "FSQ")
        level_indices = (indices.long().unsqueeze(1) // self._basis.view(1, -1, 1, 1)) % self._levels.view(1, -1, 1, 1)
        half_width = (self._levels // 2).view(1, -1, 1, 1)
        return (level_indices - half_width).float() / half_width


class LFQ(nn.Module):
    """Lookup-free quantization (MAGVIT-v2, Yu et al. 2023, sec. 3.1): each of the dim channels is quantized
    to sign(z) in {-1, +1}; the codebook is implicit, codebook_size = 2**dim, index = the binary number with
    bit 1 for +1 (channel 0 most significant). aux_loss = entropy_weight * (mean per-sample entropy - batch
    entropy) (sec. 3.1, entropy penalty) + commitment_weight * ||z - sg[z_q]||^2, with code probabilities
    softmax_k(-||z - c_k||^2 / temperature). For dim <= 12 both entropies are exact over all 2**dim codes;
    above, the per-sample entropy is still exact (it factorizes over channels) and the batch entropy is the
    sum of per-channel entropies, an upper bound. indices (B, H, W)."""

    def __init__(self, dim: int, entropy_weight: float = 0.1, commitment_weight: float = 0.25,
                 temperature: float = 0.01):
        super().__init__()
        check_int(dim, "LFQ dim", hint=" (codebook_size = 2**dim)")
        if dim > 62:
            raise ImgenError(f"LFQ dim must be <= 62 so indices fit in int64, got {dim}")
        self.entropy_weight = check_nonnegative(entropy_weight, "LFQ entropy_weight")
        self.commitment_weight = check_nonnegative(commitment_weight, "LFQ commitment_weight")
        self.temperature = _check_positive(temperature, "LFQ temperature")
        self.register_buffer("_bits", 2 ** torch.arange(dim - 1, -1, -1), persistent=False)  # channel 0 = MSB
        self._dim = dim

    @property
    def codebook_size(self) -> int:
        return 2 ** self._dim

    @property
    def dim(self) -> int:
        return self._dim

    def all_codes(self) -> torch.Tensor:
        """The implicit codebook, (2**dim, dim) in {-1, +1}, row k the code of index k."""
        k = torch.arange(self.codebook_size, device=self._bits.device)
        return ((k[:, None] & self._bits) != 0).float() * 2 - 1

    def entropies(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(mean per-sample entropy, batch entropy) in nats of the code distribution softmax(-||z - c||^2 / T)."""
        _check_z(z, self.dim, "LFQ")
        flat = _to_vectors(z).float()
        if self.dim <= LFQ_EXACT_MAX_DIM:
            codes = self.all_codes()
            d = flat.pow(2).sum(1, keepdim=True) - 2 * flat @ codes.t() + codes.pow(2).sum(1)  # ||z - c_k||^2
            probs = torch.softmax(-d / self.temperature, dim=1)  # (N, 2**dim)
            avg = probs.mean(0)
            per_sample = -(probs * torch.log(probs.clamp_min(1e-12))).sum(1).mean()
            batch = -(avg * torch.log(avg.clamp_min(1e-12))).sum()
            return per_sample, batch
        # ||z - c||^2 is a sum over channels, so the distribution is a product of bits: p(+1) = sigmoid(4 z / T)
        p = torch.sigmoid(4 * flat / self.temperature)  # (N, C)

        def bit_entropy(q):
            return -(q * torch.log(q.clamp_min(1e-12)) + (1 - q) * torch.log((1 - q).clamp_min(1e-12)))

        return bit_entropy(p).sum(1).mean(), bit_entropy(p.mean(0)).sum()

    def forward(self, z: torch.Tensor):
        _check_z(z, self.dim, "LFQ")
        z_q = torch.where(z > 0, 1.0, -1.0).to(z.dtype)  # sec. 3.1: q(z_i) = sign(z_i)
        indices = ((z_q.detach() > 0).long() * self._bits.view(1, -1, 1, 1)).sum(1)
        per_sample, batch = self.entropies(z)
        aux_loss = self.entropy_weight * (per_sample - batch)  # sec. 3.1 entropy penalty: E[H(q(z))] - H(E[q(z)])
        aux_loss = aux_loss + self.commitment_weight * F.mse_loss(z, z_q.detach())
        return _straight_through(z, z_q), indices, aux_loss

    def indices_to_codes(self, indices: torch.Tensor) -> torch.Tensor:
        """(B, H, W) int -> (B, dim, H, W) codes in {-1, +1}."""
        _check_indices(indices, self.codebook_size, "LFQ")
        bits = (indices.long().unsqueeze(1) & self._bits.view(1, -1, 1, 1)) != 0
        return bits.float() * 2 - 1


__all__ = ["VectorQuantizer", "EMAVectorQuantizer", "ResidualVectorQuantizer", "FSQ", "LFQ", "codebook_stats"]
