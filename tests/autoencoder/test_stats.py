"""Latent statistics: exactly the requested images (a fixed seeded permutation, not one batch), and a
scale that gives the scaled latents unit standard deviation."""

import math

import pytest
import torch

from latentdiff.autoencoder import Autoencoder, AutoencoderConfig, apply_latent_stats, compute_latent_stats


class CountingDataset:
    """Per-channel shifted and scaled Gaussian images that record every index asked for."""

    def __init__(self, n: int, channels: int = 3, size: int = 8) -> None:
        g = torch.Generator().manual_seed(0)
        loc = torch.tensor([0.5, -0.3, 0.1])[:channels].view(1, channels, 1, 1)
        spread = torch.tensor([0.2, 0.4, 0.1])[:channels].view(1, channels, 1, 1)
        self.images = loc + spread * torch.randn(n, channels, size, size, generator=g)
        self.seen: list[int] = []
        self.calls = 0

    def __len__(self) -> int:
        return len(self.images)

    def get_batch(self, indices):
        self.calls += 1
        self.seen.extend(indices)
        return self.images[list(indices)], torch.zeros(len(indices), dtype=torch.long)


def test_uses_exactly_the_requested_images_from_a_seeded_permutation():
    data = CountingDataset(50)
    stats = compute_latent_stats(
        Autoencoder(AutoencoderConfig.identity(3)), data, num_images=30, batch_size=8
    )
    assert stats["num_images"] == 30
    assert len(data.seen) == 30 and data.calls == math.ceil(30 / 8)
    assert set(data.seen) == set(torch.randperm(50, generator=torch.Generator().manual_seed(0))[:30].tolist())
    assert sorted(data.seen) != list(range(30))  # spread over the set, not its first images
    chosen = data.images[sorted(data.seen)]
    assert stats["mean"] == pytest.approx(chosen.mean().item(), abs=1e-6)
    assert stats["std"] == pytest.approx(chosen.std().item(), rel=1e-6)


def test_num_images_beyond_the_dataset_uses_all_of_it():
    data = CountingDataset(20)
    stats = compute_latent_stats(
        Autoencoder(AutoencoderConfig.identity(3)), data, num_images=10_000, batch_size=7
    )
    assert stats["num_images"] == 20 and sorted(data.seen) == list(range(20))


@pytest.mark.parametrize("per_channel", [False, True])
def test_applied_scale_gives_unit_std(per_channel):
    data = CountingDataset(40)
    ae = Autoencoder(AutoencoderConfig.identity(3))
    stats = compute_latent_stats(ae, data, num_images=40, batch_size=16, per_channel=per_channel)
    apply_latent_stats(ae, stats)
    assert ae.config.latent_stats_images == 40
    z = ae.to_latent(data.images)
    dims = (0, 2, 3) if per_channel else None
    std = z.std(dim=dims) if per_channel else z.std()
    mean = z.mean(dim=dims) if per_channel else z.mean()
    torch.testing.assert_close(std, torch.ones_like(std), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(mean, torch.zeros_like(mean), rtol=0, atol=1e-5)
    if per_channel:
        assert len(ae.scale_factor) == 3 and ae.scale_factor[2] > ae.scale_factor[0] > ae.scale_factor[1]


def test_shift_zero_keeps_the_mean():
    data = CountingDataset(10)
    ae = Autoencoder(AutoencoderConfig.identity(3))
    apply_latent_stats(ae, compute_latent_stats(ae, data, batch_size=10), shift="zero")
    assert ae.shift_factor == 0.0
    assert ae.to_latent(data.images).std().item() == pytest.approx(1.0, rel=1e-5)


def test_kl_statistics_come_from_posterior_samples_in_eval_mode():
    torch.manual_seed(0)
    cfg = AutoencoderConfig.kl(f=2, latent_channels=2, base_channels=8, groups=4, num_res_blocks=1)
    ae = Autoencoder(cfg).train()
    with torch.no_grad():
        ae.quant_conv.bias[2:].fill_(2.0)  # log-variance ≈ 2: the sampling noise dominates the spread
    data = CountingDataset(24)
    stats = compute_latent_stats(
        ae, data, num_images=24, batch_size=8, generator=torch.Generator().manual_seed(3)
    )
    assert ae.training  # mode restored
    post = ae.eval().encode(data.images)
    mean_only = post.mean.std().item()
    with_noise = math.sqrt(post.mean.var().item() + post.std.square().mean().item())
    assert stats["std"] > 2 * mean_only
    assert stats["std"] == pytest.approx(with_noise, rel=0.05)
