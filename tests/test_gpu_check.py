"""scripts/gpu_check.sh on a machine without CUDA: every step that can run on the CPU runs (smoke-test
sizes), the CUDA-only ones are reported as skipped, and the report is written — so the script that is run on
a lent GPU has been run end to end before it gets there."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.skipif(
    torch.cuda.is_available(), reason="the CPU mode; on CUDA run the script itself"
)


def test_gpu_check_runs_end_to_end_in_cpu_mode(tmp_path):
    env = {**os.environ, "PYTHON": sys.executable, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        ["bash", "scripts/gpu_check.sh", "--quick", "--out", str(tmp_path), "--budget", "400"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    report = json.loads((tmp_path / "report.json").read_text())
    steps = report["steps"]
    assert list(steps) == ["env", "oracles", "tests", "throughput", "e2e", "seed", "ddp"]
    assert {n for n, d in steps.items() if d["status"] == "skipped"} == {"tests", "throughput", "seed"}
    assert all(steps[n]["status"] == "pass" for n in ("env", "oracles", "e2e", "ddp"))
    assert steps["env"]["cuda_available"] is False and report["cuda"] is False
    # the oracle deviations are measured, not asserted blind: fp32 within 1e-4 relative of diffusers
    for row in steps["oracles"]["deviation_vs_diffusers_fp32"].values():
        assert row["fp32"]["max_rel"] < 1e-4 and 0 < row["bf16"]["max_rel"] < 5e-2
    e2e = steps["e2e"]
    assert e2e["stage1_autoencoder"]["steps"] == 3 and e2e["stage2_diffusion"]["steps"] == 3
    assert (tmp_path / "samples.png").is_file()
    ddp = steps["ddp"]
    assert (
        ddp["attempts"][-1]["backend"] == "gloo" and ddp["attempts"][-1]["max_abs_diff_between_ranks"] == 0.0
    )
    assert ddp["cli"]["exit_code"] == 0 and ddp["cli"]["weights_written"]
    md = (tmp_path / "report.md").read_text()
    assert "| tests | skipped |" in md and "| ddp | pass |" in md


def test_a_failing_step_is_reported_and_the_others_still_run(tmp_path):
    env = {**os.environ, "PYTHON": sys.executable, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(  # zero training steps: the e2e step's configuration is refused
        [
            "bash",
            "scripts/gpu_check.sh",
            "--out",
            str(tmp_path),
            "--only",
            "env",
            "e2e",
            "ddp",
            "--e2e-steps",
            "0",
            "0",
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    report = json.loads((tmp_path / "report.json").read_text())
    assert proc.returncode == 1 and "failed: e2e" in proc.stdout
    assert report["steps"]["e2e"]["status"] == "error"
    assert "train.steps has an invalid value: 0" in report["steps"]["e2e"]["error"]
    assert report["steps"]["env"]["status"] == "pass" and report["steps"]["ddp"]["status"] == "pass"
    assert list(report["steps"]) == ["env", "e2e", "ddp"]


def test_cuda_throughput_benchmark_runs_on_the_cpu(tmp_path):
    spec = importlib.util.spec_from_file_location(
        "unet_throughput_cuda", ROOT / "benchmarks/unet_throughput_cuda.py"
    )
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    out = tmp_path / "tp.json"
    args = ["--device", "cpu", "--batch", "4", "--rounds", "1", "--iters", "1", "--max-batch", "8"]
    result = bench.main([*args, "--out", str(out)])
    assert json.loads(out.read_text())["batch"] == 4
    assert set(result["images_per_s"]) == {
        f"{kind}_{model}_{p}"
        for kind in ("train", "sample")
        for model in ("ours", "diffusers")
        for p in ("fp32", "bf16")
    }
    assert all(v > 0 for v in result["images_per_s"].values())
    assert all(d["ok"] for d in result["deviation_from_ours_fp32"].values())
    assert result["largest_batch_bf16"]["train_ours_bf16"] == 8  # 4, then 8 = the cap
