"""Registry of samplers, all with the signature
`sample(denoiser, x_T, schedule, steps, *, generator=None, callback=None, **opts) -> x_0`.

Common opts: `start_index` (begin at that step of the `steps`-step discretisation, with x_T already noised
to `sampler_timesteps(name, schedule, steps)[start_index]` in VP scale: img2img / SDEdit). Per sampler:
`timestep_spacing` (ddpm, ddim, dpmpp_2m), `eta` (ddim), `rho` (euler, heun, edm_stochastic), `s_churn`,
`s_tmin`, `s_tmax`, `s_noise` (edm_stochastic).
"""

from __future__ import annotations

from collections.abc import Callable

from torch import Tensor

from latentdiff.diffusion.samplers_discrete import (
    ddpm_timesteps,
    dpmpp_timesteps,
    sample_ddim,
    sample_ddpm,
    sample_dpmpp_2m,
)
from latentdiff.diffusion.samplers_karras import (
    karras_timesteps,
    sample_edm_stochastic,
    sample_euler,
    sample_heun,
)
from latentdiff.diffusion.schedule import NoiseSchedule

SAMPLERS: dict[str, Callable[..., Tensor]] = {
    "ddpm": sample_ddpm,
    "ddim": sample_ddim,
    "dpmpp_2m": sample_dpmpp_2m,
    "euler": sample_euler,
    "heun": sample_heun,
    "edm_stochastic": sample_edm_stochastic,
}

_TIMESTEPS: dict[str, Callable[..., Tensor]] = {
    "ddpm": ddpm_timesteps,
    "ddim": ddpm_timesteps,
    "dpmpp_2m": dpmpp_timesteps,
    "euler": karras_timesteps,
    "heun": karras_timesteps,
    "edm_stochastic": karras_timesteps,
}


def get_sampler(name: str) -> Callable[..., Tensor]:
    try:
        return SAMPLERS[name]
    except KeyError:
        raise ValueError(f"unknown sampler {name!r}; valid samplers: {', '.join(SAMPLERS)}") from None


def sampler_timesteps(name: str, schedule: NoiseSchedule, steps: int, **opts: object) -> Tensor:
    """The timestep at which each step's input lives (int64, or float64 for the Karras ones), for the same
    `steps` and spacing opts (`timestep_spacing` or `rho`) as the sampler call."""
    get_sampler(name)
    return _TIMESTEPS[name](schedule, steps, **opts)


def network_evaluations(name: str, steps: int) -> int:
    """Denoiser calls of one `steps`-step sampling (per image and guidance branch): the second-order Karras
    samplers evaluate twice per step except the last."""
    get_sampler(name)
    return 2 * steps - 1 if name in ("heun", "edm_stochastic") else steps


def sampler_description(name: str, steps: int, opts: dict[str, float] | None = None) -> str:
    """How a sample grid or a report names its sampler: "dpmpp_2m, 20 steps", "edm_stochastic, 20 steps
    (s_churn=5)"."""
    extra = ", ".join(f"{k}={v:g}" for k, v in (opts or {}).items())
    return f"{name}, {steps} steps" + (f" ({extra})" if extra else "")
