"""Metric math cross-checked on identical features against torchmetrics, scipy and scikit-image."""
import math

import numpy as np
import pytest
import scipy.linalg
import torch

from imgen.errors import ImgenError
from imgen.metrics.bits import bits_per_dim, discrete_bits_per_dim
from imgen.metrics.clip_score import clip_score
from imgen.metrics.fid import fid, frechet_distance
from imgen.metrics.inception_score import inception_score
from imgen.metrics.kid import kid
from imgen.metrics.perceptual import perceptual_distance
from imgen.metrics.precision_recall import manifold_metrics
from imgen.metrics.psnr_ssim import psnr, ssim
from imgen.metrics.references import import_torchmetrics
from imgen.metrics.stats import RunningStats

import_torchmetrics()
from torchmetrics.image.fid import FrechetInceptionDistance  # noqa: E402
from torchmetrics.image.inception import InceptionScore  # noqa: E402
from torchmetrics.image.kid import KernelInceptionDistance  # noqa: E402


class Identity(torch.nn.Module):
    """A custom torchmetrics 'feature extractor' that passes precomputed features through."""

    def __init__(self, dim):
        super().__init__()
        self.num_features = dim

    def forward(self, x):
        return x


def rel(a, b):
    return abs(a - b) / abs(b)


@pytest.fixture(scope="module")
def feature_sets():
    g = torch.Generator().manual_seed(0)
    d = 48
    a = torch.randn(700, d, generator=g) * 2 + 3
    mix = torch.eye(d) + 0.3 * torch.randn(d, d, generator=g)
    b = torch.randn(600, d, generator=g) @ mix + 3.4
    return a, b


def scipy_fid(a, b):
    a, b = a.double().numpy(), b.double().numpy()
    m1, m2 = a.mean(0), b.mean(0)
    s1, s2 = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    covmean = scipy.linalg.sqrtm(s1 @ s2).real
    return float(((m1 - m2) ** 2).sum() + np.trace(s1 + s2 - 2 * covmean))


def test_fid_matches_scipy_sqrtm_and_torchmetrics(feature_sets):
    a, b = feature_sets
    ours = fid(a, b)
    tm = FrechetInceptionDistance(feature=Identity(a.shape[1]))
    tm.update(a, real=True)
    tm.update(b, real=False)
    assert rel(ours, scipy_fid(a, b)) < 1e-4
    assert rel(ours, float(tm.compute())) < 1e-4
    assert ours > 1.0


def test_fid_of_a_set_with_itself_is_zero(feature_sets):
    a, _ = feature_sets
    assert fid(a, a) < 1e-6


def test_frechet_distance_of_known_gaussians():
    # 1-D: (mu1-mu2)^2 + s1 + s2 - 2 sqrt(s1 s2) = (mu1-mu2)^2 + (sqrt s1 - sqrt s2)^2
    d = frechet_distance(torch.tensor([1.0]), torch.tensor([[4.0]]), torch.tensor([3.0]), torch.tensor([[9.0]]))
    assert d == pytest.approx(4.0 + 1.0, rel=1e-12)


def test_fid_refuses_fewer_samples_than_dimensions_and_suggests_kid():
    x = torch.randn(30, 64)
    with pytest.raises(ImgenError, match="KID"):
        fid(x, x + 1)


def test_running_stats_streaming_equals_numpy_cov_with_large_mean():
    x = torch.randn(3001, 6, dtype=torch.float64) * 1e-2 + 1e5
    stats = RunningStats(6)
    for chunk in torch.split(x, 257):
        stats.update(chunk)
    np.testing.assert_allclose(stats.mean.numpy(), x.numpy().mean(0), rtol=1e-13)
    np.testing.assert_allclose(stats.cov.numpy(), np.cov(x.numpy(), rowvar=False), rtol=1e-6, atol=1e-15)
    half = RunningStats.from_features(x[:1000]).merge(RunningStats.from_features(x[1000:]))
    np.testing.assert_allclose(half.cov.numpy(), stats.cov.numpy(), rtol=1e-6, atol=1e-15)


