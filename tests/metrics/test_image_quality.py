import math

import pytest
import torch
from torchmetrics.functional.image import structural_similarity_index_measure

from latentdiff.metrics.image_quality import SSIM_WINDOW, psnr, reconstruction_metrics, ssim


def _pair(channels: int, size: int = 24, n: int = 3) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(channels)
    x = torch.rand(n, channels, size, size, generator=g, dtype=torch.float64) * 2 - 1
    y = (x + 0.3 * torch.randn(x.shape, generator=g, dtype=torch.float64)).clamp(-1, 1)
    return x, y


def test_psnr_is_inf_for_identical_images_and_matches_the_noise_power():
    x, _ = _pair(3)
    assert torch.isinf(psnr(x, x)).all()
    signs = torch.where(torch.rand(x.shape, generator=torch.Generator().manual_seed(0)) < 0.5, -1.0, 1.0)
    y = x + 0.1 * signs.double()  # MSE exactly 0.01 in every image
    expected = 10 * math.log10(2.0**2 / 0.01)
    torch.testing.assert_close(psnr(x, y), torch.full((3,), expected, dtype=torch.float64))
    assert psnr(x, y, data_range=1.0)[0].item() == pytest.approx(10 * math.log10(1 / 0.01))


@pytest.mark.parametrize("channels", [1, 3])
def test_ssim_equals_torchmetrics_with_reflect_borders(channels):
    x, y = _pair(channels)
    expected = structural_similarity_index_measure((y + 1) / 2, (x + 1) / 2, data_range=1.0, reduction="none")
    torch.testing.assert_close(ssim(y, x, border="reflect"), expected, atol=1e-4, rtol=0)


@pytest.mark.parametrize("channels", [1, 3])
def test_ssim_equals_torchmetrics_map_on_the_valid_region(channels):
    x, y = _pair(channels)
    _, full = structural_similarity_index_measure(
        (y + 1) / 2, (x + 1) / 2, data_range=1.0, reduction="none", return_full_image=True
    )
    pad = SSIM_WINDOW // 2
    expected = full[..., pad:-pad, pad:-pad].flatten(1).mean(1)
    torch.testing.assert_close(ssim(y, x), expected, atol=1e-4, rtol=0)


def test_ssim_is_one_for_identical_images_and_lower_otherwise():
    x, y = _pair(3)
    torch.testing.assert_close(ssim(x, x), torch.ones(3, dtype=torch.float64))
    assert (ssim(x, y) < 0.9).all()


def test_ssim_refuses_images_smaller_than_its_window():
    x = torch.zeros(1, 1, 8, 8)
    with pytest.raises(ValueError, match="too small"):
        ssim(x, x)


def test_reconstruction_metrics_report_means_and_counts():
    x, y = _pair(1, n=4)
    y[0] = x[0]
    out = reconstruction_metrics(x, y)
    assert out["num_images"] == 4 and out["num_identical"] == 1
    assert out["psnr"] == pytest.approx(psnr(x[1:], y[1:]).mean().item())
    assert out["ssim"] == pytest.approx(ssim(x, y).mean().item())
