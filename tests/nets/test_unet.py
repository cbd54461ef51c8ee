"""UNet behaviour: shapes, checkpoints, runtime options that must not change the function computed."""

import copy
import json

import pytest
import torch
from unet_configs import tiny_unet_config

from latentdiff.config import ConfigError, from_dict
from latentdiff.io.checkpoint import CheckpointError
from latentdiff.nets import UNet, UNetConfig


def _perturbed(cfg: UNetConfig, seed: int = 0) -> UNet:
    """A model whose norm affines and class embeddings are not at their initial values."""
    torch.manual_seed(seed)
    model = UNet(cfg)
    with torch.no_grad():
        for p in model.parameters():
            if p.ndim == 1:
                p.add_(0.1 * torch.randn_like(p))
    return model


@pytest.mark.parametrize(
    "overrides,shape",
    [
        ({}, (2, 4, 8, 8)),
        ({"channel_mult": (1,), "attention_levels": ()}, (2, 4, 5, 7)),
        ({"channel_mult": (1, 2, 2), "attention_levels": (0, 2), "num_res_blocks": 2}, (1, 4, 16, 8)),
        ({"in_channels": 3, "out_channels": 6, "mid_attention": False, "scale_shift": False}, (2, 3, 8, 8)),
        ({"channel_mult": (2, 4), "num_classes": 3, "num_heads": 2, "head_channels": None}, (3, 4, 12, 4)),
    ],
)
def test_output_shape(overrides, shape):
    cfg = tiny_unet_config(**overrides)
    with torch.no_grad():
        out = UNet(cfg).eval()(torch.randn(shape), 3)
    assert out.shape == (shape[0], cfg.out_channels, *shape[2:])
    assert out.is_contiguous()


def test_timestep_forms_agree():
    model = _perturbed(tiny_unet_config()).eval()
    x = torch.randn(2, 4, 8, 8)
    with torch.no_grad():
        ref = model(x, torch.tensor([7.0, 7.0]))
        for t in (7, 7.0, torch.tensor(7), torch.tensor([7, 7])):
            torch.testing.assert_close(model(x, t), ref, rtol=0, atol=0)
        # per-sample timesteps are per-sample: row 1 equals a batch-of-one call at its own t
        mixed = model(x, torch.tensor([7.0, 250.5]))
        torch.testing.assert_close(mixed[1:], model(x[1:], 250.5), rtol=0, atol=1e-5)
        assert not torch.allclose(mixed[1], ref[1])


def test_null_class_label_equals_none_and_labels_matter():
    model = _perturbed(tiny_unet_config(num_classes=3)).eval()
    assert model.null_class == 3
    x = torch.randn(2, 4, 8, 8)
    with torch.no_grad():
        uncond = model(x, 10, cond=None)
        null = model(x, 10, cond={"class": torch.tensor([3, 3])})
        torch.testing.assert_close(null, uncond, rtol=0, atol=0)
        torch.testing.assert_close(model(x, 10, cond={"class": 3}), uncond, rtol=0, atol=0)
        assert not torch.allclose(model(x, 10, cond={"class": torch.tensor([0, 1])}), uncond)
    with pytest.raises(ValueError, match="0..3"):
        model(x, 10, cond={"class": torch.tensor([0, 4])})


def test_unconditional_model_rejects_labels_and_bad_inputs():
    model = UNet(tiny_unet_config(channel_mult=(1, 2, 2))).eval()
    with pytest.raises(ValueError, match="unconditional"):
        model(torch.randn(1, 4, 8, 8), 1, cond={"class": torch.tensor([0])})
    with pytest.raises(ValueError, match=r"multiples of 4, got \(1, 4, 6, 8\)"):
        model(torch.randn(1, 4, 6, 8), 1)
    with pytest.raises(ValueError, match=r"shape \(2,\)"):
        model(torch.randn(2, 4, 8, 8), torch.tensor([1, 2, 3]))


def test_save_pretrained_round_trip_is_bit_exact(tmp_path):
    model = _perturbed(tiny_unet_config(num_classes=2))
    ema = {k: v + 1.0 for k, v in model.state_dict().items()}
    model.save_pretrained(tmp_path / "unet", ema_state=ema)
    config = json.loads((tmp_path / "unet" / "config.json").read_text())
    assert config["format"] == "latentdiff.unet" and config["version"] == 1

    loaded = UNet.from_pretrained(tmp_path / "unet", weights="model")
    assert loaded.config == model.config and not loaded.training
    for k, v in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[k], v), k
    x = torch.randn(2, 4, 8, 8)
    with torch.no_grad():
        cond = {"class": torch.tensor([0, 2])}
        assert torch.equal(loaded(x, 5.5, cond), model.eval()(x, 5.5, cond))
    auto = UNet.from_pretrained(tmp_path / "unet")  # "auto" prefers EMA weights
    assert all(torch.equal(auto.state_dict()[k], v) for k, v in ema.items())


