"""FID and KID of two image sets in one call, always reported with their sample counts and protocol.

FID from a few hundred samples is biased upwards and not comparable with FID from 50k (Chong & Forsyth
2020); the dictionary returned here therefore always carries `num_real`, `num_fake` and the feature
`protocol` (see `latentdiff.metrics.inception`) next to the numbers.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

from latentdiff.metrics.fid import fid_from_features
from latentdiff.metrics.inception import InceptionFeatures
from latentdiff.metrics.kid import kid_from_features


def fid_kid_from_features(
    real_features: np.ndarray,
    fake_features: np.ndarray,
    protocol: str,
    kid_subset_size: int = 1000,
    kid_num_subsets: int = 100,
    seed: int = 0,
) -> dict[str, float | int | str]:
    """{fid, kid_mean, kid_std, num_real, num_fake, protocol} from two (N, d) feature sets."""
    kid_mean, kid_std = kid_from_features(
        real_features, fake_features, kid_subset_size, kid_num_subsets, seed
    )
    return {
        "fid": fid_from_features(real_features, fake_features),
        "kid_mean": kid_mean,
        "kid_std": kid_std,
        "num_real": int(len(real_features)),
        "num_fake": int(len(fake_features)),
        "protocol": protocol,
    }


def compute_fid(
    real_images: Iterable | np.ndarray,
    fake_images: Iterable | np.ndarray,
    extractor: InceptionFeatures | None = None,
    kid_subset_size: int = 1000,
    kid_num_subsets: int = 100,
    seed: int = 0,
    progress: bool = True,
) -> dict[str, float | int | str]:
    """FID and KID between real and fake images.

    Each side is an iterable of image batches (NCHW in [-1, 1], or (images, labels) pairs), or an (N, 2048)
    array of features made by the same `extractor` protocol (e.g. `reference_features(...)`).
    """
    extractor = extractor if extractor is not None else InceptionFeatures()

    def features(side: Iterable | np.ndarray) -> np.ndarray:
        return side if isinstance(side, np.ndarray) else extractor.extract(side, progress=progress)

    return fid_kid_from_features(
        features(real_images),
        features(fake_images),
        protocol=f"{extractor.protocol}/{extractor.protocol_hash}",
        kid_subset_size=kid_subset_size,
        kid_num_subsets=kid_num_subsets,
        seed=seed,
    )
