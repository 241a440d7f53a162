"""Pictures for learners (matplotlib, Agg): how diffusion and flow models move points and images.

Each function returns a matplotlib Figure, ready for `imgen.report.Report.figure(fig, name)` or `fig.savefig`.
    record_trajectories + plot_trajectories   the curved ODE/SDE paths of a sampler from noise to data (2D)
    forward_noising_strip                      x_t = alpha(t) x0 + sigma(t) eps for a few images at a few t
    score_field                                arrows of grad_x log p_t(x) on a grid, from any denoiser (2D)
    data_vs_samples                            scatter of real points beside (or over) model samples (2D)
    truncation_strip, style_mixing_grid        a StyleGAN's truncation trick and style mixing (Karras et al. 2019)
"""
from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

from imgen.errors import ImgenError, check_int  # noqa: E402
from imgen.images import make_grid, to_uint8  # noqa: E402


def _points(x, what: str) -> np.ndarray:
    x = torch.as_tensor(x).detach().double().cpu().numpy()
    if x.ndim != 2 or x.shape[1] != 2:
        raise ImgenError(f"{what} must be 2D points of shape (N, 2), got {tuple(x.shape)}; these plots are for 2D toys")
    return x


def record_trajectories(sampler, denoiser, x, ts, cond=None, **options) -> torch.Tensor:
    """Run `sampler` (any function of imgen.samplers) from `x` and return every intermediate state (steps + 1,
    N, D), collected from its callback (the start first). Annealed Langevin reports once per noise level."""
    states = [x.detach().clone()]
    final = sampler(denoiser, x, ts, cond, callback=lambda info: states.append(info["x"].detach().clone()), **options)
    if not torch.equal(states[-1], final):  # e.g. Langevin's final denoising step
        states.append(final.detach().clone())
    return torch.stack(states)


def plot_trajectories(paths, data=None, max_paths: int = 200, title: str = "sampling trajectories"):
    """One line per point from its start (noise, grey dot) to its end (sample, black dot); real data behind in
    light blue. `paths` is (steps + 1, N, 2) from `record_trajectories`. The first `max_paths` points are drawn."""
    paths = torch.as_tensor(paths).detach().double().cpu()
    if paths.ndim != 3 or paths.shape[-1] != 2 or paths.shape[0] < 2:
        raise ImgenError(f"paths must be (steps + 1, N, 2) states of 2D points, got {tuple(paths.shape)}; "
                         "build them with imgen.plots.record_trajectories")
    paths = paths[:, :max_paths].numpy()
    fig, ax = plt.subplots(figsize=(5, 5))
    if data is not None:
        d = _points(data, "data")
        ax.scatter(d[:, 0], d[:, 1], s=3, c="tab:blue", alpha=0.25, label="data", zorder=1)
    for k in range(paths.shape[1]):
        ax.plot(paths[:, k, 0], paths[:, k, 1], lw=0.6, alpha=0.6, color="tab:orange", zorder=2)
    ax.scatter(paths[0, :, 0], paths[0, :, 1], s=6, c="0.6", label="start (noise)", zorder=3)
    ax.scatter(paths[-1, :, 0], paths[-1, :, 1], s=6, c="k", label="end (sample)", zorder=4)
    ax.set_aspect("equal")
    ax.set_title(title)
    ax.legend(loc="upper right", fontsize=8)
    return fig


def forward_noising_strip(images, schedule, times=(0.0, 0.1, 0.25, 0.5, 0.75, 1.0), seed: int = 0):
    """A grid: one row per image, one column per t, showing x_t = alpha(t) x0 + sigma(t) eps (the forward
    process, DDPM eq. 4 on the schedule's path). Each x_t is divided by sqrt(alpha^2 + sigma^2), its std for
    unit-variance data, so VE paths (sigma up to ~50) stay visible; columns are titled with t and the SNR."""
    images = torch.as_tensor(images).detach().float().cpu()
    if images.ndim != 4 or images.shape[1] not in (1, 3):
        raise ImgenError(f"images must be (N, 1 or 3, H, W) in [-1, 1], got {tuple(images.shape)}")
    times = torch.as_tensor(times, dtype=torch.float64)
    if times.ndim != 1 or len(times) < 1 or bool(((times < 0) | (times > 1)).any()):
        raise ImgenError(f"times must be a list of t in [0, 1], got {times.tolist()}")
    eps = torch.randn(images.shape, generator=torch.Generator().manual_seed(seed))
    n, m = len(images), len(times)
    fig, axes = plt.subplots(n, m, figsize=(1.3 * m, 1.3 * n + 0.4), squeeze=False)
    for j, t in enumerate(times):
        a, s = float(schedule.alpha(t)), float(schedule.sigma(t))
        x_t = (a * images + s * eps) / max((a * a + s * s) ** 0.5, 1e-12)
        pics = to_uint8(x_t)
        snr = a * a / (s * s) if s > 0 else float("inf")
        axes[0, j].set_title(f"t={float(t):.2f}\nSNR={snr:.2g}", fontsize=8)
        for i in range(n):
            pic = pics[i]
            axes[i, j].imshow(pic[..., 0] if pic.shape[-1] == 1 else pic, cmap="gray", vmin=0, vmax=255,
                              interpolation="nearest")
            axes[i, j].axis("off")
    fig.suptitle(f"forward noising ({schedule.name} schedule)", fontsize=10)
    fig.tight_layout()
    return fig


