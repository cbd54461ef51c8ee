"""Cross-attention conditioning: the block and the text U-Net equal diffusers' (the oracle) within 1e-5, and
padding tokens change nothing."""

import pytest
import torch
from diffusers import Transformer2DModel, UNet2DConditionModel
from suite_device import TEST_DEVICE, oracle_tolerance
from test_unet_diffusers_format import _randomize
from unet_configs import tiny_unet_config

from latentdiff.nets import UNet, load_diffusers_unet, save_diffusers_unet
from latentdiff.nets.cross_attention import SpatialTransformer
from latentdiff.nets.unet_diffusers_format import DiffusersFormatError

ATOL = 1e-5
CONTEXT_DIM = 24


def _context(batch: int = 3, length: int = 7, seed: int = 2) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    context = torch.randn(batch, length, CONTEXT_DIM, generator=g)
    lengths = torch.tensor([length, 3, 1])[:batch]  # full, partly padded, one real token
    mask = torch.arange(length)[None] < lengths[:, None]
    return context, mask


def test_spatial_transformer_equals_diffusers_transformer_2d():
    ours = SpatialTransformer(32, heads=2, context_dim=CONTEXT_DIM, groups=8).eval()
    theirs = Transformer2DModel(
        num_attention_heads=2, attention_head_dim=16, in_channels=32, norm_num_groups=8,
        cross_attention_dim=CONTEXT_DIM, activation_fn="geglu",
    ).eval()  # fmt: skip
    _randomize(ours)
    missing, unexpected = theirs.load_state_dict(ours.state_dict(), strict=True)
    assert not missing and not unexpected
    device = torch.device(TEST_DEVICE)
    ours.to(device)
    theirs.to(device)
    x = torch.randn(3, 32, 5, 6, generator=torch.Generator().manual_seed(1)).to(device)
    context, mask = (t.to(device) for t in _context())
    bias = (
        1 - mask.float()
    ) * -10000.0  # diffusers' encoder_attention_mask as UNet2DConditionModel passes it
    with torch.no_grad():
        expected = theirs(x, encoder_hidden_states=context, encoder_attention_mask=bias[:, None]).sample
        got = ours(x, context, mask)
    torch.testing.assert_close(got, expected, **oracle_tolerance(device, atol=ATOL))


def test_padding_tokens_change_nothing():
    block = SpatialTransformer(32, heads=2, context_dim=CONTEXT_DIM, groups=8).eval()
    _randomize(block)
    x = torch.randn(3, 32, 4, 4, generator=torch.Generator().manual_seed(3))
    context, mask = _context()
    other = torch.where(mask[..., None], context, 100 * torch.randn_like(context))
    assert not torch.equal(other, context)
    with torch.no_grad():
        torch.testing.assert_close(block(x, other, mask), block(x, context, mask), rtol=0, atol=0)
        assert not torch.allclose(block(x, other), block(x, context))  # unmasked, they would matter


@pytest.mark.parametrize(
    "overrides",
    [
        {},
        {"num_classes": 3, "scale_shift": False},
        {"channel_mult": (1, 2), "attention_levels": (0, 1), "num_heads": 2, "head_channels": None},
    ],
    ids=["text", "text+class-default-norm", "two-levels-num-heads"],
)
def test_text_unet_exports_to_diffusers_unet_2d_condition_model(tmp_path, overrides):
    cfg = tiny_unet_config(cross_attention_dim=CONTEXT_DIM, **overrides)
    ours = UNet(cfg).eval()
    _randomize(ours)
    save_diffusers_unet(ours, tmp_path / "unet")
    theirs = UNet2DConditionModel.from_pretrained(tmp_path / "unet").eval()
    assert sum(p.numel() for p in theirs.parameters()) == sum(p.numel() for p in ours.parameters())
    back = load_diffusers_unet(tmp_path / "unet")
    assert back.config == cfg
    device = torch.device(TEST_DEVICE)
    for model in (ours, theirs, back):
        model.to(device)
    x = torch.randn(3, 4, 8, 8, generator=torch.Generator().manual_seed(1)).to(device)
    context, mask = (t.to(device) for t in _context())
    labels = torch.tensor([0, 2, 3], device=device) if cfg.num_classes else None
    cond = {"text_embeddings": context, "text_mask": mask} | ({"class": labels} if labels is not None else {})
    with torch.no_grad():
        for t in (0.0, 17.25, 999.0):
            tt = torch.full((3,), t, device=device)
            expected = theirs(x, tt, context, class_labels=labels, encoder_attention_mask=mask.float()).sample
            tol = oracle_tolerance(device, atol=ATOL)
            torch.testing.assert_close(ours(x, tt, cond), expected, **tol)
            torch.testing.assert_close(back(x, tt, cond), expected, **tol)


def test_text_unet_needs_its_text_and_refuses_what_diffusers_cannot_express():
    unet = UNet(tiny_unet_config(cross_attention_dim=CONTEXT_DIM))
    with pytest.raises(ValueError, match="text_embeddings"):
        unet(torch.zeros(1, 4, 8, 8), 0.0)
    with pytest.raises(ValueError, match=r"must be of shape \(1, L, 24\)"):
        unet(torch.zeros(1, 4, 8, 8), 0.0, {"text_embeddings": torch.zeros(1, 5, 8)})
    with pytest.raises(DiffusersFormatError, match="mid_attention"):
        save_diffusers_unet(
            UNet(tiny_unet_config(cross_attention_dim=8, mid_attention=False)), "/nonexistent"
        )
