"""img2img / SDEdit (Meng et al. 2022, sec. 3-4) with any diffusion or flow model imgen trains, pixel or latent:
noise the input to t0 = strength * t_max, x_t0 = alpha(t0) x + sigma(t0) eps (for a latent model x = the encoder's
latent), then run the model's sampler from t0 to 0 under the (new) prompt.

    m = imgen.load("shapes-latent-t2i")
    out = img2img(m, image, "a blue star in the center", strength=0.6)     # (n, C, H, W) in [-1, 1]

strength 0 returns the input (through the autoencoder for a latent model); strength 1 starts from pure noise at
t_max (ignores the input where alpha(t_max) = 0, as on the rectified-flow path: then it equals model.generate with
the same seed). The sampler walks the part of its usual grid below t0, so fewer steps for lower strength.
"""
from __future__ import annotations

import torch

from imgen.apps.inputs import check_image, from_model_space, run_sampler, to_model_space
from imgen.errors import ImgenError, check_int
from imgen.schedules import make_grid


@torch.no_grad()
def img2img(model, image, prompt: str | None = None, strength: float = 0.6, *, n: int = 1, seed: int = 0,
            steps: int | None = None, grid: str | None = None, label=None, **kwargs) -> torch.Tensor:
    """SDEdit `image` ((C, H, W) or (1, C, H, W) in [-1, 1]) toward the prompt (or label): (n, C, H, W) in [-1, 1].
    kwargs go to Model.sample (sampler, cfg, eta, progress, ...)."""
    if not isinstance(strength, (int, float)) or not 0.0 <= strength <= 1.0:
        raise ImgenError(f"strength must be in [0, 1] (0 keeps the input, 1 ignores it), got {strength!r}")
    check_int(n, "n (images)")
    x = check_image(model, image)
    z0 = to_model_space(model, x).repeat(n, 1, 1, 1)
    if strength == 0:
        return from_model_space(model, z0)
    schedule = model.method.denoiser(model.net).schedule
    steps = model.config.sample.steps if steps is None else steps
    full = make_grid(schedule, steps, grid or model.config.sample.grid)
    t0 = torch.tensor([strength * schedule.t_max], dtype=torch.float64)
    ts = torch.cat([t0, full[full < t0]])
    gen = torch.Generator().manual_seed(seed)
    a, s = schedule.alpha(t0).item(), schedule.sigma(t0).item()
    eps = torch.randn(z0.shape, generator=gen)  # the draw initial_noise makes, so strength 1 matches generate
    if a == 0:
        x_t0 = (a**2 + s**2) ** 0.5 * eps
    else:
        x_t0 = a * z0 + s * eps  # SDEdit eq. 1 / the forward process q(x_t0 | x0) on the model's path
    return run_sampler(model, prompt, n, label=label, noise=x_t0, ts=ts, seed=seed, **kwargs)
