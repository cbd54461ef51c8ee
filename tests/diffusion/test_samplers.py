"""Samplers against diffusers 0.42.1 loops, plus the behaviours the pipeline relies on.

Oracle precision: DDPM and DDIM run in float64 on both sides with diffusers' ᾱ table replaced by ours
and agree to ~1e-15. DPM-Solver++, Euler and Heun keep float32 σ tables (and cast the sample to float32)
inside diffusers, so their float64 loops agree to ~5e-7; the bar is 1e-5 everywhere.
"""

from __future__ import annotations

import pytest
import torch
from diffusers import (
    DDIMScheduler,
    DDPMScheduler,
    DPMSolverMultistepScheduler,
    EulerDiscreteScheduler,
    HeunDiscreteScheduler,
)
from diffusion_toys import diffusers_scheduler, schedule_for, toy_model

from latentdiff.diffusion import SAMPLERS, Denoiser, get_sampler, sampler_timesteps
from latentdiff.diffusion.samplers import network_evaluations
from latentdiff.diffusion.samplers_discrete import dpmpp_timesteps, spaced_timesteps
from latentdiff.diffusion.samplers_karras import karras_sigmas

# diffusers 0.42.1 calls np.array on torch tensors in set_timesteps; numpy 2 warns about it.
pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")

ATOL = 1e-5
SHAPE = (2, 2, 4, 4)


def x_T(seed: int = 0, dtype=torch.float64):
    return torch.randn(SHAPE, generator=torch.Generator().manual_seed(seed), dtype=dtype)


def gen(seed: int = 1) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def run_diffusers(sched, model, x, timesteps, **step_kw):
    for t in timesteps:
        x = sched.step(model(sched.scale_model_input(x, t), t), t, x, **step_kw).prev_sample
    return x


# ---------------------------------------------------------------- oracles


@pytest.mark.parametrize("steps", [1000, 25])
@pytest.mark.parametrize("prediction", ["eps", "v", "x0"])
def test_ddpm_matches_diffusers_including_the_posterior_noise(prediction, steps):
    sched = schedule_for()
    model = toy_model(sched, prediction)
    ref = diffusers_scheduler(DDPMScheduler, sched, prediction, clip_sample=False)
    ref.set_timesteps(steps)
    expected = run_diffusers(ref, model, x_T(), ref.timesteps, generator=gen())
    ours = SAMPLERS["ddpm"](Denoiser(model, sched, prediction), x_T(), sched, steps, generator=gen())
    torch.testing.assert_close(ours, expected, atol=1e-12, rtol=0)


@pytest.mark.parametrize("eta", [0.0, 1.0])
@pytest.mark.parametrize("prediction", ["eps", "v", "x0"])
def test_ddim_matches_diffusers(prediction, eta):
    sched = schedule_for()
    model = toy_model(sched, prediction)
    ref = diffusers_scheduler(DDIMScheduler, sched, prediction, clip_sample=False)
    ref.set_timesteps(20)
    expected = run_diffusers(ref, model, x_T(), ref.timesteps, eta=eta, generator=gen())
    ours = SAMPLERS["ddim"](Denoiser(model, sched, prediction), x_T(), sched, 20, eta=eta, generator=gen())
    torch.testing.assert_close(ours, expected, atol=1e-12, rtol=0)


def test_ddim_with_clipped_x0_matches_diffusers_clip_sample():
    sched = schedule_for()
    model = toy_model(sched, "eps")
    ref = diffusers_scheduler(DDIMScheduler, sched, "eps", clip_sample=True, clip_sample_range=0.3)
    ref.set_timesteps(15)
    expected = run_diffusers(ref, model, 4 * x_T(), ref.timesteps, use_clipped_model_output=True)
    den = Denoiser(model, sched, "eps", clip_x0=(-0.3, 0.3))
    torch.testing.assert_close(SAMPLERS["ddim"](den, 4 * x_T(), sched, 15), expected, atol=1e-12, rtol=0)