@torch.no_grad()
def score_field(denoiser, t: float, lim: float = 3.0, n: int = 20, data=None, cond=None):
    """Quiver plot of the score grad_x log p_t(x) at time t on an n x n grid over [-lim, lim]^2, from any
    denoiser by Tweedie's formula (Denoiser.score). Arrows show direction, normalised to equal length;
    colour is log10 |score|. Real data, if given, is drawn behind."""
    check_int(n, "n (grid points per axis)", 2)
    sigma = float(denoiser.schedule.sigma(torch.tensor(float(t), dtype=torch.float64)))
    if not sigma > 0:
        raise ImgenError(f"the score is undefined at t={t} (sigma(t) = 0, clean data); pick t > 0, e.g. t=0.1")
    g = torch.linspace(-lim, lim, n, dtype=torch.float64)
    xx, yy = torch.meshgrid(g, g, indexing="xy")
    x = torch.stack([xx.reshape(-1), yy.reshape(-1)], 1).to(torch.float32)
    t = torch.tensor(float(t), dtype=torch.float64)
    score = denoiser.score(x, t, denoiser(x, t, cond)).double()
    norm = score.norm(dim=1, keepdim=True).clamp_min(1e-12)
    u = (score / norm).numpy()
    fig, ax = plt.subplots(figsize=(5, 5))
    if data is not None:
        d = _points(data, "data")
        ax.scatter(d[:, 0], d[:, 1], s=3, c="tab:blue", alpha=0.2, zorder=1)
    q = ax.quiver(x[:, 0].numpy(), x[:, 1].numpy(), u[:, 0], u[:, 1], np.log10(norm[:, 0].numpy()),
                  cmap="viridis", angles="xy", pivot="mid", zorder=2)
    fig.colorbar(q, ax=ax, label="log10 |score|", shrink=0.8)
    ax.set_aspect("equal")
    ax.set_title(f"score field at t = {float(t):.2f} (sigma = {sigma:.2g})")
    return fig


def data_vs_samples(data, samples, overlay: bool = False, lim: float | None = None):
    """Real points and model samples side by side (two panels on shared axes), or one panel with both."""
    d, s = _points(data, "data"), _points(samples, "samples")
    if lim is None:
        lim = float(np.quantile(np.abs(np.concatenate([d, s])), 0.999)) * 1.15
    if overlay:
        fig, ax = plt.subplots(figsize=(5, 5))
        axes, titles = [ax, ax], ["data vs samples"]
    else:
        fig, axes = plt.subplots(1, 2, figsize=(9, 4.5), sharex=True, sharey=True)
        titles = ["data", "samples"]
    axes[0].scatter(d[:, 0], d[:, 1], s=3, c="tab:blue", alpha=0.5, label=f"data (n={len(d)})")
    axes[1].scatter(s[:, 0], s[:, 1], s=3, c="tab:orange", alpha=0.5, label=f"samples (n={len(s)})")
    for ax, title in zip(fig.axes, titles):
        ax.set_xlim(-lim, lim)
        ax.set_ylim(-lim, lim)
        ax.set_aspect("equal")
        ax.set_title(title)
        ax.legend(loc="upper right", fontsize=8, markerscale=3)
    return fig


def _stylegan(model):
    g = getattr(model.net, "generator", None)
    if not hasattr(g, "mapping"):
        raise ImgenError("truncation and style-mixing pictures need a StyleGAN (net stylegan); "
                         f"this model is a {model.config.net.name}")
    return g


