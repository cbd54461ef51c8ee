"""The `latentdiff` command: every subcommand on a tiny configuration, and one-line errors on bad input."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch
from PIL import Image

from latentdiff.cli import main

TINY_AE = [
    "--set",
    "model.base_channels=16",
    "--set",
    "model.groups=8",
    "--set",
    "model.num_res_blocks=1",
    "--set",
    "model.mid_attention=false",
    "--set",
    "stats_images=300",
    "--set",
    "train.warmup_steps=2",
    "--set",
    "train.checkpoint_every=5",
    "--set",
    "data.eval_images=32",
]
TINY_UNET = [
    "--set",
    "unet.base_channels=16",
    "--set",
    "unet.groups=8",
    "--set",
    "unet.num_res_blocks=1",
    "--set",
    "unet.channel_mult=[1,2]",
    "--set",
    "unet.attention_levels=[1]",
    "--set",
    "unet.head_channels=16",
    "--set",
    "train.warmup_steps=2",
    "--set",
    "train.checkpoint_every=5",
    "--set",
    "sample_steps=2",
]


def run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(["-q", *argv])
    out = capsys.readouterr()
    return code, out.out, out.err


def test_help_lists_every_command_with_an_example(capsys):
    out = subprocess.run([sys.executable, "-m", "latentdiff", "--help"], capture_output=True, text=True)
    assert out.returncode == 0
    commands = (
        "train",
        "train-autoencoder",
        "encode",
        "train-diffusion",
        "sample",
        "img2img",
        "inpaint",
        "interpolate",
        "eval-autoencoder",
        "data",
        "demo",
        "import-autoencoder",
        "eval",
        "export-diffusers",
    )
    for cmd in commands:
        assert cmd in out.stdout
        with pytest.raises(SystemExit) as exit_info:
            main([cmd, "--help"])
        assert exit_info.value.code == 0
        assert "example" in capsys.readouterr().out, cmd


def test_data_list_and_export(capsys, tmp_path):
    code, out, _ = run(capsys, "data", "list")
    assert code == 0 and "fashion-mnist" in out and "digits" in out
    code, out, _ = run(
        capsys, "data", "export", "digits", str(tmp_path / "d"), "--split", "test", "--limit", "20"
    )
    assert code == 0 and "wrote 20 images" in out
    assert len(list((tmp_path / "d").rglob("*.png"))) == 20


def test_train_encode_train_diffusion_flow(capsys, tmp_path):
    run_dir = tmp_path / "run"
    code, out, err = run(
        capsys,
        "train-autoencoder",
        "--data",
        "digits",
        "--resolution",
        "8",
        "--kind",
        "kl",
        "--f",
        "2",
        "--steps",
        "6",
        "--batch-size",
        "16",
        "--out",
        str(run_dir),
        *TINY_AE,
    )
    assert code == 0, err
    cfg = json.loads((run_dir / "autoencoder" / "config.json").read_text())
    assert cfg["latent_stats_images"] == 300 and cfg["channel_mult"] == [1, 2]
    code, out, err = run(capsys, "encode", str(run_dir), "--data", "digits", "--out", str(tmp_path / "cache"))
    assert code == 0 and "1618 latents of shape (4, 4, 4)" in out, err
    code, out, err = run(
        capsys,
        "train-diffusion",
        "--out",
        str(run_dir),
        "--latents",
        str(tmp_path / "cache"),
        "--steps",
        "6",
        "--batch-size",
        "16",
        *TINY_UNET,
    )
    assert code == 0, err
    assert (run_dir / "unet" / "ema.safetensors").is_file() and (run_dir / "scheduler.json").is_file()
    # resume of a finished run is a no-op that still succeeds
    code, _, err = run(
        capsys,
        "train-diffusion",
        "--out",
        str(run_dir),
        "--latents",
        str(tmp_path / "cache"),
        "--steps",
        "6",
        "--batch-size",
        "16",
        "--resume",
        *TINY_UNET,
    )
    assert code == 0, err


def test_generation_commands(capsys, tiny_run, tmp_path, monkeypatch):
    monkeypatch.setenv("LATENTDIFF_DATA", str(tmp_path / "cache"))  # rFID reference features go here
    code, out, err = run(
        capsys,
        "sample",
        str(tiny_run),
        "--num-images",
        "4",
        "--steps",
        "3",
        "--class",
        "7",
        "--guidance",
        "2",
        "--out",
        str(tmp_path / "s"),
    )
    assert code == 0, err
    assert len(list((tmp_path / "s").glob("sample_*.png"))) == 4 and (tmp_path / "s" / "grid.png").is_file()

    img = Image.fromarray((torch.rand(8, 8) * 255).byte().numpy(), mode="L")
    img.save(tmp_path / "in.png")
    code, out, err = run(
        capsys,
        "img2img",
        str(tiny_run),
        "--input",
        str(tmp_path / "in.png"),
        "--strength",
        "0.5",
        "--steps",
        "4",
        "--out",
        str(tmp_path / "i2i"),
    )
    assert code == 0 and (tmp_path / "i2i" / "in.png").is_file(), err

    mask = Image.new("L", (8, 8), 0)
    mask.paste(255, (0, 0, 4, 8))
    mask.save(tmp_path / "mask.png")
    code, out, err = run(
        capsys,
        "inpaint",
        str(tiny_run),
        "--input",
        str(tmp_path / "in.png"),
        "--mask",
        str(tmp_path / "mask.png"),
        "--steps",
        "4",
        "--out",
        str(tmp_path / "inp"),
    )
    assert code == 0 and (tmp_path / "inp" / "in.png").is_file(), err

    code, out, err = run(
        capsys,
        "interpolate",
        str(tiny_run),
        "--seed-a",
        "1",
        "--seed-b",
        "2",
        "--n",
        "3",
        "--steps",
        "3",
        "--out",
        str(tmp_path / "walk"),
    )
    assert code == 0 and len(list((tmp_path / "walk").glob("interp_*.png"))) == 3, err

    code, out, err = run(
        capsys,
        "eval-autoencoder",
        str(tiny_run),
        "--data",
        "digits",
        "--limit",
        "50",
        "--json",
        str(tmp_path / "ae.json"),
        "--rfid",
        "10",
    )
    assert code == 0, err
    result = json.loads((tmp_path / "ae.json").read_text())
    assert result["num_images"] == 50 and result["compression_ratio"] == 1.0 and result["psnr"] > 0
    assert result["rfid_num_images"] == 10 and result["rfid"] > 0


def test_eval_writes_fid_with_sample_counts(capsys, tiny_run, tmp_path, monkeypatch):
    monkeypatch.setenv("LATENTDIFF_DATA", str(tmp_path / "cache"))  # reference statistics go here
    code, out, err = run(capsys, "eval", str(tiny_run), "--num-samples", "12", "--steps", "2")
    assert code == 0, err
    metrics = json.loads((tiny_run / "metrics.json").read_text())
    gen = metrics["generation"]
    assert gen["num_fake"] == 12 and gen["num_real"] == 12 and gen["fid"] > 0 and gen["rfid"] >= 0
    assert gen["protocol"].startswith("incv3tf2015-u8-nvbilinear299-tfrange-fp32/")
    assert metrics["autoencoder"]["num_images"] == 179  # the whole digits test split
    assert "FID" in out and "12 samples vs 12 test images" in out


def test_import_autoencoder_from_diffusers(capsys, tmp_path):
    diffusers = pytest.importorskip("diffusers")
    vae = diffusers.AutoencoderKL(
        in_channels=1,
        out_channels=1,
        block_out_channels=(16, 32),
        layers_per_block=1,
        down_block_types=("DownEncoderBlock2D",) * 2,
        up_block_types=("UpDecoderBlock2D",) * 2,
        latent_channels=4,
        norm_num_groups=8,
        sample_size=8,
    )
    vae.save_pretrained(tmp_path / "vae")
    code, out, err = run(
        capsys,
        "import-autoencoder",
        str(tmp_path / "vae"),
        "--out",
        str(tmp_path / "r"),
        "--data",
        "digits",
        "--resolution",
        "8",
        "--stats-images",
        "100",
    )
    assert code == 0, err
    assert "measured over 100 images of digits" in out
    assert (
        json.loads((tmp_path / "r" / "autoencoder" / "config.json").read_text())["latent_stats_images"] == 100
    )


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["sample", "{tmp}/missing", "--out", "{tmp}/o"], "run folder not found"),
        (["sample", "{run}", "--class", "cat", "--out", "{tmp}/o"], "unknown class 'cat'"),
        (["sample", "{run}", "--steps", "0", "--out", "{tmp}/o"], "--steps must be at least 1"),
        (
            [
                "inpaint",
                "{run}",
                "--input",
                "{tmp}/in.png",
                "--mask",
                "{tmp}/big_mask.png",
                "--out",
                "{tmp}/o",
            ],
            "mask .*big_mask.png is 16×16 px, but the model's images are 8×8 px",
        ),
        (["img2img", "{run}", "--input", "{tmp}/none.png", "--out", "{tmp}/o"], "input not found"),
        (
            ["train-autoencoder", "--data", "digits", "--out", "{tmp}/t", "--set", "train.lrr=1"],
            "unknown key 'train.lrr'.*Did you mean 'lr'",
        ),
        (["train-autoencoder", "--data", "no-such-set", "--out", "{tmp}/t"], "not a built-in dataset"),
        (
            [
                "train-autoencoder",
                "--data",
                "digits",
                "--out",
                "{tmp}/t",
                "--precision",
                "fp16",
                "--device",
                "cpu",
            ],
            "fp16 is not supported on cpu",
        ),
        (["train-diffusion", "--out", "{tmp}/empty"], "no autoencoder at"),
    ],
)
def test_bad_input_exits_nonzero_with_one_line_reason(capsys, tiny_run, tmp_path, argv, message):
    Image.new("L", (8, 8), 0).save(tmp_path / "in.png")
    Image.new("L", (16, 16), 255).save(tmp_path / "big_mask.png")
    argv = [a.format(tmp=tmp_path, run=tiny_run) for a in argv]
    code, out, err = run(capsys, *argv)
    assert code != 0
    lines = [line for line in err.strip().splitlines() if line.startswith("latentdiff")]
    assert len(lines) == 1, err
    import re

    assert re.search(message, lines[0]), lines[0]


def test_both_stages_under_torchrun_with_two_processes(tmp_path):
    """The real stages (GAN phase included) under DDP: no hang, one set of files, ranks agree."""
    env = {**__import__("os").environ, "OMP_NUM_THREADS": "1"}
    if torch.cuda.is_available() and torch.cuda.device_count() < 2:
        env["LATENTDIFF_DIST_BACKEND"] = "gloo"  # NCCL refuses two ranks on one GPU
    base = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node",
        "2",
        "-m",
        "latentdiff",
        "-q",
    ]
    run_dir = tmp_path / "ddp"
    ae = subprocess.run(
        [
            *base,
            "train-autoencoder",
            "--data",
            "digits",
            "--resolution",
            "8",
            "--f",
            "2",
            "--steps",
            "4",
            "--batch-size",
            "16",
            "--out",
            str(run_dir),
            "--disc-start",
            "2",
            "--disc-weight",
            "0.5",
            *TINY_AE,
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert ae.returncode == 0, ae.stderr[-3000:]
    assert ae.stdout.count("autoencoder:") == 1  # rank 0 alone reports
    dm = subprocess.run(
        [
            *base,
            "train-diffusion",
            "--out",
            str(run_dir),
            "--data",
            "digits",
            "--resolution",
            "8",
            "--steps",
            "4",
            "--batch-size",
            "16",
            *TINY_UNET,
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert dm.returncode == 0, dm.stderr[-3000:]
    assert (run_dir / "unet" / "model.safetensors").is_file()
    assert (run_dir / "latents" / "cache.json").is_file()


def test_demo_tiny_preset_writes_the_three_results_and_reuses_stages(capsys, tmp_path):
    from latentdiff.data.builtin import BUILTIN

    if not BUILTIN["fashion-mnist"].is_installed():
        pytest.skip(BUILTIN["fashion-mnist"].install_command())
    out = tmp_path / "demo"
    code, text, err = run(capsys, "demo", "--preset", "tiny", "--out", str(out))
    assert code == 0, err
    for name in ("samples.png", "how_it_works.png", "report.md"):
        assert (out / name).is_file(), name
    report = (out / "report.md").read_text()
    assert "d/k = 4" in report and "reconstruction PSNR" in report and "total this run" in report
    with Image.open(out / "samples.png") as img:
        assert img.width > 8 * 32 and img.height > 10 * 32  # 10 labelled rows of 8 upscaled samples
    code, text, err = run(capsys, "demo", "--preset", "tiny", "--out", str(out))
    assert code == 0, err
    assert "reused from an earlier run" in (out / "report.md").read_text()
    # a changed configuration trains both stages again in the same folder (Stage 2 because its autoencoder
    # changed), instead of being refused as a changed resume
    weights = {p: (out / p).read_bytes() for p in ("autoencoder/model.safetensors", "unet/model.safetensors")}
    code, text, err = run(capsys, "demo", "--preset", "tiny", "--out", str(out), "--seed", "1")
    assert code == 0, err
    assert "reused from an earlier run" not in (out / "report.md").read_text()
    assert all((out / p).read_bytes() != old for p, old in weights.items())  # trained again, not resumed


@pytest.mark.parametrize("kind", ["identity", "vq"])
def test_pixel_space_and_vq_latents_go_through_the_same_stage2(capsys, tmp_path, kind):
    run_dir = tmp_path / kind
    code, _, err = run(
        capsys,
        "train-autoencoder",
        "--data",
        "digits",
        "--resolution",
        "8",
        "--kind",
        kind,
        "--f",
        "2",
        "--steps",
        "3",
        "--batch-size",
        "16",
        "--codebook-size",
        "32",
        "--out",
        str(run_dir),
        *TINY_AE,
    )
    assert code == 0, err
    code, _, err = run(
        capsys,
        "train-diffusion",
        "--out",
        str(run_dir),
        "--steps",
        "3",
        "--batch-size",
        "16",
        "--data",
        "digits",
        "--resolution",
        "8",
        *TINY_UNET,
    )
    assert code == 0, err
    cache = json.loads((run_dir / "latents" / "cache.json").read_text())
    assert cache["kind"] == kind
    unet_cfg = json.loads((run_dir / "unet" / "config.json").read_text())
    # pixel space: the U-Net sees 1×8×8 images; VQ: 4×4×4 quantized latents looked up from the code indices
    assert (unet_cfg["in_channels"], unet_cfg["sample_size"]) == ((1, 8) if kind == "identity" else (4, 4))
    code, out, err = run(
        capsys,
        "sample",
        str(run_dir),
        "--num-images",
        "2",
        "--steps",
        "2",
        "--out",
        str(tmp_path / f"{kind}_samples"),
    )
    assert code == 0, err


TINY_DIT = [
    "--set",
    "dit.hidden_size=32",
    "--set",
    "dit.depth=2",
    "--set",
    "dit.num_heads=2",
    "--set",
    "dit.patch_size=2",
]


@pytest.mark.parametrize(
    "backbone_args, folder",
    [
        (["--backbone", "dit", *TINY_DIT], "dit"),
        (["--edm"], "unet"),
        (["--backbone", "dit", "--edm", *TINY_DIT], "dit"),
    ],
    ids=["dit-vp", "unet-edm", "dit-edm"],
)
def test_dit_and_edm_run_end_to_end_from_the_cli(capsys, tiny_run, tmp_path, backbone_args, folder):
    """train-diffusion with another backbone or EDM, then sample (guided, with a negative class), img2img,
    inpaint and export-diffusers on the result."""
    run_dir = tmp_path / "run"
    common = ["--steps", "4", "--batch-size", "16", "--set", "train.warmup_steps=1"]
    common += ["--set", "sample_steps=2"]
    code, out, err = run(
        capsys, "train-diffusion", "--out", str(run_dir), "--autoencoder", str(tiny_run),
        "--data", "digits", "--resolution", "8", *common, *backbone_args,
    )
    assert code == 0, err
    config = json.loads((run_dir / folder / "config.json").read_text())
    assert config["backbone"] == folder and config["num_classes"] == 10
    scheduler = json.loads((run_dir / "scheduler.json").read_text())
    assert scheduler["prediction"] == ("edm" if "--edm" in backbone_args else "eps")
    code, _, err = run(
        capsys, "sample", str(run_dir), "--num-images", "2", "--steps", "3", "--class", "3",
        "--negative-class", "5", "--guidance", "2", "--out", str(tmp_path / "s"),
    )
    assert code == 0 and len(list((tmp_path / "s").glob("sample_*.png"))) == 2, err
    Image.fromarray((torch.rand(8, 8) * 255).byte().numpy(), mode="L").save(tmp_path / "in.png")
    mask = Image.new("L", (8, 8), 0)
    mask.paste(255, (0, 0, 4, 8))
    mask.save(tmp_path / "mask.png")
    for command, extra in (
        ("img2img", ["--strength", "0.5"]),
        ("inpaint", ["--mask", str(tmp_path / "mask.png")]),
    ):
        code, _, err = run(
            capsys, command, str(run_dir), "--input", str(tmp_path / "in.png"), "--steps", "3", *extra,
            "--out", str(tmp_path / command),
        )
        assert code == 0 and (tmp_path / command / "in.png").is_file(), (command, err)
    code, out, err = run(capsys, "export-diffusers", str(run_dir), "--out", str(tmp_path / "exp"))
    assert code == 0, err
    exported = "transformer" if folder == "dit" else "unet"
    assert (tmp_path / "exp" / exported / "config.json").is_file()
    assert (tmp_path / "exp" / "scheduler" / "scheduler_config.json").is_file()
    # a run folder holds one backbone: training the other one into it is refused before anything changes
    other = ["--backbone", "unet"] if folder == "dit" else ["--backbone", "dit", *TINY_DIT]
    before = sorted(p.name for p in run_dir.iterdir())
    code, _, err = run(capsys, "train-diffusion", "--out", str(run_dir), *common, *other)
    assert code != 0 and "already holds a trained" in err
    assert sorted(p.name for p in run_dir.iterdir()) == before


def test_settings_of_the_backbone_not_chosen_are_refused(capsys, tiny_run, tmp_path):
    code, _, err = run(
        capsys, "train-diffusion", "--out", str(tmp_path / "r"), "--autoencoder", str(tiny_run),
        "--steps", "2", "--set", "dit.depth=3",
    )
    assert code != 0 and "settings under 'dit.' apply to backbone=dit, but backbone=unet" in err
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["sample", "{run}", "--class", "3", "--guidance", "nan"], r"--guidance must be a finite.* got nan$"),
        (["sample", "{run}", "--class", "3", "--guidance", "inf"], r"--guidance must be a finite.* got inf$"),
        (
            ["sample", "{run}", "--class", "3", "--guidance", "-2"],
            r"--guidance must be a finite number >= 0 .* got -2\.0; to steer away from a class, pass it as "
            r"--negative-class$",
        ),
        (
            ["img2img", "{run}", "--input", "{tmp}/in.png", "--class", "3", "--guidance", "nan"],
            r"--guidance must be a finite",
        ),
        (["interpolate", "{run}", "--seed-a", "1", "--seed-b", "2", "--guidance", "nan"], r"--guidance must"),
        (["sample", "{run}", "--batch-size", "0"], r"--batch-size must be at least 1, got 0$"),
        (["sample", "{run}", "--batch-size", "-3"], r"--batch-size must be at least 1, got -3$"),
        (["sample", "{run}", "--num-images", "0"], r"--num-images must be at least 1, got 0$"),
    ],
    ids=["nan", "inf", "negative", "img2img-nan", "interpolate-nan", "batch-0", "batch-neg", "images-0"],
)
def test_bad_generation_arguments_name_the_flag_and_write_nothing(capsys, tiny_run, tmp_path, argv, message):
    """`--guidance nan` used to exit 0 with black images; `--batch-size 0/-3` gave Python's internals."""
    import re

    Image.new("L", (8, 8), 0).save(tmp_path / "in.png")
    argv = [a.format(tmp=tmp_path, run=tiny_run) for a in argv]
    code, out, err = run(capsys, *argv, "--steps", "2", "--out", str(tmp_path / "o"))
    lines = [line for line in err.strip().splitlines() if line.startswith("latentdiff")]
    assert code == 1 and len(lines) == 1, err
    assert re.search(message, lines[0]), lines[0]
    assert not (tmp_path / "o").exists()


