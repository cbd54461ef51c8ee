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

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).parent))
import shapes_judge  # noqa: E402
from common import RUNS, machine, setup, write_result  # noqa: E402

from latentdiff.autoencoder.model import Autoencoder  # noqa: E402
from latentdiff.data import shapes  # noqa: E402
from latentdiff.data.load import load_dataset  # noqa: E402
from latentdiff.io.images import to_uint8  # noqa: E402
from latentdiff.training import presets  # noqa: E402
from latentdiff.training.run import train_autoencoder  # noqa: E402
from latentdiff.training.stages import DataConfig  # noqa: E402


def ceiling(autoencoder: Autoencoder) -> dict[str, float]:
    """Accuracy of colour, position, shape (and of small shapes) judged on D(E(x)) of the test split."""
    test = load_dataset("shapes", "test", 32, 3)
    images = torch.from_numpy(test.uint8_batch(np.arange(len(test)))).float() / 127.5 - 1
    with torch.no_grad():
        recon = autoencoder.decode(autoencoder.encode(images).mode())
    right = {"colour": 0, "position": 0, "shape": 0, "small_shape": 0}
    items = shapes.split_items("test")
    for image, (c, s, p, size, *_) in zip(to_uint8(recon).transpose(0, 3, 1, 2), items, strict=True):
        v = shapes_judge.judge(image)
        right["colour"] += v["colour"] == c
        right["position"] += v["position"] == p
        right["shape"] += v["shape"] == s
        right["small_shape"] += size == "small" and v["shape"] == s
    small = sum(size == "small" for _, _, _, size, *_ in items)
    return {k: n / (small if k == "small_shape" else len(items)) for k, n in right.items()} | {
        "images": len(items)
    }


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
        scores = ceiling(Autoencoder.from_pretrained(run / "autoencoder").eval())
        rows.append({"f": f, "latent_channels": channels, "minutes": minutes, **scores})
        print(rows[-1], flush=True)
    write_result(
        "shapes_stage1",
        {"rows": rows, "protocol": {"preset": args.preset, "minutes": args.minutes, "machine": machine()}},
    )


if __name__ == "__main__":
    main()