def _tile_figure(tiles: torch.Tensor, ncol: int, title: str, col_labels=(), row_labels=()):
    """tiles (N, C, H, W) in [-1, 1], row-major, ncol per row -> a Figure with column and row labels."""
    h, w = tiles.shape[-2:]
    img = to_uint8(make_grid(tiles, ncol)[None])[0]
    nrow = -(-tiles.shape[0] // ncol)
    fig, ax = plt.subplots(figsize=(1.1 * ncol + 0.8, 1.1 * nrow + 0.6))
    ax.imshow(img[..., 0] if img.shape[-1] == 1 else img, cmap="gray", interpolation="nearest")
    ax.set_xticks([1 + (w + 1) * (i + 0.5) for i in range(len(col_labels))], col_labels, fontsize=8)
    ax.set_yticks([1 + (h + 1) * (i + 0.5) for i in range(len(row_labels))], row_labels, fontsize=8)
    ax.tick_params(length=0, labeltop=True, labelbottom=False)
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    return fig


@torch.no_grad()
def truncation_strip(model, psis=(1.0, 0.7, 0.5, 0.3, 0.0), n: int = 6, seed: int = 0):
    """One row per z, one column per psi: the same z (and noise inputs) with w pulled toward w_avg,
    w' = w_avg + psi (w - w_avg) (StyleGAN sec. 5.1, fig. 8); psi 0 is w_avg itself in every row (the rows then
    differ by their noise inputs only)."""
    _stylegan(model)
    check_int(n, "truncation_strip n")
    cols = [model.sample(n, truncation=float(psi), seed=seed) for psi in psis]  # one seed: the same z in each
    tiles = torch.stack(cols, 1).flatten(0, 1)  # (n * len(psis), C, H, W), row-major
    return _tile_figure(tiles, len(psis), "truncation: the same z at each psi", [f"psi {p:g}" for p in psis])


@torch.no_grad()
def text_interpolation_strip(model, prompt_a: str, prompt_b: str, steps: int = 8, n: int = 4, seed: int = 0):
    """GAN-INT's picture (Reed et al. 2016, sec. 5.4, sentence interpolation): one row per z, one column per a in
    [0, 1]: the same z drawn from the text feature t = (1 - a) t(prompt_a) + a t(prompt_b) of a text GAN."""
    if model.config.method.name != "gan" or not getattr(model.net, "text_conditional", False):
        raise ImgenError("a text interpolation strip needs a text GAN (net text_gan); this model is a "
                         f"{model.config.net.name} ({model.config.method.name})")
    check_int(steps, "text_interpolation_strip steps", minimum=2)
    check_int(n, "text_interpolation_strip n")
    t = model.net.encode([prompt_a, prompt_b])["text_pooled"].to(model.device)
    alphas = torch.linspace(0, 1, steps)
    cols = [model.sample(n, cond={"text_pooled": ((1 - a) * t[0] + a * t[1]).expand(n, -1)}, seed=seed)
            for a in alphas]  # one seed: the same z in each column
    tiles = torch.stack(cols, 1).flatten(0, 1)  # (n * steps, C, H, W), row-major
    return _tile_figure(tiles, steps, f"text interpolation, the same z: {prompt_a!r} -> {prompt_b!r}",
                        [f"{float(a):.2f}" for a in alphas])


@torch.no_grad()
def style_mixing_grid(model, n: int = 5, coarse_layers: int = 3, truncation: float = 1.0, seed: int = 0):
    """StyleGAN fig. 3: the top row is source B, the left column source A; cell (i, j) takes its first
    `coarse_layers` ws (default 3: the 4x4 and 8x8 layers) from B_j and the rest (fine styles) from A_i.
    Every cell is drawn with the same noise inputs, so only the styles differ."""
    g = _stylegan(model)
    check_int(n, "style_mixing_grid n")
    if not 1 <= coarse_layers < g.num_ws:
        raise ImgenError(f"coarse_layers must be in [1, {g.num_ws - 1}] for this generator ({g.num_ws} ws), "
                         f"got {coarse_layers!r}")
    z = torch.randn((2 * n, g.latent_dim), generator=torch.Generator().manual_seed(seed))
    labels = torch.arange(2 * n) % g.num_classes if g.num_classes else None
    ws = g.ws(z, labels, truncation)  # (2n, num_ws, w_dim); eval mode: no training-time mixing
    a, b = ws[:n], ws[n:]

    def draw(w):  # one image, always the same noise
        return g.synthesis(w[None], torch.Generator().manual_seed(seed))[0]

    top = [draw(b[j]) for j in range(n)]
    tiles = [torch.full_like(top[0], -1.0)] + top  # a blank (black) corner
    for i in range(n):
        tiles.append(draw(a[i]))
        tiles += [draw(torch.cat([b[j, :coarse_layers], a[i, coarse_layers:]])) for j in range(n)]
    return _tile_figure(torch.stack(tiles), n + 1, f"style mixing: coarse styles (first {coarse_layers} ws) from B, "
                        "the rest from A", ["A \\ B"] + [f"B{j}" for j in range(n)],
                        [""] + [f"A{i}" for i in range(n)])
