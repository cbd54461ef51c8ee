"""From a folder and a time budget to a training plan: what the data is, which sizes this machine can train
in that time, and how the time is split between the stages.

`data_summary.inspect_data` reads the data (channels, a resolution from the images' sizes, classes);
`speed_probe.probe_speeds` times a few training steps of each preset on this machine; `make_plan` turns the
budget and those measurements into a `Plan` (presets, f, minutes per stage, expected steps), which
`latentdiff train` prints before training and keeps in the run folder (`plan.yaml`) so that `--resume`
continues the same plan.

The rule (`make_plan`): reserve time for the evaluation, give Stage 1 a fixed share of the rest
(`STAGE1_SHARE`), then pick for each stage the largest preset whose measured speed still gives it
`MIN_IMAGES` training images in its time — more steps of a smaller model beat a few steps of a large one on a
short budget (the demo's and the benchmarks' experience: a stage needs ~1,000+ steps before its samples or
reconstructions are usable).
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass, field
from typing import Any

import torch

from latentdiff.diffusion.samplers import network_evaluations
from latentdiff.training.data_summary import DataSummary
from latentdiff.training.presets import PRESET_NAMES, choose_f

log = logging.getLogger(__name__)

# of the training time. Stage 1 is what limits the samples on a short budget: make demo's `tiny` autoencoder
# after 2.6 minutes reconstructs the test images at rFID 33.4 (N = 2,000, floor 13.1) and its samples score
# 43.3; twice the time gives rFID 28.4, while L1 instead of L2 (34.3), 8 latent channels (33.4) or a GAN
# term from step 600 (41.4) do not help at equal time (benchmarks/stage1_variants.py). Was 25 %.
STAGE1_SHARE = 0.4
# images a stage must see (steps × batch) before a larger preset is worth its slower steps: ~3,100 steps of
# 32 for Stage 1, about 2,350 of 128 for Stage 2. On this budget scale steps beat size in both stages.
# Stage 1 was 40,000 until session 13, which at 60 minutes picked the `base` autoencoder (10.2 M) for 1,295
# steps in 20.3 minutes: rFID 19.5 at N = 2,000 (floor 13.1); the `small` one (2.6 M) in the same minutes
# made 4,349 steps and reconstructs at 15.8 (benchmarks/stage1_variants.py). 100,000 picks `small` at 60
# minutes on 2 Zen 4 cores (~149,000 images) and keeps `tiny` at 15.
# Stage 2 was 120,000 until session 12, which at 60 minutes picked the `large` U-Net for 1,349 steps: on
# that run's frozen `base` autoencoder and `tiny` guide, `large` scored FID 30.6 at N = 2,000 (floor 13.1),
# `base` with 1,920 steps 27.8 and `small` with 3,430 steps 27.5 (benchmarks/guidance.py); at 8 minutes on
# make demo's latents `small` (1,494 steps, 39.2) and `tiny` (4,333, 39.7) beat `large` (739, 41.1).
# 300,000 picks `small` at 60 minutes on 2 Zen 4 cores and `tiny` at 15
MIN_IMAGES = {"autoencoder": 100_000, "diffusion": 300_000}
# Autoguidance (Karras et al. 2024): a `tiny` U-Net trained on the same latents for 15 % of Stage 2's time
# (an eighth of its steps without a budget) guides the model. On those 8-minute Fashion-MNIST models a `tiny`
# guide of 1.5 minutes took the `small` U-Net from FID 39.2 (classifier-free, w = 1.5) to 36.1 and the
# `large` one from 41.1 to 39.7 (benchmarks/guidance.py); it is also the only guidance an unconditional
# model has
GUIDE_PRESET, GUIDE_SHARE, GUIDE_STEPS_DIVISOR = "tiny", 0.15, 8
# A model that is already `GUIDE_PRESET` is guided by its own EMA at this fraction of its steps (written
# during Stage 2: no training time of its own, which goes to Stage 2 instead); a separately trained guide of
# the same preset would only be a less-trained copy of it. On make demo's latents (session 14, N = 2,000,
# floor 13.1, w = 2) a `tiny` U-Net of 3,502 steps scored 29.99 / 29.53 / 31.04 / 32.07 / 33.94 guided by its
# EMA at steps 250 / 500 / 750 / 1,000 / 1,500 and 30.12 with a separate `tiny` guide of 570 steps; the plan
# it replaces (2,932 steps + that guide) scored 31.33 (benchmarks/guidance.py). A larger U-Net keeps its
# separate `tiny` guide: on the 60-minute run's latents (session 15) one `base` U-Net trained for the Stage 2
# and guide time (2,640 steps) scored 22.64 guided by its EMA at step 500 and 22.73 by the run's `tiny`
# guide (the run as planned, 2,243 steps + that guide: 22.89) — equal, and the `tiny` guide samples faster
GUIDE_SNAPSHOT = 0.15
SAMPLES_FOR_EVAL = 1000  # at most; fewer when the held-out split is smaller
# the evaluation's sampler (FID and the sample grids of `run_report.evaluate_run`)
EVAL_SAMPLER, EVAL_STEPS, EVAL_SAMPLER_OPTS = "dpmpp_2m", 20, {}
# Work outside the training steps, in units of the probe's training rate (measured on 2 CPU cores,
# Fashion-MNIST: encoding ran at 5.0-5.5× the `base` autoencoder's training images/s and 10.6× the `tiny`
# one's, DPM-Solver++ with guidance at 2.1× the U-Net's training images/s per network evaluation).
# Inception-v3's seconds per image are measured by `probe_inception` (2 Zen 4 cores: 0.06-0.07, 15-16
# images/s); these are the fallback when they are not (a GPU ~15× faster).
ENCODE_SPEEDUP = 5.0
SAMPLING_SPEEDUP = 2.0
INCEPTION_SECONDS = {"cpu": 0.065, "cuda": 0.004}
# Inception passes of the evaluation: held-out reference images, samples, train images (the floor); the two
# of real images are skipped when their features are cached (`cached_references`)
INCEPTION_PASSES = 3
DEFAULT_SIZE = {"cpu": "small", "cuda": "base"}
DEFAULT_STEPS = (6000, 10_000)  # Stage 1, Stage 2 without a time budget


# --- the plan -----------------------------------------------------------------------------------------------


@dataclass
class Plan:
    """Everything `latentdiff train` decided before training, with the reasons (kept as RUN/plan.yaml)."""

    data: str
    channels: int
    resolution: int
    conditional: bool
    autoencoder: str
    f: int
    backbone: str
    minutes: float  # the whole budget, evaluation included (0: no budget, fixed steps)
    stage1_minutes: float
    stage2_minutes: float
    eval_minutes: float
    batch_sizes: dict[str, int]
    expected_steps: dict[str, int]
    speeds: dict[str, dict[str, float]] = field(default_factory=dict)
    reasons: list[str] = field(default_factory=list)
    device: str = "cpu"
    text: bool = False  # text-conditioned Stage 2 (the data has captions); `conditional` is about classes
    encode_minutes: float = 0.0  # latent statistics + encoding, between the stages
    guide_minutes: float = 0.0  # the autoguidance guide's training time, after Stage 2 (within its share)
    # > 0: the guide is the model's own EMA at this fraction of its steps (GUIDE_SNAPSHOT), not trained apart
    guide_snapshot: float = 0.0
    inception_seconds: float | None = None  # measured seconds per image of the evaluation's Inception-v3
    cached_references: int = 0  # of the evaluation's two real-image Inception passes, those already cached

    def describe(self) -> str:
        kind = (
            "text-conditioned" if self.text else "class-conditional" if self.conditional else "unconditional"
        )
        lines = [
            f"data: {self.data}, {self.channels} channel(s), {self.resolution} px, {kind}",
            f"Stage 1: KL autoencoder `{self.autoencoder}`, f = {self.f}, {self.stage1_minutes:.1f} min, "
            f"~{self.expected_steps['autoencoder']} steps × {self.batch_sizes['autoencoder']}",
            f"Stage 2: U-Net `{self.backbone}`, {self.stage2_minutes:.1f} min, "
            f"~{self.expected_steps['diffusion']} steps × {self.batch_sizes['diffusion']}"
            + (
                f"; its autoguidance guide: its own EMA at step ~{self.expected_steps['guide']} "
                f"({self.guide_snapshot:.0%} of its steps, no training of its own)"
                if self.guide_snapshot
                else f"; then its autoguidance guide, U-Net `{GUIDE_PRESET}`, {self.guide_minutes:.1f} min, "
                f"~{self.expected_steps['guide']} steps"
                if "guide" in self.expected_steps
                else ""
            ),
            f"latent statistics and encoding: ~{self.encode_minutes:.1f} min; "
            f"evaluation: ~{self.eval_minutes:.1f} min; expected finish in {self.total_minutes():.1f} min",
        ]
        return "\n".join(lines + [f"  - {r}" for r in self.reasons])

    def total_minutes(self) -> float:
        return (
            self.stage1_minutes
            + self.encode_minutes
            + self.stage2_minutes
            + self.guide_minutes
            + self.eval_minutes
        )

    def key(self) -> dict[str, Any]:
        """What must not change on `--resume` (the measurements may)."""
        return {
            k: v
            for k, v in dataclasses.asdict(self).items()
            if k not in ("speeds", "reasons", "expected_steps")
        }


def eval_minutes_for(budget: float) -> float:
    """A first guess of the time kept back for the evaluation, before the sizes are known: 5 % of the budget,
    0.5 to 3 minutes (`expected_overheads` replaces it once they are)."""
    return min(3.0, max(0.5, 0.05 * budget))


def expected_overheads(
    summary: DataSummary,
    device: torch.device,
    ae_rate: float,
    dm_rate: float,
    inception_seconds: float | None = None,
    cached_references: int = 0,
) -> tuple[float, float]:
    """(minutes of latent statistics + encoding, minutes of evaluation) for models training at `ae_rate` and
    `dm_rate` images/s: the evaluation samples min(1,000, held-out) images with `EVAL_SAMPLER` (two
    network evaluations per call with guidance), embeds them and as many held-out and train images (the
    floor) with Inception-v3 at `inception_seconds` per image (the measured speed; else
    `INCEPTION_SECONDS`), less the `cached_references` real-image passes whose features are cached (the
    first run on a data set computes them, later ones read them), and reconstructs as many held-out images
    for PSNR/SSIM."""
    encode_rate = ENCODE_SPEEDUP * ae_rate
    n_train = summary.num_images
    statistics_and_encoding = (min(10_000, n_train) + n_train) / encode_rate / 60
    n_eval = max(1, min(SAMPLES_FOR_EVAL, n_train // 9))
    evaluations = network_evaluations(EVAL_SAMPLER, EVAL_STEPS) * (
        2 if summary.num_classes or summary.captioned else 1
    )
    sampling = (n_eval + 80) * evaluations / (SAMPLING_SPEEDUP * dm_rate)
    per_image = inception_seconds or INCEPTION_SECONDS["cuda" if device.type == "cuda" else "cpu"]
    inception = (INCEPTION_PASSES - cached_references) * n_eval * per_image
    reconstruction = n_eval / (ENCODE_SPEEDUP / 2 * ae_rate)
    return statistics_and_encoding, (sampling + inception + reconstruction + 10) / 60


def make_plan(
    summary: DataSummary,
    device: torch.device,
    minutes: float | None = None,
    size: str | None = None,
    speeds: dict[str, dict[str, float]] | None = None,
    probe_seconds: float = 0.0,
    steps: tuple[int, int] | None = None,
    inception_seconds: float | None = None,
    cached_references: int = 0,
) -> Plan:
    """The plan for `minutes` of wall clock (evaluation included), choosing sizes from measured `speeds`
    (and the evaluation's time from the measured `inception_seconds` per image, less the `cached_references`
    Inception passes over real images whose features are cached); or, with `size` (or
    neither), that preset for both stages with a stated expected time."""
    f = choose_f(summary.resolution)
    side = summary.resolution // f
    batch = {"autoencoder": 32, "diffusion": 128 if side <= 8 else 64}
    reasons = list(summary.notes)
    reasons.append(f"f = {f}: {summary.resolution} px images → {side}×{side}×4 latents")
    if minutes is None:
        asked = size is not None
        size = size or DEFAULT_SIZE["cuda" if device.type == "cuda" else "cpu"]
        work = dict(zip(("autoencoder", "diffusion"), steps or DEFAULT_STEPS, strict=True))
        reasons.append(
            f"size `{size}` for both stages ({'asked for' if asked else 'the default on this device'}), "
            f"{work['autoencoder']} + {work['diffusion']} steps ({'asked for' if steps else 'the default'})"
        )
        s1 = s2 = encode = 0.0
        ev = eval_minutes_for(0.0)
        if speeds:
            ae_rate, dm_rate = speeds["autoencoder"][size], speeds["diffusion"][size]
            s1 = work["autoencoder"] * batch["autoencoder"] / ae_rate / 60
            s2 = work["diffusion"] * batch["diffusion"] / dm_rate / 60
            encode, ev = expected_overheads(
                summary, device, ae_rate, dm_rate, inception_seconds, cached_references
            )
            reasons.append(f"expected time from this machine's measured speed: {s1 + s2:.0f} min of training")
        guide, snapshot = 0.0, 0.0
        if not summary.captioned and size == GUIDE_PRESET:
            snapshot = GUIDE_SNAPSHOT
            work["guide"] = max(1, int(snapshot * work["diffusion"]))
            reasons.append(_snapshot_reason())
        elif not summary.captioned:
            work["guide"] = max(1, work["diffusion"] // GUIDE_STEPS_DIVISOR)
            if speeds and GUIDE_PRESET in speeds["diffusion"]:
                guide = work["guide"] * batch["diffusion"] / speeds["diffusion"][GUIDE_PRESET] / 60
            reasons.append(_guide_reason(f"1/{GUIDE_STEPS_DIVISOR} of Stage 2's steps"))
        return Plan(
            summary.name,
            summary.channels,
            summary.resolution,
            summary.num_classes > 0,
            size,
            f,
            size,
            0.0,
            s1,
            s2,
            ev,
            batch,
            work,
            speeds or {},
            reasons,
            device.type,
            text=summary.captioned,
            encode_minutes=encode,
            guide_minutes=guide,
            inception_seconds=inception_seconds,
            cached_references=cached_references,
            guide_snapshot=snapshot,
        )
    if speeds is None:
        raise ValueError("a time budget needs measured speeds (probe_speeds)")
    if steps is not None:
        raise ValueError(
            "give --minutes (steps fitted to the time) or --steps (a fixed amount of work), not both"
        )
    # the sizes decide the time outside training (encoding, evaluation), which decides the sizes: settle it
    ev, overhead = eval_minutes_for(minutes), 0.0
    guide_share = 0.0 if summary.captioned else GUIDE_SHARE  # of Stage 2's time
    for _ in range(3):
        train = max(0.01, minutes - ev - overhead - probe_seconds / 60)
        chosen, fitting = {}, {}
        for stage, share in (
            ("autoencoder", STAGE1_SHARE * train),
            ("diffusion", (1 - STAGE1_SHARE) * (1 - guide_share) * train),
        ):
            fitting[stage] = [
                p for p, rate in speeds[stage].items() if rate * share * 60 >= MIN_IMAGES[stage]
            ]
            chosen[stage] = max(fitting[stage], key=PRESET_NAMES.index) if fitting[stage] else "tiny"
        rates = {stage: speeds[stage].get(chosen[stage]) or speeds[stage]["tiny"] for stage in chosen}
        new_overhead, new_ev = expected_overheads(
            summary, device, rates["autoencoder"], rates["diffusion"], inception_seconds, cached_references
        )
        settled = abs(new_overhead - overhead) + abs(new_ev - ev) < 0.05
        overhead, ev = new_overhead, new_ev
        if settled:
            break
    # not settled in three rounds: the last sizes keep what their overheads leave
    train = minutes - ev - overhead - probe_seconds / 60
    if train < 0.2:
        raise ValueError(
            f"--minutes {minutes:g} leaves no time to train after the probe ({probe_seconds / 60:.1f} min), "
            f"the evaluation ({ev:.1f} min) and the encoding ({overhead:.1f} min)"
        )
    s1, s2 = STAGE1_SHARE * train, (1 - STAGE1_SHARE) * train
    # the sizes were chosen with the guide's share taken out; a model that is already the guide's preset
    # keeps that share and is guided by its own earlier EMA (GUIDE_SNAPSHOT)
    snapshot = GUIDE_SNAPSHOT if guide_share and chosen["diffusion"] == GUIDE_PRESET else 0.0
    guide = 0.0 if snapshot else guide_share * s2
    s2 -= guide
    expected = {}
    if guide:
        expected["guide"] = int(speeds["diffusion"][GUIDE_PRESET] * guide * 60 / batch["diffusion"])
        reasons.append(_guide_reason(f"{GUIDE_SHARE:.0%} of Stage 2's time"))
    for stage, share in (("autoencoder", s1), ("diffusion", s2)):
        expected[stage] = int(rates[stage] * share * 60 / batch[stage])
        measured = ", ".join(f"{p} {r:.0f}" for p, r in speeds[stage].items())
        reasons.append(
            f"{stage}: `{chosen[stage]}`, the largest preset that sees ≥ {MIN_IMAGES[stage]:,} images in "
            f"{share:.1f} min (measured images/s here: {measured})"
            + ("" if fitting[stage] else "; none reaches it, so the smallest")
        )
    if snapshot:
        expected["guide"] = max(1, int(snapshot * expected["diffusion"]))
        reasons.append(_snapshot_reason())
    reasons.append(
        f"time: {minutes:g} min = {probe_seconds / 60:.1f} probing + {s1:.1f} Stage 1 ({STAGE1_SHARE:.0%} of "
        f"the training time) + {overhead:.1f} latent statistics and encoding + {s2:.1f} Stage 2 + "
        + ("" if snapshot else f"{guide:.1f} its guide + ")
        + f"{ev:.1f} evaluation (both estimated from the measured speeds"
        + (f"; Inception-v3 {1 / inception_seconds:.0f} images/s" if inception_seconds else "")
        + (
            f"; real images' features cached: {cached_references} of its {INCEPTION_PASSES} Inception passes "
            "skipped"
            if cached_references
            else ""
        )
        + "); each stage's cosine schedule is fitted to its time"
    )
    return Plan(
        summary.name,
        summary.channels,
        summary.resolution,
        summary.num_classes > 0,
        chosen["autoencoder"],
        f,
        chosen["diffusion"],
        float(minutes),
        s1,
        s2,
        ev,
        batch,
        expected,
        speeds,
        reasons,
        device.type,
        text=summary.captioned,
        encode_minutes=overhead,
        guide_minutes=guide,
        inception_seconds=inception_seconds,
        cached_references=cached_references,
        guide_snapshot=snapshot,
    )


def _guide_reason(how_long: str) -> str:
    return (
        f"autoguidance: a `{GUIDE_PRESET}` U-Net trained on the same latents for {how_long} guides the model "
        "(Karras et al. 2024; no text-conditioned runs)"
    )


def _snapshot_reason() -> str:
    return (
        f"autoguidance: the U-Net is `{GUIDE_PRESET}` already, so its guide is its own EMA at "
        f"{GUIDE_SNAPSHOT:.0%} of its steps (Karras et al. 2024: a less-trained version of the model), "
        "written during Stage 2; the time a separate guide would take goes to Stage 2 (no text-conditioned "
        "runs)"
    )
