"""Stage 2's real `DiffusionTask`: a fresh posterior sample each step, per-key conditioning dropout, the
configured preconditioning and weighting reaching the loss (checked against Karras et al. 2022, Table 1,
written out here), the VQ path, and a tiny model trained through the task that samples its latent back."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from torch import nn

from latentdiff.autoencoder.config import AutoencoderConfig
from latentdiff.autoencoder.model import Autoencoder
from latentdiff.diffusion.config import DiffusionConfig
from latentdiff.diffusion.guidance import Denoiser
from latentdiff.diffusion.samplers import get_sampler
from latentdiff.diffusion.schedule import make_schedule
from latentdiff.nets.unet import UNet, UNetConfig
from latentdiff.training.batching import BatchRandom
from latentdiff.training.diffusion_task import DiffusionTask

C, H = 3, 4  # the identity autoencoder takes 1 or 3 channels


class StubCache:
    """What the task reads from a latent cache: rows of (mean, std | None, conditioning)."""

    def __init__(self, first: torch.Tensor, std: torch.Tensor | None, labels: torch.Tensor, kind: str = "kl"):
        self.first, self.std, self.labels, self.kind = first, std, labels, kind
        self.path = Path("stub")

    def __len__(self) -> int:
        return len(self.first)

    def get_batch(self, indices):
        idx = torch.as_tensor(indices)
        std = None if self.std is None else self.std[idx]
        return self.first[idx], std, {"class": self.labels[idx]}


class Recorder(nn.Module):
    """A backbone that outputs zeros and records what the task feeds it."""

    cond_keys = ("class",)

    def __init__(self) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.zeros(()))
        self.calls: list[tuple[torch.Tensor, torch.Tensor, dict]] = []

    def null_cond(self, cond):
        return {"class": torch.full_like(cond["class"], 10)}

    def forward(self, x, c_noise, cond):
        self.calls.append((x.detach().clone(), torch.as_tensor(c_noise).detach().clone(), dict(cond)))
        return torch.zeros_like(x) + 0 * self.w


def kl_autoencoder(scale: float = 0.7, shift: float = 0.2) -> Autoencoder:
    ae = Autoencoder(AutoencoderConfig(kind="identity", in_channels=C, latent_channels=C))
    ae.config.scale_factor, ae.config.shift_factor = scale, shift
    return ae


def make_task(diffusion: DiffusionConfig, n: int = 64, std: float | None = 0.5, dropout=None, backbone=None):
    g = torch.Generator().manual_seed(0)
    mean = torch.randn(n, C, H, H, generator=g)
    std_t = None if std is None else torch.full_like(mean, std)
    cache = StubCache(mean, std_t, torch.arange(n) % 10)
    backbone = backbone if backbone is not None else Recorder()
    task = DiffusionTask(
        backbone, kl_autoencoder(), cache, make_schedule(diffusion), diffusion, dropout or {"class": 0.0}
    )
    return task, cache


def rng(step: int, n: int, seed: int = 3) -> BatchRandom:
    return BatchRandom(seed, step, torch.arange(n), n)


def test_a_fresh_posterior_sample_every_step():
    task, cache = make_task(DiffusionConfig())
    batch = task.get_batch(torch.arange(8), torch.device("cpu"))
    z_step0, z_step1 = task.clean_latents(batch, rng(0, 8)), task.clean_latents(batch, rng(1, 8))
    assert not torch.allclose(z_step0, z_step1)
    eps = rng(0, 8).randn(C, H, H)  # the first draw of step 0: z0 = (mean + std·ε − shift)·scale
    torch.testing.assert_close(z_step0, (cache.first[:8] + 0.5 * eps - 0.2) * 0.7, rtol=0, atol=1e-6)
    task, cache = make_task(DiffusionConfig(), std=None)  # no std stored: the mean itself
    batch = task.get_batch(torch.arange(8), torch.device("cpu"))
    torch.testing.assert_close(task.clean_latents(batch, rng(0, 8)), (cache.first[:8] - 0.2) * 0.7)


@pytest.mark.parametrize("rate", [0.0, 0.3, 0.9])
def test_each_key_is_dropped_at_its_own_rate(rate):
    n = 4000
    task, _ = make_task(DiffusionConfig(), n=n, dropout={"class": rate})
    cond = {"class": torch.arange(n) % 10}
    dropped = task.dropped_condition(cond, rng(5, n))["class"]
    null = dropped == 10
    assert torch.equal(dropped[~null], cond["class"][~null])  # kept rows keep their label
    assert null.float().mean().item() == pytest.approx(rate, abs=0.03)


def test_a_backbone_key_without_a_dropout_rate_is_refused():
    with pytest.raises(ValueError, match=r"cond_dropout has no rate for the conditioning \['class'\]"):
        make_task(DiffusionConfig(), dropout={"text": 0.1})


def _loss_and_inputs(task, n=32, step=0):
    batch = task.get_batch(torch.arange(n), torch.device("cpu"))
    out = task.phase_loss("model", {"model": task.model}, batch, {}, rng(step, n), step)
    x_in, c_noise, cond = task.model.calls[-1]
    z0 = task.clean_latents(batch, rng(step, n))  # the same first draw as inside phase_loss
    return out.loss, x_in, c_noise, cond, z0


def test_vp_eps_min_snr_reaches_the_loss():
    """VP-ε: network input x_t = α z0 + s ε at t, target ε, weight min(SNR, γ)/SNR."""
    cfg = DiffusionConfig(prediction="eps", loss_weighting="min_snr", min_snr_gamma=5.0)
    task, _ = make_task(cfg)
    loss, x_t, t, cond, z0 = _loss_and_inputs(task)
    assert t.dtype == torch.int64 and torch.equal(cond["class"], torch.arange(32) % 10)
    ab = task.schedule.alphas_cumprod[t].reshape(-1, 1, 1, 1)
    eps = (x_t.double() - ab.sqrt() * z0.double()) / (1 - ab).sqrt()
    snr = (ab / (1 - ab)).flatten()
    weight = torch.clamp(5.0 / snr, max=1.0)
    expected = (weight * eps.square().flatten(1).mean(1)).mean()  # the network outputs 0
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)


@pytest.mark.parametrize("sigma_data", [1.0, 0.5])
def test_edm_preconditioning_noise_and_weighting_reach_the_loss(sigma_data):
    """EDM: c_noise = ¼ ln σ with ln σ ~ N(−1.2, 1.2²); input c_in x_σ; λ(σ) c_out² ‖F − F*‖² = ‖F − F*‖²
    with F* = (z0 − c_skip x_σ)/c_out (Karras et al. 2022, Table 1 and eq. 8)."""
    cfg = DiffusionConfig(
        prediction="edm", noise_sampling="log_normal", loss_weighting="edm", sigma_data=sigma_data
    )
    task, _ = make_task(cfg, n=256)
    loss, x_in, c_noise, _, z0 = _loss_and_inputs(task, n=256)
    sigma = (4 * c_noise.double()).exp()
    assert sigma.log().mean().item() == pytest.approx(-1.2, abs=0.25)
    d = sigma_data
    s = sigma.reshape(-1, 1, 1, 1)
    c_in, c_skip, c_out = 1 / (s**2 + d**2).sqrt(), d**2 / (s**2 + d**2), s * d / (s**2 + d**2).sqrt()
    x_sigma = x_in.double() / c_in
    noise = (x_sigma - z0.double()) / s
    assert abs(noise.std().item() - 1) < 0.05  # x_σ = z0 + σ ε with ε ~ N(0, I)
    f_target = (z0.double() - c_skip * x_sigma) / c_out
    lam = (s**2 + d**2) / (s * d) ** 2
    expected = (lam * c_out**2 * f_target.square()).flatten(1).mean(1).mean()
    assert loss.item() == pytest.approx(expected.item(), rel=1e-4)


def test_vq_path_trains_on_looked_up_codes():
    ae = Autoencoder(
        AutoencoderConfig(
            kind="vq", in_channels=1, base_channels=8, channel_mult=(1, 2), num_res_blocks=1,
            latent_channels=C, codebook_size=16, mid_attention=False, groups=4,
        )
    )
    ae.config.scale_factor = 0.5
    indices = torch.randint(0, 16, (8, H, H), generator=torch.Generator().manual_seed(0))
    cache = StubCache(indices, None, torch.arange(8) % 10, kind="vq")
    cfg = DiffusionConfig()
    task = DiffusionTask(Recorder(), ae, cache, make_schedule(cfg), cfg, {"class": 0.1})
    batch = task.get_batch(torch.arange(8), torch.device("cpu"))
    z0 = task.clean_latents(batch, rng(0, 8))
    codebook = ae.quantize.codebook.detach()
    expected = codebook[indices].permute(0, 3, 1, 2) * 0.5
    torch.testing.assert_close(z0, expected)
    loss = task.phase_loss("model", {"model": task.model}, batch, {}, rng(0, 8), 0).loss
    assert torch.isfinite(loss)


def tiny_unet() -> UNet:
    torch.manual_seed(0)
    return UNet(
        UNetConfig(
            in_channels=C, out_channels=C, sample_size=H, base_channels=32, channel_mult=(1, 2),
            num_res_blocks=1, attention_levels=(), mid_attention=False, groups=8, num_classes=10,
        )
    )


@pytest.mark.parametrize(
    "cfg",
    [
        DiffusionConfig(prediction="v"),
        DiffusionConfig(prediction="edm", noise_sampling="log_normal", loss_weighting="edm"),
    ],
    ids=["vp-v", "edm"],
)
def test_model_trained_through_the_task_samples_its_latent_back(cfg):
    """A U-Net trained by the task on one latent z* (fresh noise levels each step) makes every sampler end
    at z* from any noise: the task's objective, the preconditioning and the samplers agree."""
    g = torch.Generator().manual_seed(1)
    z_star = torch.sign(torch.randn(1, C, H, H, generator=g))
    n = 32
    cache = StubCache(z_star.expand(n, -1, -1, -1).clone(), None, torch.full((n,), 3))
    unet = tiny_unet()
    task = DiffusionTask(unet, kl_autoencoder(1.0, 0.0), cache, make_schedule(cfg), cfg, {"class": 0.0})
    opt = torch.optim.AdamW(unet.parameters(), lr=2e-3)
    batch = task.get_batch(torch.arange(n), torch.device("cpu"))
    for step in range(400):
        loss = task.phase_loss("model", {"model": unet}, batch, {}, rng(step, n), step).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
    unet.eval()
    x_T = torch.randn(4, C, H, H, generator=torch.Generator().manual_seed(7))
    cond = {"class": torch.full((4,), 3)}
    with torch.no_grad():
        for name in ("ddim", "dpmpp_2m", "heun"):
            den = Denoiser(unet, task.schedule, task.precond, cond)
            out = get_sampler(name)(den, x_T, task.schedule, 20)
            err = (out - z_star).abs().mean()
            assert err < 0.15, (name, float(err))
    assert math.isfinite(loss.item())