def test_ddim_on_a_zero_terminal_snr_schedule_matches_diffusers():
    """Lin et al. 2024's recipe: ᾱ_{T−1} = 0, v-prediction, trailing timesteps starting at T−1."""
    sched = schedule_for("scaled_linear", beta_start=0.00085, beta_end=0.012, zero_terminal_snr=True)
    model = toy_model(sched, "v")
    ref = diffusers_scheduler(DDIMScheduler, sched, "v", clip_sample=False, timestep_spacing="trailing")
    ref.set_timesteps(10)
    expected = run_diffusers(ref, model, x_T(), ref.timesteps)
    den = Denoiser(model, sched, "v")
    ours = SAMPLERS["ddim"](den, x_T(), sched, 10, timestep_spacing="trailing")
    assert ref.timesteps[0] == 999
    torch.testing.assert_close(ours, expected, atol=1e-12, rtol=0)


@pytest.mark.parametrize("steps", [20, 10])
@pytest.mark.parametrize("prediction", ["eps", "v", "x0"])
def test_dpmpp_2m_matches_diffusers_loop(prediction, steps):
    sched = schedule_for()
    model = toy_model(sched, prediction)
    ref = diffusers_scheduler(DPMSolverMultistepScheduler, sched, prediction)
    ref.set_timesteps(steps)
    expected = run_diffusers(ref, model, x_T(), ref.timesteps)
    ours = SAMPLERS["dpmpp_2m"](Denoiser(model, sched, prediction), x_T(), sched, steps)
    torch.testing.assert_close(ours, expected, atol=ATOL, rtol=0)


def test_dpmpp_2m_on_a_zero_terminal_snr_schedule_matches_diffusers():
    """Both sides step with ᾱ_{T−1} = 2⁻²⁴ in place of 0. x0-prediction keeps the denoiser out of it:
    diffusers also converts ε/v outputs with that stand-in, while our Denoiser uses the exact ᾱ = 0."""
    sched = schedule_for("scaled_linear", beta_start=0.00085, beta_end=0.012, zero_terminal_snr=True)
    model = toy_model(sched, "x0")
    ref = diffusers_scheduler(DPMSolverMultistepScheduler, sched, "x0", timestep_spacing="trailing")
    ref.alphas_cumprod[-1] = 2**-24  # what diffusers itself does for rescale_betas_zero_snr
    ref.set_timesteps(12)
    expected = run_diffusers(ref, model, x_T(), ref.timesteps)
    ours = SAMPLERS["dpmpp_2m"](Denoiser(model, sched, "x0"), x_T(), sched, 12, timestep_spacing="trailing")
    torch.testing.assert_close(ours, expected, atol=ATOL, rtol=0)


@pytest.mark.parametrize("prediction", ["eps", "v"])
@pytest.mark.parametrize(
    ("name", "cls"), [("euler", EulerDiscreteScheduler), ("heun", HeunDiscreteScheduler)]
)
def test_karras_euler_and_heun_match_diffusers_loops(name, cls, prediction):
    sched = schedule_for("scaled_linear", beta_start=0.00085, beta_end=0.012)
    model = toy_model(sched, prediction)
    ref = diffusers_scheduler(cls, sched, prediction, use_karras_sigmas=True)
    ref.set_timesteps(20)
    # the same initial state: x_T ~ N(0, I) in VP scale is x_T · sqrt(1 + σ_max²) in VE scale
    start = x_T() * (1 + ref.sigmas[0].double() ** 2) ** 0.5
    expected = run_diffusers(ref, model, start, ref.timesteps)
    ours = SAMPLERS[name](Denoiser(model, sched, prediction), x_T(), sched, 20)
    torch.testing.assert_close(ours, expected, atol=ATOL, rtol=0)
    torch.testing.assert_close(
        sampler_timesteps(name, sched, 20), ref.timesteps.unique_consecutive().double(), atol=1e-3, rtol=0
    )


