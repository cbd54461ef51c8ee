"""The DiT backbone: diffusers' DiTTransformer2DModel is the oracle; adaLN-Zero, batch independence,
checkpoints, input checks, bf16 and gradient checkpointing are checked as properties."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch
from suite_device import oracle_tolerance

from latentdiff.config import ConfigError, from_dict
from latentdiff.io.checkpoint import CheckpointError, load_tensors, save_tensors
from latentdiff.nets.backbones import backbone_name, load_backbone
from latentdiff.nets.dit import DIT_PRESETS, DiT, DiTConfig
from latentdiff.nets.dit_diffusers_format import dit_to_diffusers, load_diffusers_dit, save_diffusers_dit
from latentdiff.nets.unet_diffusers_format import DiffusersFormatError

ATOL = 1e-5
INT_T = torch.tensor([0, 1, 500, 999])
FRAC_T = torch.tensor([0.5, 12.25, -1.3, 3.7])  # fractional, and negative like ¼ ln σ under EDM


def tiny(**overrides) -> DiTConfig:
    return DiTConfig.preset("tiny", **{"sample_size": 8, **overrides})


def fill_random(model: torch.nn.Module, seed: int) -> None:
    """Every parameter (the zero-initialised adaLN and output layers included) random, scaled by
    1/sqrt(fan-in) so activations stay O(1) and the 1e-5 bar means something."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g) / p.shape[-1] ** 0.5)


def randomized(cfg: DiTConfig, seed: int = 0) -> DiT:
    model = DiT(cfg).eval()
    fill_random(model, seed)
    return model


def latents(batch: int = 4, size: int = 8, seed: int = 1) -> torch.Tensor:
    return torch.randn(batch, 4, size, size, generator=torch.Generator().manual_seed(seed))


def _on(device: torch.device, cond: dict[str, torch.Tensor] | None) -> dict[str, torch.Tensor] | None:
    return {k: v.to(device) for k, v in cond.items()} if cond else cond


def class_cond(num_classes: int) -> dict[str, torch.Tensor] | None:
    """Labels 0, 1, ... up to the null class `num_classes`; None for an unconditional DiT."""
    return {"class": torch.arange(4).clamp(max=num_classes)} if num_classes else None


# ------------------------------------------------------------------------------------------ diffusers oracle


@pytest.mark.parametrize("num_classes", [3, 0], ids=["class-cond", "uncond"])
def test_exported_dit_matches_diffusers(tmp_path, num_classes, device):
    diffusers = pytest.importorskip("diffusers")
    ours = randomized(tiny(num_classes=num_classes))
    save_diffusers_dit(ours, tmp_path / "dit")
    theirs = diffusers.DiTTransformer2DModel.from_pretrained(tmp_path / "dit").eval()
    _, state = dit_to_diffusers(ours)
    assert set(state) == set(theirs.state_dict())
    ours.to(device)
    theirs.to(device)
    cond = _on(device, class_cond(num_classes))
    labels = cond["class"] if cond else torch.zeros(4, dtype=torch.long, device=device)  # row 0 = null class
    with torch.no_grad():
        for size in (8, 12):  # the training grid, and a larger one (positions spread over its range)
            x = latents(size=size).to(device)
            for t in (INT_T.to(device), FRAC_T.to(device)):
                out = ours(x, t, cond)
                assert out.abs().max() > 0.1
                expected = theirs(x, timestep=t, class_labels=labels).sample
                torch.testing.assert_close(out, expected, **oracle_tolerance(device, atol=ATOL))


@pytest.mark.parametrize("num_classes", [3, 0], ids=["class-cond", "uncond"])
def test_diffusers_folder_imports_back_identically(tmp_path, num_classes):
    ours = randomized(tiny(num_classes=num_classes))
    save_diffusers_dit(ours, tmp_path / "dit")
    back = load_diffusers_dit(tmp_path / "dit")
    assert back.config == ours.config
    x, cond = latents(), class_cond(num_classes)
    with torch.no_grad():
        for t in (INT_T, FRAC_T):
            assert torch.equal(back(x, t, cond), ours(x, t, cond))


