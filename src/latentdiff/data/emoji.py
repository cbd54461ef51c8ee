"""Noto Color Emoji: the colour PNG bitmaps of the font's CBDT table, composited on white, 64×64 RGB.

Source: the Debian package `fonts-noto-color-emoji` (`/usr/share/fonts/truetype/noto/NotoColorEmoji.ttf`)
or `$LATENTDIFF_DATA/emoji/NotoColorEmoji.ttf`. Every bitmap of the largest strike is one image; the
Debian 2.042 font (noto-emoji 20231129) has 3,926 (136×128 each, transparent 4-pixel side bearings, so the
resize-then-centre-crop rule keeps the whole emoji).

Each bitmap glyph is given a code-point sequence: its own code point when the cmap maps one to it
(unless that is a private-use code point and a GSUB sequence also produces the glyph, as for Noto's
flags), otherwise the input of the GSUB ligature (or single substitution) that produces it. Noto also
lists most gendered and directional ZWJ sequences in a reversed order (♀/♂/➡ first); a sequence
starting with U+2640, U+2642 or U+27A1 is used only when the glyph has no other, and otherwise the
first sequence in lookup order wins. A component outside the cmap is written as its glyph name.

Label: the Unicode name (`unicodedata.name`) of the sequence's first code point, so skin-tone and
gender variants share their base emoji's class ("WAVING HAND SIGN", "MAN", "REGIONAL INDICATOR SYMBOL
LETTER F" for flags starting with F); a code point that Python's Unicode database does not name is
called "U+XXXX". `class_names` = the sorted distinct names, the label is the index in that list. The
names come from Python's `unicodedata` (Unicode 14.0 in Python 3.11), so a newer Python that names more
code points (20 emoji of Unicode 15 in the Debian font) gets a slightly different class list; a trained
model keeps its own class names. The Debian font gives 1,425 classes.

Captions (text-to-image): the Unicode names of the sequence's code points in lower case, joining
characters and variation selectors left out, skin-tone modifiers read as "light skin tone" …, a flag's
two regional indicators as "flag XY": e.g. ["waving hand sign, medium skin tone", "an emoji of waving
hand sign, medium skin tone", "waving hand sign"]; with the npm package `emojilib` installed (MIT licence;
`data.emoji_keywords`), also its short name and keywords: "waving hand, medium skin tone", "waving hand,
medium skin tone: wave, hands, gesture, goodbye".

Split: an emoji is `test` when the first 8 hex digits of SHA-256 of its sequence key (code points as
upper-case hex joined by "-", e.g. "26F9-200D-2640") are ≡ 0 mod 10, else `train`: fixed for a
given font, whatever the machine or run. Images are in glyph-ID order.
"""

from __future__ import annotations

import functools
import hashlib
import io
import re
import unicodedata
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from latentdiff.data.emoji_keywords import keyword_captions, keywords
from latentdiff.data.image_convert import image_to_array
from latentdiff.data.source import BuiltinSource, SourceSplit, data_root, first_existing, source_fingerprint

NAME = "emoji"
FONT_FILE = "NotoColorEmoji.ttf"
SYSTEM_FONT = Path("/usr/share/fonts/truetype/noto") / FONT_FILE
COUNTS = {"train": 3553, "test": 373}  # 1,425 classes; Debian font 2.042
RESOLUTION = 64
TEST_BUCKETS = 10
_REVERSED_ALIAS_STARTS = {0x2640, 0x2642, 0x27A1}  # ♀ ♂ ➡: last in Unicode's ZWJ sequences
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@dataclass(frozen=True)
class EmojiGlyph:
    glyph: str
    sequence: tuple[int | str, ...]
    class_name: str
    png: bytes

    @property
    def key(self) -> str:
        return "-".join(f"{c:04X}" if isinstance(c, int) else c for c in self.sequence)

    @property
    def is_test(self) -> bool:
        return int(hashlib.sha256(self.key.encode()).hexdigest()[:8], 16) % TEST_BUCKETS == 0


def install_command() -> str:
    return "sudo apt-get install fonts-noto-color-emoji"


def locate() -> Path:
    return first_existing(NAME, [data_root() / NAME / FONT_FILE, SYSTEM_FONT], install_command())


