"""Keywords of emoji from the npm package `emojilib@4.0.3` (github.com/muan/emojilib, MIT licence, © Mu-An
Chiou): `package/dist/emoji-en-US.json` maps each emoji (its characters, fully qualified, e.g. "❤️" with
U+FE0F) to a list of keywords, the first its CLDR short name as a slug ("waving_hand", "flag_france"), the
rest words people search it by ("wave", "hands", "goodbye", ...). 1,914 emoji; no skin-tone variants.

Read from `$LATENTDIFF_DATA/emojilib/emojilib-4.0.3.tgz` (what `npm pack` writes; `scripts/install_data.sh`
puts it there) or the unpacked `$LATENTDIFF_DATA/emojilib/package/` folder. Optional: without it the emoji
captions are the Unicode names alone.
"""

from __future__ import annotations

import functools
import json
import logging
import re
import tarfile
from pathlib import Path

from latentdiff.data.source import data_root, source_fingerprint

log = logging.getLogger(__name__)

PACKAGE = "emojilib@4.0.3"
TARBALL = "emojilib-4.0.3.tgz"
MEMBER = "package/dist/emoji-en-US.json"
_SELECTORS = re.compile("[\ufe0e\ufe0f]")
ZWJ = "\u200d"
_SKIN_TONES = re.compile("[\U0001f3fb-\U0001f3ff]")
_WORD = re.compile(r"[a-z][a-z' -]*[a-z]")  # plain words: no emoticons such as ":D", no abbreviations "st."


def install_command() -> str:
    dest = data_root() / "emojilib"
    return f"mkdir -p {dest} && npm pack {PACKAGE} --pack-destination {dest}"


def locate() -> Path | None:
    """The package's tarball or unpacked folder, None when it is not installed."""
    folder = data_root() / "emojilib"
    return next((p for p in (folder / TARBALL, folder / "package") if p.exists()), None)


def _key(emoji: str) -> str:
    return _SELECTORS.sub("", emoji)


@functools.lru_cache(maxsize=2)
def read_keywords(source: Path, fingerprint: str) -> dict[str, list[str]]:
    """emoji (variation selectors removed) → keywords, from the tarball or the unpacked folder
    (`fingerprint` only keys the cache)."""
    try:
        if source.is_file():
            with tarfile.open(source, "r:gz") as tar:
                member = tar.extractfile(MEMBER)
                text = member.read() if member is not None else b""
        else:
            text = (source / MEMBER.removeprefix("package/")).read_bytes()
        table = json.loads(text)
        if not isinstance(table, dict):
            raise ValueError(f"expected an object keyed by emoji, got {type(table).__name__}")
        return {_key(k): [str(w) for w in v] for k, v in table.items() if isinstance(v, list) and v}
    except (OSError, KeyError, tarfile.TarError, EOFError, ValueError) as e:
        raise ValueError(f"{source}: cannot read the emoji keywords of {PACKAGE} ({e})") from e


def keywords() -> dict[str, list[str]]:
    """The installed package's keywords, or {} (logged) when it is absent."""
    source = locate()
    if source is None:
        log.info("emoji keywords not installed (optional): %s", install_command())
        return {}
    return read_keywords(source, source_fingerprint(PACKAGE, files=[source]))


def keyword_captions(emoji: str, table: dict[str, list[str]], tone: str | None = None) -> list[str]:
    """Captions from the keywords of `emoji` (characters; a skin-toned one reads its base emoji's and names
    `tone`; a ZWJ sequence is also looked up back to front, the order Noto lists some in): its short name
    ("waving hand"), and the name with up to four keywords not already in it ("waving hand: wave, hands,
    gesture, goodbye"). [] when the table does not have the emoji."""
    untoned = _SKIN_TONES.sub("", emoji)
    reversed_zwj = ZWJ.join(reversed(untoned.split(ZWJ)))  # Noto lists some ZWJ sequences back to front
    words = next((table[k] for k in map(_key, (emoji, untoned, reversed_zwj)) if k in table), None)
    if not words:
        return []
    name = words[0].replace("_", " ").strip().lower()
    if tone:
        name = f"{name}, {tone}"
    extra: list[str] = []
    for w in words[1:]:
        w = w.replace("_", " ").lower()
        if _WORD.fullmatch(w) and w not in name.replace(",", " ").split() and w not in extra:
            extra.append(w)
    return [name, f"{name}: {', '.join(extra[:4])}"] if extra else [name]