def test_running_stats_save_load_roundtrip(tmp_path):
    stats = RunningStats.from_features(torch.randn(50, 5))
    stats.save(tmp_path / "s.safetensors")
    back = RunningStats.load(tmp_path / "s.safetensors")
    assert back.n == 50 and torch.equal(back.mean, stats.mean) and torch.equal(back.cov, stats.cov)


@pytest.mark.parametrize("subsets,subset_size", [(1, 600), (15, 200)])
def test_kid_matches_torchmetrics_subset_by_subset(feature_sets, subsets, subset_size):
    a, b = feature_sets
    tm = KernelInceptionDistance(feature=Identity(a.shape[1]), subsets=subsets, subset_size=subset_size)
    tm.update(a, real=True)
    tm.update(b, real=False)
    torch.manual_seed(123)  # torchmetrics draws subsets from the global generator; ours from a seeded one
    ref_mean, ref_std = (float(v) for v in tm.compute())
    mean, std = kid(a, b, subsets=subsets, subset_size=subset_size, seed=123)
    assert rel(mean, ref_mean) < 1e-4
    if subsets > 1:
        assert rel(std, ref_std) < 1e-4 and std > 0


def test_kid_is_unbiased_near_zero_for_same_distribution():
    g = torch.Generator().manual_seed(1)
    a, b = torch.randn(1000, 16, generator=g), torch.randn(1000, 16, generator=g)
    mean, std = kid(a, b, subsets=20, subset_size=300)
    assert abs(mean) < 3 * std + 1e-3
    shifted, _ = kid(a, b + 0.5, subsets=20, subset_size=300)
    assert shifted > 10 * abs(mean)


def test_inception_score_matches_torchmetrics():
    g = torch.Generator().manual_seed(2)
    logits = torch.randn(1000, 10, generator=g) * 3
    tm = InceptionScore(feature=Identity(10), splits=10)
    tm.update(logits)
    torch.manual_seed(7)
    ref_mean, ref_std = (float(v) for v in tm.compute())
    mean, std = inception_score(logits, splits=10, seed=7)
    assert rel(mean, ref_mean) < 1e-4 and rel(std, ref_std) < 1e-4


def test_inception_score_bounds():
    confident_uniform = torch.eye(10).repeat(50, 1) * 50  # sharp and balanced -> IS = number of classes
    assert inception_score(confident_uniform, splits=1)[0] == pytest.approx(10, rel=1e-6)
    assert inception_score(torch.zeros(100, 10), splits=1)[0] == pytest.approx(1.0)


@pytest.fixture(scope="module")
def image_pairs():
    g = torch.Generator().manual_seed(3)
    a = torch.rand(4, 3, 24, 20, generator=g) * 2 - 1
    b = (a + 0.2 * torch.randn(a.shape, generator=g)).clamp(-1, 1)
    return a, b


def test_psnr_matches_skimage(image_pairs):
    from skimage.metrics import peak_signal_noise_ratio

    a, b = image_pairs
    ours = psnr(a, b)
    for i in range(len(a)):
        ref = peak_signal_noise_ratio(a[i].double().numpy(), b[i].double().numpy(), data_range=2.0)
        assert rel(float(ours[i]), ref) < 1e-4


def test_ssim_matches_skimage_gaussian_window(image_pairs):
    from skimage.metrics import structural_similarity

    a, b = image_pairs
    ours = ssim(a, b)
    for i in range(len(a)):
        ref = structural_similarity(a[i].double().numpy(), b[i].double().numpy(), data_range=2.0, channel_axis=0,
                                    gaussian_weights=True, sigma=1.5, use_sample_covariance=False)
        assert rel(float(ours[i]), ref) < 1e-4
    assert torch.allclose(ssim(a, a), torch.ones(len(a), dtype=torch.float64))