def test_from_pretrained_errors_name_the_problem(tmp_path):
    model = UNet(tiny_unet_config())
    model.save_pretrained(tmp_path / "a")
    cfg_path = tmp_path / "a" / "config.json"
    config = json.loads(cfg_path.read_text())
    cfg_path.write_text(json.dumps({**config, "format": "latentdiff.autoencoder"}))
    with pytest.raises(CheckpointError, match="format"):
        UNet.from_pretrained(tmp_path / "a")
    cfg_path.write_text(json.dumps({**config, "num_res_blocks": 2}))
    with pytest.raises(CheckpointError, match="missing"):
        UNet.from_pretrained(tmp_path / "a")
    cfg_path.write_text(json.dumps({**config, "atention_levels": [1]}))
    with pytest.raises(ConfigError, match="attention_levels"):
        UNet.from_pretrained(tmp_path / "a")


def test_config_validation_names_the_field():
    with pytest.raises(ConfigError, match="attention_levels"):
        from_dict(UNetConfig, {"channel_mult": [1, 2], "attention_levels": [2]})
    with pytest.raises(ConfigError, match="head_channels"):
        from_dict(
            UNetConfig,
            {
                "base_channels": 32,
                "channel_mult": [1, 2],
                "attention_levels": [1],
                "head_channels": 48,
                "groups": 8,
            },
        )
    with pytest.raises(ConfigError, match="groups"):
        from_dict(UNetConfig, {"base_channels": 24, "groups": 32})


def test_gradient_checkpointing_gives_same_output_and_gradients():
    cfg = tiny_unet_config(num_classes=2, dropout=0.2)
    plain = _perturbed(cfg).train()
    ckpt = UNet(tiny_unet_config(num_classes=2, dropout=0.2, gradient_checkpointing=True)).train()
    ckpt.load_state_dict(plain.state_dict())
    x = torch.randn(2, 4, 8, 8)
    t = torch.tensor([3.0, 800.0])
    outs, grads = [], []
    for model in (plain, ckpt):
        torch.manual_seed(123)  # same dropout masks: checkpointing replays the RNG state
        out = model(x, t, {"class": torch.tensor([1, 2])})
        out.square().mean().backward()
        outs.append(out.detach())
        grads.append({k: p.grad.clone() for k, p in model.named_parameters()})
    torch.testing.assert_close(outs[0], outs[1], rtol=0, atol=0)
    for k, g in grads[0].items():
        torch.testing.assert_close(grads[1][k], g, rtol=1e-5, atol=1e-6, msg=k)


def test_channels_last_gives_same_output_and_gradients():
    base = _perturbed(tiny_unet_config(num_classes=2, channels_last=False))
    fast = UNet(tiny_unet_config(num_classes=2, channels_last=True))
    fast.load_state_dict(base.state_dict())
    assert fast.conv_in.weight.is_contiguous(memory_format=torch.channels_last)
    x = torch.randn(2, 4, 8, 8)
    with torch.no_grad():
        torch.testing.assert_close(fast.eval()(x, 9.5), base.eval()(x, 9.5), rtol=0, atol=1e-5)
    for model in (base.train(), fast.train()):
        model(x, 9.5, {"class": torch.tensor([0, 1])}).square().mean().backward()
    for (k, p), q in zip(base.named_parameters(), fast.parameters(), strict=True):
        torch.testing.assert_close(q.grad, p.grad, rtol=1e-4, atol=1e-5, msg=k)


def test_bf16_weights_take_and_return_float32_close_to_fp32():
    model = _perturbed(tiny_unet_config(num_classes=2)).eval()
    half = copy.deepcopy(model).to(torch.bfloat16)
    x = torch.randn(4, 4, 8, 8)
    with torch.no_grad():
        ref = model(x, torch.tensor([1.0, 10.0, 100.0, 900.0]))
        out = half(x, torch.tensor([1.0, 10.0, 100.0, 900.0]))
    assert out.dtype == torch.float32
    # bf16 keeps 8 mantissa bits: a relative error of a few 2^-8 through the network
    assert (out - ref).abs().max() <= 0.05 * ref.abs().max()


def test_autocast_bf16_close_to_fp32():
    model = _perturbed(tiny_unet_config()).eval()
    x = torch.randn(4, 4, 8, 8)
    with torch.no_grad():
        ref = model(x, 50.0)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = model(x, 50.0)
    assert out.dtype == torch.float32
    assert (out - ref).abs().max() <= 0.05 * ref.abs().max()
