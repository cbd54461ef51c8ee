"""Pieces every command shares: configuration from YAML + flags + `--set`, logging, error reporting."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import Any, TypeVar

from latentdiff.config import ConfigError, apply_overrides, load_yaml, read_yaml

T = TypeVar("T")

# A run folder's config.yaml holds one section per stage (`training.run.record_config`): the stage
# configuration class, the section it is recorded under and the command that trains it.
RUN_SECTIONS = {
    "AutoencoderStage": ("autoencoder_stage", "train-autoencoder"),
    "DiffusionStage": ("diffusion_stage", "train-diffusion"),
}


class Shortcut(argparse.Action):
    """A flag that is sugar for `--set key=value` (e.g. `--steps 100` is `--set train.steps=100`)."""

    def __init__(self, option_strings, dest, key: str, **kwargs: Any) -> None:
        self.key = key
        super().__init__(option_strings, dest="shortcuts", **kwargs)

    def __call__(self, parser, namespace, values, option_string=None) -> None:
        items = list(getattr(namespace, "shortcuts", None) or [])
        items.append(f"{self.key}={values}")
        namespace.shortcuts = items


def add_shortcut(parser: argparse.ArgumentParser, flag: str, key: str, help: str, **kwargs: Any) -> None:
    parser.add_argument(flag, action=Shortcut, key=key, help=f"{help} (= --set {key}=…)", **kwargs)


def add_config_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--config",
        help="YAML file with the stage's configuration (flags and --set override it); a run's own "
        "config.yaml (or the run folder) works too: this command's section of it is used",
    )
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override any configuration field, e.g. --set train.lr=2e-4 (repeatable)",
    )
    parser.set_defaults(shortcuts=[])


def load_stage_config(cls: type[T], path: str | Path) -> T:
    """`cls` from a YAML file holding that stage's fields, or from a run's `config.yaml` (or the run folder
    holding one), whose section for this stage is used."""
    path = Path(path)
    if path.is_dir() and (path / "config.yaml").is_file():
        path = path / "config.yaml"
    data = read_yaml(path)
    sections = {section for section, _ in RUN_SECTIONS.values()}
    if isinstance(data, dict) and data and set(data) <= sections:
        section, command = RUN_SECTIONS[cls.__name__]
        if section not in data:
            raise ConfigError(
                f"{path} is a run's configuration with the section(s) {', '.join(map(str, data))}, but "
                f"{command} reads the section {section}, which it does not have"
            )
        try:
            return load_yaml(cls, path, data[section] or {})
        except ConfigError as e:
            raise ConfigError(str(e).replace(f"{path}: ", f"{path} (section {section}): ", 1)) from e
    return load_yaml(cls, path, data)


def build_config(cls: type[T], args: argparse.Namespace, extra: list[str] | None = None) -> T:
    """Defaults ← --config YAML ← shortcut flags ← extra ← --set, each layer validated."""
    cfg = load_stage_config(cls, args.config) if getattr(args, "config", None) else cls()
    return apply_overrides(cfg, [*(args.shortcuts or []), *(extra or []), *(args.overrides or [])])


def setup_logging(verbosity: int) -> None:
    level = logging.WARNING if verbosity < 0 else logging.INFO if verbosity == 0 else logging.DEBUG
    # other libraries speak at WARNING unless -v: at INFO matplotlib narrates its font substitutions into the
    # middle of a training run's output
    logging.basicConfig(level=logging.DEBUG if verbosity > 0 else logging.WARNING, format="%(message)s")
    logging.getLogger("latentdiff").setLevel(level)
