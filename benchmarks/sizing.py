"""The size presets measured: parameters, training images/s per stage and peak memory, on this machine,
at the two resolutions the toolkit trains at on a CPU (32 px grey, 64 px RGB). `latentdiff train` runs the
same probe (`training.speed_probe.probe_speeds`) before it plans; this records what it sees here.

    python benchmarks/sizing.py                # writes results/sizing.json, regenerates docs/benchmarks.md
    python benchmarks/sizing.py --device cuda  # writes results/sizing_cuda.json (adds 128 px RGB)

Images/s: one bf16 training step (forward, loss, backward, AdamW) at the stage's batch (32 for Stage 1, 128
or 64 for Stage 2), the faster of 2 after a warm-up. Peak memory: each probe runs in a fresh process; the
peak resident set (Linux VmHWM) during the probe minus the peak before it (torch and the imports); on CUDA
the peak of `torch.cuda.max_memory_allocated`.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import subprocess
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from common import machine, regenerate_docs, setup, write_result  # noqa: E402

from latentdiff.autoencoder.model import Autoencoder  # noqa: E402
from latentdiff.nets.unet import UNet  # noqa: E402
from latentdiff.training import presets  # noqa: E402
from latentdiff.training.speed_probe import probe_autoencoder, probe_unet  # noqa: E402

CASES = {"32px grey": (1, 32), "64px RGB": (3, 64)}
CASES_CUDA = {**CASES, "128px RGB": (3, 128)}


def _peak_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def probe_in_fresh_process(
    kind: str, preset: str, channels: int, res: int, device: str
) -> tuple[float, float]:
    """(images/s, peak resident MiB of a process that did only this probe): a fresh process per probe, since
    memory an earlier probe freed stays with the allocator and would hide a later one's peak."""
    call = f"sizing.probe_once({kind!r}, {preset!r}, {channels}, {res}, {device!r})"
    code = f"import json, sys; sys.path.insert(0, {str(Path(__file__).parent)!r}); import sizing; "
    code += f"print(json.dumps({call}))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    if out.returncode != 0:
        raise RuntimeError(f"probe {kind} {preset} {res}px on {device} failed:\n{out.stderr[-3000:]}")
    rate, peak = json.loads(out.stdout.strip().splitlines()[-1])
    return rate, peak


def probe_once(kind: str, preset: str, channels: int, res: int, device: str) -> tuple[float, float]:
    torch.set_num_threads(os.cpu_count() or 1)
    side = res // presets.choose_f(res)
    dev = torch.device(device)
    base = _peak_mib()
    if kind == "autoencoder":
        rate = probe_autoencoder(preset, channels, res, 32, dev)
    else:
        rate = probe_unet(preset, side, 10, 128 if side <= 8 else 64, dev)
    if dev.type == "cuda":
        return rate, torch.cuda.max_memory_allocated(dev) / 2**20
    return rate, _peak_mib() - base


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--no-docs", action="store_true", help="do not regenerate docs/benchmarks.md")
    args = parser.parse_args()
    setup()
    device = torch.device(args.device)
    rows = []
    for case, (channels, res) in (CASES_CUDA if device.type == "cuda" else CASES).items():
        f = presets.choose_f(res)
        side = res // f
        for preset in presets.PRESET_NAMES:
            ae = Autoencoder(presets.autoencoder_config(preset, channels, res))
            unet = UNet(presets.unet_config(preset, side))
            batch = 128 if side <= 8 else 64
            ae_rate, ae_mem = probe_in_fresh_process("autoencoder", preset, channels, res, args.device)
            dm_rate, dm_mem = probe_in_fresh_process("unet", preset, channels, res, args.device)
            rows.append({
                "case": case, "preset": preset, "f": f, "latent": f"4×{side}×{side}",
                "autoencoder_params_m": sum(p.numel() for p in ae.parameters()) / 1e6,
                "unet_params_m": sum(p.numel() for p in unet.parameters()) / 1e6,
                "autoencoder_images_per_s": ae_rate, "autoencoder_peak_mib": ae_mem,
                "unet_images_per_s": dm_rate, "unet_batch": batch, "unet_peak_mib": dm_mem,
            })  # fmt: skip
            print(rows[-1], flush=True)
    write_result("sizing" if device.type == "cpu" else f"sizing_{device.type}", {
        "benchmark": "sizing", "device": str(device), "rows": rows, "machine": machine(),
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
    })  # fmt: skip
    if not args.no_docs:
        regenerate_docs()


if __name__ == "__main__":
    main()
