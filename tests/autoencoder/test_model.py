"""Autoencoder: shapes for every kind / f / channel count, latent scaling, VQ decoding, hash, files."""

import json
import math

import pytest
import torch

from latentdiff.autoencoder import Autoencoder, AutoencoderConfig, AutoencoderLossConfig, generator_loss
from latentdiff.io.checkpoint import CheckpointError


def tiny(kind: str, f: int = 4, in_channels: int = 3, **kw) -> AutoencoderConfig:
    if kind == "identity":
        return AutoencoderConfig.identity(in_channels)
    preset = AutoencoderConfig.kl if kind == "kl" else AutoencoderConfig.vq
    kw = {"base_channels": 8, "groups": 4, "num_res_blocks": 1, **kw}
    if kind == "vq":
        kw.setdefault("codebook_size", 16)
    return preset(f=f, latent_channels=3, in_channels=in_channels, **kw)


def build(cfg: AutoencoderConfig, seed: int = 0) -> Autoencoder:
    torch.manual_seed(seed)
    return Autoencoder(cfg)


CASES = [(k, f, c) for k in ("kl", "vq") for f in (1, 2, 4, 8) for c in (1, 3)] + [
    ("identity", 1, 1),
    ("identity", 1, 3),
]


@pytest.mark.parametrize(("kind", "f", "channels"), CASES)
def test_shapes_round_trip(kind, f, channels):
    ae = build(tiny(kind, f, channels))
    x = torch.rand(2, channels, 16, 16) * 2 - 1
    h = 16 // f
    assert ae.downsample_factor == f
    post = ae.encode(x)
    assert post.mean.shape == post.std.shape == (2, ae.latent_channels, h, h)
    assert post.sample(torch.Generator().manual_seed(0)).shape == (2, ae.latent_channels, h, h)
    assert ae.decode(post.mean).shape == x.shape
    out = ae(x, generator=torch.Generator().manual_seed(0))
    assert out.reconstruction.shape == x.shape
    assert out.aux_loss.shape == ()
    if kind == "vq":
        assert post.indices.shape == (2, h, h) and post.indices.dtype == torch.long
        assert not post.std.any()
    if kind == "identity":
        assert torch.equal(out.reconstruction, x) and torch.equal(post.mean, x)
        assert not list(ae.parameters())
    assert ae.compression_ratio(x.shape) == channels * f * f / ae.latent_channels


@pytest.mark.parametrize("kind", ["kl", "vq"])
def test_channels_last_inside_ordinary_tensors_outside(kind):
    # the networks run channels-last (and our channels-last GroupNorm) but hand out plain NCHW tensors, and
    # give what the same weights compute on contiguous tensors through PyTorch's own GroupNorm
    ae = build(tiny(kind, 4, 3)).eval()
    assert ae.encoder.conv_in.weight.is_contiguous(memory_format=torch.channels_last)
    x = torch.rand(4, 3, 16, 16) * 2 - 1
    with torch.no_grad():
        post = ae.encode(x)
        rec = ae.decode(post.mean)
        assert ae.encoder(x).is_contiguous() and rec.is_contiguous()
        plain = build(tiny(kind, 4, 3)).eval()
        plain.encoder.forward = _contiguous_forward(plain.encoder)
        plain.decoder.forward = _contiguous_forward(plain.decoder)
        torch.testing.assert_close(plain.encode(x).mean, post.mean, rtol=0, atol=1e-5)
        torch.testing.assert_close(plain.decode(post.mean), rec, rtol=0, atol=1e-5)


def _contiguous_forward(net):
    """The network's layers applied in NCHW (torch.nn.GroupNorm via nets.group_norm's fallback)."""
    net.to(memory_format=torch.contiguous_format)
    blocks = net.down_blocks if hasattr(net, "down_blocks") else net.up_blocks

    def forward(x):
        h = net.conv_in(x)
        if hasattr(net, "up_blocks"):
            h = net.mid_block(h)
        for block in blocks:
            h = block(h)
        if hasattr(net, "down_blocks"):
            h = net.mid_block(h)
        return net.conv_out(torch.nn.functional.silu(net.conv_norm_out(h)))

    return forward


def test_wrong_input_shape_names_the_expectation():
    ae = build(tiny("kl", 4, 3))
    with pytest.raises(ValueError, match=r"\(N, 3, H, W\).*f=4"):
        ae.encode(torch.zeros(1, 3, 18, 18))
    with pytest.raises(ValueError, match=r"\(N, 3, h, w\)"):
        ae.decode(torch.zeros(1, 4, 4, 4))


