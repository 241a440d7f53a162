"""Training-free inpainting and outpainting with any diffusion or flow model imgen trains, pixel or latent.

    m = imgen.load("shapes-latent-t2i")
    out = inpaint(m, image, hole, "a red star in the center")           # (n, C, H, W); hole: bool (H, W)
    out = inpaint(m, image, hole, prompt, method="replacement")
    out, hole = outpaint(m, image, ["left"], 8, prompt)                  # shift within the fixed canvas, fill the rest

    m = imgen.load("runs/shapes-inpaint")                                 # imgen finetune inpaint shapes-latent-t2i
    out = inpaint(m, image, hole, prompt)                                # method "trained" for an inpainting model

method="trained" (the default for a trained inpainting model, imgen.recipes.inpaint): one plain sampler run of a
model that reads the mask and the masked image as extra input channels (imgen.methods.inpainting; Stable Diffusion's
inpainting model). An inpainting model gets that condition under repaint and replacement too.
The training-free methods run the model's own sampler with one per-step projection (the samplers' callback hook):
- replacement: after every step the known region is replaced by the input noised to the current level,
  x_t <- m * (alpha_t x0 + sigma_t eps) + (1 - m) * x_t (Song et al. 2021, "Score-based generative modeling
  through SDEs", app. I.2; RePaint eq. 8 with no resampling);
- RePaint (Lugmayr et al. 2022, sec. 4.1-4.2, Algorithm 1): the same projection, and after every `jump_length`
  steps the sample is noised back to the level where the segment began, q(x_t | x_s) (RePaint eq. 1 generalised to
  any Gaussian path), and the segment redone, `resample` times in all, so the hole harmonises with the known part.
A latent model blends in latent space with the mask max-pooled to the latent grid (a latent is known only where all
its pixels are); in every case the known pixels are pasted exactly into the final image.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from imgen.apps.inputs import check_image, check_mask, from_model_space, pixel_shape, run_sampler, to_model_space
from imgen.errors import ImgenError, check_int
from imgen.schedules import make_grid

METHODS = ("repaint", "replacement", "trained")
SIDES = ("left", "right", "top", "bottom")


def _coeffs(schedule, t) -> tuple[float, float]:
    t = torch.as_tensor(t, dtype=torch.float64)
    return schedule.alpha(t).item(), schedule.sigma(t).item()


@torch.no_grad()
def inpaint(model, image, mask, prompt: str | None = None, *, method: str | None = None, jump_length: int = 5,
            resample: int = 5, n: int = 1, seed: int = 0, steps: int | None = None, grid: str | None = None,
            label=None, progress: bool = False, paste: bool = True, **kwargs) -> torch.Tensor:
    """Fill the hole (`mask` True / 1) of `image` ((C, H, W) or (1, C, H, W) in [-1, 1]) with what the prompt (or
    label) asks for: (n, C, H, W) in [-1, 1], equal to `image` outside the hole. kwargs go to Model.sample
    (sampler, cfg, eta, ...). method: "trained" (the default for an inpainting model), "repaint" (the default
    otherwise; costs `resample` times the sampler's evaluations) or "replacement". paste=False
    returns the decoded sample without the final paste of the known pixels (to measure what blending alone keeps)."""
    method = method or ("trained" if model.is_inpainting else "repaint")
    if method not in METHODS:
        raise ImgenError(f"unknown inpainting method {method!r}; valid: {', '.join(METHODS)}")
    if method == "trained" and not model.is_inpainting:
        raise ImgenError("method 'trained' needs an inpainting model (train one: imgen finetune inpaint BASE --out "
                         "DIR); this model inpaints training-free with method repaint or replacement")
    check_int(jump_length, "jump_length (sampler steps between RePaint's jumps back)")
    check_int(resample, "resample (times RePaint runs each segment)")
    check_int(n, "n (images)")
    x = check_image(model, image)
    hole = check_mask(mask, x.shape[2:])
    z_known = to_model_space(model, x)
    # the latent grid's hole: any hole pixel makes its latent unknown
    hole_z = F.adaptive_max_pool2d(hole[None, None].float(), z_known.shape[2:])
    keep = (1 - hole_z).expand_as(z_known).repeat(n, 1, 1, 1)
    z_known = z_known.repeat(n, 1, 1, 1)
    if model.is_inpainting:  # the trained model's own condition: the hole and the masked image
        kwargs["inpaint"] = model.inpaint_condition(x, hole)
    if method == "trained":
        z = run_sampler(model, prompt, n, label=label, seed=seed, steps=steps, grid=grid, raw=True,
                        progress=progress, **kwargs)
        return _paste(from_model_space(model, z), x, hole, paste)

    schedule = model.method.denoiser(model.net).schedule
    steps = model.config.sample.steps if steps is None else steps
    ts = make_grid(schedule, steps, grid or model.config.sample.grid)
    gen = torch.Generator().manual_seed(seed + 1)  # noise of the known region and of the jumps back

    def project(info):  # x_t <- m * q(x_t | x0_known) + (1 - m) * x_t
        a, s = _coeffs(schedule, info["t"])
        noised = a * z_known + s * torch.randn(z_known.shape, generator=gen)
        return keep * noised + (1 - keep) * info["x"]

    z = None
    start = torch.randn(z_known.shape, generator=torch.Generator().manual_seed(seed))
    start = start * (sum(c**2 for c in _coeffs(schedule, ts[0])) ** 0.5)  # prior_std at ts[0]
    jump = len(ts) - 1 if method == "replacement" else jump_length
    rounds = 1 if method == "replacement" else resample
    bounds = list(range(0, len(ts) - 1, jump)) + [len(ts) - 1]
    bar = tqdm(total=(len(bounds) - 1) * rounds, desc=f"inpaint ({method})", disable=not progress, leave=False)
    for k, (i, j) in enumerate(zip(bounds[:-1], bounds[1:])):
        z = start if z is None else z
        for r in range(rounds):
            z = run_sampler(model, prompt, n, label=label, noise=z, ts=ts[i:j + 1], callback=project, raw=True,
                            seed=seed + 1000 * k + r, **kwargs)
            if r < rounds - 1:  # RePaint's jump back: x_{t_i} ~ q(x_{t_i} | x_{t_j})
                a_i, s_i = _coeffs(schedule, ts[i])
                a_j, s_j = _coeffs(schedule, ts[j])
                ratio = a_i / a_j
                z = ratio * z + max(s_i**2 - ratio**2 * s_j**2, 0.0) ** 0.5 * torch.randn(z.shape, generator=gen)
            bar.update(1)
    bar.close()
    return _paste(from_model_space(model, z), x, hole, paste)


def _paste(out: torch.Tensor, x: torch.Tensor, hole: torch.Tensor, paste: bool = True) -> torch.Tensor:
    if not paste:
        return out
    return torch.where(hole.expand_as(out), out, x.expand_as(out))  # known pixels stay exactly what they were


def outpaint(model, image, sides, by: int, prompt: str | None = None, **kwargs) -> tuple[torch.Tensor, torch.Tensor]:
    """Extend `image` past `sides` (a subset of left/right/top/bottom) by `by` pixels. imgen's models draw a fixed
    canvas, so the image is shifted within it away from each side (losing `by` pixels at the opposite edge) and the
    uncovered band is inpainted (kwargs as for `inpaint`). Returns (images (n, C, H, W), hole (H, W))."""
    sides = [sides] if isinstance(sides, str) else list(sides)
    if not sides or any(s not in SIDES for s in sides):
        raise ImgenError(f"extend one or more of {', '.join(SIDES)}; got {sides}")
    if len(set(sides)) != len(sides) or {"left", "right"} <= set(sides) or {"top", "bottom"} <= set(sides):
        raise ImgenError("this model's canvas is fixed, so the image can shift toward one side per axis: extend left "
                         "or right (not both), top or bottom (not both)")
    x = check_image(model, image)
    _, h, w = pixel_shape(model)
    check_int(by, "by (pixels to extend)")
    limit = {"left": w, "right": w, "top": h, "bottom": h}
    if any(by >= limit[s] for s in sides):
        raise ImgenError(f"cannot extend by {by} pixels on a {w}x{h} canvas; use fewer than {min(limit[s] for s in sides)}")
    canvas, hole = x.clone(), torch.zeros(h, w, dtype=torch.bool)
    for s in sides:
        dims = 3 if s in ("left", "right") else 2
        shift = by if s in ("left", "top") else -by
        canvas = torch.roll(canvas, shift, dims)
        hole = torch.roll(hole, shift, dims - 2)
        band = slice(0, by) if shift > 0 else slice(-by, None)
        if dims == 3:
            hole[:, band] = True
        else:
            hole[band, :] = True
    canvas = torch.where(hole.expand_as(canvas), torch.zeros_like(canvas), canvas)
    return inpaint(model, canvas, hole, prompt, **kwargs), hole
