"""Typed configuration: YAML in/out, overrides, errors that name the key and suggest the closest one."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import pytest

from latentdiff.config import ConfigError, apply_overrides, dump_yaml, from_dict, load_yaml


@dataclass
class Inner:
    lr: float = 1e-3
    betas: tuple[float, float] = (0.9, 0.999)
    kind: Literal["kl", "vq"] = "kl"


@dataclass
class Outer:
    name: str = "run"
    steps: int = 10
    train: Inner = field(default_factory=Inner)
    mults: tuple[int, ...] = (1, 2)
    scale: float | list[float] = 1.0


def test_yaml_round_trip(tmp_path):
    cfg = Outer(name="x", train=Inner(lr=3e-4, kind="vq"), mults=(1, 2, 4), scale=[0.5, 2.0])
    path = tmp_path / "c.yaml"
    path.write_text(dump_yaml(cfg))
    assert load_yaml(Outer, path) == cfg


def test_overrides_parse_values_and_nested_keys():
    cfg = apply_overrides(
        Outer(), ["train.lr=2e-4", "steps=5", "mults=[1,2,2]", "train.kind=vq", "scale=0.25"]
    )
    assert cfg.train.lr == 2e-4 and cfg.steps == 5 and cfg.mults == (1, 2, 2) and cfg.train.kind == "vq"
    assert cfg.scale == 0.25


def test_text_fields_keep_yaml_lookalikes_as_text():
    @dataclass
    class Choice:
        answer: Literal["auto", "yes", "no"] = "auto"
        name: str | None = None

    cfg = apply_overrides(Choice(), ["answer=yes", "name=on"])
    assert cfg.answer == "yes" and cfg.name == "on"
    assert apply_overrides(Choice(), ["answer=no"]).answer == "no"
    assert apply_overrides(Choice(name="x"), ["name=null"]).name is None


def test_unknown_key_suggests_closest():
    with pytest.raises(ConfigError, match=r"unknown key 'train.lrr'.*Did you mean 'lr'"):
        apply_overrides(Outer(), ["train.lrr=1"])
    with pytest.raises(ConfigError, match=r"unknown key 'stpes'.*Did you mean 'steps'"):
        from_dict(Outer, {"stpes": 3})


def test_wrong_type_names_the_key():
    with pytest.raises(ConfigError, match=r"steps: expected an integer, got 'ten'"):
        from_dict(Outer, {"steps": "ten"})
    with pytest.raises(
        ConfigError, match=r"train.kind: 'vqq' is not one of \['kl', 'vq'\].*Did you mean 'vq'"
    ):
        apply_overrides(Outer(), ["train.kind=vqq"])
    with pytest.raises(ConfigError, match=r"train.betas: expected 2 values"):
        from_dict(Outer, {"train": {"betas": [0.9]}})


def test_bad_yaml_file_is_named(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("steps: [1,\n")
    with pytest.raises(ConfigError, match="bad.yaml: not valid YAML"):
        load_yaml(Outer, path)
