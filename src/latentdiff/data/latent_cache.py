"""Latents encoded once by a frozen Stage 1 autoencoder, memory-mapped for Stage 2 (EDM2-style).

A cache is a folder: `cache.json` (kind, shapes, dtypes, count, autoencoder hash, dataset, class names,
flip) and one `.npy` per array, read with `np.load(mmap_mode="r")`:

- kind `kl` / `identity`: `mean.npy` and `std.npy`, float32 (N, C, h, w). Storing the posterior's mean
  and std (not one sample) lets Stage 2 draw a fresh z0 = mean + std·ε every step;
- kind `vq`: `indices.npy`, int32 (N, h, w), the code indices;
- `labels.npy`: int64 (N,), the class labels; read back as the conditioning ``{"class": labels}`` when the
  data has classes (`nets.conditioning`), ``{}`` otherwise;
- text-to-image (the data has captions and a tokenizer was given): `caption_ids.npy` int32 (N, K, L), the
  token ids of up to K captions per image (K = the most any image has), and `caption_counts.npy` int32
  (N,), how many of the K are real (0: uncaptioned, which trains with the empty caption). Read back as
  ``{"text": int64 (B, K, L), "text_count": int64 (B,)}``; Stage 2 draws one caption per row and step
  (`training.diffusion_task`). `captions.json` keeps the caption strings, `cache.json` the tokenizer's hash.

With `flip`, rows N..2N−1 hold the encodings of the horizontally flipped images (row i + N is image i
flipped; the encoder is not flip-equivariant, so flipped images are encoded, not flipped latents).
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from tqdm.auto import tqdm

from latentdiff.data.dataset import ImageDataset
from latentdiff.io.checkpoint import atomic_dir, read_json, recover_dir, write_json

log = logging.getLogger(__name__)

FORMAT = "latentdiff.latent_cache"
VERSION = 1
META_FILE = "cache.json"
KINDS = ("kl", "vq", "identity")

Conditions = dict[str, torch.Tensor]
TEXT = "text"  # (B, K, L) token ids of every caption of a row (`nets.conditioning.TEXT` once one is drawn)
TEXT_COUNT = "text_count"  # (B,) how many of the K captions of a row are real
CAPTIONS_FILE = "captions.json"
LatentItem = tuple[torch.Tensor, torch.Tensor | None, Conditions]


class LatentCache:
    """Memory-mapped reader of a latent cache folder written by `encode_dataset`."""

    def __init__(self, path: str | Path) -> None:
        self.path = recover_dir(Path(path).expanduser())
        meta_path = self.path / META_FILE
        if not meta_path.is_file():
            raise FileNotFoundError(
                f"latent cache not found: {meta_path} does not exist (encode the dataset first)"
            )
        self.meta: dict[str, Any] = read_json(meta_path)
        if self.meta.get("format") != FORMAT or self.meta.get("version") != VERSION:
            raise ValueError(
                f"{meta_path}: not a version-{VERSION} latent cache (format {self.meta.get('format')!r}, "
                f"version {self.meta.get('version')!r})"
            )
        if self.kind not in KINDS:
            raise ValueError(f"{meta_path}: unknown latent kind {self.kind!r}, expected one of {KINDS}")
        # opened now so that a damaged cache fails here, naming the file
        self._arrays: dict[str, np.ndarray] | None = self._open_arrays()

    def _open_arrays(self) -> dict[str, np.ndarray]:
        arrays = {}
        for name, spec in self.meta["arrays"].items():
            file = self.path / f"{name}.npy"
            try:
                arr = np.load(file, mmap_mode="r", allow_pickle=False)
            except (OSError, ValueError) as e:
                raise ValueError(f"{file}: unreadable latent cache array ({e})") from e
            if str(arr.dtype) != spec["dtype"] or list(arr.shape) != spec["shape"]:
                raise ValueError(
                    f"{file}: expected {spec['dtype']} {tuple(spec['shape'])}, found {arr.dtype} {arr.shape}"
                )
            arrays[name] = arr
        return arrays

    @property
    def arrays(self) -> dict[str, np.ndarray]:
        """The memory-mapped arrays by name (mean/std or indices, and labels)."""
        if self._arrays is None:
            self._arrays = self._open_arrays()
        return self._arrays

    def __getstate__(self) -> dict[str, Any]:
        # DataLoader workers started by "spawn" pickle the dataset: reopen the memmaps there instead of
        # copying them
        return {**self.__dict__, "_arrays": None}

    def __len__(self) -> int:
        return int(self.meta["count"])

    @property
    def kind(self) -> str:
        return self.meta["kind"]

    @property
    def latent_shape(self) -> tuple[int, ...]:
        """(C, h, w) of the mean/std, or (h, w) of the VQ indices."""
        return tuple(self.meta["latent_shape"])

    @property
    def autoencoder_hash(self) -> str:
        return self.meta["autoencoder_hash"]

    @property
    def class_names(self) -> list[str]:
        return list(self.meta["class_names"])

    @property
    def num_classes(self) -> int:
        return len(self.meta["class_names"])

    @property
    def flip(self) -> bool:
        return bool(self.meta["flip"])

    @property
    def dataset_name(self) -> str:
        return self.meta["dataset"]["name"]

    @property
    def has_text(self) -> bool:
        """Whether the cache holds caption token ids (text-to-image)."""
        return "text" in self.meta

    @property
    def tokenizer_hash(self) -> str | None:
        return self.meta["text"]["tokenizer_hash"] if self.has_text else None

    def captions(self) -> list[list[str]]:
        """The caption strings per row (rows N..2N−1 of a flipped cache repeat rows 0..N−1)."""
        return read_json(self.path / CAPTIONS_FILE) if self.has_text else []

    def check_autoencoder(self, autoencoder_hash: str) -> None:
        if autoencoder_hash != self.autoencoder_hash:
            raise ValueError(
                f"latent cache {self.path} was made by autoencoder {self.autoencoder_hash}, "
                f"but you are using {autoencoder_hash}; re-encode with `latentdiff encode ...`"
            )

    def _indices(self, indices: Sequence[int] | np.ndarray | torch.Tensor) -> np.ndarray:
        if isinstance(indices, torch.Tensor):
            indices = indices.detach().cpu().numpy()
        idx = np.asarray(indices, dtype=np.int64).reshape(-1)
        n = len(self)
        if ((idx < -n) | (idx >= n)).any():
            raise IndexError(f"latent cache {self.path}: index out of range for {n} items")
        return np.where(idx < 0, idx + n, idx)

    def conditions(self, idx: np.ndarray) -> Conditions:
        """The conditioning of rows `idx`: ``{"class": int64 (N,)}`` when the data has classes, and the
        captions' ``{"text": int64 (N, K, L), "text_count": int64 (N,)}`` when the cache holds them."""
        cond: Conditions = {}
        if self.num_classes >= 1:
            cond["class"] = torch.from_numpy(np.asarray(self.arrays["labels"][idx]))
        if self.has_text:
            cond[TEXT] = torch.from_numpy(np.asarray(self.arrays["caption_ids"][idx]).astype(np.int64))
            cond[TEXT_COUNT] = torch.from_numpy(
                np.asarray(self.arrays["caption_counts"][idx]).astype(np.int64)
            )
        return cond

    def get_batch(
        self, indices: Sequence[int] | np.ndarray | torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor | None, Conditions]:
        """(mean float32 NCHW, std float32 NCHW, conditioning); VQ: (indices int64 NHW, None,
        conditioning)."""
        idx = self._indices(indices)
        arrays = self.arrays
        cond = self.conditions(idx)
        if self.kind == "vq":
            return torch.from_numpy(np.asarray(arrays["indices"][idx]).astype(np.int64)), None, cond
        mean = torch.from_numpy(np.asarray(arrays["mean"][idx]))
        std = torch.from_numpy(np.asarray(arrays["std"][idx]))
        return mean, std, cond

    def __getitem__(self, index: int) -> LatentItem:
        first, std, cond = self.get_batch([index])
        return first[0], None if std is None else std[0], {k: v[0] for k, v in cond.items()}


