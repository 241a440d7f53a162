"""Inversion and prompt-to-prompt editing with any text-to-image diffusion or flow model imgen trains (pixel or latent).

    m = imgen.load("shapes-latent-t2i")
    inv = invert(m, image, "a red circle on the left on a gray background", cfg=3.0)     # null-text inversion
    x = reconstruct(m, inv)                                                              # ~ image
    out = edit(m, image, "a red circle on the left", "a blue circle on the left")        # (1, C, H, W)

- DDIM inversion (Song et al. 2021, sec. 4.3; imgen.samplers.ddim_invert) maps an image to the noise that
  deterministic DDIM decodes back to it. At guidance w = 1 it is nearly exact; at w > 1 the guided trajectory
  drifts from the inverted one and the reconstruction fails (Mokady et al. 2023, sec. 3, fig. 3).
- Null-text inversion (Mokady et al. 2023, sec. 3.2, Algorithm 1): invert at w = 1 (the pivot trajectory z*_t),
  then for each step t optimise the unconditional ("null text") embedding, starting from the previous step's, so
  that one guided DDIM step from z_t lands on z*_{t-1}; the per-step embeddings make the w > 1 reconstruction
  follow the pivot. Here the null embedding is the net's learned null condition (TextConditioning.null_tokens and
  .null_pooled), swapped in per step and restored afterwards.
- Prompt-to-prompt word swap (Hertz et al. 2022, sec. 3.2, eq. 4): the source and the edited prompt are sampled
  together from the inverted noise; for the first `cross_replace` fraction of the steps every cross-attention layer
  gives the edited row the source row's attention maps, so the layout stays and only the swapped word's content
  changes. The prompts must tokenize to the same length (a swap of single-token words).
- Keeping what the edit did not change: the pixels where the edited row differs little from the source row (the
  reconstruction) are the input's own (a DiffEdit-style mask, Couairon et al. 2022; the pixel blend of Blended
  Latent Diffusion, Avrahami et al. 2023).

Every step is the deterministic DDIM step (eq. 12 with eta = 0; Euler on a flow's path), written here in a
differentiable form for the null-text optimisation; the tests check it equals imgen.samplers.sample_ddim.
"""
from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from imgen.apps.inputs import check_image, from_model_space, to_model_space
from imgen.errors import ImgenError, check_int
from imgen.guidance import classifier_free
from imgen.nn.layers import CrossAttention, TextConditioning
from imgen.samplers import ddim_invert
from imgen.schedules import make_grid


@dataclass
class Inversion:
    """What `invert` returns: the noise `z` at ts[0], the time grid `ts` (decreasing), the guidance `cfg`, the
    prompt, and `nulls`: one (null_tokens, null_pooled) per step for null-text inversion (None: the learned null)."""
    z: torch.Tensor
    ts: torch.Tensor
    cfg: float
    prompt: str
    nulls: list | None = None


def _text_conditioning(model) -> TextConditioning:
    if not model.is_text:
        raise ImgenError("inversion and editing need a text-to-image model (the edit is a change of prompt); "
                         f"this is a {model.config.net.name!r} model")
    found = [m for m in model.net.modules() if isinstance(m, TextConditioning)]
    if len(found) != 1 or found[0].null_tokens is None:
        raise ImgenError("null-text inversion needs a net with one learned null text (a U-Net or DiT with "
                         "cross-attention); this net has none")
    return found[0]


@contextmanager
def _null_embedding(tc: TextConditioning):
    """Yields put(tokens, pooled), which sets the net's null condition; inside, the null parameters take gradients;
    the learned values (and flags) are restored on exit."""
    params = (tc.null_tokens, tc.null_pooled)
    saved = [(p.detach().clone(), p.requires_grad) for p in params]

    def put(tokens, pooled):
        with torch.no_grad():
            tc.null_tokens.copy_(tokens)
            tc.null_pooled.copy_(pooled)
    try:
        for p in params:
            p.requires_grad_(True)
        yield put
    finally:
        put(saved[0][0], saved[1][0])
        for p, (_, flag) in zip(params, saved):
            p.requires_grad_(flag)
            p.grad = None


def _cond(model, prompts: list[str]) -> dict:
    enc = {k: v.to(model.device) for k, v in model.net.encode(prompts).items()}
    return {**enc, "drop": torch.zeros(len(prompts), dtype=torch.bool, device=model.device)}


def _coeffs(schedule, t) -> tuple[float, float]:
    t = torch.as_tensor(t, dtype=torch.float64)
    return schedule.alpha(t).item(), schedule.sigma(t).item()


