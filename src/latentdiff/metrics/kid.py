"""Kernel Inception Distance: unbiased MMD² with a cubic polynomial kernel, averaged over random subsets.

Bińkowski et al. 2018, "Demystifying MMD GANs", Sec. 5 / eq. 3: with k(x, y) = (xᵀy / d + 1)³ and two
samples X (m vectors) and Y (n vectors),

    MMD²_u = 1/(m(m−1)) Σ_{i≠j} k(xᵢ, xⱼ) + 1/(n(n−1)) Σ_{i≠j} k(yᵢ, yⱼ) − 2/(mn) Σ_{i,j} k(xᵢ, yⱼ),

an unbiased estimator (the diagonal terms k(xᵢ, xᵢ) that bias the plain V-statistic upwards are left
out), so it is ≈ 0 for two samples of one distribution and can be slightly negative. As in the paper's
code, StyleGAN2-ADA and torch-fidelity, it is computed on `num_subsets` random subsets of `subset_size`
vectors drawn without replacement from each set; the mean is KID, the standard deviation over subsets
its spread.
"""

from __future__ import annotations

import numpy as np


def polynomial_kernel(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """k(x, y) = (xᵀy / d + 1)³ for all pairs of rows."""
    return (x @ y.T / x.shape[1] + 1.0) ** 3


def mmd2_unbiased(x: np.ndarray, y: np.ndarray) -> float:
    """Unbiased MMD² of Bińkowski et al. 2018 (eq. 3) with the cubic polynomial kernel."""
    m, n = len(x), len(y)
    if m < 2 or n < 2:
        raise ValueError(f"unbiased MMD² needs at least 2 vectors per set, got {m} and {n}")
    kxx, kyy, kxy = polynomial_kernel(x, x), polynomial_kernel(y, y), polynomial_kernel(x, y)
    within_x = (kxx.sum() - np.trace(kxx)) / (m * (m - 1))
    within_y = (kyy.sum() - np.trace(kyy)) / (n * (n - 1))
    return float(within_x + within_y - 2 * kxy.mean())


def kid_from_features(
    features1: np.ndarray,
    features2: np.ndarray,
    subset_size: int = 1000,
    num_subsets: int = 100,
    seed: int = 0,
) -> tuple[float, float]:
    """(mean, std) of MMD²_u over `num_subsets` subsets of min(subset_size, N1, N2) vectors of each set."""
    f1 = np.asarray(features1, dtype=np.float64)
    f2 = np.asarray(features2, dtype=np.float64)
    if f1.ndim != 2 or f2.ndim != 2 or f1.shape[1] != f2.shape[1]:
        raise ValueError(f"KID needs two (N, d) feature sets of one d, got {f1.shape} and {f2.shape}")
    if num_subsets < 1 or subset_size < 2:
        raise ValueError(f"KID needs num_subsets >= 1 and subset_size >= 2, got {num_subsets}, {subset_size}")
    m = min(subset_size, len(f1), len(f2))
    rng = np.random.default_rng(seed)
    values = np.empty(num_subsets)
    for i in range(num_subsets):
        x = f1[rng.choice(len(f1), m, replace=False)]
        y = f2[rng.choice(len(f2), m, replace=False)]
        values[i] = mmd2_unbiased(x, y)
    return float(values.mean()), float(values.std())
