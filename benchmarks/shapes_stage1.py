"""What Stage 1 keeps of a `shapes` image: the prompt-following judge on D(E(x)) of every test image, for a
few autoencoder layouts trained for the same time (the ceiling of `text_alignment.py`: no diffusion model
draws what the decoder cannot reproduce).

    python benchmarks/shapes_stage1.py      # 3 minutes per layout; writes results/shapes_stage1.json
    python benchmarks/shapes_stage1.py --minutes 1 --layouts 4:4

A layout is F:C (downsampling factor, latent channels) of the `small` KL preset, each trained with the
`latentdiff train` recipe for `--minutes` of wall clock.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
import shapes_judge  # noqa: E402
from common import RUNS, machine, setup, write_result  # noqa: E402

from latentdiff.autoencoder.model import Autoencoder  # noqa: E402
from latentdiff.training import presets  # noqa: E402
from latentdiff.training.run import train_autoencoder  # noqa: E402
from latentdiff.training.stages import DataConfig  # noqa: E402


def _reconstruction(autoencoder: Autoencoder):
    """D(E(x)) through the posterior mode."""
    autoencoder.eval()
    return lambda x: autoencoder.decode(autoencoder.encode(x).mode())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--minutes", type=float, default=3.0)
    ap.add_argument("--layouts", nargs="+", default=["4:4", "4:8", "2:4"], help="F:C per autoencoder")
    ap.add_argument("--preset", default="small")
    args = ap.parse_args()
    setup()
    data = DataConfig(dataset="shapes", resolution=32, channels=3, eval_split="test")
    rows = []
    for layout in args.layouts:
        f, channels = (int(x) for x in layout.split(":"))
        stage = presets.autoencoder_stage(data, args.preset, 3, args.minutes, f, "cpu", 0)
        stage = dataclasses.replace(stage, model=dataclasses.replace(stage.model, latent_channels=channels))
        run = RUNS / "shapes_stage1" / f"f{f}c{channels}"
        start = time.perf_counter()
        train_autoencoder(stage, run, overwrite=True, progress=False)
        minutes = (time.perf_counter() - start) / 60
        scores = shapes_judge.stage1_ceiling(
            _reconstruction(Autoencoder.from_pretrained(run / "autoencoder"))
        )
        rows.append({"f": f, "latent_channels": channels, "minutes": minutes, **scores})
        print(rows[-1], flush=True)
    write_result(
        "shapes_stage1",
        {"rows": rows, "protocol": {"preset": args.preset, "minutes": args.minutes, "machine": machine()}},
    )


if __name__ == "__main__":
    main()
