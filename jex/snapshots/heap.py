"""A cheaper fork: back the node's heap with huge pages (room: jex.snapshots).

fork() copies the parent's page tables: one entry per 4 KiB page, ~15-20 us
per MiB of heap measured here, so a node holding 1 M resting orders (~0.7
GiB) pauses ~15 ms per snapshot. With the heap in 2 MiB transparent huge
pages fork copies one entry per 2 MiB instead and the pause drops to a few
milliseconds (measured in benchmarks/snapshot_bench.py).

CPython's allocator does not ask for huge pages and most systems run THP in
"madvise" mode, so a background thread asks for them after the fact:
madvise(MADV_HUGEPAGE) on the private anonymous mappings, then
madvise(MADV_COLLAPSE) (Linux >= 6.1) in bounded chunks, which rebuilds
them as huge pages synchronously in the calling thread. ctypes releases the
GIL around the call, so matching goes on meanwhile. Copy-on-write after a
fork splits huge pages back into small ones where the parent writes, so the
node runs the compactor again after each snapshot child is reaped.

Never fork while it runs: fork takes the address-space lock the collapse
holds, so the node defers a due snapshot until `busy` is false (an explicit
snapshot stops it, waiting at most one chunk). Where the kernel lacks
MADV_COLLAPSE the first call fails and the compactor turns itself off;
nothing else changes.
"""

from __future__ import annotations

import ctypes
import os
import threading
import time

MADV_HUGEPAGE = 14
MADV_COLLAPSE = 25
HUGEPAGE_BYTES = 2 << 20
COLLAPSE_CHUNK_BYTES = 32 << 20  # One madvise call; the stop flag is checked between calls.
HEAP_BYTES_MIN = 256 << 20  # Below this resident size fork is already fast: do nothing.
MAPS_LINES_MAX = 1_000_000  # /proc/self/maps lines read at most.

_libc = None


def _madvise():
    global _libc
    if _libc is None:
        _libc = ctypes.CDLL(None, use_errno=True)
        _libc.madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
        _libc.madvise.restype = ctypes.c_int
    return _libc.madvise


def resident_bytes() -> int:
    """Resident set size of this process (0 where /proc is missing)."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return 0


def anonymous_ranges() -> list[tuple[int, int]]:
    """2 MiB-aligned [start, end) parts of the private anonymous read-write
    mappings (the Python heap, malloc arenas, [heap])."""
    out = []
    try:
        with open("/proc/self/maps") as f:
            for n, line in enumerate(f):
                if n >= MAPS_LINES_MAX:
                    break
                parts = line.split()
                if len(parts) < 5 or parts[1] != "rw-p" or parts[4] != "0":
                    continue
                if len(parts) > 5 and parts[5] != "[heap]":
                    continue
                lo, hi = (int(x, 16) for x in parts[0].split("-"))
                lo = -(-lo // HUGEPAGE_BYTES) * HUGEPAGE_BYTES
                hi = hi // HUGEPAGE_BYTES * HUGEPAGE_BYTES
                if hi > lo:
                    out.append((lo, hi))
    except OSError:
        return []
    return out


class HugepageCompactor:
    """Collapses the heap into huge pages on a background thread."""

    def __init__(self, *, heap_bytes_min: int = HEAP_BYTES_MIN) -> None:
        self.heap_bytes_min = heap_bytes_min
        self.supported = True
        self.runs = 0
        self.last_seconds = 0.0
        self.last_bytes = 0
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()

    @property
    def busy(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def start(self) -> bool:
        """Start a pass unless one runs, the kernel refused before, or the
        heap is small. Returns whether a pass started."""
        if not self.supported or self.busy or resident_bytes() < self.heap_bytes_min:
            return False
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="jex-hugepages", daemon=True)
        self._thread.start()
        return True

    def wait(self) -> None:
        """Wait for a running pass to finish."""
        thread = self._thread
        if thread is not None:
            thread.join()
            self._thread = None

    def stop(self) -> None:
        """Stop a running pass; waits for at most one chunk."""
        thread = self._thread
        if thread is None:
            return
        self._stop.set()
        thread.join()
        self._thread = None

    def _run(self) -> None:
        madvise = _madvise()
        started = time.perf_counter()
        done = 0
        for lo, hi in anonymous_ranges():
            madvise(lo, hi - lo, MADV_HUGEPAGE)
            at = lo
            while at < hi:
                if self._stop.is_set():
                    return
                size = min(COLLAPSE_CHUNK_BYTES, hi - at)
                if madvise(at, size, MADV_COLLAPSE) != 0 and ctypes.get_errno() == 22 and done == 0:
                    self.supported = False  # EINVAL on the first call: no MADV_COLLAPSE here
                    return
                at += size
                done += size
        self.runs += 1
        self.last_seconds = time.perf_counter() - started
        self.last_bytes = done
