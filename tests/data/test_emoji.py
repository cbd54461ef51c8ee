"""Noto Color Emoji: bitmap count, the naming rule, the fixed split, white backgrounds."""

from __future__ import annotations

import pytest

from latentdiff.data import emoji, load_dataset


@pytest.fixture
def glyphs(use_builtin) -> dict[str, emoji.EmojiGlyph]:
    font = use_builtin("emoji")
    return {g.key: g for g in emoji.read_font(str(font), emoji.fingerprint(font))}


def test_bitmap_count_and_classes(glyphs, use_builtin):
    font = use_builtin("emoji")
    assert len(glyphs) == 3926 == sum(emoji.COUNTS.values())
    assert sum(g.is_test for g in glyphs.values()) == emoji.COUNTS["test"]
    names = emoji.class_names(font)
    assert len(names) == 1425 and names == sorted(set(names))


def test_names_follow_the_first_code_point(glyphs):
    assert glyphs["1F600"].class_name == "GRINNING FACE"
    assert glyphs["0023"].class_name == "NUMBER SIGN"
    # skin tones and ZWJ sequences share their base emoji's class
    assert glyphs["1F44B-1F3FB"].class_name == glyphs["1F44B"].class_name == "WAVING HAND SIGN"
    # Noto's reversed alias (♀ first) is not the one used
    assert glyphs["26F9-200D-2640"].class_name == "PERSON WITH BALL"
    assert not any(key.startswith("2640-") for key in glyphs)
    flags = [g for k, g in glyphs.items() if k.startswith("1F1EB-")]
    assert flags and {g.class_name for g in flags} == {"REGIONAL INDICATOR SYMBOL LETTER F"}


def test_split_is_fixed_by_the_sequence(glyphs):
    # golden values: these must never move between runs, machines or Python versions
    assert not glyphs["1F600"].is_test and not glyphs["1F44B"].is_test
    assert glyphs["0033"].is_test and glyphs["203C"].is_test


def test_limited_load_is_white_backed_rgb(use_builtin):
    use_builtin("emoji")
    ds = load_dataset("emoji", "test", limit=48)
    images, labels = ds.get_batch(range(48))
    assert images.shape == (48, 3, 64, 64) and ds.num_classes == 1425
    assert int(labels.min()) >= 0 and int(labels.max()) < 1425
    corners = images[:, :, [0, 0, -1, -1], [0, -1, 0, -1]]
    white = (corners == 1.0).all(dim=(1, 2)).float().mean()
    assert white >= 0.9, "transparent backgrounds must be composited on white"
    grey = load_dataset("emoji", "test", resolution=32, channels=1, limit=4)
    assert grey.images.shape == (4, 1, 32, 32)


def test_captions_describe_each_emoji_in_words():
    from latentdiff.data.emoji import describe

    assert describe((0x1F44B, 0x1F3FD)) == "waving hand sign, medium skin tone"
    assert describe((0x1F1EB, 0x1F1F7)) == "flag FR"
    assert describe((0x1F469, 0x200D, 0x1F4BB)) == "woman, personal computer"
    assert describe((0x2764, 0xFE0F)) == "heavy black heart"
    wales = (0x1F3F4, *(0xE0000 + ord(c) for c in "gbwls"), 0xE007F)
    assert describe(wales) == "flag of Wales"
    assert describe((0x1F3F4, *(0xE0000 + ord(c) for c in "caab"), 0xE007F)) == "flag CA-AB"
