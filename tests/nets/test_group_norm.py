"""The channels-last GroupNorm (PyTorch operators) equals PyTorch's GroupNorm, values and gradients."""

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
    # centred variances: a mean 1000× the spread must not cancel the variance away. The input's own
    # rounding (ulp 1e-6 at 10, spread 0.01) limits float32 results to ~1e-4 here: PyTorch's F.group_norm
    # is 1.1e-4 off, ours 1.5e-4
    torch.manual_seed(2)
    x = (torch.randn(4, 8, 6, 6) * 0.01 + 10.0).requires_grad_()
    w, b = torch.ones(8), torch.zeros(8)
    grad = torch.randn(4, 8, 6, 6)
    out = group_norm(_cl(x), 4, w, b, 1e-6)
    x64 = x.detach().double().requires_grad_()
    ref = F.group_norm(x64, 4, w.double(), b.double(), 1e-6)
    torch.testing.assert_close(out.double(), ref, rtol=0, atol=2e-4)
    (dx,) = torch.autograd.grad(out, x, grad)
    (dx_ref,) = torch.autograd.grad(ref, x64, grad.double())
    torch.testing.assert_close(dx.double(), dx_ref, rtol=0, atol=1e-4 * dx_ref.abs().max().item())


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


@pytest.mark.parametrize("shape", [(4, 64, 9, 9), (3, 96, 5, 7), (2, 12, 1, 3)])
@pytest.mark.parametrize("per_sample", [False, True])
@pytest.mark.parametrize("silu", [False, True])
def test_float32_matches_float64_reference(shape, per_sample, silu):
    # the U-Net's and autoencoder's shapes: 32 groups of 2 or 3 channels, odd pixel counts
    torch.manual_seed(6)
    b, c = shape[:2]
    groups = 4 if c == 12 else 32
    x = _cl(torch.randn(*shape) * 3 + 5).requires_grad_()
    affine_shape = (b, c) if per_sample else (c,)
    w = torch.randn(*affine_shape, requires_grad=True)
    bias = torch.randn(*affine_shape, requires_grad=True)
    grad = _cl(torch.randn(*shape))
    y = group_norm(x, groups, w, bias, 1e-6, silu=silu)
    assert y.is_contiguous(memory_format=torch.channels_last)
    got = torch.autograd.grad(y, (x, w, bias), grad)

    ref_inputs = [t.detach().double().requires_grad_() for t in (x, w, bias)]
    xr, wr, br = ref_inputs
    h = F.group_norm(xr.contiguous(), groups, None, None, 1e-6)
    h = h * wr.view(-1, c, 1, 1) + br.view(-1, c, 1, 1)
    ref = F.silu(h) if silu else h
    want = torch.autograd.grad(ref, ref_inputs, grad.double())
    torch.testing.assert_close(y.double(), ref, rtol=0, atol=2e-6 * ref.abs().max().item())
    for name, g, r in zip(["x", "weight", "bias"], got, want, strict=True):
        torch.testing.assert_close(g.double(), r, rtol=0, atol=2e-6 * r.abs().max().item(), msg=name)
    with torch.no_grad():  # the inference path computes the same forward
        out = group_norm(x, groups, w, bias, 1e-6, silu=silu)
    torch.testing.assert_close(out.double(), ref, rtol=0, atol=2e-6 * ref.abs().max().item())


def test_silu_saturates_without_overflow():
    x = torch.zeros(2, 4, 2, 2)
    x[:, :, 0, 0] = 1.0  # normalised values ±1.73; the affine stretches them to ±1.7e4
    w = torch.full((4,), 1e4)
    ref = F.silu(F.group_norm(x, 2, w, torch.zeros(4), 1e-6))
    for recording in (False, True):
        xi = _cl(x).requires_grad_(recording)
        out = group_norm(xi, 2, w, torch.zeros(4), 1e-6, silu=True)
        assert torch.isfinite(out).all()
        torch.testing.assert_close(out, ref, rtol=1e-6, atol=1e-6)