def ddim_step(denoiser, x, t, s, cond) -> torch.Tensor:
    """x_s from x_t by deterministic DDIM (eq. 12, eta = 0): a_s x0_hat + s_s (x_t - a_t x0_hat) / s_t,
    differentiable (the samplers run under no_grad)."""
    a_t, s_t = _coeffs(denoiser.schedule, t)
    a_s, s_s = _coeffs(denoiser.schedule, s)
    x0_hat = denoiser(x, t, cond)
    return a_s * x0_hat + s_s * (x - a_t * x0_hat) / s_t


def _grid(model, steps: int | None) -> torch.Tensor:
    steps = model.config.sample.steps if steps is None else steps
    check_int(steps, "steps")
    return make_grid(model.method.denoiser(model.net).schedule, steps, model.config.sample.grid)


def invert(model, image, prompt: str, *, cfg: float | None = None, steps: int | None = None, null_text: bool = True,
           inner_steps: int = 10, lr: float = 1e-3, tol: float = 1e-5, fixed_point_iters: int = 0,
           progress: bool = False) -> Inversion:
    """Invert `image` ((C, H, W) or (1, C, H, W) in [-1, 1]) under `prompt` for sampling at guidance `cfg` (default
    the model's). null_text=False is DDIM inversion with the guided denoiser; null_text=True is Mokady et al.'s:
    invert at w = 1 (the pivot), then fit a null embedding per step (`inner_steps` Adam steps of rate `lr`, stopping
    early below `tol` mean squared error). `fixed_point_iters` > 0 solves each inversion step by fixed-point
    iteration (AIDI, see ddim_invert) instead of the classic explicit step.
    Measured on the shipped model (12 colour swaps, cfg 3, 25 steps; benchmarks/applications.py): lr 1e-3 (about
    Mokady et al.'s 1e-2 relative to this net's null embedding, whose entries are ~0.05) with the classic pivot edits
    best (edited 1.00, rest kept 1.00; lr 1e-2: 0.62 / 0.50); lr 1e-2 with an AIDI pivot reconstructs best
    (33.5 dB vs 27.6), because a pivot off by its own inversion error is followed faithfully."""
    tc = _text_conditioning(model)
    cfg = model.config.sample.cfg if cfg is None else float(cfg)
    check_int(inner_steps, "inner_steps")
    z0 = to_model_space(model, check_image(model, image))
    ts, cond = _grid(model, steps), _cond(model, [prompt])
    den = model.method.denoiser(model.net)
    if not null_text or cfg == 1.0:  # at w = 1 the null condition is never evaluated: plain inversion is the method
        z = ddim_invert(classifier_free(den, cfg, cond, 1), z0, ts, cond, fixed_point_iters=fixed_point_iters)
        return Inversion(z, ts, cfg, prompt)
    pivot = [z0]  # z*_0, ..., z*_T: DDIM inversion at w = 1 (Algorithm 1, line 2)
    ddim_invert(den, z0, ts, cond, fixed_point_iters=fixed_point_iters,
                callback=lambda info: pivot.append(info["x"]))
    pivot = pivot[::-1]  # aligned with ts (decreasing): pivot[i] is z* at ts[i]
    guided = classifier_free(den, cfg, cond, 1)
    nulls, z = [], pivot[0]
    with _null_embedding(tc):
        params = [tc.null_tokens, tc.null_pooled]  # optimised in place, each step starting from the last one's
        for i in tqdm(range(len(ts) - 1), desc="null-text inversion", disable=not progress, leave=False):
            opt = torch.optim.Adam(params, lr=lr)  # a fresh optimiser per step, as Algorithm 1
            for _ in range(inner_steps):
                with torch.enable_grad():  # Algorithm 1, line 7: || z*_{t-1} - z_{t-1}(z_t, null_t, C) ||^2
                    loss = (ddim_step(guided, z, ts[i], ts[i + 1], cond) - pivot[i + 1]).square().mean()
                    if loss.item() < tol:
                        break
                    grads = torch.autograd.grad(loss, params)  # only the null embedding's gradient
                for p, g in zip(params, grads):
                    p.grad = g
                opt.step()
            nulls.append(tuple(p.detach().clone() for p in params))
            with torch.no_grad():
                z = ddim_step(guided, z, ts[i], ts[i + 1], cond)
    return Inversion(pivot[0], ts, cfg, prompt, nulls)


@torch.no_grad()
def reconstruct(model, inversion: Inversion, prompt: str | None = None) -> torch.Tensor:
    """Decode an inversion with deterministic DDIM at its guidance (and per-step null embeddings), under its own
    prompt or another one: (1, C, H, W) in [-1, 1]."""
    return from_model_space(model, _decode(model, inversion, [prompt or inversion.prompt], None))


