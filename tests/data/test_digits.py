"""scikit-learn digits: our direct read of the table equals `load_digits`, and the split rule."""

from __future__ import annotations

import numpy as np

from latentdiff.data import load_dataset


def test_pixels_and_split_match_load_digits(use_builtin):
    use_builtin("digits")
    from sklearn.datasets import load_digits

    bunch = load_digits()
    expected = np.rint(bunch.images * 255 / 16).astype(np.uint8)
    test = load_dataset("digits", "test")
    train = load_dataset("digits", "train")
    assert np.array_equal(test.images[:, 0], expected[9::10])
    assert np.array_equal(test.labels, bunch.target[9::10])
    train_rows = np.arange(len(bunch.target)) % 10 != 9
    assert np.array_equal(train.images[:, 0], expected[train_rows])
    assert np.array_equal(train.labels, bunch.target[train_rows])
    assert test.images.max() == 255 and test.images.min() == 0