@pytest.mark.parametrize("num_classes", [3, 0], ids=["class-cond", "uncond"])
def test_folder_written_by_diffusers_imports(tmp_path, num_classes, device):
    """A folder diffusers itself writes (its own layout, a non-zero null row for the unconditional model)
    loads into a DiT that computes what diffusers computes."""
    diffusers = pytest.importorskip("diffusers")
    theirs = diffusers.DiTTransformer2DModel(
        num_attention_heads=2, attention_head_dim=32, in_channels=4, num_layers=2, sample_size=8,
        num_embeds_ada_norm=num_classes, norm_eps=1e-6,
    ).eval()  # fmt: skip
    fill_random(theirs, seed=2)
    with torch.no_grad():
        shared = theirs.transformer_blocks[0].norm1.emb.state_dict()
        for block in theirs.transformer_blocks[1:]:
            block.norm1.emb.load_state_dict(shared)
    theirs.save_pretrained(tmp_path / "dit")
    ours = load_diffusers_dit(tmp_path / "dit")
    assert ours.config == tiny(num_classes=num_classes)
    ours.to(device)
    theirs.to(device)
    x, cond, t = latents().to(device), _on(device, class_cond(num_classes)), FRAC_T.to(device)
    labels = cond["class"] if cond else torch.zeros(4, dtype=torch.long, device=device)
    with torch.no_grad():
        expected = theirs(x, timestep=t, class_labels=labels).sample
        torch.testing.assert_close(ours(x, t, cond), expected, **oracle_tolerance(device, atol=ATOL))


def test_import_refuses_unshared_embedders(tmp_path):
    save_diffusers_dit(randomized(tiny(num_classes=3)), tmp_path / "dit")
    weights = tmp_path / "dit" / "diffusion_pytorch_model.safetensors"
    state = load_tensors(weights)
    state["transformer_blocks.1.norm1.emb.timestep_embedder.linear_2.bias"] += 1.0
    save_tensors(state, weights)
    with pytest.raises(DiffusersFormatError, match=r"transformer_blocks\.1\.norm1\.emb\.timestep_embedder"):
        load_diffusers_dit(tmp_path / "dit")


@pytest.mark.parametrize(
    ("field", "value", "match"),
    [
        ("out_channels", 8, "learn_sigma"),
        ("norm_eps", 1e-5, "norm_eps"),
        ("activation_fn", "geglu", "activation_fn"),
        ("_class_name", "Transformer2DModel", "_class_name"),
        ("num_embeds_ada_norm", None, "num_embeds_ada_norm"),
        ("sample_size", 7, "sample_size"),
    ],
)
def test_import_refuses_what_the_dit_cannot_express(tmp_path, field, value, match):
    save_diffusers_dit(DiT(tiny()), tmp_path / "dit")
    config = json.loads((tmp_path / "dit" / "config.json").read_text())
    (tmp_path / "dit" / "config.json").write_text(json.dumps({**config, field: value}))
    with pytest.raises(DiffusersFormatError, match=match):
        load_diffusers_dit(tmp_path / "dit")


@pytest.mark.parametrize(("field", "value"), [("mlp_ratio", 2.0), ("frequency_embedding_size", 128)])
def test_export_refuses_what_diffusers_cannot_express(field, value):
    with pytest.raises(DiffusersFormatError, match=field):
        dit_to_diffusers(DiT(tiny(**{field: value})))


# ----------------------------------------------------------------------------------------------- properties


def test_fresh_dit_outputs_exactly_zero():
    """adaLN-Zero (sec. 3.2): zero-initialised modulation and output layer make every block the identity and
    the output zero, whatever the input, noise level and label."""
    model = DiT(tiny(num_classes=3))
    out = model(latents(), FRAC_T, class_cond(3))
    assert torch.count_nonzero(out) == 0
    out.sum().backward()
    assert model.final_linear.weight.grad.abs().sum() > 0  # zero output, yet the output layer learns


def test_samples_do_not_see_each_other():
    model = randomized(tiny(num_classes=3))
    x, cond = latents(), class_cond(3)
    with torch.no_grad():
        batch = model(x, FRAC_T, cond)
        for i in range(4):
            alone = model(x[i : i + 1], FRAC_T[i : i + 1], {"class": cond["class"][i : i + 1]})
            torch.testing.assert_close(batch[i : i + 1], alone, rtol=0, atol=ATOL)  # GEMM rounding
        other = x.clone()
        other[1:] = torch.randn_like(other[1:])
        torch.testing.assert_close(model(other, FRAC_T, cond)[0], batch[0], rtol=0, atol=ATOL)


def test_scalar_noise_level_and_absent_label_mean_the_null_class_for_everyone():
    model = randomized(tiny(num_classes=3))
    x = latents()
    with torch.no_grad():
        expected = model(x, torch.full((4,), 2.5), {"class": torch.full((4,), 3)})
        assert torch.equal(model(x, 2.5), expected)
        assert torch.equal(model(x, 2.5, model.null_cond(class_cond(3))), expected)
    assert model.cond_keys == ("class",) and DiT(tiny()).cond_keys == ()


