"""The generated `shapes` set: deterministic, captioned, and a held-out set of combinations only in test."""

import numpy as np

from latentdiff.data import load_dataset, shapes


def test_held_out_combinations_are_at_least_ten_percent_and_only_in_test():
    combos = shapes.combinations()
    held = {c for c in combos if shapes.is_held_out(*c)}
    assert len(combos) == 8 * 5 * 9 and len(held) / len(combos) >= 0.10
    train = {item[:3] for item in shapes.split_items("train")}
    test = {item[:3] for item in shapes.split_items("test")}
    assert test == held and not train & held and train | test == set(combos)
    # every colour, shape and position alone still appears in training
    for axis, n in enumerate((len(shapes.COLOURS), len(shapes.SHAPES), len(shapes.POSITIONS))):
        assert {c[axis] for c in train} == set(range(n))


def test_loads_deterministically_with_captions_and_classes(data_home):
    a = load_dataset("shapes", "test", limit=40)
    b = load_dataset("shapes", "test", limit=40)
    assert np.array_equal(a.images, b.images) and a.captions == b.captions
    assert a.images.shape == (40, 3, 32, 32) and len(a.captions) == 40
    full = load_dataset("shapes", "train")
    assert len(full) == shapes.COUNTS["train"] and len(full.captions) == len(full)
    names = full.class_names
    for i in (0, 17, len(full) - 1):
        colour, shape, *where = names[full.labels[i]].split()
        caps = full.captions[i]
        assert len(caps) >= 3 and all(colour in c and shape in c for c in caps)
        assert any(" ".join(where) in c for c in caps) and any(
            c.startswith(f"{colour} {shape}, ") for c in caps
        )
        assert any(size in caps[0] for size in shapes.SIZES)


def test_caption_phrasings():
    caps = shapes.captions_for("red", "circle", "top left", "small")
    assert "a small red circle in the top left" in caps and "red circle, top-left, small" in caps


def test_pixels_show_the_colour_at_the_position_on_a_plain_background():
    for colour, shape, position in [(0, 0, 0), (5, 1, 4), (7, 4, 8), (2, 2, 6)]:
        img = shapes.render(colour, shape, position, "large")
        row, col = divmod(position, 3)
        cy, cx = int((row + 0.5) * 32 / 3), int((col + 0.5) * 32 / 3)
        assert tuple(img[:, cy, cx]) == list(shapes.COLOURS.values())[colour]
        mask = (img != np.array(shapes.BACKGROUND)[:, None, None]).any(0)
        ys, xs = np.nonzero(mask)
        assert abs(ys.mean() - cy) < 2.5 and abs(xs.mean() - cx) < 2.5  # drawn in its cell only
        assert tuple(img[:, 31 - cy, 31 - cx]) == shapes.BACKGROUND or position == 4