def test_eval_refuses_nan_guidance_before_sampling(capsys, tiny_run):
    code, _, err = run(capsys, "eval", str(tiny_run), "--num-samples", "4", "--guidance", "nan")
    expected = "latentdiff eval: error: --guidance must be a finite number >= 0 (1 = no guidance, > 1 = "
    assert code == 1 and err.strip() == expected + "stronger), got nan", err


def test_sample_writes_each_batch_as_it_is_made_so_ctrl_c_keeps_them(capsys, tiny_run, tmp_path, monkeypatch):
    """An interrupted `sample` keeps every finished image, identical to an uninterrupted run's."""
    import numpy as np

    from latentdiff.pipeline import LatentDiffusionPipeline

    common = ["--num-images", "5", "--batch-size", "2", "--steps", "2", "--class", "3", "--guidance", "2"]
    code, out, err = run(capsys, "sample", str(tiny_run), *common, "--out", str(tmp_path / "full"))
    assert code == 0 and "5 images in" in out, err
    real_decode = LatentDiffusionPipeline.decode
    on_disk_at_third_batch = []

    def decode(self, z):
        calls = len(on_disk_at_third_batch)
        if calls == 2:  # Ctrl-C while the third batch is being made
            raise KeyboardInterrupt
        on_disk_at_third_batch.append(sorted(p.name for p in (tmp_path / "cut").glob("*")))
        return real_decode(self, z)

    monkeypatch.setattr(LatentDiffusionPipeline, "decode", decode)
    code, out, err = run(capsys, "sample", str(tiny_run), *common, "--out", str(tmp_path / "cut"))
    assert code == 130 and "4 of 5 images were written to" in err, err
    assert on_disk_at_third_batch[1] == ["sample_0000.png", "sample_0001.png"]  # batch 1 written before 2
    kept = sorted(p.name for p in (tmp_path / "cut").iterdir())
    assert kept == [f"sample_{i:04d}.png" for i in range(4)]  # whole PNGs only, no temporary files
    for name in kept:
        with Image.open(tmp_path / "cut" / name) as a, Image.open(tmp_path / "full" / name) as b:
            assert np.array_equal(np.asarray(a), np.asarray(b)), name


