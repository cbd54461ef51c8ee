"""The channels-last GroupNorm equals PyTorch's GroupNorm, values and gradients."""

import pytest
import torch
import torch.nn.functional as F

from latentdiff.nets.group_norm import group_norm


def _cl(x: torch.Tensor) -> torch.Tensor:
    return x.contiguous(memory_format=torch.channels_last)


@pytest.mark.parametrize("per_sample", [False, True])
def test_matches_torch_group_norm_in_float64(per_sample):
    torch.manual_seed(0)
    x = _cl(torch.randn(3, 12, 5, 4, dtype=torch.float64) * 3 + 2).requires_grad_()
    w = torch.randn(12, dtype=torch.float64, requires_grad=True)
    b = torch.randn(12, dtype=torch.float64, requires_grad=True)
    s = torch.randn(3, 12, dtype=torch.float64, requires_grad=True)
    grad = torch.randn(3, 12, 5, 4, dtype=torch.float64)

    def ours(x):
        if per_sample:
            return group_norm(x, 4, w * (1 + s), torch.addcmul(s, b, 1 + s), 1e-6)
        return group_norm(x, 4, w, b, 1e-6)

    def reference(x):
        if per_sample:
            h = F.group_norm(x, 4, None, None, 1e-6)
            return h * (w * (1 + s))[:, :, None, None] + (b * (1 + s) + s)[:, :, None, None]
        return F.group_norm(x, 4, w, b, 1e-6)

    inputs = [x, w, b, s] if per_sample else [x, w, b]
    y = ours(x)
    assert y.is_contiguous(memory_format=torch.channels_last)
    x_ref = x.detach().contiguous().requires_grad_()
    y_ref = reference(x_ref)
    torch.testing.assert_close(y, y_ref, rtol=0, atol=1e-12)
    got = torch.autograd.grad((y * grad).sum(), inputs)
    want = torch.autograd.grad((y_ref * grad).sum(), [x_ref, *inputs[1:]])
    for name, g, r in zip(["x", "weight", "bias", "scale"], got, want, strict=False):
        torch.testing.assert_close(g, r, rtol=0, atol=1e-11, msg=name)


def test_gradcheck():
    torch.manual_seed(1)
    x = _cl(torch.randn(2, 6, 3, 3, dtype=torch.float64)).requires_grad_()
    w = torch.randn(2, 6, dtype=torch.float64, requires_grad=True)
    b = torch.randn(6, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda x, w, b: group_norm(x, 3, w, b, 1e-5), (x, w, b))


def test_large_mean_float32_is_stable():
    # centred variances: a mean 1000× the spread must not cancel the variance away
    torch.manual_seed(2)
    x = torch.randn(2, 8, 6, 6) * 0.01 + 10.0
    w, b = torch.ones(8), torch.zeros(8)
    torch.testing.assert_close(
        group_norm(_cl(x), 4, w, b, 1e-6), F.group_norm(x, 4, w, b, 1e-6), rtol=0, atol=1e-4
    )


def test_bfloat16_close_to_float32():
    torch.manual_seed(3)
    x = torch.randn(2, 16, 8, 8) * 2 + 1
    w, b = torch.randn(16), torch.randn(16)
    ref = F.group_norm(x, 8, w, b, 1e-6)
    out = group_norm(_cl(x.bfloat16()), 8, w.bfloat16(), b.bfloat16(), 1e-6)
    assert out.dtype == torch.bfloat16
    # inputs and weights rounded to 8 mantissa bits: errors of a few 2^-8 of the output scale
    assert (out.float() - ref).abs().max() < 0.05 * ref.abs().max()


def test_contiguous_input_uses_torch_kernel_with_per_sample_affine():
    torch.manual_seed(4)
    x = torch.randn(2, 8, 4, 4)
    w, b = torch.randn(2, 8), torch.randn(2, 8)
    expected = F.group_norm(x, 2, None, None, 1e-6) * w[:, :, None, None] + b[:, :, None, None]
    torch.testing.assert_close(group_norm(x, 2, w, b, 1e-6), expected)


@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize("per_sample", [False, True])
def test_no_grad_path_with_fused_silu(channels_last, per_sample):
    torch.manual_seed(5)
    x = torch.randn(2, 8, 4, 4) * 2 - 1
    w, b = (torch.randn(2, 8), torch.randn(2, 8)) if per_sample else (torch.randn(8), torch.randn(8))
    h = F.group_norm(x, 4, None, None, 1e-6)
    expected = F.silu(h * w.view(-1, 8, 1, 1) + b.view(-1, 8, 1, 1))
    with torch.no_grad():
        out = group_norm(_cl(x) if channels_last else x, 4, w, b, 1e-6, silu=True)
    torch.testing.assert_close(out, expected, rtol=0, atol=1e-6)
