"""The shared blocks compute exactly what diffusers' blocks of the same names compute."""

import pytest
import torch
from diffusers.models.attention_processor import Attention
from diffusers.models.downsampling import Downsample2D
from diffusers.models.embeddings import get_timestep_embedding
from diffusers.models.resnet import ResnetBlock2D
from diffusers.models.upsampling import Upsample2D
from suite_device import oracle_tolerance

from latentdiff.nets.blocks import Downsample, ResBlock, SelfAttention, Upsample, timestep_embedding

ATOL = 1e-5


def _copy(ours: torch.nn.Module, theirs: torch.nn.Module) -> None:
    """Load diffusers' weights into ours by name: the names must match one to one."""
    missing, unexpected = ours.load_state_dict(theirs.state_dict(), strict=True)
    assert not missing and not unexpected


@pytest.mark.parametrize("flip", [True, False])
@pytest.mark.parametrize("shift", [0.0, 1.0])
@pytest.mark.parametrize("dim", [32, 33])
def test_timestep_embedding_matches_diffusers(flip, shift, dim):
    t = torch.tensor([0.0, 0.5, 1.0, 17.25, 999.0])
    ours = timestep_embedding(t, dim, flip_sin_to_cos=flip, downscale_freq_shift=shift)
    theirs = get_timestep_embedding(t, dim, flip_sin_to_cos=flip, downscale_freq_shift=shift)
    torch.testing.assert_close(ours, theirs, rtol=0, atol=1e-6)


def test_timestep_embedding_broadcasts_over_any_batch_shape():
    t = torch.rand(2, 3) * 100
    emb = timestep_embedding(t, 16)
    assert emb.shape == (2, 3, 16)
    torch.testing.assert_close(emb[1, 2], timestep_embedding(t[1, 2], 16))
    # cos(0) = 1 fills the first half at t = 0 with the flipped (cos, sin) layout
    torch.testing.assert_close(timestep_embedding(0.0, 8), torch.tensor([1.0] * 4 + [0.0] * 4))


@pytest.mark.parametrize(
    "in_ch,out_ch,temb,scale_shift",
    [(32, 32, 64, True), (32, 64, 64, True), (64, 32, 64, False), (32, 64, None, True)],
)
@pytest.mark.parametrize("channels_last", [False, True])
def test_resblock_matches_diffusers(in_ch, out_ch, temb, scale_shift, channels_last, device):
    torch.manual_seed(0)
    theirs = ResnetBlock2D(
        in_channels=in_ch,
        out_channels=out_ch,
        temb_channels=temb,
        groups=8,
        eps=1e-6,
        time_embedding_norm="scale_shift" if scale_shift and temb else "default",
    ).eval()
    for p in theirs.parameters():  # non-trivial affine parameters of the norms too
        torch.nn.init.normal_(p, std=0.2)
    ours = ResBlock(in_ch, out_ch, temb_channels=temb, groups=8, scale_shift=scale_shift).eval()
    _copy(ours, theirs)
    ours.to(device)
    theirs.to(device)
    x = torch.randn(3, in_ch, 8, 8).to(device)  # drawn on the CPU: the same inputs on every device
    e = torch.randn(3, temb).to(device) if temb else None
    expected = theirs(x, e)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
        ours = ours.to(memory_format=torch.channels_last)
    with torch.no_grad():
        # std-0.2 weights give outputs up to ~8: both are float32 results of different summation orders
        # (measured against float64: diffusers 2.3e-6, ours 5.4e-6 off at |y| ≤ 7.9), so the bound scales
        atol = max(ATOL, 2e-6 * expected.abs().max().item())
        torch.testing.assert_close(ours(x, e), expected, **oracle_tolerance(device, atol=atol))


def test_resblock_gradients_match_diffusers():
    torch.manual_seed(0)
    theirs = ResnetBlock2D(
        in_channels=32, out_channels=64, temb_channels=16, groups=8, time_embedding_norm="scale_shift"
    )
    ours = ResBlock(32, 64, temb_channels=16, groups=8)
    _copy(ours, theirs)
    x = torch.randn(2, 32, 8, 8)
    e = torch.randn(2, 16)
    theirs(x, e).square().sum().backward()
    ours(x, e).square().sum().backward()
    grads = dict(theirs.named_parameters())
    for name, p in ours.named_parameters():
        torch.testing.assert_close(p.grad, grads[name].grad, rtol=1e-4, atol=1e-4, msg=name)


@pytest.mark.parametrize("heads", [1, 4])
@pytest.mark.parametrize("channels_last", [False, True])
def test_self_attention_matches_diffusers(heads, channels_last, device):
    torch.manual_seed(0)
    ch = 64
    theirs = Attention(
        ch,
        heads=heads,
        dim_head=ch // heads,
        norm_num_groups=8,
        eps=1e-6,
        residual_connection=True,
        bias=True,
        upcast_softmax=True,
        _from_deprecated_attn_block=True,
    ).eval()
    ours = SelfAttention(ch, num_heads=heads, groups=8).eval()
    _copy(ours, theirs)
    ours.to(device)
    theirs.to(device)
    x = torch.randn(2, ch, 6, 5).to(device)
    expected = theirs(x)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    with torch.no_grad():
        torch.testing.assert_close(ours(x), expected, **oracle_tolerance(device, atol=ATOL))


def test_self_attention_head_channels_sets_heads():
    assert SelfAttention(64, head_channels=16, groups=8).num_heads == 4
    with pytest.raises(ValueError, match="head_channels=24"):
        SelfAttention(64, head_channels=24, groups=8)


@pytest.mark.parametrize("asymmetric", [False, True])
def test_downsample_matches_diffusers(asymmetric):
    torch.manual_seed(0)
    theirs = Downsample2D(16, use_conv=True, out_channels=16, padding=0 if asymmetric else 1, name="op")
    ours = Downsample(16, asymmetric_padding=asymmetric)
    _copy(ours, theirs)
    x = torch.randn(2, 16, 8, 8)
    out = ours(x)
    assert out.shape == (2, 16, 4, 4)
    torch.testing.assert_close(out, theirs(x), rtol=0, atol=ATOL)


def test_upsample_matches_diffusers():
    torch.manual_seed(0)
    theirs = Upsample2D(16, use_conv=True, out_channels=16)
    ours = Upsample(16)
    _copy(ours, theirs)
    x = torch.randn(2, 16, 4, 4)
    out = ours(x)
    assert out.shape == (2, 16, 8, 8)
    torch.testing.assert_close(out, theirs(x), rtol=0, atol=ATOL)
