import numpy as np
import pytest
import scipy.linalg
import torch
from torchmetrics.image.fid import FrechetInceptionDistance

from latentdiff.metrics.fid import FeatureStats, fid_from_features, fid_from_stats, frechet_distance


def _random_spd(rng: np.random.Generator, d: int) -> np.ndarray:
    a = rng.standard_normal((d, d))
    return a @ a.T / d + 0.1 * np.eye(d)


def _sqrt_spd(a: np.ndarray) -> np.ndarray:
    w, v = np.linalg.eigh(a)
    return (v * np.sqrt(w)) @ v.T


def _features(rng: np.random.Generator, n: int, d: int, shift: float = 0.0) -> np.ndarray:
    """Non-negative, correlated, Inception-like features (ReLU of a random linear map)."""
    mix = rng.standard_normal((d // 4, d)) / 4
    return np.maximum(rng.standard_normal((n, d // 4)) @ mix + shift, 0)


def test_fid_of_a_set_with_itself_is_zero_even_when_the_covariance_is_singular():
    features = _features(np.random.default_rng(0), 100, 256)  # N < d: rank-deficient covariance
    stats = FeatureStats.from_features(features)
    assert abs(fid_from_features(features, features)) < 1e-6  # sample-space path
    assert abs(fid_from_stats(stats, stats)) < 1e-6  # covariance path


def test_sample_space_and_covariance_paths_agree():
    rng = np.random.default_rng(7)
    f1, f2 = _features(rng, 120, 256), _features(rng, 90, 256, shift=0.2)
    stats1, stats2 = FeatureStats.from_features(f1), FeatureStats.from_features(f2)
    assert fid_from_features(f1, f2) == pytest.approx(fid_from_stats(stats1, stats2), rel=1e-7)


def test_diagonal_gaussians_match_the_closed_form():
    rng = np.random.default_rng(1)
    mu1, mu2 = rng.standard_normal(16), rng.standard_normal(16)
    a, b = rng.uniform(0.1, 3, 16), rng.uniform(0.1, 3, 16)
    expected = np.sum((mu1 - mu2) ** 2) + np.sum((np.sqrt(a) - np.sqrt(b)) ** 2)
    assert frechet_distance(mu1, np.diag(a), mu2, np.diag(b)) == pytest.approx(expected, rel=1e-10)


def test_non_commuting_covariances_match_the_closed_form():
    # With Σ2 = Σ1^{-1/2} C² Σ1^{-1/2}: Σ1Σ2 = Σ1^{1/2} C² Σ1^{-1/2}, whose square root has trace Tr C.
    rng = np.random.default_rng(2)
    d = 32
    sigma1, c = _random_spd(rng, d), _random_spd(rng, d)
    inv_root1 = np.linalg.inv(_sqrt_spd(sigma1))
    sigma2 = inv_root1 @ c @ c @ inv_root1
    assert not np.allclose(sigma1 @ sigma2, sigma2 @ sigma1)
    mu1, mu2 = rng.standard_normal(d), rng.standard_normal(d)
    expected = np.sum((mu1 - mu2) ** 2) + np.trace(sigma1) + np.trace(sigma2) - 2 * np.trace(c)
    assert frechet_distance(mu1, sigma1, mu2, sigma2) == pytest.approx(expected, rel=1e-9)


def test_agrees_with_the_scipy_sqrtm_formula_of_pytorch_fid():
    rng = np.random.default_rng(3)
    mu1, mu2 = rng.standard_normal(64), rng.standard_normal(64)
    sigma1, sigma2 = _random_spd(rng, 64), _random_spd(rng, 64)
    covmean = scipy.linalg.sqrtm(sigma1 @ sigma2).real
    expected = np.sum((mu1 - mu2) ** 2) + np.trace(sigma1 + sigma2 - 2 * covmean)
    assert frechet_distance(mu1, sigma1, mu2, sigma2) == pytest.approx(expected, rel=1e-9)


def test_samples_of_two_gaussians_approach_the_closed_form():
    rng = np.random.default_rng(4)
    d, n = 4, 50_000
    mu1, mu2 = np.zeros(d), np.array([1.0, -0.5, 0.0, 0.25])
    sigma1, sigma2 = _random_spd(rng, d), _random_spd(rng, d)
    x = rng.multivariate_normal(mu1, sigma1, n)
    y = rng.multivariate_normal(mu2, sigma2, n)
    expected = frechet_distance(mu1, sigma1, mu2, sigma2)
    assert fid_from_features(x, y) == pytest.approx(expected, abs=0.03)


class _PrecomputedFeatures(torch.nn.Module):
    """torchmetrics' custom feature extractor: the "images" fed to update() already are the features."""

    def __init__(self, num_features: int):
        super().__init__()
        self.num_features = num_features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x


def test_equals_torchmetrics_frechet_inception_distance_on_the_same_features():
    rng = np.random.default_rng(5)
    real, fake = _features(rng, 500, 64), _features(rng, 400, 64, shift=0.3)
    metric = FrechetInceptionDistance(feature=_PrecomputedFeatures(64))
    metric.update(torch.from_numpy(real), real=True)
    metric.update(torch.from_numpy(fake), real=False)
    expected = float(metric.compute())
    ours = fid_from_features(real, fake)
    assert expected > 1.0
    assert ours == pytest.approx(expected, rel=1e-3)


def test_feature_stats_round_trip_without_pickle(tmp_path):
    features = _features(np.random.default_rng(6), 50, 16)
    stats = FeatureStats.from_features(features, protocol="p/123")
    stats.save(tmp_path / "s.npz")
    loaded = FeatureStats.load(tmp_path / "s.npz")
    np.testing.assert_array_equal(loaded.mu, stats.mu)
    np.testing.assert_array_equal(loaded.sigma, np.cov(features, rowvar=False))
    assert (loaded.n, loaded.protocol) == (50, "p/123")

    np.savez(tmp_path / "evil.npz", mu=np.array([object()], dtype=object), sigma=np.eye(1), n=2)
    with pytest.raises(ValueError, match="pickle"):
        FeatureStats.load(tmp_path / "evil.npz")


def test_bad_inputs_name_the_problem():
    with pytest.raises(ValueError, match="covariances must be"):
        frechet_distance(np.zeros(3), np.eye(3), np.zeros(3), np.eye(4))
    with pytest.raises(ValueError, match="N >= 2"):
        fid_from_features(np.zeros((1, 3)), np.zeros((5, 3)))
