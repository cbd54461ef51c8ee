"""The channels-last GroupNorm (compiled kernel and operator paths) equals PyTorch's GroupNorm, values and
gradients."""

import logging
import os
import platform
import shutil
import tempfile
import time

import pytest
import torch
import torch.nn.functional as F
from torch.utils import cpp_extension

from latentdiff.nets import cpu_kernels
from latentdiff.nets.group_norm import _FusedGroupNorm, group_norm


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


@pytest.mark.parametrize("compiled", [True, False])
def test_large_mean_float32_is_stable(compiled, monkeypatch):
    # centred variances: a mean 1000× the spread must not cancel the variance away. The input's own
    # rounding (ulp 1e-6 at 10, spread 0.01) limits float32 results to ~1e-4 here: PyTorch's F.group_norm
    # is 1.1e-4 off, the kernel (which also centres its affine map) 5e-5, the operator path 1.5e-4
    if compiled and _compiler_missing():
        pytest.skip("not Linux or no C++ compiler")
    monkeypatch.setenv(cpu_kernels.ENV_SWITCH, "1" if compiled else "0")
    monkeypatch.setattr(torch, "get_num_threads", lambda: 1)  # the kernel for any batch on any machine
    torch.manual_seed(2)
    x = (torch.randn(4, 8, 6, 6) * 0.01 + 10.0).requires_grad_()
    w, b = torch.ones(8), torch.zeros(8)
    grad = torch.randn(4, 8, 6, 6)
    out = group_norm(_cl(x), 4, w, b, 1e-6)
    x64 = x.detach().double().requires_grad_()
    ref = F.group_norm(x64, 4, w.double(), b.double(), 1e-6)
    torch.testing.assert_close(out.double(), ref, rtol=0, atol=1e-4 if compiled else 2e-4)
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


# ------------------------------------------------------------------------ the compiled float32 CPU kernel


def _compiler_missing() -> bool:
    """The kernel is built on Linux only, and needs a C++ compiler."""
    return platform.system() != "Linux" or shutil.which(os.environ.get("CXX", "c++")) is None


@pytest.fixture
def kernel():
    if _compiler_missing():
        pytest.skip("not Linux or no C++ compiler: the compiled GroupNorm kernel is not built here")
    module = cpu_kernels.group_norm_kernel()
    assert module is not None, (
        "a C++ compiler is present but the GroupNorm kernel did not build (see the log)"
    )
    return module


@pytest.mark.parametrize("shape", [(4, 64, 9, 9), (3, 96, 5, 7), (2, 12, 1, 3)])
@pytest.mark.parametrize("per_sample", [False, True])
@pytest.mark.parametrize("silu", [False, True])
def test_kernel_matches_float64_reference(kernel, monkeypatch, shape, per_sample, silu):
    # 81 pixels: more than one 64-pixel accumulation block; 96 channels: not a multiple of the vector width
    monkeypatch.setattr(torch, "get_num_threads", lambda: 1)  # every batch size takes the kernel
    torch.manual_seed(6)
    b, c = shape[:2]
    groups = 4 if c == 12 else 32
    x = _cl(torch.randn(*shape) * 3 + 5).requires_grad_()
    affine_shape = (b, c) if per_sample else (c,)
    w = torch.randn(*affine_shape, requires_grad=True)
    bias = torch.randn(*affine_shape, requires_grad=True)
    grad = _cl(torch.randn(*shape))
    calls = []
    monkeypatch.setattr(_FusedGroupNorm, "apply", _counting(_FusedGroupNorm.apply, calls))
    y = group_norm(x, groups, w, bias, 1e-6, silu=silu)
    assert calls and y.is_contiguous(memory_format=torch.channels_last)
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
    with torch.no_grad():  # the inference path is the same forward
        torch.testing.assert_close(group_norm(x, groups, w, bias, 1e-6, silu=silu), y, rtol=0, atol=0)


def test_kernel_bfloat16_rounds_only_its_outputs(kernel, monkeypatch):
    # autocast feeds bf16 activations with float32 affine parameters: the kernel computes in float32, so
    # y and dx carry one bf16 rounding (2^-9 relative) and the parameter gradients none
    monkeypatch.setattr(torch, "get_num_threads", lambda: 1)
    torch.manual_seed(9)
    x = _cl(torch.randn(4, 64, 9, 9) * 2 + 1).bfloat16().requires_grad_()
    w = torch.randn(4, 64, requires_grad=True)
    bias = torch.randn(4, 64, requires_grad=True)
    grad = _cl(torch.randn(4, 64, 9, 9)).bfloat16()
    y = group_norm(x, 32, w, bias, 1e-6, silu=True)
    assert y.dtype == torch.bfloat16 and y.is_contiguous(memory_format=torch.channels_last)
    dx, dw, db = torch.autograd.grad(y, (x, w, bias), grad)
    assert dx.dtype == torch.bfloat16 and dw.dtype == db.dtype == torch.float32

    ref_inputs = [t.detach().double().requires_grad_() for t in (x, w, bias)]
    xr, wr, br = ref_inputs
    ref = F.silu(
        F.group_norm(xr.contiguous(), 32, None, None, 1e-6) * wr[:, :, None, None] + br[:, :, None, None]
    )
    want = torch.autograd.grad(ref, ref_inputs, grad.double())
    assert (y.double() - ref).abs().max() <= 2**-8 * ref.abs().max()
    assert (dx.double() - want[0]).abs().max() <= 2**-8 * want[0].abs().max()
    for name, g, r in zip(["weight", "bias"], (dw, db), want[1:], strict=True):
        torch.testing.assert_close(g.double(), r, rtol=0, atol=1e-5 * r.abs().max().item(), msg=name)


