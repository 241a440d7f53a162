"""Cold diffusion (Bansal et al. 2022): degradations, the two samplers, and a training smoke test."""
import numpy as np
import pytest
import torch
from scipy.ndimage import gaussian_filter

from conftest import fit
from imgen.data import load_dataset
from imgen.errors import ImgenError
from imgen.methods.cold import Blur, Mask, cold, sample_cold_improved, sample_cold_naive
from imgen.nn import UNet

X0 = load_dataset("digits").get(np.arange(16))["image"].double()  # (16, 1, 8, 8) in [-1, 1]


@pytest.mark.parametrize("deg", [Blur(), Mask(seed=3)], ids=["blur", "mask"])
def test_degradation_is_identity_at_0_full_at_1_and_grows_in_between(deg):
    torch.testing.assert_close(deg(X0, 0.0), X0, atol=1e-12, rtol=0)
    full = X0.mean((2, 3), keepdim=True).expand_as(X0) if isinstance(deg, Blur) else torch.zeros_like(X0)
    torch.testing.assert_close(deg(X0, 1.0), full, atol=1e-12, rtol=0)  # blur -> mean colour, mask -> all masked
    dist = [float((deg(X0, t) - X0).abs().mean()) for t in (0.1, 0.3, 0.5, 0.7, 0.9, 1.0)]
    assert all(b > a for a, b in zip(dist, dist[1:])), dist
    t = torch.linspace(0, 1, 16, dtype=torch.float64)  # per-sample times
    torch.testing.assert_close(deg(X0, t)[5], deg(X0[5:6], t[5])[0])


def _neumann_laplacian(n: int) -> np.ndarray:
    """The 1-D pixel-grid Laplacian (-1, 2, -1) with reflecting ends."""
    lap = 2 * np.eye(n) - np.eye(n, k=1) - np.eye(n, k=-1)
    lap[0, 0] = lap[-1, -1] = 1
    return lap


@pytest.mark.parametrize("t", [0.2, 0.5, 0.8])
def test_blur_is_the_heat_equation_solved_by_scipy_expm(t):
    from scipy.linalg import expm

    blur = Blur(blur_scale=1.0)
    tau = float(blur.sigma(torch.tensor(t, dtype=torch.float64))) ** 2 / 2
    k = expm(-tau * _neumann_laplacian(8))  # exp(-tau (L_H + L_W)) = exp(-tau L_H) (.) exp(-tau L_W)^T
    ref = np.einsum("ij,bjk,lk->bil", k, X0[:, 0].numpy(), k)
    np.testing.assert_allclose(blur(X0, t)[:, 0].numpy(), ref, atol=1e-10)


def test_blur_at_sigma_2_is_close_to_scipy_gaussian_filter():
    blur = Blur(blur_scale=2.0)  # sigma(0.5) = 2 px
    ref = np.stack([gaussian_filter(img, 2.0, mode="reflect", truncate=12) for img in X0[:, 0].numpy()])
    err = np.abs(blur(X0, 0.5)[:, 0].numpy() - ref).max()
    assert err < 0.05, err  # discrete vs sampled Gaussian kernel (0.027 measured); the blur moves pixels by ~0.55


def test_mask_hides_a_fraction_t_of_pixels_in_a_fixed_order():
    mask = Mask(seed=0)
    m = mask.mask(torch.tensor([0.25, 0.5, 0.75], dtype=torch.float64), 8, 8)
    assert m.mean((1, 2)).tolist() == [16 / 64, 32 / 64, 48 / 64]
    assert bool((m[1] >= m[0]).all() and (m[2] >= m[1]).all())  # once masked, stays masked


@pytest.mark.parametrize("deg", [Blur(), Mask()], ids=["blur", "mask"])
def test_improved_sampler_with_the_oracle_restorer_recovers_x0_exactly(deg):
    def oracle(x, t):
        return X0
    x1 = deg(X0, 1.0)
    steps = []
    out = sample_cold_improved(oracle, deg, x1, 10, callback=steps.append)
    torch.testing.assert_close(out, X0, atol=1e-10, rtol=0)
    assert len(steps) == 10 and float(steps[-1]["t"]) == 0.0
    torch.testing.assert_close(steps[4]["x"], deg(X0, 0.5), atol=1e-10, rtol=0)  # walks D(x0, t) on the way down


class Additive:
    """D(x, s) = x + s e, the first-order degradation in Bansal et al.'s analysis of Algorithm 2."""

    def __init__(self, e):
        self.e = e

    def __call__(self, x, t):
        t = torch.as_tensor(t, dtype=torch.float64)
        return x + (t.reshape(-1, 1, 1, 1) if t.ndim else t) * self.e