def test_kl_forward_uses_kl_weight_and_posterior_sample():
    ae = build(tiny("kl", 2, 1, kl_weight=0.01)).eval()
    x = torch.rand(3, 1, 8, 8) * 2 - 1
    out = ae(x, generator=torch.Generator().manual_seed(3))
    torch.testing.assert_close(out.aux_loss, 0.01 / (1 * 8 * 8) * out.posterior.kl().mean())
    z = out.posterior.sample(torch.Generator().manual_seed(3))
    torch.testing.assert_close(out.reconstruction, ae.decode(z))
    mode = ae(x, sample_posterior=False).reconstruction
    torch.testing.assert_close(mode, ae.decode(out.posterior.mean))


def test_kl_term_of_a_known_gaussian_posterior_is_the_closed_form_over_d():
    # quant_conv with zero weights puts a constant posterior N(mu, sigma²) on every latent element:
    # KL per sample = k/2·(mu² + sigma² − 1 − ln sigma²) over the k = 3·4·4 latent elements, and the term
    # added to the per-element-mean reconstruction is kl_weight·KL/d with d = 3·16·16 image elements
    ae = build(tiny("kl", 4, 3, kl_weight=1e-2)).eval()
    mu, logvar = 0.5, math.log(0.25)
    with torch.no_grad():
        ae.quant_conv.weight.zero_()
        ae.quant_conv.bias.copy_(torch.tensor([mu] * 3 + [logvar] * 3))
    out = ae(torch.rand(2, 3, 16, 16) * 2 - 1, generator=torch.Generator().manual_seed(0))
    kl = 3 * 4 * 4 / 2 * (mu**2 + math.exp(logvar) - 1 - logvar)
    assert out.logs["kl"] == pytest.approx(kl, rel=1e-6)
    assert out.aux_loss.item() == pytest.approx(1e-2 * kl / (3 * 16 * 16), rel=1e-6)


@pytest.mark.parametrize("recon_kind", ["l1", "l2"])
def test_kl_to_reconstruction_ratio_is_ldms_ratio_of_per_sample_sums(recon_kind):
    # LDM (Rombach et al. 2022, appendix G) weighs per-sample sums: Σ_pixels rec + kl_weight·Σ_latent KL.
    # Ours divides the whole objective by d, so the two terms stand in LDM's ratio for any image size
    ae = build(tiny("kl", 2, 1, kl_weight=1e-6)).eval()
    x = torch.rand(3, 1, 12, 8) * 2 - 1
    out = ae(x, generator=torch.Generator().manual_seed(5))
    _, logs = generator_loss(AutoencoderLossConfig(recon_kind=recon_kind, disc_weight=0.0), x, out, step=0)
    err = out.reconstruction.double() - x.double()
    rec_sums = (err.abs() if recon_kind == "l1" else err.square()).flatten(1).sum(1)
    q = torch.distributions.Normal(out.posterior.mean.double(), out.posterior.std.double())
    prior = torch.distributions.Normal(0.0, 1.0)
    kl_sums = torch.distributions.kl_divergence(q, prior).flatten(1).sum(1)
    ldm_ratio = (1e-6 * kl_sums.mean() / rec_sums.mean()).item()
    assert logs["aux_loss"] / logs["rec_loss"] == pytest.approx(ldm_ratio, rel=1e-5)


def test_vq_decode_snaps_to_the_nearest_codes():
    ae = build(tiny("vq", 4, 3)).eval()
    post = ae.encode(torch.rand(2, 3, 16, 16) * 2 - 1)
    noisy = post.mean + 1e-4 * torch.randn_like(post.mean)
    assert torch.equal(ae.decode(noisy), ae.decode(post.mean))
    assert torch.equal(ae.decode_indices(post.indices), ae.decode(post.mean))


def test_vq_forward_loss_is_the_quantizer_loss():
    ae = build(tiny("vq", 2, 1, ema_codebook=False, commitment_beta=0.5))
    x = torch.rand(2, 1, 8, 8) * 2 - 1
    out = ae(x)
    z_e = ae.quant_conv(ae.encoder(x))
    z_q = ae.indices_to_latent(out.posterior.indices)
    expected = (1 + 0.5) * torch.mean((z_e - z_q) ** 2)
    torch.testing.assert_close(out.aux_loss, expected)
    assert 0 < out.logs["codebook_usage"] <= 1


