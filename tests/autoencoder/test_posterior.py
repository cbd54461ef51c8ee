"""Posteriors: the KL term against its closed form and torch.distributions; reparameterised sampling."""

import pytest
import torch
from torch.distributions import Normal, kl_divergence

from latentdiff.autoencoder import DeterministicPosterior, DiagonalGaussian


def test_kl_matches_closed_form_and_torch_distributions():
    g = torch.Generator().manual_seed(0)
    mean = torch.randn(3, 4, 5, 6, generator=g)
    logvar = torch.randn(3, 4, 5, 6, generator=g)
    post = DiagonalGaussian(mean, logvar)
    closed = 0.5 * (mean**2 + logvar.exp() - 1 - logvar).sum(dim=(1, 2, 3))
    reference = kl_divergence(Normal(mean, (0.5 * logvar).exp()), Normal(0.0, 1.0)).sum(dim=(1, 2, 3))
    torch.testing.assert_close(post.kl(), closed)
    torch.testing.assert_close(post.kl(), reference)
    assert post.kl().shape == (3,)


def test_kl_is_zero_at_the_prior():
    post = DiagonalGaussian(torch.zeros(2, 3, 4, 4), torch.zeros(2, 3, 4, 4))
    assert torch.equal(post.kl(), torch.zeros(2))


def test_from_moments_splits_channels_and_clamps_logvar():
    moments = torch.cat([torch.full((1, 2, 2, 2), 0.5), torch.full((1, 2, 2, 2), 100.0)], dim=1)
    post = DiagonalGaussian.from_moments(moments, logvar_min=-30.0, logvar_max=20.0)
    assert torch.equal(post.mean, torch.full((1, 2, 2, 2), 0.5))
    assert torch.equal(post.logvar, torch.full((1, 2, 2, 2), 20.0))
    torch.testing.assert_close(post.std, torch.full((1, 2, 2, 2), torch.exp(torch.tensor(10.0)).item()))


def test_sample_is_mean_plus_std_times_generator_noise():
    mean, logvar = torch.randn(2, 3, 4, 4), torch.randn(2, 3, 4, 4)
    post = DiagonalGaussian(mean, logvar)
    z = post.sample(torch.Generator().manual_seed(7))
    eps = torch.randn(2, 3, 4, 4, generator=torch.Generator().manual_seed(7))
    torch.testing.assert_close(z, mean + (0.5 * logvar).exp() * eps)
    assert torch.equal(post.mode(), mean)


def test_deterministic_posterior_is_a_point_mass():
    mean = torch.randn(2, 3, 4, 4)
    indices = torch.zeros(2, 4, 4, dtype=torch.long)
    post = DeterministicPosterior(mean, indices)
    assert torch.equal(post.sample(torch.Generator().manual_seed(0)), mean)
    assert torch.equal(post.std, torch.zeros_like(mean))
    assert torch.equal(post.kl(), torch.zeros(2))
    assert post.indices is indices


def test_sample_with_given_noise_is_mean_plus_std_times_noise():
    g = torch.Generator().manual_seed(1)
    mean, logvar, noise = (torch.randn(2, 3, 4, 4, generator=g) for _ in range(3))
    post = DiagonalGaussian(mean, logvar)
    torch.testing.assert_close(post.sample(noise=noise), mean + (0.5 * logvar).exp() * noise)
    with pytest.raises(ValueError, match="shaped like the mean"):
        post.sample(noise=noise[:1])