def test_improved_sampler_is_exact_for_any_restorer_on_a_linear_degradation_and_naive_is_not():
    """Bansal et al.: for D(x, s) = x + s e the restorer cancels in Algorithm 2, whatever it returns; Algorithm 1
    ends at whatever the restorer last said."""
    gen = torch.Generator().manual_seed(0)
    deg = Additive(torch.randn(X0.shape[1:], generator=gen, dtype=torch.float64))
    error = torch.randn(X0.shape, generator=gen, dtype=torch.float64)

    def wrong(x, t):  # a restorer off by an amount that changes with t
        return X0 + (0.3 + float(t)) * error
    x1 = deg(X0, 1.0)
    torch.testing.assert_close(sample_cold_improved(wrong, deg, x1, 20), X0, atol=1e-10, rtol=0)
    naive_err = float((sample_cold_naive(wrong, deg, x1, 20) - X0).abs().mean())
    assert naive_err > 0.2, naive_err  # = (0.3 + 1/20) E|error| ~ 0.28


def test_naive_sampler_re_degrades_the_estimate_each_step():
    deg = Blur()
    seen = []
    sample_cold_naive(lambda x, t: X0, deg, deg(X0, 1.0), 4, callback=seen.append)
    for info in seen:
        torch.testing.assert_close(info["x"], deg(info["x0_hat"], info["t"]), atol=1e-12, rtol=0)


@pytest.mark.parametrize("degradation", ["blur", "mask"])
def test_restoration_net_training_smoke_loss_falls_and_samples_have_the_right_shape(degradation):
    torch.manual_seed(0)
    data = load_dataset("digits")
    method = cold(degradation)
    net = UNet(1, base_channels=8, channel_mults=(1, 2), num_res_blocks=1, attn_resolutions=(), image_size=8)
    losses = fit(method, net, data, steps=40, batch_size=32, lr=3e-3)
    assert np.mean(losses[-10:]) < 0.75 * np.mean(losses[:10]), losses
    x1 = method.start(data.get(np.arange(8))["image"])
    for sampler in (sample_cold_naive, sample_cold_improved):
        out = sampler(method.restorer(net.eval()), method.degradation, x1, 5)
        assert out.shape == (8, 1, 8, 8) and bool(torch.isfinite(out).all())


def test_bad_cold_inputs_name_the_fix():
    with pytest.raises(ImgenError, match="valid degradations: blur, mask"):
        cold("noise")
    with pytest.raises(ImgenError, match="blur_scale must be > 0"):
        cold("blur", blur_scale=0.0)
    with pytest.raises(ImgenError, match="steps must be an integer >= 1"):
        sample_cold_improved(lambda x, t: x, Blur(), X0, 0)
    with pytest.raises(ImgenError, match=r"in \[0, 1\]"):
        Blur()(X0, 1.5)
    with pytest.raises(ImgenError, match="image dataset"):
        cold("mask").loss(None, {"x": torch.zeros(4, 2)})


def test_cold_preset_trains_and_samples_from_the_command_line(tmp_path, capsys):
    """`imgen train digits-cold-blur` + `imgen sample`: Model.sample hands a cold model to its own Algorithm 2/1."""
    from PIL import Image

    import imgen
    from imgen.cli import main

    small = ["--set", "net.options.base_channels=8", "--set", "net.options.num_res_blocks=1",
             "--set", "data.batch_size=16", "--set", "train.ckpt_every=3"]
    assert main(["train", "digits-cold-blur", "--out", str(tmp_path / "m"), "--steps", "3", "--quiet", *small]) == 0
    assert main(["sample", str(tmp_path / "m"), "--n", "4", "--label", "1,2,3,4", "--steps", "5",
                 "--out", str(tmp_path / "g.png"), "--scale", "1"]) == 0
    assert Image.open(tmp_path / "g.png").size == (2 * 9 + 1, 2 * 9 + 1)
    model = imgen.load(tmp_path / "m")
    a = model.sample(6, labels=[7] * 6, steps=4, seed=1)
    torch.testing.assert_close(a, model.sample(6, labels=[7] * 6, steps=4, seed=1))  # same seed, same samples
    assert a.shape == (6, 1, 8, 8) and float(a.std(0).mean()) > 0  # the start colour varies between samples
    assert model.sample(2, labels=[3, 3], sampler="naive", steps=4).shape == (2, 1, 8, 8)
    assert main(["sample", str(tmp_path / "m"), "--sampler", "ddim", "--out", str(tmp_path / "x.png")]) == 2
    assert "valid: naive, improved" in capsys.readouterr().err
    with pytest.raises(ImgenError, match="no classifier-free guidance"):
        model.sample(2, cfg=3.0)
