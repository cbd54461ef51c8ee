"""Posteriors returned by `Autoencoder.encode`: a diagonal Gaussian (KL) or a point mass (VQ, identity).

Both expose `.mean`, `.std`, `.sample(generator)`, `.mode()` and `.kl()`, so the latent cache and Stage 2
treat every kind alike (EDM2-style: store mean and std, draw a fresh sample each step).
"""

from __future__ import annotations

import torch


def _randn_like(mean: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    # draw on the generator's device so a CPU generator gives the same numbers for a CUDA posterior
    device = mean.device if generator is None else generator.device
    noise = torch.randn(mean.shape, generator=generator, device=device, dtype=mean.dtype)
    return noise.to(mean.device)


class DiagonalGaussian:
    """q(z|x) = N(mean, diag(exp(logvar))), the posterior of the KL autoencoder (Kingma & Welling 2014).

    The log-variance is clamped to [logvar_min, logvar_max] (−30, 20 as in the LDM autoencoder) so that
    exp() stays finite.
    """

    def __init__(
        self, mean: torch.Tensor, logvar: torch.Tensor, logvar_min: float = -30.0, logvar_max: float = 20.0
    ) -> None:
        if mean.shape != logvar.shape:
            raise ValueError(
                f"DiagonalGaussian: mean {tuple(mean.shape)} and logvar {tuple(logvar.shape)} differ"
            )
        self.mean = mean
        self.logvar = torch.clamp(logvar, logvar_min, logvar_max)
        self.std = torch.exp(0.5 * self.logvar)
        self.indices: torch.Tensor | None = None

    @classmethod
    def from_moments(
        cls, moments: torch.Tensor, logvar_min: float = -30.0, logvar_max: float = 20.0
    ) -> DiagonalGaussian:
        """Split a (N, 2C, H, W) encoder output into mean (first C channels) and log-variance."""
        if moments.ndim < 2 or moments.shape[1] % 2:
            raise ValueError(
                f"DiagonalGaussian: expected an even channel count, got shape {tuple(moments.shape)}"
            )
        mean, logvar = moments.chunk(2, dim=1)
        return cls(mean, logvar, logvar_min, logvar_max)

    @property
    def var(self) -> torch.Tensor:
        return torch.exp(self.logvar)

    def sample(
        self, generator: torch.Generator | None = None, noise: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Reparameterised sample mean + std·ε, ε ~ N(0, I) (Kingma & Welling 2014, sec. 2.4); ε is drawn
        from `generator`, or given as `noise` shaped like the mean (the training loop draws it per sample)."""
        if noise is None:
            return self.mean + self.std * _randn_like(self.mean, generator)
        if noise.shape != self.mean.shape:
            raise ValueError(
                f"noise {tuple(noise.shape)} must be shaped like the mean {tuple(self.mean.shape)}"
            )
        return self.mean + self.std * noise.to(self.mean.device, self.mean.dtype)

    def mode(self) -> torch.Tensor:
        return self.mean

    def kl(self) -> torch.Tensor:
        """KL(q(z|x) ‖ N(0, I)) per sample: 0.5·Σ(μ² + σ² − 1 − log σ²) over all non-batch dimensions
        (Kingma & Welling 2014, appendix B), computed in float32."""
        mean, logvar = self.mean.float(), self.logvar.float()
        per_element = mean.square() + logvar.exp() - 1.0 - logvar
        return 0.5 * per_element.flatten(1).sum(dim=1)


class DeterministicPosterior:
    """A point mass at `mean` (std = 0): the VQ posterior (mean = quantized latent, with the code
    `indices`), the identity autoencoder's (mean = the image), and a KL model without `double_z`."""

    def __init__(self, mean: torch.Tensor, indices: torch.Tensor | None = None) -> None:
        self.mean = mean
        self.indices = indices

    @property
    def std(self) -> torch.Tensor:
        return torch.zeros_like(self.mean)

    @property
    def logvar(self) -> torch.Tensor:
        return torch.full_like(self.mean, float("-inf"))

    def sample(
        self, generator: torch.Generator | None = None, noise: torch.Tensor | None = None
    ) -> torch.Tensor:
        return self.mean

    def mode(self) -> torch.Tensor:
        return self.mean

    def kl(self) -> torch.Tensor:
        """Zero per sample: a point mass carries no KL regulariser."""
        return torch.zeros(self.mean.shape[0], device=self.mean.device, dtype=torch.float32)


Posterior = DiagonalGaussian | DeterministicPosterior
