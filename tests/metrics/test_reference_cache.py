import numpy as np
import pytest
import torch

from latentdiff.metrics.fid import FeatureStats
from latentdiff.metrics.reference_cache import (
    reference_features,
    reference_key,
    reference_paths,
    reference_stats,
)


class CountingExtractor:
    """A cheap stand-in for InceptionFeatures: features are the first pixels; counts the images seen."""

    def __init__(self, protocol_hash: str = "aaaa000001"):
        self.protocol = "test-protocol"
        self.protocol_hash = protocol_hash
        self.images_seen = 0

    def extract(self, batches, progress=True, total=None):
        parts = []
        for images in batches:
            self.images_seen += len(images)
            parts.append(images.flatten(1)[:, :6].double().numpy())
        return np.concatenate(parts)


class CountingImages:
    def __init__(self, n: int = 40, batch: int = 16):
        g = torch.Generator().manual_seed(0)
        self.images = torch.rand(n, 1, 4, 4, generator=g) * 2 - 1
        self.batch = batch
        self.calls = 0

    def __call__(self):
        self.calls += 1
        return [(self.images[i : i + self.batch], None) for i in range(0, len(self.images), self.batch)]


def test_second_call_reuses_the_cache_and_a_new_protocol_recomputes(tmp_path):
    images, extractor = CountingImages(), CountingExtractor()
    key = reference_key("fashion-mnist", "train", 28)
    first = reference_stats(key, images, 30, extractor, cache_dir=tmp_path, progress=False)
    assert (images.calls, extractor.images_seen, first.n) == (1, 30, 30)
    expected = FeatureStats.from_features(images.images[:30].flatten(1)[:, :6].double().numpy())
    np.testing.assert_allclose(first.sigma, expected.sigma, rtol=1e-12)

    again = reference_stats(key, images, 30, extractor, cache_dir=tmp_path, progress=False)
    features = reference_features(key, images, 30, extractor, cache_dir=tmp_path, progress=False)
    assert images.calls == 1 and extractor.images_seen == 30
    np.testing.assert_array_equal(again.sigma, first.sigma)
    assert features.dtype == np.float32 and features.shape == (30, 6)
    np.testing.assert_allclose(features, images.images[:30].flatten(1)[:, :6].numpy())

    other_protocol = CountingExtractor(protocol_hash="bbbb000002")
    reference_stats(key, images, 30, other_protocol, cache_dir=tmp_path, progress=False)
    assert images.calls == 2 and other_protocol.images_seen == 30
    stems = sorted(p.name for p in (tmp_path / "fid_stats").glob("*.npz"))
    assert stems == ["fashion-mnist-train-28-30-aaaa000001.npz", "fashion-mnist-train-28-30-bbbb000002.npz"]


def test_cache_dir_defaults_to_latentdiff_data(tmp_path, monkeypatch):
    monkeypatch.setenv("LATENTDIFF_DATA", str(tmp_path))
    stats_path, features_path = reference_paths("digits-test-8", 10, "cafe000000")
    assert stats_path == tmp_path / "fid_stats" / "digits-test-8-10-cafe000000.npz"
    reference_stats("digits-test-8", CountingImages(), 10, CountingExtractor("cafe000000"), progress=False)
    assert stats_path.is_file() and features_path.is_file()


def test_folder_datasets_get_distinct_keys(tmp_path):
    (tmp_path / "a" / "faces").mkdir(parents=True)
    (tmp_path / "b" / "faces").mkdir(parents=True)
    key_a = reference_key(str(tmp_path / "a" / "faces"), "train", 64)
    key_b = reference_key(str(tmp_path / "b" / "faces"), "train", 64)
    assert key_a != key_b and key_a.startswith("faces.") and key_a.endswith("-train-64")


def test_too_few_images_and_bad_keys_are_refused(tmp_path):
    with pytest.raises(ValueError, match="only 40"):
        reference_stats(
            "x-train-4", CountingImages(), 50, CountingExtractor(), cache_dir=tmp_path, progress=False
        )
    assert not (tmp_path / "fid_stats" / "x-train-4-50-aaaa000001.npz").exists()
    with pytest.raises(ValueError, match="dataset_key"):
        reference_paths("../escape", 10, "aaaa000001", tmp_path)