@pytest.mark.parametrize("per_channel", [False, True])
def test_to_latent_and_from_latent_are_inverse(per_channel):
    scale, shift = ([0.5, 2.0, 4.0], [0.1, -0.2, 0.3]) if per_channel else (0.25, 0.5)
    ae = build(tiny("kl", 2, 3, scale_factor=scale, shift_factor=shift))
    z = torch.randn(2, 3, 4, 4)
    scaled = ae.to_latent(z)
    for c in range(3):
        s = scale[c] if per_channel else scale
        b = shift[c] if per_channel else shift
        torch.testing.assert_close(scaled[:, c], (z[:, c] - b) * s)
    torch.testing.assert_close(ae.from_latent(scaled), z)


def test_last_decoder_layer_is_the_output_conv():
    ae = build(tiny("kl", 2, 3))
    assert ae.last_decoder_layer() is ae.decoder.conv_out.weight
    with pytest.raises(ValueError, match="identity"):
        build(tiny("identity")).last_decoder_layer()


@pytest.mark.parametrize("kind", ["kl", "vq", "identity"])
def test_save_and_load_are_bit_exact_and_hash_stable(kind, tmp_path):
    ae = build(tiny(kind, 2, 3))
    if kind == "vq":
        ae(torch.rand(2, 3, 8, 8))  # move the EMA statistics away from their init
    ae.eval()
    ae.save_pretrained(tmp_path / "ae")
    config = json.loads((tmp_path / "ae" / "config.json").read_text())
    assert config["format"] == "latentdiff.autoencoder" and config["version"] == 1
    back = Autoencoder.from_pretrained(tmp_path / "ae").eval()
    assert back.config == ae.config
    assert back.state_dict().keys() == ae.state_dict().keys()
    for key, value in ae.state_dict().items():
        assert torch.equal(back.state_dict()[key], value), key
    assert back.hash() == ae.hash()
    x = torch.rand(2, 3, 8, 8) * 2 - 1
    assert torch.equal(back.decode(back.encode(x).mean), ae.decode(ae.encode(x).mean))


def test_from_pretrained_prefers_ema_weights(tmp_path):
    ae = build(tiny("kl", 2, 3))
    ema = {k: v + 1 for k, v in ae.state_dict().items()}
    ae.save_pretrained(tmp_path / "ae", ema_state=ema)
    loaded = Autoencoder.from_pretrained(tmp_path / "ae")
    assert torch.equal(loaded.decoder.conv_out.bias, ema["decoder.conv_out.bias"])
    plain = Autoencoder.from_pretrained(tmp_path / "ae", weights="model")
    assert torch.equal(plain.decoder.conv_out.bias, ae.decoder.conv_out.bias)


def test_hash_changes_with_a_weight_or_the_config():
    ae = build(tiny("kl", 2, 3))
    reference = ae.hash()
    assert build(tiny("kl", 2, 3)).hash() == reference
    with torch.no_grad():
        ae.decoder.conv_out.weight[0, 0, 0, 0] += 1e-6
    assert ae.hash() != reference
    other = build(tiny("kl", 2, 3, scale_factor=0.5))
    assert other.hash() != reference


def test_loading_a_mismatched_folder_names_the_problem(tmp_path):
    build(tiny("kl", 2, 3)).save_pretrained(tmp_path / "ae")
    config = json.loads((tmp_path / "ae" / "config.json").read_text())
    config["latent_channels"] = 5
    (tmp_path / "ae" / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match="shape mismatch.*quant_conv"):
        Autoencoder.from_pretrained(tmp_path / "ae")
    config["format"] = "latentdiff.unet"
    (tmp_path / "ae" / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match="'format'"):
        Autoencoder.from_pretrained(tmp_path / "ae")


def test_vq_posterior_mean_holds_the_exact_codes():
    ae = build(tiny("vq", 2, 3)).eval()
    with torch.no_grad():
        post = ae.encode(torch.rand(2, 3, 8, 8) * 2 - 1)
    assert torch.equal(post.mean, ae.indices_to_latent(post.indices))


def test_kl_without_double_z_is_deterministic():
    ae = build(tiny("kl", 2, 3, double_z=False))
    x = torch.rand(2, 3, 8, 8) * 2 - 1
    out = ae(x, generator=torch.Generator().manual_seed(0))
    assert not out.posterior.std.any() and out.aux_loss.item() == 0.0
    assert ae.encoder.conv_out.out_channels == 3
    torch.testing.assert_close(out.reconstruction, ae.decode(ae.encode(x).mean))
