"""Pieces every command shares: configuration from YAML + flags + `--set`, logging, error reporting."""

from __future__ import annotations

import argparse
import logging
from typing import Any, TypeVar

from latentdiff.config import apply_overrides, load_yaml

T = TypeVar("T")


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
        "--config", help="YAML file with the stage's configuration (flags and --set override it)"
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


def build_config(cls: type[T], args: argparse.Namespace, extra: list[str] | None = None) -> T:
    """Defaults ← --config YAML ← shortcut flags ← extra ← --set, each layer validated."""
    cfg = load_yaml(cls, args.config) if getattr(args, "config", None) else cls()
    return apply_overrides(cfg, [*(args.shortcuts or []), *(extra or []), *(args.overrides or [])])


def setup_logging(verbosity: int) -> None:
    level = logging.WARNING if verbosity < 0 else logging.INFO if verbosity == 0 else logging.DEBUG
    logging.basicConfig(level=level, format="%(message)s")
    logging.getLogger("latentdiff").setLevel(level)