# ------------------------------------------------------------------------------------------------ writing


def _encode(autoencoder: Any, kind: str, images: torch.Tensor) -> dict[str, np.ndarray]:
    posterior = autoencoder.encode(images)
    if kind == "vq":
        indices = getattr(posterior, "indices", None)
        if indices is None or indices.ndim != 3:
            shape = None if indices is None else tuple(indices.shape)
            raise ValueError(f"a VQ autoencoder's posterior must carry .indices (N, h, w), got {shape}")
        return {"indices": indices.detach().cpu().to(torch.int32).numpy()}
    # float32 for std too: a float16 std keeps ~3 significant digits, and the cache must reproduce the
    # encoder's posterior exactly; latents are small (e.g. 4×8×8 floats = 1 KiB a row), so it costs little
    return {
        "mean": posterior.mean.detach().float().cpu().numpy(),
        "std": posterior.std.detach().float().cpu().numpy(),
    }


def _distributed() -> tuple[int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def _broadcast_path(path: Path | None, rank: int) -> Path:
    """Rank 0's `path` on every rank (as bytes in a tensor: no pickling)."""
    device = torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else None
    data = os.fsencode(str(path)) if rank == 0 else b""
    size = torch.tensor([len(data)], dtype=torch.int64, device=device)
    dist.broadcast(size, 0)
    buf = torch.zeros(int(size.item()), dtype=torch.uint8, device=device)
    if rank == 0:
        buf.copy_(torch.frombuffer(bytearray(data), dtype=torch.uint8))
    dist.broadcast(buf, 0)
    return Path(os.fsdecode(bytes(buf.cpu().tolist())))


def _create_arrays(folder: Path, specs: dict[str, tuple[np.dtype, tuple[int, ...]]]) -> None:
    """Full-size .npy files that each rank then fills through its own memmap."""
    for name, (dtype, shape) in specs.items():
        created = np.lib.format.open_memmap(folder / f"{name}.npy", mode="w+", dtype=dtype, shape=shape)
        created.flush()
        del created


def _caption_arrays(dataset: ImageDataset, tokenizer: Any, copies: int) -> dict[str, np.ndarray]:
    """(caption_ids int32 (copies·N, K, L), caption_counts int32 (copies·N,)) of the dataset's captions."""
    captions = dataset.captions
    if captions is None:
        raise ValueError(f"{dataset.name} has no captions to tokenize (metadata.jsonl or NAME.txt files)")
    k = max(1, max(len(c) for c in captions))
    flat = [text for texts in captions for text in texts]
    ids = tokenizer.encode(flat).numpy().astype(np.int32) if flat else np.zeros((0, tokenizer.max_length))
    out = np.full((len(captions), k, tokenizer.max_length), tokenizer.pad_id, dtype=np.int32)
    counts = np.array([len(c) for c in captions], dtype=np.int32)
    starts = np.concatenate([[0], np.cumsum(counts)])
    for i, (start, count) in enumerate(zip(starts[:-1], counts, strict=True)):
        out[i, :count] = ids[start : start + count]
    return {
        "caption_ids": np.concatenate([out] * copies),
        "caption_counts": np.concatenate([counts] * copies),
    }


def _write_rows(
    autoencoder: Any,
    kind: str,
    dataset: ImageDataset,
    folder: Path,
    rows: np.ndarray,
    flip: bool,
    batch_size: int,
    device: torch.device,
    progress: bool,
) -> None:
    """Encode dataset images `rows` into the memmaps of `folder` (and their flips at row + N)."""
    n = len(dataset)
    names = ["indices"] if kind == "vq" else ["mean", "std"]
    out = {name: np.load(folder / f"{name}.npy", mmap_mode="r+") for name in [*names, "labels"]}
    views = [(False, 0), (True, n)] if flip else [(False, 0)]
    with tqdm(total=len(rows) * len(views), desc="encoding", unit="img", disable=not progress) as bar:
        for start in range(0, len(rows), batch_size):
            batch = rows[start : start + batch_size]
            images, labels = dataset.get_batch(batch, flip=False)
            images = images.to(device)
            for flipped, offset in views:
                encoded = _encode(autoencoder, kind, images.flip(-1) if flipped else images)
                for name, values in encoded.items():
                    out[name][batch + offset] = values
                out["labels"][batch + offset] = labels.numpy()
                bar.update(len(batch))
    for arr in out.values():
        arr.flush()


def encode_dataset(
    autoencoder: Any,
    dataset: ImageDataset,
    out_dir: str | Path,
    batch_size: int = 256,
    flip: bool = False,
    device: str | torch.device = "cpu",
    progress: bool = True,
    tokenizer: Any = None,
) -> LatentCache:
    """Encode every image of `dataset` once (no grad, eval mode) into a latent cache at `out_dir`.

    The autoencoder (already on `device`) follows docs/architecture.md: `config.kind` in kl/vq/identity,
    `encode(x) -> posterior` (`.mean`, `.std`; VQ `.indices`), `hash()`. The folder is written atomically.
    Under torch.distributed, rank r encodes images r, r + world, ...: rank 0 creates the full-size memmaps
    in the temporary folder, every rank writes its rows, rank 0 renames it into place (`out_dir` must be
    on a file system every rank sees). Returns the cache, opened on every rank.

    With a `tokenizer` (`text.tokenizer.CaptionTokenizer`), the dataset's captions are stored as token ids.
    """
    kind = autoencoder.config.kind
    if kind not in KINDS:
        raise ValueError(f"autoencoder kind {kind!r} is not one of {KINDS}")
    if len(dataset) == 0:
        raise ValueError(f"dataset {dataset.name} is empty: nothing to encode")
    wanted = getattr(getattr(autoencoder, "config", None), "in_channels", dataset.channels)
    if dataset.channels != wanted:
        raise ValueError(
            f"{dataset.name} is loaded with {dataset.channels} channel(s), but the autoencoder takes "
            f"{wanted}: load it with {wanted} channel(s) (--channels {wanted})"
        )
    out_dir, device = Path(out_dir).expanduser(), torch.device(device)
    rank, world = _distributed()
    was_training = getattr(autoencoder, "training", False)
    if hasattr(autoencoder, "eval"):
        autoencoder.eval()
    try:
        with torch.no_grad():
            probe = _encode(autoencoder, kind, dataset.get_batch([0], flip=False)[0].to(device))
            total = len(dataset) * (2 if flip else 1)
            specs = {name: (v.dtype, (total, *v.shape[1:])) for name, v in probe.items()}
            specs["labels"] = (np.dtype(np.int64), (total,))
            text = None
            if tokenizer is not None:
                text = _caption_arrays(dataset, tokenizer, 2 if flip else 1)
                specs.update({name: (a.dtype, a.shape) for name, a in text.items()})
            meta = {
                "format": FORMAT,
                "version": VERSION,
                "kind": kind,
                "count": total,
                "flip": flip,
                "latent_shape": list(next(iter(probe.values())).shape[1:]),
                "arrays": {k: {"dtype": str(dt), "shape": list(shape)} for k, (dt, shape) in specs.items()},
                "autoencoder_hash": autoencoder.hash(),
                "dataset": {
                    "name": dataset.name,
                    "split": dataset.split,
                    "count": len(dataset),
                    "resolution": dataset.resolution,
                    "channels": dataset.channels,
                    # how a folder's split was made (None for built-in sets): a cache without it predates
                    # the held-out split and holds the held-out images too
                    "split_rule": getattr(dataset, "split_rule", None),
                },
                "class_names": list(dataset.class_names),
            }
            if text is not None:
                meta["text"] = {
                    "tokenizer_hash": tokenizer.hash(),
                    "max_length": tokenizer.max_length,
                    "max_captions": int(text["caption_ids"].shape[1]),
                }
            rows = np.arange(rank, len(dataset), world)
            with contextlib.ExitStack() as stack:
                tmp = None
                if rank == 0:
                    tmp = stack.enter_context(atomic_dir(out_dir))
                    _create_arrays(tmp, specs)
                    if text is not None:  # small: rank 0 writes them whole
                        for name, values in text.items():
                            out = np.load(tmp / f"{name}.npy", mmap_mode="r+")
                            out[:] = values
                            out.flush()
                        write_json(dataset.captions * (2 if flip else 1), tmp / CAPTIONS_FILE)
                    write_json(meta, tmp / META_FILE)
                if world > 1:
                    tmp = _broadcast_path(tmp, rank)
                _write_rows(
                    autoencoder, kind, dataset, tmp, rows, flip, batch_size, device, progress and rank == 0
                )
                if world > 1:
                    dist.barrier()  # every rank's rows are on disk before rank 0 renames the folder
            if world > 1:
                dist.barrier()  # the folder is in place before any rank opens it
    finally:
        if was_training and hasattr(autoencoder, "train"):
            autoencoder.train()
    log.info("encoded %d images of %s into %s (%s, latent %s)", total, dataset.name, out_dir, kind,
             tuple(meta["latent_shape"]))  # fmt: skip
    return LatentCache(out_dir)