@pytest.mark.parametrize("command", ["train-autoencoder", "train-diffusion"])
@pytest.mark.parametrize("resolution", ["100000", "0"])
def test_bad_resolution_is_refused_naming_the_flag(capsys, tmp_path, command, resolution):
    """`--resolution 100000` used to end in "Unable to allocate 447 GiB" from numpy."""
    out = tmp_path / "run"
    code, _, err = run(capsys, command, "--data", "digits", "--resolution", resolution, "--out", str(out))
    lines = [line for line in err.strip().splitlines() if line.startswith("latentdiff")]
    assert code == 1 and len(lines) == 1, err
    assert lines[0] == (
        f"latentdiff {command}: error: data: resolution={resolution}: the image side must be a whole number "
        "of pixels from 1 to 4096 (--resolution)"
    )
    assert not out.exists()


def test_a_trained_stage_is_replaced_only_with_overwrite_and_one_writer_at_a_time(capsys, tmp_path):
    """Issue 12, findings 3 and 4 from the command line: re-running train-autoencoder into a trained run is
    refused (one line naming --resume and --overwrite) and changes nothing; --overwrite trains anew; while
    another process holds the run folder's lock, training is refused naming its PID."""
    import os

    from latentdiff.training.run_lock import RunLock

    run_dir = tmp_path / "run"
    argv = ["train-autoencoder", "--data", "digits", "--resolution", "8", "--f", "2", "--steps", "2",
            "--batch-size", "16", "--out", str(run_dir), *TINY_AE]  # fmt: skip
    code, _, err = run(capsys, *argv)
    assert code == 0, err
    weights = (run_dir / "autoencoder" / "model.safetensors").read_bytes()
    config = (run_dir / "config.yaml").read_text()

    code, _, err = run(capsys, *argv, "--set", "model.latent_channels=2")
    lines = [line for line in err.strip().splitlines() if line.startswith("latentdiff")]
    assert code == 1 and len(lines) == 1, err
    assert "holds a trained autoencoder: pass --resume" in lines[0] and "--overwrite" in lines[0]
    assert (run_dir / "autoencoder" / "model.safetensors").read_bytes() == weights
    assert (run_dir / "config.yaml").read_text() == config

    with RunLock(run_dir):
        code, _, err = run(capsys, *argv, "--overwrite")
    assert code == 1 and f"PID {os.getpid()}" in err and "is in use" in err, err
    assert (run_dir / "autoencoder" / "model.safetensors").read_bytes() == weights

    code, _, err = run(capsys, *argv, "--overwrite", "--set", "model.latent_channels=2")
    assert code == 0, err
    assert json.loads((run_dir / "autoencoder" / "config.json").read_text())["latent_channels"] == 2


