"""Latent cache: encode → memory-mapped read round trip, flips, VQ indices, hash check, atomicity, DDP."""

from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from latentdiff.data.latent_cache import LatentCache, encode_dataset

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE))
from data_fakes import (  # noqa: E402
    FakeAutoencoder,
    fake_indices,
    fake_std,
    pooled,
    synthetic_dataset,
)


def _all_images(dataset) -> torch.Tensor:
    return dataset.get_batch(range(len(dataset)), flip=False)[0]


def test_kl_round_trip_is_exact(tmp_path):
    dataset = synthetic_dataset()
    ae = FakeAutoencoder("kl")
    ae.train()
    cache = encode_dataset(ae, dataset, tmp_path / "latents", batch_size=8, progress=False)
    assert ae.training, "encode_dataset must restore the autoencoder's training mode"
    assert ae.modes_seen and not any(ae.modes_seen), "encoding must run in eval mode"
    assert not any(ae.grad_enabled_seen), "encoding must run without autograd"

    images = _all_images(dataset)
    mean, std, cond = cache.get_batch(np.arange(len(dataset)))
    labels = cond["class"]
    assert mean.dtype == std.dtype == torch.float32 and labels.dtype == torch.int64
    assert torch.equal(mean, pooled(images))
    assert torch.equal(std, fake_std(pooled(images)))
    assert torch.equal(labels, torch.from_numpy(dataset.labels))

    reopened = LatentCache(tmp_path / "latents")
    assert len(reopened) == len(dataset) and reopened.kind == "kl" and reopened.flip is False
    assert reopened.latent_shape == (1, 4, 4)
    assert reopened.class_names == ["a", "b", "c"] and reopened.num_classes == 3
    assert reopened.dataset_name == "synthetic"
    m, s, item_cond = reopened[5]
    assert torch.equal(m, mean[5]) and torch.equal(s, std[5]) and item_cond["class"] == int(dataset.labels[5])
    m_last, _, _ = reopened[-1]
    assert torch.equal(m_last, mean[-1])
    with pytest.raises(IndexError):
        reopened[len(dataset)]


def test_flip_stores_encodings_of_flipped_images(tmp_path):
    dataset = synthetic_dataset(n=11, channels=3)
    cache = encode_dataset(
        FakeAutoencoder("kl"), dataset, tmp_path / "c", batch_size=4, flip=True, progress=False
    )
    n = len(dataset)
    assert len(cache) == 2 * n and cache.flip is True
    images = _all_images(dataset)
    mean, std, cond = cache.get_batch(torch.arange(2 * n))
    labels = cond["class"]
    assert torch.equal(mean[:n], pooled(images))
    assert torch.equal(mean[n:], pooled(images.flip(-1)))
    assert torch.equal(std[n:], fake_std(pooled(images.flip(-1))))
    assert torch.equal(labels[n:], labels[:n])
    assert torch.equal(labels[:n], torch.from_numpy(dataset.labels))


def test_vq_cache_holds_code_indices(tmp_path):
    dataset = synthetic_dataset(n=9)
    cache = encode_dataset(FakeAutoencoder("vq"), dataset, tmp_path / "vq", batch_size=4, progress=False)
    assert cache.kind == "vq" and cache.latent_shape == (4, 4)
    indices, std, _ = cache.get_batch([0, 3, 8])
    assert std is None and indices.dtype == torch.int64
    expected = fake_indices(pooled(_all_images(dataset)))[[0, 3, 8]]
    assert torch.equal(indices, expected)
    item, none, item_cond = cache[3]
    assert none is None and torch.equal(item, expected[1]) and item_cond["class"] == int(dataset.labels[3])


def test_identity_kind_stores_mean_and_std(tmp_path):
    dataset = synthetic_dataset(n=5)
    cache = encode_dataset(FakeAutoencoder("identity"), dataset, tmp_path / "id", progress=False)
    mean, std, _ = cache.get_batch(range(5))
    assert cache.kind == "identity" and std is not None
    assert torch.equal(mean, pooled(_all_images(dataset)))


def test_autoencoder_hash_check_names_both_hashes(tmp_path):
    cache = encode_dataset(FakeAutoencoder("kl"), synthetic_dataset(n=3), tmp_path / "c", progress=False)
    cache.check_autoencoder("fake-kl-0123")
    with pytest.raises(ValueError) as err:
        cache.check_autoencoder("other-hash-999")
    message = str(err.value)
    assert "fake-kl-0123" in message and "other-hash-999" in message and "latentdiff encode" in message
    assert str(tmp_path / "c") in message