def test_ssim_rejects_images_smaller_than_the_window():
    with pytest.raises(ImgenError, match="at least 11x11"):
        ssim(torch.zeros(1, 1, 8, 8), torch.zeros(1, 1, 8, 8))


def knn_reference(real, fake, k):
    """Brute-force precision/recall (Kynkäänniemi 2019) and density/coverage (Naeem 2020) via sklearn."""
    from sklearn.metrics import pairwise_distances

    real, fake = real.numpy().astype(np.float64), fake.numpy().astype(np.float64)
    d_rr, d_ff, d_rf = pairwise_distances(real), pairwise_distances(fake), pairwise_distances(real, fake)
    r_real = np.sort(d_rr, axis=1)[:, k]
    r_fake = np.sort(d_ff, axis=1)[:, k]
    inside = d_rf < r_real[:, None]  # (N_real, N_fake): fake j in the ball of real i
    return {"precision": inside.any(0).mean(), "recall": (d_rf < r_fake[None, :]).any(1).mean(),
            "density": inside.sum() / (k * fake.shape[0]), "coverage": (d_rf.min(1) < r_real).mean()}


def test_precision_recall_density_coverage_match_bruteforce():
    g = torch.Generator().manual_seed(4)
    real = torch.randn(300, 8, generator=g)
    fake = torch.randn(250, 8, generator=g) * 1.3 + 0.4
    ours = manifold_metrics(real, fake, k=3, chunk=64)
    ref = knn_reference(real, fake, 3)
    for key in ref:
        assert ours[key] == pytest.approx(ref[key], abs=1e-12), key
    assert 0.2 < ours["precision"] < 0.95 and ours["recall"] > ours["precision"]  # fake is wider than real


def test_bits_per_dim():
    # a uniform density on [-1, 1]^D has -log p = D log 2, i.e. exactly 8 bits/dim on 255 bins of width 2/255
    # (the +- half-bin edge aside): log2(255) bits per dimension.
    d = 3 * 8 * 8
    assert float(bits_per_dim(d * math.log(2), d)) == pytest.approx(math.log2(255), rel=1e-12)
    assert float(discrete_bits_per_dim(-d * math.log(256), d)) == pytest.approx(8.0)


class ToyClip:
    def encode_image(self, images):
        return images.flatten(1)[:, :4]

    def encode_text(self, texts):
        return torch.tensor([[1.0, 0, 0, 0] if "a" in t else [0, 1.0, 0, 0] for t in texts])


def test_clip_score_is_100_times_clipped_cosine():
    images = torch.tensor([[1.0, 0, 0, 0], [1.0, 1.0, 0, 0]]).view(2, 1, 2, 2)
    score = clip_score(images, ["a", "b"], ToyClip())
    assert score == pytest.approx(100 * (1 + 1 / math.sqrt(2)) / 2)
    with pytest.raises(ImgenError, match="one caption"):
        clip_score(images, ["a"], ToyClip())


class TwoLayer(torch.nn.Module):
    def feature_maps(self, x):
        return [x, torch.nn.functional.avg_pool2d(x, 2)]


def test_perceptual_distance_zero_for_identical_and_grows_with_distortion(image_pairs):
    a, b = image_pairs
    net = TwoLayer()
    assert torch.allclose(perceptual_distance(a, a, net), torch.zeros(len(a), dtype=torch.float64))
    mild = perceptual_distance(a, (a + 0.05 * (b - a)), net)
    strong = perceptual_distance(a, b, net)
    assert (strong > mild).all() and (mild > 0).all()


def test_fid_with_a_singular_covariance_matches_scipy():
    # a constant feature makes S1 singular: the eigendecomposition path must give scipy's answer
    g = torch.Generator().manual_seed(5)
    a = torch.randn(400, 20, generator=g)
    a[:, 3] = 1.0
    b = torch.randn(400, 20, generator=g) * 1.5
    assert rel(fid(a, b), scipy_fid(a, b)) < 1e-4
