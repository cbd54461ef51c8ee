import itertools

import numpy as np
import pytest

from latentdiff.metrics.kid import kid_from_features, mmd2_unbiased, polynomial_kernel


def _subsets(f1, f2, m, num_subsets, seed):
    """The subsets kid_from_features draws (same generator, same order)."""
    rng = np.random.default_rng(seed)
    for _ in range(num_subsets):
        yield f1[rng.choice(len(f1), m, replace=False)], f2[rng.choice(len(f2), m, replace=False)]


def _mmd2_biased(x, y):
    """The V-statistic: includes the k(x_i, x_i) terms, so it is positive even for one distribution."""
    return (
        polynomial_kernel(x, x).mean() + polynomial_kernel(y, y).mean() - 2 * polynomial_kernel(x, y).mean()
    )


def test_mmd2_unbiased_equals_the_pairwise_sum_definition():
    rng = np.random.default_rng(0)
    x, y = rng.standard_normal((5, 3)), rng.standard_normal((4, 3)) + 1

    def k(a, b):
        return (a @ b / 3 + 1) ** 3

    xx = sum(k(x[i], x[j]) for i, j in itertools.permutations(range(5), 2)) / (5 * 4)
    yy = sum(k(y[i], y[j]) for i, j in itertools.permutations(range(4), 2)) / (4 * 3)
    xy = sum(k(a, b) for a in x for b in y) / (5 * 4)
    assert mmd2_unbiased(x, y) == pytest.approx(xx + yy - 2 * xy, rel=1e-12)


def test_kid_is_unbiased_for_one_distribution_while_the_biased_estimator_is_positive():
    rng = np.random.default_rng(1)
    f1, f2 = rng.standard_normal((2000, 16)), rng.standard_normal((2000, 16))
    m, num_subsets = 50, 400
    mean, std = kid_from_features(f1, f2, subset_size=m, num_subsets=num_subsets, seed=7)
    std_error = std / np.sqrt(num_subsets)
    assert abs(mean) < 3 * std_error
    biased = np.mean([_mmd2_biased(x, y) for x, y in _subsets(f1, f2, m, num_subsets, seed=7)])
    assert biased > 20 * std_error


def test_kid_of_a_shifted_distribution_is_clearly_positive():
    rng = np.random.default_rng(2)
    f1, f2 = rng.standard_normal((1000, 16)), rng.standard_normal((1000, 16)) + 0.5
    mean, std = kid_from_features(f1, f2, subset_size=100, num_subsets=50)
    assert mean > 10 * std / np.sqrt(50)


def test_subset_size_is_capped_by_the_smaller_set_and_the_seed_fixes_the_result():
    rng = np.random.default_rng(3)
    f1, f2 = rng.standard_normal((30, 8)), rng.standard_normal((20, 8))
    a = kid_from_features(f1, f2, subset_size=1000, num_subsets=5, seed=1)
    assert a == kid_from_features(f1, f2, subset_size=20, num_subsets=5, seed=1)
    assert a != kid_from_features(f1, f2, subset_size=20, num_subsets=5, seed=2)