def test_euler_img2img_from_add_noise_at_a_fractional_timestep_matches_diffusers():
    """Noising a clean latent to sampler_timesteps(...)[k] with add_noise (a fractional t) puts it exactly
    at the sampler's σ_k: the tail matches diffusers' Euler started at begin_index k with its own
    add_noise."""
    sched = schedule_for()
    model = toy_model(sched, "eps")
    z0, noise, k = 0.5 * x_T(3), x_T(4), 6
    ref = diffusers_scheduler(EulerDiscreteScheduler, sched, "eps", use_karras_sigmas=True)
    ref.set_timesteps(20)
    ref.set_begin_index(k)
    expected = run_diffusers(
        ref, model, ref.add_noise(z0, noise, ref.timesteps[k : k + 1]), ref.timesteps[k:]
    )
    t_k = sampler_timesteps("euler", sched, 20)[k]
    start = sched.add_noise(z0, noise, t_k)
    ours = SAMPLERS["euler"](Denoiser(model, sched, "eps"), start, sched, 20, start_index=k)
    torch.testing.assert_close(ours, expected, atol=ATOL, rtol=0)


@pytest.mark.parametrize("spacing", ["leading", "linspace", "trailing"])
def test_timestep_spacings_match_diffusers(spacing):
    sched = schedule_for()
    ddim = DDIMScheduler(timestep_spacing=spacing)
    dpm = DPMSolverMultistepScheduler(timestep_spacing=spacing)
    for steps in [*range(1, 40), 50, 61, 100, 250, 333, 999, 1000]:
        ours = spaced_timesteps(1000, steps, spacing)
        assert len(ours) == steps and min(ours) >= 0
        ddim.set_timesteps(steps)
        # diffusers' trailing arange sometimes yields steps + 1 entries ending at −1; we keep `steps`
        if len(ddim.timesteps) == steps:
            assert ours == ddim.timesteps.tolist()
        if steps < 1000:
            dpm.set_timesteps(steps)
            if len(dpm.timesteps) == steps:
                assert dpmpp_timesteps(sched, steps, spacing).tolist() == dpm.timesteps.tolist()


# ---------------------------------------------------------------- behaviours

SAMPLER_OPTS = {name: {} for name in SAMPLERS} | {"ddim": {"eta": 1.0}}
STOCHASTIC = ("ddpm", "ddim", "edm_stochastic")  # ddim with eta = 1


@pytest.mark.parametrize("name", list(SAMPLERS))
def test_sampling_is_bit_identical_for_a_seed_and_differs_for_another(name):
    sched = schedule_for()
    den = Denoiser(toy_model(sched, "eps"), sched, "eps")
    kw = SAMPLER_OPTS[name]
    a = get_sampler(name)(den, x_T(dtype=torch.float32), sched, 8, generator=gen(5), **kw)
    b = get_sampler(name)(den, x_T(dtype=torch.float32), sched, 8, generator=gen(5), **kw)
    assert torch.equal(a, b)
    c = get_sampler(name)(den, x_T(dtype=torch.float32), sched, 8, generator=gen(6), **kw)
    if name in STOCHASTIC:
        assert not torch.allclose(a, c)
    else:  # ODE solvers draw nothing
        assert torch.equal(a, c)


@pytest.mark.parametrize("kind", ["linear", "cosine"])
def test_karras_timesteps_carry_exactly_their_sigma(kind):
    """The denoiser, called at the fractional t of σ_i, converts with α = 1/sqrt(1 + σ_i²) (to 1e-12); a
    linear-in-σ interpolation of t would be off by up to 0.3 % here."""
    sched = schedule_for(kind)
    sigmas = karras_sigmas(sched, 30)
    alpha, sigma = sched.alpha_sigma(sampler_timesteps("euler", sched, 30))
    torch.testing.assert_close(sigma / alpha, sigmas[:-1], atol=0, rtol=1e-12)
    ends = torch.stack([sigmas[0], sigmas[-2]])
    torch.testing.assert_close(ends, torch.stack([sched.sigmas[-1], sched.sigmas[0]]), atol=0, rtol=1e-12)
    assert sigmas[-1] == 0


