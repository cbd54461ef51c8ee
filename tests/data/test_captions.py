"""Captions of an image folder: metadata.jsonl and NAME.txt sidecars, their errors, uncaptioned images."""

import json
import logging

import numpy as np
import pytest
from PIL import Image

from latentdiff.data.captions import CaptionError, read_metadata
from latentdiff.data.image_folder import ImageFolder


def _image(path, value=0):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((8, 8, 3), value, np.uint8)).save(path)


def test_metadata_jsonl_string_and_list_captions_in_sub_folders(tmp_path):
    for name in ("a.png", "b.png", "sub/c.png"):
        _image(tmp_path / name)
    lines = [
        {"file_name": "a.png", "text": "a red circle"},
        {"file_name": "b.png", "text": ["two", "captions"]},
    ]
    (tmp_path / "metadata.jsonl").write_text("\n".join(json.dumps(x) for x in lines) + "\n\n")
    (tmp_path / "sub" / "metadata.jsonl").write_text(json.dumps({"file_name": "c.png", "text": "deep"}))
    data = ImageFolder(tmp_path, 8, labels=False)
    assert [f.name for f in data.files] == ["a.png", "b.png", "c.png"]
    assert data.captions == [["a red circle"], ["two", "captions"], ["deep"]]


def test_sidecar_lines_are_captions_and_uncaptioned_images_are_reported(tmp_path, caplog):
    for name in ("x.png", "y.png", "z.png"):
        _image(tmp_path / name)
    (tmp_path / "x.txt").write_text("first caption\n\n  second caption  \n")
    (tmp_path / "y.txt").write_text("only one")
    with caplog.at_level(logging.WARNING):
        data = ImageFolder(tmp_path, 8, labels=False)
    assert data.captions == [["first caption", "second caption"], ["only one"], []]
    assert "1 of 3 images have no caption" in caplog.text


def test_both_conventions_add_up(tmp_path):
    _image(tmp_path / "x.png")
    (tmp_path / "x.txt").write_text("from the sidecar")
    (tmp_path / "metadata.jsonl").write_text(json.dumps({"file_name": "x.png", "text": "from metadata"}))
    assert ImageFolder(tmp_path, 8, labels=False).captions == [["from metadata", "from the sidecar"]]


def test_folder_without_captions_has_none(tmp_path):
    _image(tmp_path / "x.png")
    assert ImageFolder(tmp_path, 8, labels=False).captions is None


@pytest.mark.parametrize(
    "line, why",
    [
        ("{not json", "not a JSON object"),
        ('["a list"]', "expected a JSON object"),
        ('{"file_name": "a.png"}', "missing key(s) ['text']"),
        ('{"file_name": "a.png", "text": 3}', "'text' must be a string or a list of strings"),
        ('{"file_name": "a.png", "text": ["ok", 4]}', "'text' must be a string or a list of strings"),
        ('{"file_name": "", "text": "x"}', "'file_name' must be a non-empty string"),
    ],
)
def test_malformed_metadata_line_names_file_and_line(tmp_path, line, why):
    _image(tmp_path / "a.png")
    meta = tmp_path / "metadata.jsonl"
    meta.write_text(json.dumps({"file_name": "a.png", "text": "fine"}) + "\n" + line + "\n")
    with pytest.raises(CaptionError) as err:
        read_metadata(meta)
    assert f"{meta}, line 2" in str(err.value) and why in str(err.value)
    with pytest.raises(CaptionError, match="line 2"):  # the dataset refuses it the same way
        ImageFolder(tmp_path, 8, labels=False)


def test_entries_naming_missing_files_are_reported(tmp_path, caplog):
    _image(tmp_path / "a.png")
    lines = [{"file_name": "a.png", "text": "here"}, {"file_name": "gone.png", "text": "missing"}]
    (tmp_path / "metadata.jsonl").write_text("\n".join(json.dumps(x) for x in lines))
    with caplog.at_level(logging.WARNING):
        data = ImageFolder(tmp_path, 8, labels=False)
    assert data.captions == [["here"]]
    assert "1 caption entry names no image file" in caplog.text and "gone.png" in caplog.text
