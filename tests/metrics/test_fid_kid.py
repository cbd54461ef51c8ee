import numpy as np
import pytest
import torch

from latentdiff.metrics.fid import fid_from_features
from latentdiff.metrics.fid_kid import compute_fid, fid_kid_from_features
from latentdiff.metrics.kid import kid_from_features


def test_compute_fid_reports_counts_and_protocol_next_to_the_numbers(inception):
    g = torch.Generator().manual_seed(0)
    real = torch.rand(4, 1, 16, 16, generator=g) * 2 - 1
    fake = (real + 0.5 * torch.randn(real.shape, generator=g)).clamp(-1, 1)[:3]
    out = compute_fid(
        [real[:2], real[2:]], [(fake, None)], extractor=inception, kid_subset_size=3, progress=False
    )
    assert out["num_real"] == 4 and out["num_fake"] == 3
    assert out["protocol"] == f"{inception.protocol}/{inception.protocol_hash}"
    real_features, fake_features = inception(real), inception(fake)
    assert out["fid"] == pytest.approx(fid_from_features(real_features, fake_features), rel=1e-6)
    kid_mean, kid_std = kid_from_features(real_features, fake_features, subset_size=3)
    assert out["kid_mean"] == pytest.approx(kid_mean, rel=1e-5, abs=1e-9)
    assert out["fid"] > 1.0

    from_features = compute_fid(real_features, fake_features, extractor=inception, kid_subset_size=3)
    assert from_features["fid"] == pytest.approx(out["fid"], rel=1e-6)


def test_fid_kid_from_features_of_one_set_is_zero():
    features = np.random.default_rng(0).standard_normal((50, 8))
    out = fid_kid_from_features(features, features, protocol="p", kid_subset_size=50, kid_num_subsets=3)
    assert abs(out["fid"]) < 1e-9 and out["kid_std"] < 1e-9  # every subset is the whole set
    assert (out["num_real"], out["num_fake"], out["protocol"]) == (50, 50, "p")