def fingerprint(font: Path) -> str:
    return source_fingerprint(NAME, files=[font])


def _substitution_inputs(gsub) -> dict[str, list[list[str]]]:
    """glyph → the input glyph sequences of the ligature / single substitutions that produce it."""
    inputs: dict[str, list[list[str]]] = {}
    for lookup in gsub.table.LookupList.Lookup:
        for sub in lookup.SubTable:
            kind = lookup.LookupType
            if kind == 7:  # extension: the real subtable is wrapped
                kind, sub = sub.ExtensionLookupType, sub.ExtSubTable
            if kind == 4:
                for first, ligatures in sub.ligatures.items():
                    for lig in ligatures:
                        inputs.setdefault(lig.LigGlyph, []).append([first, *lig.Component])
            elif kind == 1:
                for source, target in sub.mapping.items():
                    inputs.setdefault(target, []).append([source])
    return inputs


def _choose_sequence(glyph: str, cmap: dict[str, int], inputs: dict[str, list[list[str]]]) -> tuple:
    candidates = inputs.get(glyph)
    if glyph in cmap and not (candidates and unicodedata.category(chr(cmap[glyph])) == "Co"):
        return (cmap[glyph],)
    if not candidates:
        return (glyph,)
    forward = [s for s in candidates if cmap.get(s[0]) not in _REVERSED_ALIAS_STARTS]
    chosen = (forward or candidates)[0]
    return tuple(cmap.get(g, g) for g in chosen)


def _class_name(sequence: tuple, cmap: dict[str, int], inputs: dict[str, list[list[str]]]) -> str:
    first = sequence[0]
    for _ in range(8):  # a component that is itself a substitution result: follow it to a code point
        if isinstance(first, int):
            return unicodedata.name(chr(first), f"U+{first:04X}")
        nxt = _choose_sequence(first, cmap, inputs)[0]
        if nxt == first:
            break
        first = nxt
    return first if isinstance(first, str) else f"U+{first:04X}"


@functools.lru_cache(maxsize=2)
def read_font(path: str, fingerprint: str) -> tuple[EmojiGlyph, ...]:
    """Every colour bitmap of the font's largest strike (`fingerprint` only keys the cache)."""
    from fontTools.ttLib import TTFont, TTLibError

    try:
        font = TTFont(path, lazy=True)
        strikes = font["CBLC"].strikes
        bitmaps = font["CBDT"].strikeData
    except (OSError, KeyError, TTLibError, AssertionError) as e:
        raise ValueError(f"{path}: not a colour bitmap (CBDT/CBLC) emoji font ({e!r})") from e
    largest = max(range(len(strikes)), key=lambda i: strikes[i].bitmapSizeTable.ppemY)
    cmap: dict[str, int] = {}
    for code_point, glyph in sorted(font.getBestCmap().items()):
        cmap.setdefault(glyph, code_point)
    inputs = _substitution_inputs(font["GSUB"]) if "GSUB" in font else {}
    glyphs = []
    for name in sorted(bitmaps[largest], key=font.getGlyphID):
        bitmap = bitmaps[largest][name]
        if not hasattr(bitmap, "imageData"):
            bitmap.decompile()
        png = bytes(bitmap.imageData)
        if not png.startswith(_PNG_SIGNATURE):
            raise ValueError(f"{path}: glyph {name} is not a PNG bitmap")
        sequence = _choose_sequence(name, cmap, inputs)
        glyphs.append(EmojiGlyph(name, sequence, _class_name(sequence, cmap, inputs), png))
    return tuple(glyphs)


def _glyphs(font: Path) -> tuple[EmojiGlyph, ...]:
    return read_font(str(font.resolve()), fingerprint(font))


def class_names(font: Path) -> list[str]:
    return sorted({g.class_name for g in _glyphs(font)})


_SKIN_TONES = {
    0x1F3FB: "light skin tone",
    0x1F3FC: "medium-light skin tone",
    0x1F3FD: "medium skin tone",
    0x1F3FE: "medium-dark skin tone",
    0x1F3FF: "dark skin tone",
}
_SILENT = {0x200D, 0xFE0E, 0xFE0F, 0x20E3}  # joiner, variation selectors, combining keycap
_REGIONAL_A = 0x1F1E6
_TAG_BASE = 0xE0000  # tag characters U+E0020..U+E007E spell ASCII
_SUBDIVISIONS = {"gbeng": "England", "gbsct": "Scotland", "gbwls": "Wales"}
_UNNAMED = re.compile(r"\bu\+[0-9a-f]{4,}")  # describe()'s fallback for a code point without a name


