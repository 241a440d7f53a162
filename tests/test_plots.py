"""imgen.plots: each picture is a Figure with the expected artists and writes a PNG."""
import matplotlib
import pytest
import torch
from matplotlib.collections import PathCollection
from matplotlib.quiver import Quiver

from imgen.analytic import GaussianMixture
from imgen.data import load_dataset
from imgen.errors import ImgenError
from imgen.plots import data_vs_samples, forward_noising_strip, plot_trajectories, record_trajectories, score_field
from imgen.report import Report
from imgen.samplers import initial_noise, sample_euler, sample_langevin
from imgen.schedules import build_schedule, make_grid

MIX = GaussianMixture([0.5, 0.5], [[-1.5, 0.0], [1.5, 0.5]], [[[0.1, 0.0], [0.0, 0.1]], [[0.2, 0.05], [0.05, 0.1]]])


def _saves_png(fig, tmp_path, name):
    report = Report(tmp_path, "plots")
    report.figure(fig, name)
    path = tmp_path / name
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 2000
    return path


def test_trajectories_of_the_flow_ode_curve_from_noise_to_the_data(tmp_path):
    sched = build_schedule("rectified_flow")
    den = MIX.denoiser(sched)
    ts = make_grid(sched, 30)
    x = initial_noise(sched, (40, 2), ts, torch.Generator().manual_seed(0), dtype=torch.float64)
    paths = record_trajectories(sample_euler, den, x, ts)
    assert paths.shape == (31, 40, 2)
    torch.testing.assert_close(paths[0], x)
    # they end on the data: each end point is likely under one component
    assert float(MIX.posterior(paths[-1], 1.0, 0.0)[0].max(1).values.min()) > 0.9
    fig = plot_trajectories(paths, data=MIX.sample(300)[0])
    ax = fig.axes[0]
    assert len(ax.lines) == 40
    assert len([c for c in ax.collections if isinstance(c, PathCollection)]) == 3  # data, starts, ends
    _saves_png(fig, tmp_path, "trajectories.png")


def test_trajectories_record_langevin_levels_and_its_final_denoise():
    sched = build_schedule("ve", sigma_min=0.05, sigma_max=5.0)
    ts = make_grid(sched, 5)
    x = initial_noise(sched, (10, 2), ts, torch.Generator().manual_seed(0), dtype=torch.float64)
    paths = record_trajectories(sample_langevin, MIX.denoiser(sched), x, ts, n_steps=3,
                                generator=torch.Generator().manual_seed(1))
    assert paths.shape == (1 + 5 + 1, 10, 2)  # start, one state per noise level, final denoised sample


def test_forward_noising_strip_has_one_panel_per_image_and_time(tmp_path):
    images = load_dataset("digits").get(range(3))["image"]
    fig = forward_noising_strip(images, build_schedule("cosine"), times=(0.0, 0.3, 0.6, 1.0))
    shown = [ax for ax in fig.axes if ax.images]
    assert len(shown) == 12
    first = shown[0].images[0].get_array()
    assert first.shape == (8, 8)  # t = 0 is the image itself
    assert abs(float(first.mean()) - float(((images[0, 0] + 1) * 127.5).mean())) < 1.0
    assert "t=1.00" in fig.axes[3].get_title()
    _saves_png(fig, tmp_path, "noising.png")
    with pytest.raises(ImgenError, match="times must be"):
        forward_noising_strip(images, build_schedule("cosine"), times=(0.5, 2.0))


def test_score_field_draws_one_arrow_per_grid_point_pointing_to_the_data(tmp_path):
    sched = build_schedule("cosine")
    fig = score_field(MIX.denoiser(sched), 0.3, lim=4.0, n=15, data=MIX.sample(200)[0])
    quivers = [c for c in fig.axes[0].collections if isinstance(c, Quiver)]
    assert len(quivers) == 1 and quivers[0].N == 225
    q = quivers[0]
    corner = 0  # grid point (-4, -4): the score points up and to the right, toward the mixture
    assert q.U[corner] > 0 and q.V[corner] > 0
    _saves_png(fig, tmp_path, "score.png")
    with pytest.raises(ImgenError, match="pick t > 0"):
        score_field(MIX.denoiser(sched), 0.0)


def test_data_vs_samples_side_by_side_and_overlaid(tmp_path):
    data, samples = MIX.sample(500)[0], MIX.sample(400)[0] + 0.1
    fig = data_vs_samples(data, samples)
    assert len(fig.axes) == 2
    assert [len(ax.collections[0].get_offsets()) for ax in fig.axes] == [500, 400]
    _saves_png(fig, tmp_path, "data_vs_samples.png")
    fig = data_vs_samples(data, samples, overlay=True)
    assert len(fig.axes) == 1 and len(fig.axes[0].collections) == 2
    matplotlib.pyplot.close(fig)
    with pytest.raises(ImgenError, match=r"\(N, 2\)"):
        data_vs_samples(torch.zeros(5, 3), samples)
