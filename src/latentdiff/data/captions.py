"""Captions of an image folder, in the two conventions users already have.

- `metadata.jsonl` (the Hugging Face image-folder convention): one JSON object per line,
  ``{"file_name": "cats/001.png", "text": "a cat"}``, `file_name` relative to the folder holding the
  metadata file; `text` is a string or a list of strings (several captions). A folder may hold one in any
  sub-folder too.
- a sidecar `NAME.txt` beside `NAME.png`: one caption per non-empty line.

An image may have several captions (both conventions add up); training draws one at random per step.
Images without any caption are counted and reported: they train with the empty caption (the
classifier-free-guidance null). A malformed metadata line raises `CaptionError` naming the file and the
line number.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Sequence
from pathlib import Path

log = logging.getLogger(__name__)

METADATA_FILE = "metadata.jsonl"
SIDECAR_SUFFIX = ".txt"


class CaptionError(ValueError):
    """A caption file that cannot be read as captions; the message names the file and the line."""


def _metadata_files(root: Path, files: Sequence[Path]) -> list[Path]:
    """`metadata.jsonl` of `root` and of every folder on the way to an image: the folders the image search
    walked (loop-safely, `find_images`), never a walk of our own through symlinked folders."""
    root = Path(root)
    folders = {root}
    for file in files:
        folder = Path(file).parent
        while folder not in folders and len(folder.parts) > len(root.parts):
            folders.add(folder)
            folder = folder.parent
    return sorted(f / METADATA_FILE for f in folders if (f / METADATA_FILE).is_file())


def _texts(value: object, where: str) -> list[str]:
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(t, str) for t in value):
        raise CaptionError(f"{where}: 'text' must be a string or a list of strings, got {value!r}")
    return [t.strip() for t in value if t.strip()]


def read_metadata(path: Path) -> dict[Path, list[str]]:
    """{resolved image path: captions} of one `metadata.jsonl`; a bad line raises naming file and line."""
    out: dict[Path, list[str]] = {}
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise CaptionError(f"{path}: cannot read the caption metadata ({e})") from e
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        where = f"{path}, line {number}"
        try:
            entry = json.loads(line)
        except json.JSONDecodeError as e:
            raise CaptionError(f"{where}: not a JSON object ({e.msg})") from e
        if not isinstance(entry, dict):
            raise CaptionError(f"{where}: expected a JSON object, got {type(entry).__name__}")
        missing = [k for k in ("file_name", "text") if k not in entry]
        if missing:
            raise CaptionError(
                f'{where}: missing key(s) {missing}; a line is {{"file_name": ..., "text": ...}}'
            )
        name = entry["file_name"]
        if not isinstance(name, str) or not name:
            raise CaptionError(f"{where}: 'file_name' must be a non-empty string, got {name!r}")
        file = Path(os.path.normpath(path.parent / name))
        out.setdefault(file, []).extend(_texts(entry["text"], where))
    return out


def read_sidecar(path: Path) -> list[str]:
    """The captions of `NAME.txt`: one per non-empty line."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise CaptionError(f"{path}: cannot read the caption file ({e})") from e
    return [line.strip() for line in text.splitlines() if line.strip()]


def has_captions(root: Path, files: Sequence[Path]) -> bool:
    """Whether `root` uses either caption convention (a metadata file, or a sidecar for any image)."""
    return bool(_metadata_files(root, files)) or any(f.with_suffix(SIDECAR_SUFFIX).is_file() for f in files)


def folder_captions(root: Path, files: Sequence[Path]) -> list[list[str]] | None:
    """Captions per file of `files` (images under `root`), or None when the folder has no captions at all.

    Metadata entries naming a file that does not exist are reported once; images without a caption get an
    empty list and are counted in a warning."""
    metadata: dict[Path, list[str]] = {}
    for meta in _metadata_files(root, files):
        for file, texts in read_metadata(meta).items():
            metadata.setdefault(file, []).extend(texts)
    sidecars = [f.with_suffix(SIDECAR_SUFFIX) for f in files]
    if not metadata and not any(s.is_file() for s in sidecars):
        return None
    captions = []
    for file, sidecar in zip(files, sidecars, strict=True):
        texts = list(metadata.pop(Path(os.path.normpath(file)), []))
        if sidecar.is_file():
            texts += read_sidecar(sidecar)
        captions.append(texts)
    unknown = sorted(str(p) for p in metadata if not p.is_file())  # others: another split, or unreadable
    if unknown:
        shown = ", ".join(unknown[:5]) + (" ..." if len(unknown) > 5 else "")
        verb = "y names" if len(unknown) == 1 else "ies name"
        log.warning("%s: %d caption entr%s no image file: %s", root, len(unknown), verb, shown)
    uncaptioned = sum(not c for c in captions)
    if uncaptioned:
        log.warning(
            "%s: %d of %d images have no caption; they train with the empty caption (unconditional)",
            root, uncaptioned, len(captions),
        )  # fmt: skip
    return captions


def caption_stats(captions: Sequence[Sequence[str]]) -> dict[str, int]:
    """Counts for reports: images, captioned images, captions."""
    return {
        "images": len(captions),
        "captioned": sum(bool(c) for c in captions),
        "captions": sum(len(c) for c in captions),
    }