def test_sample_refuses_a_backbone_trained_on_another_autoencoder(capsys, tiny_run, tmp_path):
    """Issue 12, finding 3: `sample` on a run whose autoencoder was swapped exits non-zero naming both."""
    import shutil

    from latentdiff.io.checkpoint import load_tensors, save_tensors

    run_dir = tmp_path / "run"
    shutil.copytree(tiny_run, run_dir)
    ema = run_dir / "autoencoder" / "ema.safetensors"
    save_tensors({k: v * 1.01 if v.is_floating_point() else v for k, v in load_tensors(ema).items()}, ema)
    code, _, err = run(capsys, "sample", str(run_dir), "--num-images", "2", "--steps", "2",
                       "--out", str(tmp_path / "s"))  # fmt: skip
    assert code == 1, err
    assert f"{run_dir / 'unet'} was trained on another autoencoder than {run_dir / 'autoencoder'}" in err
    assert not (tmp_path / "s").exists()


def test_import_autoencoder_does_not_replace_a_trained_one_without_overwrite(capsys, tmp_path):
    """Issue 12, finding 3: import-autoencoder into a run that holds an autoencoder is refused unless
    --overwrite, which also deletes the old autoencoder's checkpoints (a later resume must not revive it)."""
    diffusers = pytest.importorskip("diffusers")
    vae = diffusers.AutoencoderKL(
        in_channels=1, out_channels=1, block_out_channels=(16, 32), layers_per_block=1,
        down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2,
        latent_channels=4, norm_num_groups=8, sample_size=8,
    )  # fmt: skip
    vae.save_pretrained(tmp_path / "vae")
    run_dir = tmp_path / "r"
    code, _, err = run(capsys, "import-autoencoder", str(tmp_path / "vae"), "--out", str(run_dir))
    assert code == 0, err
    (run_dir / "trainer_state" / "autoencoder" / "step_00000004").mkdir(parents=True)
    (run_dir / "trainer_state" / "autoencoder" / "step_00000004" / "trainer.json").write_text("{}")
    weights = (run_dir / "autoencoder" / "model.safetensors").read_bytes()
    code, _, err = run(capsys, "import-autoencoder", str(tmp_path / "vae"), "--out", str(run_dir),
                       "--data", "digits", "--resolution", "8", "--stats-images", "50")  # fmt: skip
    assert code == 1 and "holds a trained autoencoder" in err and "--overwrite" in err, err
    assert (run_dir / "autoencoder" / "model.safetensors").read_bytes() == weights
    argv = ["import-autoencoder", str(tmp_path / "vae"), "--out", str(run_dir), "--data", "digits",
            "--resolution", "8", "--stats-images", "50", "--overwrite"]  # fmt: skip
    code, out, err = run(capsys, *argv)
    assert code == 0 and "measured over 50 images" in out, err
    assert not (run_dir / "trainer_state" / "autoencoder").exists()


