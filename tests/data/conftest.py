"""Built-in data for the tests, seen through a private `$LATENTDIFF_DATA` so that no test writes caches
into the user's data folder: the installed sources are symlinked into a temporary data folder."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from latentdiff.data.builtin import BUILTIN
from latentdiff.data.source import DATA_ENV, DatasetNotInstalled


@pytest.fixture(scope="session")
def real_sources() -> dict[str, Path | DatasetNotInstalled]:
    """Where each built-in set is installed on this machine (looked up before any test changes the env)."""
    found: dict[str, Path | DatasetNotInstalled] = {}
    for name, source in BUILTIN.items():
        try:
            found[name] = source.locate()
        except DatasetNotInstalled as e:
            found[name] = e
    return found


@pytest.fixture
def data_home(real_sources, tmp_path, monkeypatch) -> Path:
    home = tmp_path / "data-home"
    home.mkdir()
    monkeypatch.setenv(DATA_ENV, str(home))
    return home


def _link_target(home: Path, name: str, location: Path) -> Path | None:
    if name == "fashion-mnist":
        return home / "fashion-mnist"
    if name == "emoji":
        return home / "emoji" / location.name
    if name == "mnist":
        return home / "mnist" / location.name
    return None  # digits ships inside scikit-learn


@pytest.fixture
def use_builtin(real_sources, data_home) -> Callable[[str], Path]:
    """`use_builtin(name)`: skip unless installed, else link it into the test's data folder."""

    def use(name: str) -> Path:
        location = real_sources[name]
        if isinstance(location, DatasetNotInstalled):
            pytest.skip(f"{name} is not installed; install it with: {location.install_command}")
        target = _link_target(data_home, name, location)
        if target is not None and not target.exists():
            target.parent.mkdir(parents=True, exist_ok=True)
            target.symlink_to(location)
        return BUILTIN[name].locate()

    return use
