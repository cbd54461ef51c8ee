"""The size presets measured: parameters, training images/s per stage and peak memory, on this machine,
at the two resolutions the toolkit trains at on a CPU (32 px grey, 64 px RGB). `latentdiff train` runs the
same probe (`training.planner.probe_speeds`) before it plans; this records what it sees here.

    python benchmarks/sizing.py                # writes results/sizing.json, regenerates docs/benchmarks.md

Images/s: one bf16 training step (forward, loss, backward, AdamW) at the stage's batch (32 for Stage 1, 128
or 64 for Stage 2), the fastest of 3 after a warm-up. Peak memory: the process's peak resident set during
that preset's probe (Linux: VmHWM, reset before each), minus the resident set before it.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from common import machine, regenerate_docs, setup, write_result  # noqa: E402

from latentdiff.autoencoder.model import Autoencoder  # noqa: E402
from latentdiff.nets.unet import UNet  # noqa: E402
from latentdiff.training import presets  # noqa: E402
from latentdiff.training.planner import probe_autoencoder, probe_unet  # noqa: E402

CASES = {"32px grey": (1, 32), "64px RGB": (3, 64)}


def _rss_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field):
            return int(line.split()[1])
    return 0


def _reset_peak() -> None:
    with contextlib.suppress(OSError):  # not Linux: the peak then spans the whole run
        Path("/proc/self/clear_refs").write_text("5")


def measured(fn) -> tuple[float, float]:
    """(result of fn, peak MiB above the resident set before it)."""
    _reset_peak()
    before = _rss_kib("VmRSS:")
    rate = fn()
    return rate, max(0, _rss_kib("VmHWM:") - before) / 1024


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    setup()
    device = torch.device(args.device)
    rows = []
    for case, (channels, res) in CASES.items():
        f = presets.choose_f(res)
        side = res // f
        for preset in presets.PRESET_NAMES:
            ae = Autoencoder(presets.autoencoder_config(preset, channels, res))
            unet = UNet(presets.unet_config(preset, side))
            batch = 128 if side <= 8 else 64
            ae_rate, ae_mem = measured(
                lambda p=preset, c=channels, r=res: probe_autoencoder(p, c, r, 32, device)
            )
            dm_rate, dm_mem = measured(lambda p=preset, s=side, b=batch: probe_unet(p, s, 10, b, device))
            rows.append({
                "case": case, "preset": preset, "f": f, "latent": f"4×{side}×{side}",
                "autoencoder_params_m": sum(p.numel() for p in ae.parameters()) / 1e6,
                "unet_params_m": sum(p.numel() for p in unet.parameters()) / 1e6,
                "autoencoder_images_per_s": ae_rate, "autoencoder_peak_mib": ae_mem,
                "unet_images_per_s": dm_rate, "unet_batch": batch, "unet_peak_mib": dm_mem,
            })  # fmt: skip
            print(rows[-1], flush=True)
    write_result("sizing", {
        "benchmark": "sizing", "device": str(device), "rows": rows, "machine": machine(),
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
    })  # fmt: skip
    regenerate_docs()


if __name__ == "__main__":
    main()
