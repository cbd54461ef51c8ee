"""Compiled CPU kernels of the nets, built on first use; PyTorch operators where they cannot be built.

`group_norm_kernel()` returns the extension module built from `csrc/group_norm_silu.cpp` by
`torch.utils.cpp_extension` (needs a C++ compiler; the `ninja` build tool is a dependency). The build
takes about half a minute once per machine and is cached in torch's extension folder
(`TORCH_EXTENSIONS_DIR` chooses another). Only on Linux, where the kernel is built with OpenMP like
PyTorch itself (elsewhere it would run on one thread). Without a compiler, after a failed build, on
other systems or with `LATENTDIFF_CPU_KERNELS=0` it returns None and the callers run the same maths as
PyTorch operators (slower); the reason is logged once.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import logging
import os
import platform
import tempfile
import time
import types
from collections.abc import Iterator
from pathlib import Path

import torch

log = logging.getLogger(__name__)

ENV_SWITCH = "LATENTDIFF_CPU_KERNELS"
GROUP_NORM_SOURCE = Path(__file__).with_name("csrc") / "group_norm_silu.cpp"
STALE_LOCK_SECONDS = 600.0  # a build lock older than this was left by a killed build


def enabled() -> bool:
    """False when the environment switches the compiled kernels off (`LATENTDIFF_CPU_KERNELS=0`)."""
    return os.environ.get(ENV_SWITCH, "1").strip().lower() not in ("0", "false", "no", "off")


def compile_flags() -> list[str]:
    flags = ["-O3"]
    if platform.machine().lower() in ("x86_64", "amd64"):
        flags.append("-march=native")  # AVX2 / AVX-512 where this CPU has them
    return [*flags, "-fopenmp"]  # ATen's parallel_for is an OpenMP region compiled into the extension


def _cpu_signature() -> str:
    """What -march=native depends on: code built for one CPU must not load on another that shares the
    cache folder (an NFS home on a cluster)."""
    try:
        cpuinfo = Path("/proc/cpuinfo").read_text().splitlines()
        flags = next((line for line in cpuinfo if line.startswith(("flags", "Features"))), "")
    except OSError:
        flags = ""
    return f"{platform.machine()} {platform.processor()} {flags}"


def build_name(source: Path, flags: list[str]) -> str:
    """Extension name = cache key: source, flags, CPU and torch version."""
    digest = hashlib.sha256()
    for part in (source.read_bytes(), " ".join(flags).encode(), _cpu_signature().encode()):
        digest.update(part)
    digest.update(torch.__version__.encode())
    return f"latentdiff_{source.stem}_{digest.hexdigest()[:16]}"


@contextlib.contextmanager
def _ninja_on_path() -> Iterator[None]:
    """torch runs `ninja` from PATH, which lacks the virtual environment's bin folder when Python is started
    by its full path."""
    import ninja

    old = os.environ.get("PATH", "")
    os.environ["PATH"] = os.pathsep.join([ninja.BIN_DIR, old]) if old else ninja.BIN_DIR
    try:
        yield
    finally:
        os.environ["PATH"] = old


def _build_directory(name: str) -> Path:
    """torch's folder for this extension (created), or one under the temporary folder where that cannot
    be written (a read-only home)."""
    from torch.utils.cpp_extension import _get_build_directory

    try:
        folder = Path(_get_build_directory(name, verbose=False))
        if os.access(folder, os.W_OK):
            return folder
    except OSError:
        pass
    # a shared temporary folder: a per-user root that must be ours, or another user could plant the library
    root = Path(tempfile.gettempdir()) / f"latentdiff_torch_extensions_{os.getuid()}"
    root.mkdir(mode=0o700, parents=True, exist_ok=True)
    if root.stat().st_uid != os.getuid():
        raise PermissionError(f"{root} belongs to another user")
    folder = root / name
    folder.mkdir(exist_ok=True)
    return folder


def _remove_stale_lock(folder: Path) -> None:
    """torch waits forever on the lock file of a build that was killed; remove it once it is old."""
    lock = folder / "lock"
    with contextlib.suppress(OSError):
        if time.time() - lock.stat().st_mtime > STALE_LOCK_SECONDS:
            lock.unlink()
            log.warning("removed the stale build lock %s", lock)


def load_extension(source: Path) -> types.ModuleType | None:
    """Build (or load the cached build of) one C++ source as a Python module; None if that fails."""
    if not enabled():
        log.info("compiled CPU kernels are off (%s=0)", ENV_SWITCH)
        return None
    if platform.system() != "Linux" or not torch.backends.openmp.is_available():
        log.info("compiled CPU kernels are built on Linux with OpenMP only; using PyTorch operators")
        return None
    flags = compile_flags()
    name = build_name(source, flags)
    try:
        from torch.utils.cpp_extension import load

        folder = _build_directory(name)
        _remove_stale_lock(folder)
        if (folder / f"{name}.so").is_file():
            log.debug("loading the cached CPU kernel %s", name)
        else:
            log.info("building the CPU kernel %s (once per machine, about 30 s)", source.name)
        with _ninja_on_path():
            return load(
                name=name,
                sources=[str(source)],
                extra_cflags=flags,
                extra_ldflags=["-fopenmp"],
                build_directory=str(folder),
            )
    except Exception as exc:  # no compiler, no ninja, a compile error: the operator path still works
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        log.warning(
            "could not build the CPU kernel %s (%s); using PyTorch operators instead (slower). "
            "Set %s=0 to skip the attempt.",
            source.name,
            reason,
            ENV_SWITCH,
        )
        return None


@functools.cache
def group_norm_kernel() -> types.ModuleType | None:
    """The fused GroupNorm(+SiLU) kernel (`forward`, `backward`), or None where it is not available."""
    return load_extension(GROUP_NORM_SOURCE)
