"""VectorQuantizer: which parameters each loss term trains, straight-through gradient, EMA updates,
dead-code restarts, usage statistics, and identical codebooks across torch.distributed ranks."""

import os

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from safetensors.torch import load_file, save_file

from latentdiff.autoencoder import VectorQuantizer, codebook_usage, perplexity


def _quantizer(**kw) -> VectorQuantizer:
    torch.manual_seed(0)
    return VectorQuantizer(8, 3, beta=0.25, **kw)


def test_nearest_code_is_the_l2_argmin():
    vq = _quantizer()
    z = torch.randn(2, 3, 5, 5)
    z_q, indices = vq.quantize(z)
    flat = z.permute(0, 2, 3, 1).reshape(-1, 3)
    expected = torch.cdist(flat, vq.codebook.detach()).argmin(1).view(2, 5, 5)
    assert torch.equal(indices, expected)
    assert torch.equal(z_q, vq.codebook.detach()[expected].permute(0, 3, 1, 2))


def test_commitment_term_trains_the_encoder_only():
    vq = _quantizer()
    z_e = torch.randn(2, 3, 4, 4, requires_grad=True)
    out = vq(z_e)
    grad_codebook, grad_encoder = torch.autograd.grad(
        out.commitment_loss, [vq.codebook, z_e], allow_unused=True
    )
    assert grad_codebook is None or not grad_codebook.any()
    z_q = vq.lookup(out.indices)
    torch.testing.assert_close(grad_encoder, 0.25 * 2 * (z_e - z_q).detach() / z_e.numel())


def test_codebook_term_trains_the_codebook_only():
    vq = _quantizer()
    z_e = torch.randn(2, 3, 4, 4, requires_grad=True)
    out = vq(z_e)
    grad_codebook, grad_encoder = torch.autograd.grad(
        out.codebook_loss, [vq.codebook, z_e], allow_unused=True
    )
    assert grad_encoder is None
    flat = z_e.detach().permute(0, 2, 3, 1).reshape(-1, 3)
    idx = out.indices.flatten()
    expected = torch.zeros(8, 3).index_add_(0, idx, 2 * (vq.codebook.detach()[idx] - flat) / z_e.numel())
    torch.testing.assert_close(grad_codebook, expected)
    assert grad_codebook.abs().sum() > 0


def test_straight_through_passes_the_decoder_gradient_unchanged():
    vq = _quantizer()
    z_e = torch.randn(2, 3, 4, 4, requires_grad=True)
    out = vq(z_e)
    upstream = torch.randn_like(z_e)
    (grad,) = torch.autograd.grad((out.z_q * upstream).sum(), [z_e])
    torch.testing.assert_close(grad, upstream)
    torch.testing.assert_close(out.z_q, vq.lookup(out.indices))


def test_ema_update_follows_appendix_a1_with_laplace_smoothing():
    vq = VectorQuantizer(2, 1, ema=True, decay=0.5, epsilon=1e-5)
    vq.codebook.copy_(torch.tensor([[0.0], [10.0]]))
    vq.ema_code_sum.copy_(vq.codebook)
    z = torch.tensor([1.0, 2.0, 3.0, 9.0]).view(1, 1, 2, 2)
    out = vq(z)
    # codes 0 gets {1, 2, 3}, code 1 gets {9}: N = 0.5·1 + 0.5·n, m = 0.5·m0 + 0.5·Σz
    n_ema = torch.tensor([0.5 + 1.5, 0.5 + 0.5])
    m_ema = torch.tensor([0.0 + 3.0, 5.0 + 4.5])
    total = n_ema.sum()
    smoothed = (n_ema + 1e-5) / (total + 2e-5) * total
    torch.testing.assert_close(vq.code_usage, n_ema)
    torch.testing.assert_close(vq.codebook.flatten(), m_ema / smoothed)
    # with EMA updates the codebook term is not part of the loss
    torch.testing.assert_close(out.loss, out.commitment_loss)


def test_eval_mode_leaves_statistics_alone():
    vq = _quantizer(ema=True, dead_code_threshold=1.0).eval()
    before = {k: v.clone() for k, v in vq.state_dict().items()}
    vq(torch.randn(2, 3, 4, 4))
    assert all(torch.equal(before[k], v) for k, v in vq.state_dict().items())


@pytest.mark.parametrize("ema", [False, True])
def test_dead_code_restart_revives_unused_codes(ema):
    torch.manual_seed(0)
    vq = VectorQuantizer(16, 2, ema=ema, dead_code_threshold=1.0, buffer_size=256)
    # every encoder output sits near (3, 3), far from the initial codes: one code takes everything
    z = 3.0 + 0.1 * torch.randn(4, 2, 8, 8)
    _, before = vq.quantize(z)
    assert before.unique().numel() == 1
    out = vq(z)
    assert out.restarted == 15
    _, after = vq.quantize(z)
    assert after.unique().numel() >= 12
    assert vq.codebook_usage(after) == after.unique().numel() / 16


def test_restarts_disabled_with_zero_threshold():
    torch.manual_seed(0)
    vq = VectorQuantizer(16, 2, dead_code_threshold=0.0)
    z = 3.0 + 0.1 * torch.randn(4, 2, 8, 8)
    assert vq(z).restarted == 0
    assert vq.quantize(z)[1].unique().numel() == 1


def test_usage_and_perplexity():
    uniform = torch.arange(8).view(1, 2, 4)
    assert codebook_usage(uniform, 16) == 0.5
    torch.testing.assert_close(perplexity(uniform, 16), torch.tensor(8.0))
    torch.testing.assert_close(perplexity(torch.zeros(1, 2, 4, dtype=torch.long), 16), torch.tensor(1.0))


# ------------------------------------------------------------------------------------------------ DDP


def _ddp_worker(rank: int, world: int, init_file: str, out_dir: str) -> None:
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        batches = load_file(os.path.join(out_dir, "data.safetensors"))
        torch.manual_seed(0)
        plain = VectorQuantizer(8, 2, ema=True, decay=0.9, dead_code_threshold=0.0)
        torch.manual_seed(0)
        restarting = VectorQuantizer(8, 2, ema=True, decay=0.9, dead_code_threshold=1.0, buffer_size=64)
        torch.manual_seed(100 + rank)  # each rank draws different restart candidates unless broadcast
        for step in range(3):
            z = batches[f"step{step}"][rank * 2 : rank * 2 + 2]
            plain(z)
            restarting(z)
        save_file(
            {"plain": plain.codebook, "restarting": restarting.codebook, "usage": restarting.code_usage},
            os.path.join(out_dir, f"rank{rank}.safetensors"),
        )
    finally:
        dist.destroy_process_group()


def test_ema_and_restarts_stay_identical_across_ranks(tmp_path):
    torch.manual_seed(1)
    batches = {f"step{s}": 3.0 * torch.randn(4, 2, 4, 4) + s for s in range(3)}
    save_file(batches, str(tmp_path / "data.safetensors"))
    mp.spawn(_ddp_worker, args=(2, str(tmp_path / "init"), str(tmp_path)), nprocs=2, join=True)
    r0, r1 = (load_file(str(tmp_path / f"rank{r}.safetensors")) for r in range(2))
    for key in r0:
        assert torch.equal(r0[key], r1[key]), key
    # all-reduced statistics equal one process seeing both ranks' batches
    torch.manual_seed(0)
    single = VectorQuantizer(8, 2, ema=True, decay=0.9, dead_code_threshold=0.0)
    for s in range(3):
        single(batches[f"step{s}"])
    torch.testing.assert_close(r0["plain"], single.codebook, rtol=1e-5, atol=1e-6)
