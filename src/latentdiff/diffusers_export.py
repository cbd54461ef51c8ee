"""Export a trained run to diffusers' folder formats, so that it runs in diffusers too.

`RUN → OUT/unet` (UNet2DModel) or `OUT/transformer` (DiTTransformer2DModel), `OUT/vae` (AutoencoderKL,
for `kl` autoencoders), `OUT/scheduler` (a DPMSolverMultistepScheduler configuration that reproduces
`latentdiff sample`'s default sampler, DPM-Solver++(2M), with the run's betas and prediction type; an
EDMDPMSolverMultistepScheduler for EDM runs) and `OUT/latentdiff.json` (the latent
shift/scale, class names and null class, which diffusers' unconditional pipelines do not carry). EMA
weights are exported when the run has them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from latentdiff.diffusion.config import DiffusionConfig
from latentdiff.io.checkpoint import write_json

_BETA_SCHEDULE = {"linear": "linear", "scaled_linear": "scaled_linear", "cosine": "squaredcos_cap_v2"}
_PREDICTION = {"eps": "epsilon", "v": "v_prediction", "x0": "sample"}


def diffusers_scheduler_config(cfg: DiffusionConfig) -> dict[str, Any]:
    """The DPMSolverMultistepScheduler configuration that steps like our default sampler,
    `diffusion.samplers_discrete.sample_dpmpp_2m` (DPM-Solver++(2M), Lu et al. 2022, Algorithm 2): the
    same betas (Nichol & Dhariwal's cosine is diffusers' `squaredcos_cap_v2`) and prediction type,
    data-prediction second-order multistep with the midpoint form, "linspace" timesteps, a first-order last
    step onto σ = 0, no thresholding, no λ clipping (diffusers' default `lambda_min_clipped = −inf`), no
    Karras/Lu/exponential σ respacing. The same steps from the same x_T then visit the same timesteps and
    give the same latents."""
    if cfg.prediction == "edm":
        return edm_scheduler_config(cfg)
    return {
        "_class_name": "DPMSolverMultistepScheduler",
        "num_train_timesteps": cfg.num_timesteps,
        "beta_start": cfg.beta_start,
        "beta_end": cfg.beta_end,
        "beta_schedule": _BETA_SCHEDULE[cfg.schedule],
        "trained_betas": None,
        "prediction_type": _PREDICTION[cfg.prediction],
        "rescale_betas_zero_snr": cfg.zero_terminal_snr,
        "algorithm_type": "dpmsolver++",
        "solver_order": 2,
        "solver_type": "midpoint",
        "lower_order_final": True,
        "euler_at_final": False,
        "final_sigmas_type": "zero",
        "thresholding": False,
        "use_karras_sigmas": False,
        "use_exponential_sigmas": False,
        "use_beta_sigmas": False,
        "use_lu_lambdas": False,
        "use_flow_sigmas": False,
        "variance_type": None,
        "timestep_spacing": "linspace",
        "steps_offset": 0,
    }


def edm_scheduler_config(cfg: DiffusionConfig) -> dict[str, Any]:
    """For an EDM-preconditioned run: diffusers' `EDMDPMSolverMultistepScheduler`, whose preconditioning
    (c_in = 1/sqrt(σ² + σ_d²), c_noise = ¼ ln σ, c_skip, c_out with prediction_type "epsilon") is ours
    (Karras et al. 2022, Table 1), over the run's noise range σ_min … σ_max (the schedule's σ table). Its
    steps are Karras σ (ρ = 7) rather than our DPM-Solver++'s "linspace" timesteps: the images are those of
    `latentdiff sample --sampler euler` with `EDMEulerScheduler` loaded from the same folder, and close to,
    not equal to, our default sampler's."""
    from latentdiff.diffusion.schedule import make_schedule

    sigmas = make_schedule(cfg).sigmas
    return {
        "_class_name": "EDMDPMSolverMultistepScheduler",
        "sigma_min": float(sigmas[0]),
        "sigma_max": float(sigmas[-1]),
        "sigma_data": cfg.sigma_data,
        "sigma_schedule": "karras",
        "num_train_timesteps": cfg.num_timesteps,
        "prediction_type": "epsilon",
        "rho": 7.0,
        "solver_order": 2,
        "thresholding": False,
        "algorithm_type": "dpmsolver++",
        "solver_type": "midpoint",
        "lower_order_final": True,
        "euler_at_final": False,
        "final_sigmas_type": "zero",
    }


def export_to_diffusers(run_dir: str | Path, out_dir: str | Path) -> dict[str, Path]:
    """Write the run's backbone, autoencoder and scheduler in diffusers' formats; returns what was written.

    A text-conditioned run's U-Net is a `UNet2DConditionModel`; its text encoder has no diffusers (or
    transformers) class, so it goes along in latentdiff's format (`text_encoder/`,
    `tokenizer/tokenizer.json`): its output is the U-Net's `encoder_hidden_states`, `ids != pad_id` its
    `encoder_attention_mask`."""
    from latentdiff.autoencoder.vae_diffusers_format import save_diffusers_autoencoder
    from latentdiff.nets.unet_diffusers_format import save_diffusers_unet
    from latentdiff.pipeline import LatentDiffusionPipeline

    pipe = LatentDiffusionPipeline.from_pretrained(run_dir, device="cpu")
    out = Path(out_dir)
    backbone, written, text = pipe.backbone, {}, None
    if pipe.takes_text:
        written["text_encoder"] = backbone.text_encoder.save_pretrained(out / "text_encoder")
        written["tokenizer"] = backbone.tokenizer.save(out / "tokenizer" / "tokenizer.json")
        text = {"format": "latentdiff.text_encoder", "pad_id": backbone.tokenizer.pad_id}
        backbone = backbone.backbone
    if pipe.backbone_name == "dit":
        from latentdiff.nets.dit_diffusers_format import save_diffusers_dit

        written["transformer"] = save_diffusers_dit(backbone, out / "transformer")
    else:
        written["unet"] = save_diffusers_unet(backbone, out / "unet")
    if pipe.autoencoder.kind == "kl":
        written["vae"] = save_diffusers_autoencoder(pipe.autoencoder, out / "vae")
    (out / "scheduler").mkdir(parents=True, exist_ok=True)
    write_json(diffusers_scheduler_config(pipe.diffusion), out / "scheduler" / "scheduler_config.json")
    written["scheduler"] = out / "scheduler"
    ae = pipe.autoencoder.config
    write_json(
        {
            "autoencoder_kind": ae.kind,
            "scale_factor": ae.scale_factor,
            "shift_factor": ae.shift_factor,
            "class_names": pipe.class_names,
            "null_class": pipe.num_classes if pipe.num_classes else None,
            "text_encoder": text,
        },
        out / "latentdiff.json",
    )
    written["latentdiff"] = out / "latentdiff.json"
    return written
