"""Vector quantizer of the VQ autoencoder (van den Oord et al. 2017, "Neural Discrete Representation
Learning"), with optional EMA codebook updates and dead-code restarts.

The loss is eq. 3 of the paper without its reconstruction term:

    ‖sg[z_e] − z_q‖²  +  β·‖z_e − sg[z_q]‖²
    (codebook term)      (commitment term: the ENCODER's side)

Taming-transformers and diffusers' `VectorQuantizer(legacy=True)` swap the two sides, which puts β on the
codebook instead of the encoder; this module does not. Gradients reach the encoder through the
straight-through estimator z_e + sg(z_q − z_e) (paper, sec. 3.2).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

log = logging.getLogger(__name__)


@dataclass
class QuantizerOutput:
    """`z_q` carries the straight-through gradient to the encoder; `codebook_loss` is unweighted,
    `commitment_loss` already includes β; `loss` is what the autoencoder adds to its objective (the
    codebook term is left out when the codebook follows EMA updates)."""

    z_q: torch.Tensor
    indices: torch.Tensor
    loss: torch.Tensor
    codebook_loss: torch.Tensor
    commitment_loss: torch.Tensor
    perplexity: torch.Tensor
    usage: float
    restarted: int


def codebook_usage(indices: torch.Tensor, num_codes: int) -> float:
    """Fraction of the `num_codes` codes that occur at least once in `indices`."""
    return torch.unique(indices).numel() / num_codes


def perplexity(indices: torch.Tensor, num_codes: int) -> torch.Tensor:
    """exp(entropy) of the empirical code distribution: `num_codes` when every code is used equally, 1 when
    a single code is used."""
    return _perplexity_from_counts(torch.bincount(indices.flatten(), minlength=num_codes).float())


def _perplexity_from_counts(counts: torch.Tensor) -> torch.Tensor:
    probs = counts / counts.sum().clamp_min(1.0)
    return torch.exp(-(probs * torch.log(probs.clamp_min(1e-12))).sum())


def _distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


class VectorQuantizer(nn.Module):
    """Nearest-neighbour quantizer with a K×c codebook.

    With `ema=True` the codebook is a buffer updated by exponential moving averages of the assigned
    encoder outputs (van den Oord et al. 2017, appendix A.1, eqs. 6–8), with Laplace smoothing of the
    cluster sizes N_i ← (N_i + ε)/(n + Kε)·n so no code divides by zero; otherwise it is a parameter
    trained by the codebook loss term.

    `code_usage` is the EMA of how many vectors each code receives per training batch (it is also the N_i
    of the EMA update). Every `restart_every` training passes, codes whose usage is below
    `dead_code_threshold` are moved onto random encoder outputs from a buffer of recent ones (the
    "random restarts" of Dhariwal et al. 2020, Jukebox) and their usage is reset to
    the threshold. Under torch.distributed the counts and sums are all-reduced and the restart candidates
    are broadcast from rank 0, so every rank keeps the same codebook.
    """

    codebook: torch.Tensor
    code_usage: torch.Tensor

    def __init__(
        self,
        num_codes: int,
        code_dim: int,
        beta: float = 0.25,
        *,
        ema: bool = False,
        decay: float = 0.99,
        epsilon: float = 1e-5,
        dead_code_threshold: float = 0.0,
        restart_every: int = 1,
        buffer_size: int = 4096,
    ) -> None:
        super().__init__()
        self.num_codes, self.code_dim, self.beta = num_codes, code_dim, beta
        self.ema, self.decay, self.epsilon = ema, decay, epsilon
        self.dead_code_threshold, self.restart_every = dead_code_threshold, restart_every
        # small uniform init (taming); the first restarts move unused codes onto the data anyway
        init = torch.empty(num_codes, code_dim).uniform_(-1.0 / num_codes, 1.0 / num_codes)
        if ema:
            self.register_buffer("codebook", init)
            self.register_buffer("ema_code_sum", init.clone())
        else:
            self.codebook = nn.Parameter(init)
        # N_i starts at 1 so the EMA codebook starts at its init (m_i / N_i) and no code starts dead
        self.register_buffer("code_usage", torch.ones(num_codes))
        self.register_buffer("restart_pool", torch.zeros(buffer_size, code_dim))
        self.register_buffer("restart_pool_size", torch.zeros((), dtype=torch.long))
        self.register_buffer("restart_pool_next", torch.zeros((), dtype=torch.long))
        self.register_buffer("updates", torch.zeros((), dtype=torch.long))

    def extra_repr(self) -> str:
        return f"num_codes={self.num_codes}, code_dim={self.code_dim}, beta={self.beta}, ema={self.ema}"

    # --------------------------------------------------------------------------------------- look-ups

    def _check(self, z: torch.Tensor) -> None:
        if z.ndim != 4 or z.shape[1] != self.code_dim:
            raise ValueError(
                f"VectorQuantizer: expected latents of shape (N, {self.code_dim}, H, W), got {tuple(z.shape)}"
            )

    @torch.no_grad()
    def nearest(self, flat: torch.Tensor) -> torch.Tensor:
        """Index of the nearest code (L2) for each row of `flat` (M, c), in chunks to bound memory."""
        codebook = self.codebook.float()
        code_sq = codebook.square().sum(1)
        rows = max(1, (1 << 24) // self.num_codes)
        out = []
        for chunk in flat.float().split(rows):
            # ‖z‖² is constant per row and does not change the argmin
            dist_sq = torch.addmm(code_sq, chunk, codebook.t(), alpha=-2.0)
            out.append(dist_sq.argmin(1))
        return torch.cat(out) if out else torch.zeros(0, dtype=torch.long, device=flat.device)

    def lookup(self, indices: torch.Tensor) -> torch.Tensor:
        """Codes for integer `indices` (N, H, W) as a latent (N, c, H, W)."""
        return F.embedding(indices.long(), self.codebook).permute(0, 3, 1, 2).contiguous()

    @torch.no_grad()
    def quantize(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Snap `z` (N, c, H, W) to its nearest codes without losses or statistics: (z_q, indices)."""
        self._check(z)
        n, c, h, w = z.shape
        indices = self.nearest(z.permute(0, 2, 3, 1).reshape(-1, c)).view(n, h, w)
        return self.lookup(indices).to(z.dtype), indices

    # ---------------------------------------------------------------------------------------- forward

    def forward(self, z_e: torch.Tensor) -> QuantizerOutput:
        self._check(z_e)
        with torch.autocast(z_e.device.type, enabled=False):
            z = z_e.float()
            n, c, h, w = z.shape
            flat = z.permute(0, 2, 3, 1).reshape(-1, c)
            indices = self.nearest(flat)
            z_q = F.embedding(indices, self.codebook).view(n, h, w, c).permute(0, 3, 1, 2)
            codebook_loss = F.mse_loss(z_q, z.detach())
            commitment_loss = self.beta * F.mse_loss(z, z_q.detach())
            loss = commitment_loss if self.ema else codebook_loss + commitment_loss
            counts = torch.bincount(indices, minlength=self.num_codes).float()
            batch_perplexity = _perplexity_from_counts(counts)
            usage = float((counts > 0).sum()) / self.num_codes
            restarted = 0
            if self.training:
                restarted = self._update(flat.detach(), indices, counts)
            # z + (z_q − z) can differ from z_q in the last bit: keep exact codes when no gradient flows
            z_st = z + (z_q - z).detach() if z.requires_grad else z_q
        return QuantizerOutput(
            z_q=z_st.to(z_e.dtype),
            indices=indices.view(n, h, w),
            loss=loss,
            codebook_loss=codebook_loss.detach() if self.ema else codebook_loss,
            commitment_loss=commitment_loss,
            perplexity=batch_perplexity,
            usage=usage,
            restarted=restarted,
        )

    def codebook_usage(self, indices: torch.Tensor) -> float:
        return codebook_usage(indices, self.num_codes)

    def perplexity(self, indices: torch.Tensor) -> torch.Tensor:
        return perplexity(indices, self.num_codes)

    # -------------------------------------------------------------------------------------- training

    @torch.no_grad()
    def _update(self, flat: torch.Tensor, indices: torch.Tensor, counts: torch.Tensor) -> int:
        counts = counts.clone()
        sums = (
            torch.zeros_like(self.codebook, dtype=torch.float32).index_add_(0, indices, flat)
            if self.ema
            else None
        )
        if _distributed():
            dist.all_reduce(counts)
            if sums is not None:
                dist.all_reduce(sums)
        self.code_usage.mul_(self.decay).add_(counts, alpha=1.0 - self.decay)
        if self.ema:
            self.ema_code_sum.mul_(self.decay).add_(sums, alpha=1.0 - self.decay)
            self._refresh_ema_codebook()
        self._remember(flat)
        self.updates += 1
        if self.dead_code_threshold > 0 and int(self.updates) % self.restart_every == 0:
            return self._restart_dead_codes()
        return 0

    def _refresh_ema_codebook(self) -> None:
        usage = self.code_usage
        total = usage.sum()
        smoothed = (usage + self.epsilon) / (total + self.num_codes * self.epsilon) * total
        self.codebook.copy_(self.ema_code_sum / smoothed[:, None])

    def _remember(self, flat: torch.Tensor) -> None:
        """Keep a random subset of this batch's encoder outputs in the ring buffer of restart candidates."""
        capacity = self.restart_pool.shape[0]
        take = min(flat.shape[0], capacity)
        if take == 0:
            return
        chosen = flat[torch.randperm(flat.shape[0], device=flat.device)[:take]]
        slots = (self.restart_pool_next + torch.arange(take, device=flat.device)) % capacity
        self.restart_pool[slots] = chosen.to(self.restart_pool.dtype)
        self.restart_pool_next.copy_((self.restart_pool_next + take) % capacity)
        self.restart_pool_size.copy_((self.restart_pool_size + take).clamp(max=capacity))

    def _restart_dead_codes(self) -> int:
        # rank 0 decides which codes restart and with what, so the ranks cannot disagree (and then wait in
        # mismatched collectives) even if their statistics drifted apart
        decision = torch.cat(
            [self.code_usage < self.dead_code_threshold, (self.restart_pool_size > 0).view(1)]
        ).to(torch.uint8)
        distributed = _distributed()
        if distributed:
            dist.broadcast(decision, src=0)
        if not decision[-1]:
            return 0
        dead = torch.nonzero(decision[:-1]).flatten()
        num_dead = int(dead.numel())
        if num_dead == 0:
            return 0
        if not distributed or dist.get_rank() == 0:
            available = int(self.restart_pool_size)
            if num_dead <= available:
                pick = torch.randperm(available, device=dead.device)[:num_dead]
            else:
                pick = torch.randint(available, (num_dead,), device=dead.device)
            candidates = self.restart_pool[pick].clone()
        else:
            candidates = torch.empty(
                num_dead, self.code_dim, device=dead.device, dtype=self.restart_pool.dtype
            )
        if distributed:
            dist.broadcast(candidates, src=0)
        self.codebook[dead] = candidates.to(self.codebook.dtype)
        self.code_usage[dead] = self.dead_code_threshold
        if self.ema:
            self.ema_code_sum[dead] = candidates * self.dead_code_threshold
        log.debug("restarted %d dead codes of %d", num_dead, self.num_codes)
        return num_dead
