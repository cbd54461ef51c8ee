"""Per-sample loss weights and the weighted diffusion loss, on the network's target F."""

from __future__ import annotations

import torch
from torch import Tensor

from latentdiff.diffusion.noise_levels import NoiseLevels
from latentdiff.diffusion.preconditioning import Preconditioning

WEIGHTINGS: tuple[str, ...] = ("uniform", "min_snr", "edm")


def loss_weight(kind: str, precond: Preconditioning, levels: NoiseLevels, gamma: float = 5.0) -> Tensor:
    """Float32 weights of shape (B,) on ‖F − F*‖², i.e. an x0-space weight λ times c_out².

    - `uniform`: 1 on F's own error (Ho et al. 2020's "simple" loss for ε).
    - `min_snr`: Min-SNR-γ (Hang et al. 2023, sec. 3.4), λ = min(SNR, γ): min(SNR, γ)/SNR for ε,
      min(SNR, γ)/(SNR + 1) for v, min(SNR, γ) for x0, min(SNR, γ)·c_out² for EDM.
    - `edm`: λ(σ) = (σ² + σ_d²)/(σ σ_d)² (Karras et al. 2022, Table 1), exactly 1 on F under EDM's own
      preconditioning.
    """
    if kind == "uniform":
        return torch.ones_like(levels.alphas_cumprod, dtype=torch.float32)
    snr = levels.snr
    if kind == "min_snr":
        if precond.kind == "eps":
            # min(SNR, γ)/SNR written as min(1, γ/SNR) so that a zero terminal SNR gives 1, not 0/0.
            return (gamma / snr).clamp(max=1.0).float()
        if precond.kind == "v":
            return (snr.clamp(max=gamma) / (snr + 1)).float()
        return (snr.clamp(max=gamma) * precond.c_out_squared(levels)).float()
    if kind == "edm":
        d2 = precond.sigma_data**2
        lam = (1 / snr + d2) * snr / d2  # (σ² + σ_d²)/(σ² σ_d²) with σ² = 1/SNR
        if precond.kind == "edm":
            return torch.ones_like(snr, dtype=torch.float32)
        return (lam * precond.c_out_squared(levels)).float()
    raise ValueError(f"loss weighting must be one of {list(WEIGHTINGS)}, got {kind!r}")


def diffusion_loss(model_output: Tensor, target: Tensor, weights: Tensor | None = None) -> Tensor:
    """Squared error averaged over every dimension but the batch, then the batch mean of weight × error
    (not renormalised by the sum of the weights, as in Hang et al. 2023). Computed in float32."""
    if model_output.shape != target.shape:
        raise ValueError(f"model output {tuple(model_output.shape)} and target {tuple(target.shape)} differ")
    per_sample = (model_output.float() - target.float()).square().flatten(1).mean(1)
    if weights is None:
        return per_sample.mean()
    if weights.shape != per_sample.shape:
        raise ValueError(f"weights must have shape {tuple(per_sample.shape)}, got {tuple(weights.shape)}")
    return (weights.float().to(per_sample.device) * per_sample).mean()
