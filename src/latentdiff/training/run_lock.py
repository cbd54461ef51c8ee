"""One writer per run folder: an exclusive lock file held for the whole of a training.

`RUN/.lock` is created next to `config.yaml` and held with `fcntl.flock` while a stage trains; it names
the process (PID, host, start time, command). A second training into the same folder is refused with the
holder's PID and host. The kernel drops a `flock` when its process dies (also on `kill -9`), so a lock
file left behind by a dead process is taken over, with a warning naming it. Where the file system has no
`flock`, the PID and host in the file decide: a holder on this host whose PID no longer runs is stale,
a holder on another host cannot be checked and is respected.

Under torchrun only rank 0 takes the lock; every rank learns whether it was refused, so all stop together.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import logging
import os
import socket
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from latentdiff.training.distributed import broadcast_object, is_main_process

log = logging.getLogger(__name__)

LOCK_FILE = ".lock"


class RunFolderLocked(RuntimeError):
    """Another process is training into the same run folder."""


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # a process of another user
        return True
    return True


def _describe(holder: dict[str, Any]) -> str:
    since = holder.get("started")
    when = time.strftime(" since %Y-%m-%d %H:%M:%S", time.localtime(since)) if since else ""
    return f"PID {holder.get('pid', '?')} on host {holder.get('host', '?')}{when}"


class RunLock:
    """The exclusive lock of `run_dir` (`RUN/.lock`); `acquire()` / `release()` or a `with` block.

    Creates `run_dir` when missing and removes it again on release when it is still empty, so that a
    command refused after taking the lock leaves no trace.
    """

    def __init__(self, run_dir: str | Path) -> None:
        self.run_dir = Path(run_dir)
        self.path = self.run_dir / LOCK_FILE
        self._fd: int | None = None
        self._created_dir = False

    @property
    def held(self) -> bool:
        return self._fd is not None

    def _read_holder(self) -> dict[str, Any]:
        try:
            data = json.loads(self.path.read_text() or "{}")
        except (OSError, ValueError):
            return {}
        return data if isinstance(data, dict) else {}

    def _refuse(self, holder: dict[str, Any]) -> RunFolderLocked:
        return RunFolderLocked(
            f"{self.run_dir} is in use: another training ({_describe(holder)}) holds {self.path}. Wait for "
            "it to finish or stop it, or train into another --out folder"
        )

    def acquire(self) -> RunLock:
        if self._fd is not None:
            return self
        if not self.run_dir.exists():
            self.run_dir.mkdir(parents=True)
            self._created_dir = True
        me = {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "started": time.time(),
            "command": " ".join(sys.argv)[:500],
        }
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                flock_ok = True
            except BlockingIOError:
                holder = self._read_holder()
                os.close(fd)
                self._cleanup_dir()
                raise self._refuse(holder) from None
            except OSError as e:  # no flock on this file system: PID and host decide
                if e.errno not in (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL):
                    os.close(fd)
                    raise
                flock_ok = False
            # the holder may have removed the file between our open and our flock: lock the file that is there
            try:
                same = os.fstat(fd).st_ino == os.stat(self.path).st_ino
            except FileNotFoundError:
                same = False
            if not same:
                os.close(fd)
                continue
            holder = self._read_holder()
            if holder and (holder.get("pid"), holder.get("host")) != (me["pid"], me["host"]):
                if not flock_ok and not self._stale(holder):
                    os.close(fd)
                    self._cleanup_dir()
                    raise self._refuse(holder)
                log.warning(
                    "taking over the lock of %s: a training (%s) that is no longer running left it behind",
                    self.run_dir,
                    _describe(holder),
                )
            os.ftruncate(fd, 0)
            os.pwrite(fd, (json.dumps(me) + "\n").encode(), 0)
            os.fsync(fd)
            self._fd = fd
            return self

    @staticmethod
    def _stale(holder: dict[str, Any]) -> bool:
        """Without flock: stale only when the holder ran on this host and its PID is gone."""
        if holder.get("host") != socket.gethostname():
            return False
        try:
            return not _pid_alive(int(holder.get("pid", -1)))
        except (TypeError, ValueError):
            return True

    def release(self) -> None:
        if self._fd is None:
            return
        try:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.path)  # still holding the flock: a next taker finds no file or a new one
        finally:
            os.close(self._fd)
            self._fd = None
            self._cleanup_dir()

    def _cleanup_dir(self) -> None:
        if self._created_dir:
            with contextlib.suppress(OSError):
                self.run_dir.rmdir()  # only when empty: a refused command leaves no folder behind
            self._created_dir = self.run_dir.exists() and self._created_dir

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()


@contextlib.contextmanager
def training_lock(run_dir: str | Path) -> Iterator[RunLock | None]:
    """Hold `run_dir`'s lock for the body on rank 0; under torchrun every rank raises when rank 0 could not
    take it, so no process is left waiting in a collective. Yields the lock on rank 0, None elsewhere."""
    lock = RunLock(run_dir) if is_main_process() else None
    error: Exception | None = None
    if lock is not None:
        try:
            lock.acquire()
        except Exception as e:  # every rank must hear of it, whatever it is
            error = e
    refusal = broadcast_object(None if error is None else str(error))
    if error is not None:
        raise error
    if refusal is not None:
        raise RunFolderLocked(str(refusal))
    try:
        yield lock
    finally:
        if lock is not None:
            lock.release()