@pytest.mark.parametrize("name", list(SAMPLERS))
def test_callback_sees_every_step_and_its_replacement_propagates(name):
    sched = schedule_for()
    den = Denoiser(toy_model(sched, "eps"), sched, "eps")
    steps, k, kw = 6, 2, SAMPLER_OPTS[name]
    if name == "edm_stochastic":  # with churn the next input is x after fresh noise (its own test below)
        kw = {"s_churn": 0.0}
    constant = torch.full(SHAPE, 0.25, dtype=torch.float64)
    inputs, seen = [], []

    def recording_denoiser(x, t):
        inputs.append(x.clone())
        return den(x, t)

    def replace_at_k(info):
        seen.append(info)
        return constant if info["i"] == k else None

    get_sampler(name)(recording_denoiser, x_T(), sched, steps, generator=gen(), callback=replace_at_k, **kw)
    ts = sampler_timesteps(name, sched, steps)
    assert [info["i"] for info in seen] == list(range(steps))
    for i, info in enumerate(seen[:-1]):
        assert torch.equal(info["t"], ts[i + 1].expand(2))
    assert seen[-1]["t"].tolist() == [-1, -1]
    assert all(info["x0_pred"].shape == SHAPE for info in seen)
    # the x shown after step i is the next step's input (VP scale), except where the callback replaced it
    calls_per_step = 2 if name in ("heun", "edm_stochastic") else 1
    for i in range(steps - 1):
        expected = constant if i == k else seen[i]["x"]
        torch.testing.assert_close(inputs[calls_per_step * (i + 1)], expected, atol=1e-12, rtol=0)
    # a callback replacing x after the last step decides the output
    always = get_sampler(name)(
        den, x_T(), sched, steps, generator=gen(), callback=lambda info: constant, **kw
    )
    torch.testing.assert_close(always, constant, atol=1e-12, rtol=0)


@pytest.mark.parametrize("name", ["ddpm", "ddim", "euler", "heun", "edm_stochastic"])
def test_start_index_runs_the_tail_of_the_full_loop(name):
    sched = schedule_for()
    den = Denoiser(toy_model(sched, "v"), sched, "v")
    steps, k, kw = 10, 4, SAMPLER_OPTS[name]
    recorded = {}

    def record(info):
        if info["i"] == k - 1:
            recorded.update(x=info["x"].clone(), rng=g.get_state())

    g = gen()
    full = get_sampler(name)(den, x_T(), sched, steps, generator=g, callback=record, **kw)
    g_tail = torch.Generator()
    g_tail.set_state(recorded["rng"])
    tail = get_sampler(name)(den, recorded["x"], sched, steps, generator=g_tail, start_index=k, **kw)
    torch.testing.assert_close(tail, full, atol=1e-12, rtol=0)


def test_dpmpp_2m_start_index_matches_diffusers_begin_index():
    """A multistep solver has no history at start_index: like diffusers' img2img, it restarts first order."""
    sched = schedule_for()
    model = toy_model(sched, "eps")
    k = 5
    ref = diffusers_scheduler(DPMSolverMultistepScheduler, sched, "eps")
    ref.set_timesteps(20)
    ref.set_begin_index(k)
    start = sched.add_noise(0.5 * x_T(3), x_T(4), sampler_timesteps("dpmpp_2m", sched, 20)[k])
    expected = run_diffusers(ref, model, start, ref.timesteps[k:])
    ours = SAMPLERS["dpmpp_2m"](Denoiser(model, sched, "eps"), start, sched, 20, start_index=k)
    torch.testing.assert_close(ours, expected, atol=ATOL, rtol=0)


@pytest.mark.parametrize("name", list(SAMPLERS))
def test_half_precision_input_returns_its_dtype_close_to_float32(name):
    sched = schedule_for()
    den = Denoiser(toy_model(sched, "eps"), sched, "eps")
    kw = SAMPLER_OPTS[name]
    full = get_sampler(name)(den, x_T(dtype=torch.float32), sched, 6, generator=gen(), **kw)
    half = get_sampler(name)(den, x_T(dtype=torch.float32).bfloat16(), sched, 6, generator=gen(), **kw)
    assert half.dtype == torch.bfloat16
    assert (half.float() - full).abs().max() < 0.1