def test_rgb_data_for_a_greyscale_autoencoder_suggests_the_channels_flag(capsys, tiny_run, tmp_path):
    """The tiny run's autoencoder takes 1 channel; an RGB folder (3 channels by default) used to end in
    "expected images (N, 1, H, W) ..., got (1, 3, 8, 8)"."""
    import re

    folder = tmp_path / "rgb"
    folder.mkdir()
    for i in range(4):
        Image.new("RGB", (8, 8), (60 * i, 0, 0)).save(folder / f"{i}.png")
    out = tmp_path / "r"
    argv = ["train-diffusion", "--autoencoder", str(tiny_run), "--data", str(folder), "--resolution", "8",
            "--steps", "1", "--batch-size", "2", "--out", str(out)]  # fmt: skip
    code, _, err = run(capsys, *argv)
    lines = [line for line in err.strip().splitlines() if line.startswith("latentdiff")]
    assert code == 1 and len(lines) == 1, err
    suggestion = r"3 channel\(s\), but (the|this) autoencoder.* takes 1\b.*--channels 1\b"
    assert re.search(suggestion, lines[0]), lines[0]


def test_eval_loads_a_folder_run_with_the_autoencoders_channels(tmp_path):
    """A run trained on a folder without --channels records channels: null; eval then loads the folder with
    the autoencoder's channel count, not the folder default of 3."""
    import yaml

    from latentdiff.cli.evaluate import run_dataset

    folder = tmp_path / "rgb"
    folder.mkdir()
    for i in range(2):
        Image.new("RGB", (8, 8), (200, 10 * i, 10)).save(folder / f"{i}.png")
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    data = {"dataset": str(folder), "resolution": 8, "channels": None}
    (run_dir / "config.yaml").write_text(yaml.safe_dump({"diffusion_stage": {"data": data}}))
    assert run_dataset(run_dir, "train", 1).channels == 1
    assert run_dataset(run_dir, "train", 3).channels == 3