def _counting(fn, calls):
    def wrapped(*args):
        calls.append(1)
        return fn(*args)

    return wrapped


def test_kernel_silu_saturates_without_overflow(kernel, monkeypatch):
    monkeypatch.setattr(torch, "get_num_threads", lambda: 1)
    x = torch.zeros(2, 4, 2, 2)
    x[:, :, 0, 0] = 1.0  # normalised values ±1.73; the affine stretches them to ±1.7e4
    w = torch.full((4,), 1e4)
    out = group_norm(_cl(x), 2, w, torch.zeros(4), 1e-6, silu=True)
    ref = F.silu(F.group_norm(x, 2, w, torch.zeros(4), 1e-6))
    assert torch.isfinite(out).all()
    torch.testing.assert_close(out, ref, rtol=1e-6, atol=1e-6)


def test_switched_off_or_unbuildable_kernel_falls_back_to_operators(monkeypatch, caplog):
    torch.manual_seed(8)
    x = _cl(torch.randn(4, 16, 4, 4))
    w, b = torch.randn(16), torch.randn(16)
    expected = F.silu(F.group_norm(x.contiguous(), 8, w, b, 1e-6))

    monkeypatch.setenv(cpu_kernels.ENV_SWITCH, "0")
    assert cpu_kernels.load_extension(cpu_kernels.GROUP_NORM_SOURCE) is None
    monkeypatch.setattr(cpu_kernels, "group_norm_kernel", _fail)  # must not even be asked
    torch.testing.assert_close(group_norm(x, 8, w, b, 1e-6, silu=True), expected, rtol=0, atol=1e-5)

    monkeypatch.setenv(cpu_kernels.ENV_SWITCH, "1")
    monkeypatch.setattr(cpp_extension, "load", _fail)
    with caplog.at_level(logging.WARNING, logger=cpu_kernels.__name__):
        assert cpu_kernels.load_extension(cpu_kernels.GROUP_NORM_SOURCE) is None
    assert "using PyTorch operators instead" in caplog.text and "no compiler here" in caplog.text


def _fail(*args, **kwargs):
    raise RuntimeError("no compiler here")


def test_fewer_samples_than_threads_use_operators(monkeypatch):
    monkeypatch.setattr(torch, "get_num_threads", lambda: 4)
    monkeypatch.setattr(cpu_kernels, "group_norm_kernel", _fail)
    x = _cl(torch.randn(3, 8, 4, 4))
    w, b = torch.randn(8), torch.randn(8)
    torch.testing.assert_close(group_norm(x, 4, w, b, 1e-6), F.group_norm(x.contiguous(), 4, w, b, 1e-6))


def test_stale_build_lock_is_removed(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_EXTENSIONS_DIR", str(tmp_path))
    folder = cpu_kernels._build_directory("latentdiff_lock_test")
    assert folder.is_dir() and folder.is_relative_to(tmp_path)
    lock = folder / "lock"
    lock.touch()
    cpu_kernels._remove_stale_lock(folder)
    assert lock.exists()  # a fresh lock belongs to a build in progress
    old = time.time() - cpu_kernels.STALE_LOCK_SECONDS - 10
    os.utime(lock, (old, old))
    cpu_kernels._remove_stale_lock(folder)
    assert not lock.exists()


def test_unwritable_extension_folder_falls_back_to_temporary_folder(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_EXTENSIONS_DIR", str(tmp_path / "home"))
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))
    real_access = os.access
    monkeypatch.setattr(os, "access", lambda p, mode: False if "home" in str(p) else real_access(p, mode))
    folder = cpu_kernels._build_directory("latentdiff_ro_test")
    assert folder.is_dir()
    assert folder == tmp_path / "tmp" / f"latentdiff_torch_extensions_{os.getuid()}" / "latentdiff_ro_test"


def test_build_name_changes_with_source_and_flags(tmp_path):
    src = tmp_path / "k.cpp"
    src.write_text("int f();")
    a = cpu_kernels.build_name(src, ["-O3"])
    assert a == cpu_kernels.build_name(src, ["-O3"]) and a.isidentifier()
    assert a != cpu_kernels.build_name(src, ["-O2"])
    src.write_text("int g();")
    assert a != cpu_kernels.build_name(src, ["-O3"])
