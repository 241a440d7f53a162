"""Closed-form references: a Gaussian mixture whose exact denoiser E[x0 | x_t] is known.

For data x0 ~ sum_k w_k N(mu_k, S_k) and x_t = alpha x0 + sigma eps,
    x_t | k ~ N(alpha mu_k, alpha^2 S_k + sigma^2 I)
    E[x0 | x_t, k] = mu_k + alpha S_k (alpha^2 S_k + sigma^2 I)^-1 (x_t - alpha mu_k)
and the posterior over k follows from Bayes' rule. Every sampler must reproduce the mixture from it.
"""
from __future__ import annotations

import torch

from imgen.denoiser import FunctionDenoiser
from imgen.schedules import Schedule


class GaussianMixture:
    def __init__(self, weights, means, covs):
        self.weights = torch.as_tensor(weights, dtype=torch.float64)
        self.weights = self.weights / self.weights.sum()
        self.means = torch.as_tensor(means, dtype=torch.float64)  # (K, D)
        self.covs = torch.as_tensor(covs, dtype=torch.float64)  # (K, D, D)
        self.dim = self.means.shape[1]

    def sample(self, n: int, generator: torch.Generator | None = None):
        """(n, D) float64 samples and their component ids."""
        k = torch.multinomial(self.weights, n, replacement=True, generator=generator)
        z = torch.randn(n, self.dim, dtype=torch.float64, generator=generator)
        chol = torch.linalg.cholesky(self.covs)
        return self.means[k] + torch.einsum("nij,nj->ni", chol[k], z), k

    def posterior(self, x, alpha: float, sigma: float):
        """Component responsibilities (n, K), E[x0 | x_t] (n, D) and E[x0 | x_t, k] (n, K, D) at (alpha, sigma)."""
        x = x.double()
        eye = torch.eye(self.dim, dtype=torch.float64)
        cov_t = alpha**2 * self.covs + sigma**2 * eye  # (K, D, D)
        diff = x[:, None, :] - alpha * self.means  # (n, K, D)
        chol = torch.linalg.cholesky(cov_t)
        white = torch.linalg.solve_triangular(chol, diff.permute(1, 2, 0), upper=False)  # (K, D, n)
        log_det = 2 * torch.log(torch.diagonal(chol, dim1=-2, dim2=-1)).sum(-1)  # (K,)
        logp = -0.5 * (white**2).sum(1).T - 0.5 * log_det + self.weights.log()  # (n, K), up to a constant
        resp = torch.softmax(logp, dim=1)
        gain = alpha * self.covs @ torch.linalg.inv(cov_t)  # (K, D, D)
        x0_k = self.means + torch.einsum("kij,nkj->nki", gain, diff)
        return resp, (resp[..., None] * x0_k).sum(1), x0_k

    def denoiser(self, schedule: Schedule, cond_component: bool = False) -> FunctionDenoiser:
        """The exact x0_hat(x_t, t). With `cond_component`, cond["label"] restricts the mixture to that
        component (the exact class-conditional denoiser, used to test guidance)."""

        def fn(x, t, cond=None):
            t = torch.as_tensor(t, dtype=torch.float64)
            a, s = schedule.alpha(t).item(), schedule.sigma(t).item()
            _, x0_hat, x0_k = self.posterior(x, a, s)
            if cond_component and cond is not None and "label" in cond:
                x0_cond = x0_k[torch.arange(len(x)), cond["label"]]
                drop = cond.get("drop", torch.zeros(len(x), dtype=torch.bool))
                x0_hat = torch.where(drop[:, None], x0_hat, x0_cond)
            return x0_hat.to(x.dtype)

        return FunctionDenoiser(fn, schedule)