def describe(sequence: tuple[int | str, ...]) -> str:
    """A code-point sequence in words: 'woman, medium skin tone', 'flag FR', 'flag CA-AB', 'flag of Wales'."""
    letters = [c - _REGIONAL_A for c in sequence if isinstance(c, int) and 0 <= c - _REGIONAL_A < 26]
    if len(letters) == 2 and len(sequence) == 2:
        return "flag " + "".join(chr(ord("A") + i) for i in letters)
    tags = "".join(
        chr(c - _TAG_BASE) for c in sequence if isinstance(c, int) and 0x20 <= c - _TAG_BASE < 0x7F
    )
    if tags:  # a subdivision flag: black flag + tag letters (Unicode UTS #51, emoji tag sequences)
        return (
            f"flag of {_SUBDIVISIONS[tags]}"
            if tags in _SUBDIVISIONS
            else f"flag {tags[:2].upper()}-{tags[2:].upper()}"
        )
    words = []
    for c in sequence:
        if isinstance(c, str):
            words.append(c.lower().replace("_", " "))
        elif c in _SKIN_TONES:
            words.append(_SKIN_TONES[c])
        elif c not in _SILENT:
            words.append(unicodedata.name(chr(c), f"U+{c:04X}").lower())
    return ", ".join(words) or "emoji"


def _keyword_captions(sequence: tuple[int | str, ...], table: dict[str, list[str]]) -> list[str]:
    if not table or not all(isinstance(c, int) for c in sequence):
        return []
    tones = ", ".join(dict.fromkeys(_SKIN_TONES[c] for c in sequence if c in _SKIN_TONES)) or None
    return keyword_captions("".join(chr(c) for c in sequence), table, tones)  # type: ignore[arg-type]


def split_captions(font: Path, split: str) -> list[list[str]]:
    """Per image of `split` (in `read_split`'s order), its captions: the Unicode names, and the emojilib
    keywords when that package is installed (`data.emoji_keywords`)."""
    table = keywords()
    out = []
    for g in _glyphs(font):
        if g.is_test != (split == "test"):
            continue
        words = describe(g.sequence)
        keyworded = _keyword_captions(g.sequence, table)
        if _UNNAMED.search(words) and keyworded:  # newer than this Python's Unicode names: emojilib's name
            words = keyworded[0]
        captions = [words, f"an emoji of {words}"]
        if g.class_name.lower() != words and not _UNNAMED.search(g.class_name.lower()):
            captions.append(g.class_name.lower())
        captions += [c for c in keyworded if c not in captions]
        out.append(captions)
    return out


def read_split(font: Path, split: str) -> SourceSplit:
    glyphs = [g for g in _glyphs(font) if g.is_test == (split == "test")]
    index = {name: i for i, name in enumerate(class_names(font))}
    labels = np.array([index[g.class_name] for g in glyphs], dtype=np.int64)

    def decode(indices: np.ndarray, resolution: int, channels: int) -> np.ndarray:
        out = np.empty((len(indices), channels, resolution, resolution), dtype=np.uint8)
        for row, i in enumerate(indices):
            try:
                img = Image.open(io.BytesIO(glyphs[i].png))
                img.load()
            except (OSError, SyntaxError, ValueError) as e:
                raise ValueError(f"{font}: glyph {glyphs[i].glyph} has a broken PNG bitmap ({e})") from e
            out[row] = image_to_array(img, resolution, channels)
        return out

    return SourceSplit(labels=labels, decode=decode, cheap_native=False)


SOURCE = BuiltinSource(
    name=NAME,
    description="Noto Color Emoji on white, 64x64 RGB, classes = Unicode names (fonts-noto-color-emoji)",
    counts=COUNTS,
    shape=(3, RESOLUTION, RESOLUTION),
    install_command=install_command,
    locate=locate,
    fingerprint=fingerprint,
    class_names=class_names,
    read_split=read_split,
    captions=split_captions,
)