def test_config_accepts_a_runs_own_config_yaml(capsys, tiny_run, tmp_path):
    """`--config RUN/config.yaml` (the tool's own output, one section per stage) used to be refused
    ("unknown key 'autoencoder_stage'"): each training command reads its own section."""
    from argparse import Namespace

    import yaml

    from latentdiff.cli.options import build_config
    from latentdiff.config import from_dict
    from latentdiff.training.stages import AutoencoderStage, DiffusionStage

    recorded = yaml.safe_load((tiny_run / "config.yaml").read_text())
    assert set(recorded) == {"autoencoder_stage", "diffusion_stage"}
    for cls, section in ((AutoencoderStage, "autoencoder_stage"), (DiffusionStage, "diffusion_stage")):
        for given in (tiny_run / "config.yaml", tiny_run):  # the file, or the run folder holding it
            args = Namespace(config=str(given), shortcuts=[], overrides=[])
            assert build_config(cls, args) == from_dict(cls, recorded[section]), (section, given)

    # end to end: a new run with the old one's settings and one flag changed records exactly those
    out = tmp_path / "again"
    code, _, err = run(capsys, "train-autoencoder", "--config", str(tiny_run / "config.yaml"),
                       "--steps", "2", "--set", "stats_images=50", "--out", str(out))  # fmt: skip
    assert code == 0, err
    expected = recorded["autoencoder_stage"]
    expected["train"]["steps"], expected["stats_images"] = 2, 50
    assert yaml.safe_load((out / "config.yaml").read_text())["autoencoder_stage"] == expected

    # a run's config without the section of the command: one line naming the section
    only_ae = tmp_path / "ae_only.yaml"
    only_ae.write_text(yaml.safe_dump({"autoencoder_stage": recorded["autoencoder_stage"]}))
    code, _, err = run(capsys, "train-diffusion", "--config", str(only_ae), "--out", str(tmp_path / "d"))
    assert code == 1 and err.strip() == (
        f"latentdiff train-diffusion: error: {only_ae} is a run's configuration with the section(s) "
        "autoencoder_stage, but train-diffusion reads the section diffusion_stage, which it does not have"
    ), err
    assert not (tmp_path / "d").exists()
    # a wrong key inside a section is named with its section
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({"autoencoder_stage": {"model": {"kindd": "kl"}}}))
    code, _, err = run(capsys, "train-autoencoder", "--config", str(bad), "--out", str(tmp_path / "b"))
    assert code == 1 and f"{bad} (section autoencoder_stage): unknown key 'model.kindd'" in err, err