def _decode(model, inv: Inversion, prompts: list[str], on_step) -> torch.Tensor:
    tc = _text_conditioning(model)
    cond = _cond(model, prompts)
    n = len(prompts)
    guided = classifier_free(model.method.denoiser(model.net), inv.cfg, cond, n)
    z = inv.z.expand(n, *inv.z.shape[1:])
    with _null_embedding(tc) as put:
        for i in range(len(inv.ts) - 1):
            if inv.nulls is not None:
                put(*inv.nulls[i])
            if on_step is not None:
                on_step(i)
            z = ddim_step(guided, z, inv.ts[i], inv.ts[i + 1], cond)
    return z


@contextmanager
def _attention_swap(model, cfg: float):
    """Yields active(bool): while active, every cross-attention layer gives the batch's second (edited) row the
    first (source) row's attention probabilities, in the conditional half of a guided batch (Hertz et al. eq. 4)."""
    state = {"on": False}

    def swap(probs):  # probs (B, heads, N, M); rows [source, edited] (+ the same again unconditional when guided)
        if not state["on"]:
            return probs
        probs = probs.clone()
        probs[1] = probs[0]
        return probs
    layers = [m for m in model.net.modules() if isinstance(m, CrossAttention)]
    if not layers:
        raise ImgenError("prompt-to-prompt editing needs a net with cross-attention on the text tokens; this one "
                         "reads only the pooled text")
    for m in layers:
        m.edit_probs = swap
    try:
        yield lambda on: state.__setitem__("on", on)
    finally:
        for m in layers:
            m.edit_probs = None


def change_mask(edited: torch.Tensor, reconstruction: torch.Tensor, threshold: float = 0.5,
                dilate: int = 5) -> torch.Tensor:
    """Where an edit changed the image, as DiffEdit's mask (Couairon et al. 2022, sec. 3.1: a difference map rescaled
    to [0, 1] and binarised at 0.5): |edited - reconstruction| (max over channels) over its maximum > `threshold`,
    dilated by a `dilate` x `dilate` max-pool. (B, C, H, W) pairs -> (B, 1, H, W) float in {0, 1}."""
    d = (edited - reconstruction).abs().amax(1, keepdim=True)
    m = (d > threshold * d.amax((2, 3), keepdim=True)).float()
    return F.max_pool2d(m, dilate, 1, dilate // 2) if dilate > 1 else m


@torch.no_grad()
def edit(model, image, source: str, target: str, *, cfg: float | None = None, steps: int | None = None,
         cross_replace: float = 0.8, null_text: bool = True, keep_unchanged: bool = True,
         inversion: Inversion | None = None, progress: bool = False) -> torch.Tensor:
    """`image` re-drawn with `source` changed to `target` (prompt-to-prompt word swap after null-text inversion):
    (1, C, H, W) in [-1, 1]. `cross_replace` is the fraction of steps (from the noisiest) whose cross-attention
    maps come from the source prompt. `keep_unchanged`: outside change_mask(edited, source row's reconstruction)
    the input's own pixels are kept (the background blend of Blended Latent Diffusion, Avrahami et al. 2023), so
    what the edit did not touch does not drift with the autoencoder or the sampler. Pass a ready `inversion` of the
    image under `source` to skip inverting."""
    if not 0.0 <= cross_replace <= 1.0:
        raise ImgenError(f"cross_replace must be in [0, 1] (the fraction of steps with the source's attention "
                         f"maps), got {cross_replace!r}")
    lengths = [int(m.sum()) for m in model.net.encode([source, target])["text_mask"]]
    if lengths[0] != lengths[1]:
        raise ImgenError(f"prompt-to-prompt swaps words one for one: {source!r} and {target!r} have {lengths[0]} "
                         f"and {lengths[1]} tokens; change words without adding or removing any")
    if inversion is None:
        inversion = invert(model, image, source, cfg=cfg, steps=steps, null_text=null_text, progress=progress)
    elif inversion.prompt != source:
        raise ImgenError(f"the inversion was made under {inversion.prompt!r}, not the source prompt {source!r}")
    last = round(cross_replace * (len(inversion.ts) - 1))
    with _attention_swap(model, inversion.cfg) as active:
        z = _decode(model, inversion, [source, target], lambda i: active(i < last))
    if not keep_unchanged:
        return from_model_space(model, z[1:])
    reconstruction, edited = from_model_space(model, z).chunk(2)
    m = change_mask(edited, reconstruction)
    return m * edited + (1 - m) * check_image(model, image).to(edited.device)
