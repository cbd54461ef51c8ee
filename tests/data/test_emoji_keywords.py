"""Emoji keywords from a stand-in for the npm package emojilib: the captions they give, from the tarball or
the unpacked folder, and the emoji captions unchanged when the package is absent."""

from __future__ import annotations

import io
import json
import tarfile

import pytest

from latentdiff.data import emoji
from latentdiff.data.emoji_keywords import MEMBER, TARBALL, keyword_captions, keywords

FAKE = {
    "👋": ["waving_hand", "wave", "hands", ":D", "st.", "goodbye", "hi", "hello"],
    "❤️": ["red_heart", "love", "heart"],  # fully qualified (U+FE0F), as emojilib writes it
    "👨‍🎨": ["man_artist", "painter", "man"],
}


def _install(home, unpacked: bool = False) -> None:
    folder = home / "emojilib"
    folder.mkdir(parents=True)
    blob = json.dumps(FAKE, ensure_ascii=False).encode()
    if unpacked:
        (folder / MEMBER).parent.mkdir(parents=True)
        (folder / MEMBER).write_bytes(blob)
        return
    with tarfile.open(folder / TARBALL, "w:gz") as tar:
        info = tarfile.TarInfo(MEMBER)
        info.size = len(blob)
        tar.addfile(info, io.BytesIO(blob))


@pytest.mark.parametrize("unpacked", [False, True])
def test_keyword_captions_from_the_package(data_home, unpacked):
    _install(data_home, unpacked)
    table = keywords()
    assert keyword_captions("👋", table) == ["waving hand", "waving hand: wave, hands, goodbye, hi"]
    assert keyword_captions("👋🏽", table, "medium skin tone") == [
        "waving hand, medium skin tone",
        "waving hand, medium skin tone: wave, hands, goodbye, hi",
    ]  # a skin tone reads its base emoji's keywords
    assert keyword_captions("❤", table) == ["red heart", "red heart: love"]  # without U+FE0F too
    assert keyword_captions("🎨\u200d👨", table) == ["man artist", "man artist: painter"]  # Noto's order
    assert keyword_captions("🙂", table) == []


def test_absent_package_leaves_captions_as_they_were_and_present_adds_keywords(use_builtin, data_home):
    font = use_builtin("emoji")
    wave = next(g for g in emoji._glyphs(font) if g.sequence == (0x1F44B,))
    split = "test" if wave.is_test else "train"
    row = [g for g in emoji._glyphs(font) if g.is_test == wave.is_test].index(wave)
    assert keywords() == {}
    before = emoji.split_captions(font, split)
    assert before[row] == ["waving hand sign", "an emoji of waving hand sign"]
    _install(data_home)
    after = emoji.split_captions(font, split)
    assert len(after) == len(before) and all(a[: len(b)] == b for a, b in zip(after, before, strict=True))
    assert after[row][2:] == ["waving hand", "waving hand: wave, hands, goodbye, hi"]


def test_a_broken_package_file_is_named(data_home):
    (data_home / "emojilib").mkdir()
    (data_home / "emojilib" / TARBALL).write_bytes(b"not a tarball")
    with pytest.raises(ValueError, match=rf"{TARBALL}: cannot read the emoji keywords of emojilib@4.0.3"):
        keywords()


def test_an_emoji_newer_than_pythons_unicode_names_is_captioned_by_its_emojilib_name(use_builtin, data_home):
    font = use_builtin("emoji")
    glyphs = emoji._glyphs(font)
    unnamed = next((g for g in glyphs if emoji._UNNAMED.search(emoji.describe(g.sequence))), None)
    if unnamed is None:
        pytest.skip("this Python's unicodedata names every emoji of the font")
    char = "".join(chr(c) for c in unnamed.sequence)
    FAKE[char] = ["shiny_new_thing", "novel"]
    try:
        _install(data_home)
        split = "test" if unnamed.is_test else "train"
        row = [g for g in glyphs if g.is_test == unnamed.is_test].index(unnamed)
        captions = emoji.split_captions(font, split)[row]
    finally:
        del FAKE[char]
    assert captions[:2] == ["shiny new thing", "an emoji of shiny new thing"]
    assert not any("u+" in c for c in captions)