def test_sample_with_autoguidance_uses_the_runs_guide(capsys, tiny_run, tmp_path):
    """--autoguidance needs guide/ (refused, nothing written, without one); the model as its own guide
    gives the unguided images (F_g + w (F − F_g) = F)."""
    import shutil

    import numpy as np

    common = ["--num-images", "3", "--steps", "2", "--class", "1"]
    code, _, err = run(capsys, "sample", str(tiny_run), *common, "--guidance", "2", "--autoguidance",
                       "--out", str(tmp_path / "refused"))  # fmt: skip
    assert code == 1 and "guidance='auto' needs a guide model" in err
    assert not (tmp_path / "refused").exists()
    run_copy = tmp_path / "run"
    shutil.copytree(tiny_run, run_copy)
    shutil.copytree(run_copy / "unet", run_copy / "guide")
    code, _, err = run(capsys, "sample", str(run_copy), *common, "--guidance", "3", "--autoguidance",
                       "--out", str(tmp_path / "auto"))  # fmt: skip
    assert code == 0, err
    code, _, err = run(capsys, "sample", str(run_copy), *common, "--out", str(tmp_path / "plain"))
    assert code == 0, err
    for name in ("sample_0000.png", "sample_0002.png"):
        a = np.asarray(Image.open(tmp_path / "auto" / name))
        assert np.array_equal(a, np.asarray(Image.open(tmp_path / "plain" / name))), name


