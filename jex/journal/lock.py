"""Single-writer lock of a data directory (room: jex.journal).

`DirLock(data_dir)` takes fcntl.flock(LOCK_EX | LOCK_NB) on
`<data_dir>/LOCK` and writes who holds it (pid, hostname, command line,
start time) into the file, so a second writer is refused with a message
that names the holder instead of a bare EWOULDBLOCK.

flock belongs to the open file description: the kernel drops it when the
holder dies (even by SIGKILL), so a stale LOCK file never blocks a
restart. The file is never deleted; deleting it would let two processes
lock two different inodes. A forked child shares the description and so
the lock: a child that outlives its parent keeps the directory locked.
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import sys
import time
from pathlib import Path

from jex.journal.errors import DirLocked
from jex.journal.limits import LOCK_INFO_BYTES_MAX

LOCK_FILE_NAME = "LOCK"


class DirLock:
    """Exclusive, non-blocking lock of one data directory. Context manager."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = Path(data_dir)
        self.path = self.data_dir / LOCK_FILE_NAME
        self._fd: int | None = None

    @classmethod
    def acquire(cls, data_dir: Path) -> DirLock:
        lock = cls(data_dir)
        lock.lock()
        return lock

    def lock(self) -> None:
        """Take the lock or raise DirLocked naming the holder."""
        assert self._fd is None, "already locked by this object"
        self.data_dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _describe_holder(fd)
            os.close(fd)
            raise DirLocked(self.path, holder) from None
        except BaseException:
            os.close(fd)
            raise
        self._fd = fd
        info = json.dumps(holder_info(), sort_keys=True).encode()[:LOCK_INFO_BYTES_MAX]
        os.ftruncate(fd, 0)
        os.pwrite(fd, info, 0)

    @property
    def held(self) -> bool:
        return self._fd is not None

    def release(self) -> None:
        """Drop the lock (idempotent). The holder info is cleared first so a
        reader never blames a process that no longer holds it."""
        fd, self._fd = self._fd, None
        if fd is None:
            return
        try:
            os.ftruncate(fd, 0)
        finally:
            os.close(fd)

    def __enter__(self) -> DirLock:
        if self._fd is None:
            self.lock()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def holder_info() -> dict:
    """Who is taking the lock: enough for an operator to find the process."""
    return {
        "pid": os.getpid(),
        "hostname": socket.gethostname(),
        "command": " ".join(sys.argv) or sys.executable,
        "started_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }


def _describe_holder(fd: int) -> str:
    """One line describing the holder from the lock file's contents."""
    raw = os.pread(fd, LOCK_INFO_BYTES_MAX, 0)
    try:
        info = json.loads(raw)
        return (
            f"pid {info['pid']} on {info['hostname']} "
            f"(command: {info['command']}; since {info['started_at']})"
        )
    except (ValueError, KeyError, TypeError):
        return "another process (holder info unreadable)"
