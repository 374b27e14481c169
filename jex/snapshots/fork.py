"""Background snapshots: a forked child writes while the parent matches
(room: jex.snapshots).

`fork()` gives the child a copy-on-write image of the node at one instant,
so the child can export, encode, digest and write the state at its leisure
while the parent goes on matching; the parent pays only for fork() itself
(copying page tables: ~15-20 us per MiB of heap here, see heap.py for
making that cheaper). The parent reaps the child later with a non-blocking
waitpid; at most one child is in flight.

What the child does first, and why:
  * pauses the cyclic GC: a collection would write to every object header
    and copy the whole heap page by page;
  * closes every inherited descriptor except the result pipe: it must not
    keep the data directory's flock (shared with the parent's descriptor)
    or touch the parent's WAL descriptors;
  * asks the kernel for SIGKILL when the parent dies (PR_SET_PDEATHSIG), so
    an orphan never races the next node's snapshot of the same seq.
It reports a small JSON result through a pipe and leaves with os._exit
(no atexit handlers, no flushing of buffers it shares with the parent).

In the parent, gc.freeze() before fork moves every existing object out of
the collector's reach while the child lives, so the parent's own
collections do not copy pages the child still shares; gc.unfreeze() after
reaping hands them back. Both are O(1) list splices. Where a recovered
node keeps its long-lived heap frozen for good (gcpolicy.py), reaping
leaves them frozen: unfreezing is all or nothing and would undo that.
"""

from __future__ import annotations

import ctypes
import gc
import os
import signal
import time
from dataclasses import dataclass
from typing import Callable

import msgspec

from jex.snapshots import gcpolicy

RESULT_BYTES_MAX = 16 * 1024  # The child's JSON result; well below a pipe's 64 KiB buffer.
PR_SET_PDEATHSIG = 1

_libc = None


def _load_libc() -> None:
    """Load libc in the parent: a child must not dlopen (another parent
    thread may have held the loader's lock at the moment of fork)."""
    global _libc
    if _libc is None:
        try:
            _libc = ctypes.CDLL(None, use_errno=True)
        except OSError:
            _libc = False


def _set_parent_death_signal() -> None:
    try:
        if _libc:
            _libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    except AttributeError:  # not Linux: the child just outlives a dead parent
        pass


@dataclass
class ChildOutcome:
    """How a background child ended. `result` is what the job returned."""

    pid: int
    ok: bool
    result: dict | None
    error: str | None  # one line
    pause_s: float  # what fork() cost the parent
    alive_s: float  # from fork to reaping


class BackgroundJob:
    """At most one forked child running a job. Not thread-safe: the node's
    single thread starts, polls and waits."""

    def __init__(self, *, freeze_gc: bool = True) -> None:
        _load_libc()
        self.freeze_gc = freeze_gc
        self._pid: int | None = None
        self._pipe: int | None = None
        self._started = 0.0
        self._pause_s = 0.0
        self._froze = False

    @property
    def busy(self) -> bool:
        return self._pid is not None

    def start(self, job: Callable[[], dict]) -> float:
        """Fork a child that runs `job()` and reports its dict. Returns the
        parent's pause in seconds (from here until matching can resume)."""
        assert self._pid is None, "a background child is already running"
        started = time.perf_counter()
        read_end, write_end = os.pipe()
        if self.freeze_gc:
            gc.freeze()
            self._froze = True
        parent = os.getpid()
        try:
            pid = os.fork()
        except OSError:
            os.close(read_end)
            os.close(write_end)
            self._thaw()
            raise
        if pid == 0:  # the child; never returns
            _child_main(job, write_end, parent)
        os.close(write_end)
        self._pid, self._pipe, self._started = pid, read_end, started
        self._pause_s = time.perf_counter() - started
        return self._pause_s

    def poll(self) -> ChildOutcome | None:
        """Reap the child if it has ended (non-blocking waitpid); else None."""
        if self._pid is None:
            return None
        pid, status = os.waitpid(self._pid, os.WNOHANG)
        if pid == 0:
            return None
        return self._finish(status)

    def wait(self) -> ChildOutcome | None:
        """Block until the child ends; None if there is none."""
        if self._pid is None:
            return None
        _, status = os.waitpid(self._pid, 0)
        return self._finish(status)

    def _finish(self, status: int) -> ChildOutcome:
        pid, pipe = self._pid, self._pipe
        self._pid = self._pipe = None
        self._thaw()
        raw = b""
        try:
            while len(raw) <= RESULT_BYTES_MAX:
                chunk = os.read(pipe, RESULT_BYTES_MAX)
                if not chunk:
                    break
                raw += chunk
        finally:
            os.close(pipe)
        alive = time.perf_counter() - self._started
        report: dict = {}
        if raw:
            try:
                report = msgspec.json.decode(raw)
            except msgspec.DecodeError:
                report = {"error": "unreadable result from the snapshot child"}
        if os.WIFSIGNALED(status):
            error = f"snapshot child {pid} killed by signal {os.WTERMSIG(status)}"
            return ChildOutcome(pid, False, None, error, self._pause_s, alive)
        code = os.WEXITSTATUS(status)
        if code != 0 or "error" in report:
            error = report.get("error") or f"snapshot child {pid} exited with status {code}"
            return ChildOutcome(pid, False, None, error, self._pause_s, alive)
        return ChildOutcome(pid, True, report.get("result"), None, self._pause_s, alive)

    def _thaw(self) -> None:
        if self._froze:
            self._froze = False
            if not gcpolicy.long_lived():  # else everything frozen stays so (gcpolicy.py)
                gc.unfreeze()


def _child_main(job: Callable[[], dict], write_end: int, parent: int) -> None:
    code = 1
    try:
        gc.disable()
        _set_parent_death_signal()
        if os.getppid() != parent:  # the parent died before the death signal was armed
            os._exit(1)
        os.closerange(3, write_end)
        os.closerange(write_end + 1, _fd_limit())
        try:
            report = {"result": job()}
            code = 0
        except BaseException as error:  # noqa: BLE001 - the child reports everything as one line
            report = {"error": " ".join(f"{type(error).__name__}: {error}".split())}
        payload = msgspec.json.encode(report)[:RESULT_BYTES_MAX]
        os.write(write_end, payload)
    except BaseException:  # noqa: BLE001 - never let the child return into the parent's code
        pass
    finally:
        os._exit(code)


def _fd_limit() -> int:
    try:
        return min(os.sysconf("SC_OPEN_MAX"), 1 << 20)
    except (ValueError, OSError):
        return 1 << 16

