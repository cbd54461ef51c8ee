"""Fréchet distance between Gaussian fits of two feature sets (FID when the features are Inception pool3).

Heusel et al. 2017, "GANs Trained by a Two Time-Scale Update Rule Converge to a Local Nash Equilibrium",
eq. 6: d² = ‖μ₁ − μ₂‖² + Tr(Σ₁ + Σ₂ − 2 (Σ₁Σ₂)^{1/2}).

Only the trace of (Σ₁Σ₂)^{1/2} is needed. For any factors Σ₁ = F₁F₁ᵀ and Σ₂ = F₂F₂ᵀ, the non-zero
eigenvalues of Σ₁Σ₂ = F₁(F₁ᵀF₂F₂ᵀ) equal those of F₁ᵀF₂F₂ᵀF₁ = C Cᵀ with C = F₁ᵀF₂: real, ≥ 0 and equal to
the squared singular values of C. Hence Tr (Σ₁Σ₂)^{1/2} = Σᵢ σᵢ(C), the nuclear norm of C, also when Σ₁
or Σ₂ is singular. Two factorisations are used:
- from statistics: F = Σ^{1/2}, the symmetric PSD square root from `eigh` (C is d × d);
- from features, when a set has fewer vectors than dimensions (typical: N < 2048): F = Aᵀ with
  A = (X − μ)/√(N − 1) the centred features, so Σ = AᵀA and C = A₁A₂ᵀ is only N₁ × N₂; Tr Σ = ‖A‖²_F.
Why not scipy.linalg.sqrtm(Σ₁Σ₂) as pytorch-fid does: the product is singular whenever N < 2048, which
needs an ε·I offset and dropping a round-off imaginary part, and it is slower. Why singular values of C
rather than √eigvalsh(C Cᵀ): eigenvalues of C Cᵀ carry absolute errors ~1e-16·‖Σ‖², which the square root
blows up to ~1e-8·‖Σ‖ for each of the (up to 2048) zero ones, so the FID of a set with itself comes out
~1e-3 instead of 0; singular values of C are accurate to ~1e-16·‖Σ‖.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np


@dataclass(eq=False)
class FeatureStats:
    """Mean and covariance (unbiased, N − 1) of N feature vectors, and the protocol that made them."""

    mu: np.ndarray
    sigma: np.ndarray
    n: int
    protocol: str = ""

    def __post_init__(self) -> None:
        self.mu = np.asarray(self.mu, dtype=np.float64)
        self.sigma = np.asarray(self.sigma, dtype=np.float64)
        d = self.mu.shape[0] if self.mu.ndim == 1 else -1
        if self.mu.ndim != 1 or self.sigma.shape != (d, d):
            raise ValueError(
                f"FeatureStats: mu (d,) and sigma (d, d) expected, got {self.mu.shape}, {self.sigma.shape}"
            )
        if self.n < 2:
            raise ValueError(f"FeatureStats: a covariance needs at least 2 samples, got n={self.n}")

    @classmethod
    def from_features(cls, features: np.ndarray, protocol: str = "") -> FeatureStats:
        f = _as_features(features, "features")
        return cls(f.mean(axis=0), np.cov(f, rowvar=False), len(f), protocol)

    def save(self, path: str | Path) -> None:
        """Write an .npz (plain arrays, no pickled objects); the caller makes it atomic if needed."""
        with open(path, "wb") as f:
            np.savez(f, mu=self.mu, sigma=self.sigma, n=np.int64(self.n), protocol=np.str_(self.protocol))

    @classmethod
    def load(cls, path: str | Path) -> FeatureStats:
        try:
            with np.load(path, allow_pickle=False) as data:
                missing = {"mu", "sigma", "n"} - set(data.files)
                if missing:
                    raise ValueError(f"{path}: not a FeatureStats file, missing {sorted(missing)}")
                protocol = str(data["protocol"]) if "protocol" in data.files else ""
                return cls(data["mu"], data["sigma"], int(data["n"]), protocol)
        except FileNotFoundError:
            raise FileNotFoundError(f"feature statistics not found: {path}") from None


def _as_features(features: np.ndarray, name: str) -> np.ndarray:
    f = np.asarray(features, dtype=np.float64)
    if f.ndim != 2 or len(f) < 2:
        raise ValueError(f"{name}: expected (N >= 2, d) features, got shape {f.shape}")
    if not np.isfinite(f).all():
        raise ValueError(f"{name}: features contain NaN or inf")
    return f


def _sqrt_psd(a: np.ndarray) -> np.ndarray:
    w, v = np.linalg.eigh(a)
    return (v * np.sqrt(np.clip(w, 0, None))) @ v.T


def frechet_distance(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray) -> float:
    """d² between N(μ₁, Σ₁) and N(μ₂, Σ₂) (Heusel et al. 2017, eq. 6), in float64."""
    mu1, mu2 = np.asarray(mu1, np.float64), np.asarray(mu2, np.float64)
    sigma1, sigma2 = np.asarray(sigma1, np.float64), np.asarray(sigma2, np.float64)
    if mu1.shape != mu2.shape or mu1.ndim != 1:
        raise ValueError(f"means must be vectors of one size, got {mu1.shape} and {mu2.shape}")
    d = mu1.shape[0]
    if sigma1.shape != (d, d) or sigma2.shape != (d, d):
        raise ValueError(f"covariances must be ({d}, {d}), got {sigma1.shape} and {sigma2.shape}")
    for name, s in (("sigma1", sigma1), ("sigma2", sigma2)):
        if not np.isfinite(s).all():
            raise ValueError(f"{name} contains NaN or inf")
    sigma1 = (sigma1 + sigma1.T) / 2
    sigma2 = (sigma2 + sigma2.T) / 2
    trace_sqrt = np.linalg.svd(_sqrt_psd(sigma1) @ _sqrt_psd(sigma2), compute_uv=False).sum()
    diff = mu1 - mu2
    return float(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2 * trace_sqrt)


def fid_from_stats(a: FeatureStats, b: FeatureStats) -> float:
    if a.protocol and b.protocol and a.protocol != b.protocol:
        raise ValueError(f"feature statistics from different protocols: {a.protocol!r} vs {b.protocol!r}")
    return frechet_distance(a.mu, a.sigma, b.mu, b.sigma)


def fid_from_features(features1: np.ndarray, features2: np.ndarray) -> float:
    """Fréchet distance between the Gaussian fits (mean, unbiased covariance) of two (N, d) feature sets."""
    f1, f2 = _as_features(features1, "features1"), _as_features(features2, "features2")
    if f1.shape[1] != f2.shape[1]:
        raise ValueError(f"feature sets of different dimensions: {f1.shape} and {f2.shape}")
    if min(len(f1), len(f2)) >= f1.shape[1]:
        return fid_from_stats(FeatureStats.from_features(f1), FeatureStats.from_features(f2))
    mu1, mu2 = f1.mean(axis=0), f2.mean(axis=0)
    a1 = (f1 - mu1) / np.sqrt(len(f1) - 1)
    a2 = (f2 - mu2) / np.sqrt(len(f2) - 1)
    trace_sqrt = np.linalg.svd(a1 @ a2.T, compute_uv=False).sum()
    diff = mu1 - mu2
    return float(diff @ diff + np.sum(a1 * a1) + np.sum(a2 * a2) - 2 * trace_sqrt)
