"""Stage 1 losses: hinge terms and the adaptive weight on hand-checkable cases, disc_start gating,
PatchGAN output sizes."""

import pytest
import torch
from torch import nn

from latentdiff.autoencoder import (
    Autoencoder,
    AutoencoderConfig,
    AutoencoderLossConfig,
    PatchDiscriminator,
    adaptive_weight,
    discriminator_loss,
    fit_n_layers,
    generator_loss,
    hinge_d_loss,
    hinge_g_loss,
    make_discriminator,
    reconstruction_loss,
)
from latentdiff.config import ConfigError, load_yaml


def test_reconstruction_losses():
    x, y = torch.zeros(1, 1, 2, 2), torch.tensor([1.0, -1.0, 2.0, 0.0]).view(1, 1, 2, 2)
    assert reconstruction_loss(x, y, "l1").item() == pytest.approx(1.0)
    assert reconstruction_loss(x, y, "l2").item() == pytest.approx(1.5)
    with pytest.raises(ValueError, match="'l1' or 'l2'"):
        reconstruction_loss(x, y, "huber")


def test_hinge_losses_by_hand():
    real = torch.tensor([2.0, 0.5, -1.0])
    fake = torch.tensor([-2.0, 0.0, 1.0])
    # relu(1 − real) = [0, 0.5, 2] → 5/6; relu(1 + fake) = [0, 1, 2] → 1
    assert hinge_d_loss(real, fake).item() == pytest.approx(0.5 * (2.5 / 3 + 1.0))
    assert hinge_g_loss(fake).item() == pytest.approx(1.0 / 3)
    assert hinge_d_loss(torch.full((4,), 1.5), torch.full((4,), -1.5)).item() == 0.0


def test_adaptive_weight_by_hand():
    w = torch.tensor([1.0, 2.0], requires_grad=True)
    nll = (w * torch.tensor([3.0, 4.0])).sum()  # ∇ = (3, 4), norm 5
    g = (w * torch.tensor([0.6, 0.8])).sum()  # ∇ = (0.6, 0.8), norm 1
    lam = adaptive_weight(nll, g, w)
    assert lam.item() == pytest.approx(5.0 / (1.0 + 1e-4))
    assert not lam.requires_grad
    nll.backward()  # the graph survived
    assert adaptive_weight((w * 1e3).sum(), (w * 1e-6).sum(), w, max=10.0).item() == 10.0


class CountingDiscriminator(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.calls = 0
        self.conv = nn.Conv2d(1, 1, 3, padding=1)

    def forward(self, x):
        self.calls += 1
        return self.conv(x)


def _setup():
    torch.manual_seed(0)
    cfg = AutoencoderConfig.kl(
        f=2, latent_channels=2, in_channels=1, base_channels=8, groups=4, num_res_blocks=1
    )
    ae = Autoencoder(cfg)
    x = torch.rand(2, 1, 8, 8) * 2 - 1
    return ae, x, CountingDiscriminator()


def test_before_disc_start_the_gan_term_is_zero_and_the_discriminator_is_not_run():
    ae, x, disc = _setup()
    cfg = AutoencoderLossConfig(disc_start=100, disc_weight=0.5)
    out = ae(x, generator=torch.Generator().manual_seed(0))
    loss, logs = generator_loss(cfg, x, out, step=99, discriminator=disc, last_layer=ae.last_decoder_layer())
    assert torch.equal(loss, reconstruction_loss(x, out.reconstruction) + out.aux_loss)
    d_loss, _ = discriminator_loss(cfg, disc, x, out.reconstruction, step=99)
    assert d_loss.item() == 0.0 and not d_loss.requires_grad
    assert disc.calls == 0 and logs["disc_active"] == 0.0


def test_after_disc_start_the_gan_term_uses_the_adaptive_weight():
    ae, x, disc = _setup()
    cfg = AutoencoderLossConfig(disc_start=100, disc_weight=0.5)
    out = ae(x, generator=torch.Generator().manual_seed(0))
    last = ae.last_decoder_layer()
    loss, logs = generator_loss(cfg, x, out, step=100, discriminator=disc, last_layer=last)
    assert disc.calls == 1
    nll = reconstruction_loss(x, out.reconstruction)
    g = hinge_g_loss(disc(out.reconstruction))
    (grad_nll,) = torch.autograd.grad(nll, last, retain_graph=True)
    (grad_g,) = torch.autograd.grad(g, last, retain_graph=True)
    lam = grad_nll.norm() / (grad_g.norm() + 1e-4)
    assert logs["adaptive_weight"] == pytest.approx(lam.item(), rel=1e-5)
    torch.testing.assert_close(loss, nll + out.aux_loss + 0.5 * lam * g)
    d_loss, d_logs = discriminator_loss(cfg, disc, x, out.reconstruction, step=100)
    assert d_loss.requires_grad and d_logs["d_loss"] == pytest.approx(d_loss.item())


def test_perceptual_weight_is_not_a_setting(tmp_path):
    # there is no perceptual term (LPIPS weights are not reachable offline): a YAML that asks for one is
    # told so instead of being silently ignored
    path = tmp_path / "loss.yaml"
    path.write_text("disc_weight: 0.0\nperceptual_weight: 0.3\n")
    with pytest.raises(ConfigError, match="unknown key 'perceptual_weight'"):
        load_yaml(AutoencoderLossConfig, path)


@pytest.mark.parametrize(("size", "layers", "side"), [(28, 2, 5), (32, 3, 2), (64, 3, 6)])
@pytest.mark.parametrize("channels", [1, 3])
def test_patch_discriminator_output_shape(size, layers, side, channels):
    disc = PatchDiscriminator(channels, channels=8, n_layers=3, resolution=size)
    assert disc.n_layers == layers == fit_n_layers(size, 3)
    assert disc(torch.randn(2, channels, size, size)).shape == (2, 1, side, side)


def test_make_discriminator_follows_the_loss_config():
    disc = make_discriminator(AutoencoderLossConfig(disc_channels=4, disc_layers=2, disc_norm="group"), 1, 32)
    assert disc.n_layers == 2 and disc.main[0].out_channels == 4
    assert disc(torch.randn(1, 1, 32, 32)).shape == (1, 1, 6, 6)
    with pytest.raises(ValueError, match="too small"):
        PatchDiscriminator(1, resolution=4)