def test_registry_and_argument_errors_are_clear():
    sched = schedule_for()
    den = Denoiser(toy_model(sched, "eps"), sched, "eps")
    with pytest.raises(ValueError, match="ddpm, ddim, dpmpp_2m, euler, heun, edm_stochastic"):
        get_sampler("plms")
    with pytest.raises(ValueError, match=r"start_index must lie in \[0, 4\]"):
        get_sampler("ddim")(den, x_T(), sched, 5, start_index=5)
    with pytest.raises(ValueError, match=r"steps must lie in \[1, 1000\]"):
        get_sampler("ddpm")(den, x_T(), sched, 1001)
    with pytest.raises(ValueError, match="callback returned shape"):
        get_sampler("euler")(den, x_T(), sched, 3, callback=lambda info: torch.zeros(1))


def exact_gaussian_denoiser(schedule, std: float = 0.5):
    """The exact x̂_0 of data N(0, std²) (VP scale): any correct sampler, ODE or SDE, returns that law."""

    def denoise(x, t):
        a, s = (c.to(x.dtype).reshape(-1, *[1] * (x.ndim - 1)) for c in schedule.alpha_sigma(t))
        x0 = a * std**2 * x / (a**2 * std**2 + s**2)
        return x0, (x - a * x0) / s

    return denoise


def test_edm_stochastic_without_churn_is_heun_and_with_churn_samples_the_data_law():
    """Karras et al. 2022, Algorithm 2. The network must be called at the raised level σ̂ = (1 + γ)σ: telling
    it σ_i instead (as diffusers' Euler with s_churn does) leaves std ≈ 0.70 here instead of 0.50."""
    sched = schedule_for()
    den = Denoiser(toy_model(sched, "v"), sched, "v")
    heun = SAMPLERS["heun"](den, x_T(), sched, 12)
    no_churn = SAMPLERS["edm_stochastic"](den, x_T(), sched, 12, generator=gen(), s_churn=0.0)
    torch.testing.assert_close(no_churn, heun, atol=1e-12, rtol=0)
    exact = exact_gaussian_denoiser(sched)
    start = torch.randn(20_000, 1, 1, 1, generator=gen(0), dtype=torch.float64)
    ode = SAMPLERS["heun"](exact, start, sched, 100)
    sde = SAMPLERS["edm_stochastic"](exact, start, sched, 100, generator=gen(), s_churn=40, s_noise=1.0)
    assert abs(float(sde.std()) - 0.5) < 0.01 and abs(float(sde.mean())) < 0.01
    assert float((sde - ode).abs().mean()) > 0.1  # the churn noise changed the samples


def test_edm_stochastic_churns_only_inside_its_range_and_never_above_the_trained_sigma_max():
    sched = schedule_for()
    seen = []

    def recording(x, t):
        seen.append(t[0].item())
        return exact_gaussian_denoiser(sched)(x, t)

    SAMPLERS["edm_stochastic"](recording, x_T(), sched, 10, generator=gen(), s_churn=40, s_tmax=1e9)
    assert max(seen) <= sched.num_timesteps - 1 and seen[0] == sched.num_timesteps - 1
    plan = sampler_timesteps("edm_stochastic", sched, 10)
    first_calls = torch.tensor(seen[::2]).double()  # two calls per step, one in the last
    raised = first_calls[1:-1] > plan[1:-1] + 1e-9  # σ_i in [0.05, ∞): each step starts above its plan
    assert bool(raised.all())
    exact = exact_gaussian_denoiser(sched)
    off = SAMPLERS["edm_stochastic"](exact, x_T(), sched, 10, generator=gen(), s_tmin=1e6)
    torch.testing.assert_close(off, SAMPLERS["heun"](exact, x_T(), sched, 10), atol=1e-12, rtol=0)


@pytest.mark.parametrize("name", list(SAMPLERS))
def test_network_evaluations_counts_the_denoiser_calls(name):
    """What the planner budgets for the evaluation's sampling is what the sampler calls."""
    sched = schedule_for()
    den = Denoiser(toy_model(sched, "eps"), sched, "eps")
    calls = []

    def counting(x, t):
        calls.append(1)
        return den(x, t)

    get_sampler(name)(counting, x_T(), sched, 7, generator=gen(), **SAMPLER_OPTS[name])
    assert len(calls) == network_evaluations(name, 7)