def test_eval_with_autoguidance_needs_the_runs_guide(capsys, tiny_run):
    argv = ["eval", str(tiny_run), "--num-samples", "4", "--guidance", "2", "--autoguidance"]
    code, _, err = run(capsys, *argv)
    assert code == 1 and "guidance='auto' needs a guide model" in err, err


def test_logging_shows_our_progress_and_keeps_other_libraries_quiet():
    """At the default verbosity our INFO lines (checkpoints, the plan) show and other libraries' do not:
    matplotlib's "Substituting symbol R from STIXGeneral" used to appear in the middle of make demo."""
    import logging

    from latentdiff.cli.options import setup_logging

    root = logging.getLogger()
    saved = (root.level, list(root.handlers), logging.getLogger("latentdiff").level)
    try:
        root.handlers.clear()
        setup_logging(0)
        assert logging.getLogger("latentdiff.training").isEnabledFor(logging.INFO)
        assert not logging.getLogger("matplotlib.mathtext").isEnabledFor(logging.INFO)
        root.handlers.clear()
        setup_logging(1)
        assert logging.getLogger("matplotlib.mathtext").isEnabledFor(logging.DEBUG)
        root.handlers.clear()
        setup_logging(-1)
        assert not logging.getLogger("latentdiff.training").isEnabledFor(logging.INFO)
    finally:
        root.handlers[:] = saved[1]
        root.setLevel(saved[0])
        logging.getLogger("latentdiff").setLevel(saved[2])