def test_meta_records_shapes_dtypes_and_dataset(tmp_path):
    dataset = synthetic_dataset(n=6)
    encode_dataset(FakeAutoencoder("kl"), dataset, tmp_path / "c", progress=False)
    meta = json.loads((tmp_path / "c" / "cache.json").read_text())
    assert meta["arrays"]["mean"] == {"dtype": "float32", "shape": [6, 1, 4, 4]}
    assert meta["arrays"]["std"] == {"dtype": "float32", "shape": [6, 1, 4, 4]}
    assert meta["arrays"]["labels"] == {"dtype": "int64", "shape": [6]}
    assert meta["autoencoder_hash"] == "fake-kl-0123"
    assert meta["dataset"] == {
        "name": "synthetic",
        "split": "train",
        "count": 6,
        "resolution": 8,
        "channels": 1,
        "split_rule": None,  # a built-in-like set; folders record how their split was made
    }


def test_crash_while_encoding_keeps_previous_cache(tmp_path):
    dataset = synthetic_dataset(n=20)
    out = tmp_path / "c"
    encode_dataset(FakeAutoencoder("kl"), dataset, out, batch_size=4, progress=False)
    before = LatentCache(out).get_batch(range(20))[0]
    other = synthetic_dataset(n=20, seed=1)
    with pytest.raises(RuntimeError, match="simulated crash"):
        encode_dataset(FakeAutoencoder("kl", fail_after=3), other, out, batch_size=4, progress=False)
    assert torch.equal(LatentCache(out).get_batch(range(20))[0], before)
    assert [p.name for p in tmp_path.iterdir()] == ["c"], "no temporary folder may be left behind"


def test_damaged_or_missing_cache_names_the_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="cache.json"):
        LatentCache(tmp_path / "nothing")
    out = tmp_path / "c"
    encode_dataset(FakeAutoencoder("kl"), synthetic_dataset(n=4), out, progress=False)
    np.save(out / "std.npy", np.zeros((3, 1, 4, 4), dtype=np.float32))
    with pytest.raises(ValueError, match="std.npy"):
        LatentCache(out)


def test_pickled_cache_reopens_instead_of_copying(tmp_path):
    dataset = synthetic_dataset(n=200, resolution=16)
    cache = encode_dataset(FakeAutoencoder("kl"), dataset, tmp_path / "c", progress=False)
    blob = pickle.dumps(cache)
    assert len(blob) < 4 * 200 * 8 * 8, "the arrays must not travel with the pickle"
    clone = pickle.loads(blob)
    assert torch.equal(clone.get_batch([7])[0], cache.get_batch([7])[0])


@pytest.mark.parametrize("kind", ["kl", "vq"])
def test_two_ranks_write_the_same_cache_as_one(tmp_path, kind):
    dataset = synthetic_dataset()
    single = encode_dataset(
        FakeAutoencoder(kind), dataset, tmp_path / "one", batch_size=4, flip=True, progress=False
    )
    env = dict(
        os.environ,
        OMP_NUM_THREADS="1",
        PYTHONPATH=os.pathsep.join([str(HERE), os.environ.get("PYTHONPATH", "")]),
    )
    init, out = tmp_path / "store", tmp_path / "two"
    procs = [
        subprocess.Popen(
            [sys.executable, str(HERE / "data_fakes.py"), str(r), "2", str(init), str(out), kind, "1"],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        for r in range(2)
    ]
    logs = [p.communicate(timeout=120)[0].decode() for p in procs]
    assert all(p.returncode == 0 for p in procs), "\n".join(logs)
    sharded = LatentCache(out)
    n = len(single)
    (*a_arrays, a_cond), (*b_arrays, b_cond) = single.get_batch(range(n)), sharded.get_batch(range(n))
    for a, b in zip(a_arrays, b_arrays, strict=True):
        assert (a is None and b is None) or torch.equal(a, b)
    assert a_cond.keys() == b_cond.keys() and all(torch.equal(a_cond[k], b_cond[k]) for k in a_cond)
    assert sharded.meta == single.meta


def test_data_with_other_channels_than_the_autoencoder_suggests_the_channels_flag(tmp_path):
    """RGB data for a greyscale autoencoder used to end in a bare shape error."""
    from latentdiff.autoencoder.config import AutoencoderConfig
    from latentdiff.autoencoder.model import Autoencoder

    config = AutoencoderConfig(
        kind="kl", in_channels=1, resolution=8, base_channels=16, channel_mult=(1, 2), num_res_blocks=1,
        latent_channels=4, mid_attention=False, groups=8,
    )  # fmt: skip
    ae = Autoencoder(config)
    message = r"synthetic is loaded with 3 channel\(s\), but the autoencoder takes 1: load it with 1 "
    with pytest.raises(ValueError, match=message + r"channel\(s\) \(--channels 1\)$"):
        encode_dataset(ae, synthetic_dataset(channels=3), tmp_path / "latents", progress=False)
    assert not (tmp_path / "latents").exists()
    message = r"the images have 3 channel\(s\), but this autoencoder takes 1: load them with 1 channel\(s\) "
    with pytest.raises(ValueError, match=message + r"\(--channels 1\), got images of shape \(2, 3, 8, 8\)$"):
        ae.encode(torch.zeros(2, 3, 8, 8))
    cache = encode_dataset(ae, synthetic_dataset(channels=1), tmp_path / "latents", progress=False)
    assert len(cache) == 37  # the suggested channel count is the one that works