def test_save_and_load_round_trip(tmp_path):
    model = randomized(tiny(num_classes=3))
    ema = {k: v + 1.0 for k, v in model.state_dict().items()}
    model.save_pretrained(tmp_path / "dit", ema_state=ema)
    config = json.loads((tmp_path / "dit" / "config.json").read_text())
    assert (config["backbone"], config["format"], config["version"]) == ("dit", "latentdiff.dit", 1)
    assert backbone_name(tmp_path / "dit") == "dit"
    raw, averaged = DiT.from_pretrained(tmp_path / "dit", weights="model"), load_backbone(tmp_path / "dit")
    assert isinstance(averaged, DiT) and raw.config == model.config and not raw.training
    x, cond = latents(), class_cond(3)
    with torch.no_grad():
        assert torch.equal(raw(x, FRAC_T, cond), model(x, FRAC_T, cond))
    assert all(torch.equal(averaged.state_dict()[k], v) for k, v in ema.items())

    (tmp_path / "dit" / "config.json").write_text(json.dumps({**config, "format": "latentdiff.unet"}))
    with pytest.raises(CheckpointError, match="format"):
        DiT.from_pretrained(tmp_path / "dit")


@pytest.mark.parametrize(
    ("args", "match"),
    [
        ((torch.zeros(2, 3, 8, 8), 1.0), r"\(B, 4, H, W\).*\(2, 3, 8, 8\)"),
        ((torch.zeros(2, 4, 7, 8), 1.0), r"patch_size=2.*\(2, 4, 7, 8\)"),
        ((torch.zeros(2, 4, 8), 1.0), r"\(2, 4, 8\)"),
        ((torch.zeros(2, 4, 8, 8), torch.zeros(3)), r"c_noise.*\(2,\)"),
        ((torch.zeros(2, 4, 8, 8), 1.0, {"text": torch.zeros(2, 5)}), r"\['text'\]"),
        ((torch.zeros(2, 4, 8, 8), 1.0, {"class": torch.tensor([0, 4])}), r"cond\['class'\].*0\.\.3"),
        ((torch.zeros(2, 4, 8, 8), 1.0, {"class": torch.tensor([0, -1])}), r"cond\['class'\]"),
    ],
    ids=["channels", "not-patch-multiple", "3-d", "c_noise-shape", "unknown-key", "label-high", "label-neg"],
)
def test_bad_inputs_are_named(args, match):
    with pytest.raises(ValueError, match=match):
        DiT(tiny(num_classes=3))(*args)


def test_unconditional_dit_refuses_labels():
    with pytest.raises(ValueError, match=r"\['class'\].*unconditional"):
        DiT(tiny())(torch.zeros(1, 4, 8, 8), 1.0, {"class": torch.tensor([0])})


@pytest.mark.parametrize(
    "overrides",
    [
        {"sample_size": 9},
        {"num_heads": 3},
        {"hidden_size": 0},
        {"depth": -1},
        {"out_channels": 8},
        {"num_classes": -1},
        {"patch_size": 0},
        {"mlp_ratio": 0.0},
    ],
    ids=lambda o: next(iter(o)),
)
def test_bad_config_names_the_field(overrides):
    (field,) = overrides
    with pytest.raises(ValueError, match=field):
        tiny(**overrides)


def test_presets_and_config_files():
    sizes = {n: (p["hidden_size"], p["depth"], p["num_heads"]) for n, p in DIT_PRESETS.items()}
    assert sizes["S"] == (384, 12, 6) and sizes["B"] == (768, 12, 12)  # paper Table 1
    assert DiTConfig.preset("S", num_classes=10).num_classes == 10
    with pytest.raises(ValueError, match="'M'.*tiny"):
        DiTConfig.preset("M")
    with pytest.raises(ConfigError, match="num_heads=3"):  # how a config file reaches DiTConfig
        from_dict(DiTConfig, {"num_heads": 3})


# ----------------------------------------------------------------------------------- precision and memory


def test_bf16_forward_is_close_to_fp32():
    model = randomized(tiny(num_classes=3))
    x, cond = latents(), class_cond(3)
    with torch.no_grad():
        reference = model(x, FRAC_T, cond)
        half = model.to(torch.bfloat16)(x, FRAC_T, cond)
    assert half.dtype == torch.float32
    assert (half - reference).abs().max() < 0.05 * reference.abs().max()


def test_autocast_training_step():
    model = randomized(tiny(num_classes=3)).train()
    x, cond = latents(), class_cond(3)
    with torch.autocast("cpu", torch.bfloat16):
        out = model(x, FRAC_T, cond)
    assert out.dtype == torch.float32
    out.float().square().mean().backward()
    grads = [p.grad for p in model.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)


def test_gradient_checkpointing_gives_the_same_gradients():
    plain = randomized(tiny(num_classes=3)).train()
    checkpointed = DiT(dataclasses.replace(plain.config, gradient_checkpointing=True)).train()
    checkpointed.load_state_dict(plain.state_dict())
    x, cond = latents(), class_cond(3)
    for model in (plain, checkpointed):
        model(x, FRAC_T, cond).square().mean().backward()
    for (name, a), b in zip(plain.named_parameters(), checkpointed.parameters(), strict=True):
        torch.testing.assert_close(b.grad, a.grad, rtol=0, atol=1e-7, msg=name)
