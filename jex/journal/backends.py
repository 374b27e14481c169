"""Writer backends: how one joined batch buffer becomes durable (room: jex.journal).

Both backends implement one interface so the node can overlap matching of
the next batch with the write of the current one:

    attach(path, end_offset)  switch to a segment file; writes continue at end_offset
    submit(buffer, offset)    start a durable write of `buffer` at `offset`;
                              at most one write is in flight
    wait()                    block until it is durable; raises OSError on
                              any failure (the journal then stops: an fsync
                              is never retried)
    close()

PwriteBackend   os.pwrite (through Storage) in submit, fdatasync in wait.
                Short writes are continued from where they stopped. It is the
                fallback where io_uring is missing, and the only backend the
                fault-injecting storage can observe.

UringBackend    io_uring through the `liburing` package, in one of three modes:
    "direct"    O_DIRECT|O_DSYNC file, one write per batch from a page-aligned
                buffer that starts at the 4 KiB block holding the write
                offset (the block's earlier bytes are re-written unchanged;
                the file is pre-zeroed, so the padding after the batch is
                zeros over zeros). Completes without io-wq threads. Default.
    "dsync"     O_DSYNC file, one buffered write per batch (durable on completion).
    "link"      a write linked (IOSQE_IO_LINK) to an fdatasync; a short write
                cancels the fsync (ECANCELED) and the remainder is resubmitted
                with a new linked fsync.
    Every completion is checked: user_data is read first, cqe_seen is always
    called, a negative result raises OSError. Buffers stay referenced until
    their completion has arrived; close() drains and exits the ring. The
    ring is marked DONTFORK so a forked snapshot child cannot touch it.
    wait() blocks on an eventfd registered with the ring (a plain read(),
    which releases the GIL; the wrapper's io_uring_wait_cqe holds it, which
    would stall every other thread, e.g. the API's, for the whole commit).
    `setup_flags` may add IORING_SETUP_SINGLE_ISSUER|DEFER_TASKRUN; the ring
    is then bound to the thread that opened the journal (submits from any
    other thread fail with EEXIST), which is why they are off by default.

Measured with `python -m jex.journal.bench` on the 2-core VM (shared with
other jobs, so +-15%): buffered io_uring ("link", "dsync") is 10-30% slower
than pwrite because io-wq threads compete for the cores. "direct" matches
pwrite with nothing between submit and wait (batch 1: 7.8k vs 6.6k
commits/s; batch 16: 6.8k vs 7.4k; batch 256: 2.1k vs 2.5k) at about a
quarter less CPU, and beats it by 1.2-1.5x when the node matches the next
batch while a write is in flight (the pipeline this interface exists for).
SINGLE_ISSUER|DEFER_TASKRUN made no measurable difference.
"""

from __future__ import annotations

import errno
import mmap
import os
import select
import sys
import threading
import time
from pathlib import Path

from jex.journal.errors import JournalError
from jex.journal.limits import (
    BATCH_BYTES_MAX,
    BLOCK_BYTES,
    SHORT_WRITE_ATTEMPTS_MAX,
    URING_DRAIN_TIMEOUT_S,
    URING_ENTRIES,
)
from jex.journal.storage import OsStorage, Storage

BACKEND_KINDS = ("auto", "pwrite", "uring", "uring-direct", "uring-dsync", "uring-link")
URING_MODES = ("direct", "dsync", "link")
URING_MODE_DEFAULT = "direct"


class Backend:
    """The writer interface (see module docstring)."""

    name = "abstract"
    # True when a submitted write makes progress on the device while the
    # caller does other work (so matching the next batch meanwhile hides the
    # write); False when the device work happens inside wait().
    asynchronous = False

    def attach(self, path: Path, end_offset: int) -> None:
        raise NotImplementedError

    def submit(self, buffer: bytearray, offset: int) -> None:
        raise NotImplementedError

    def wait(self) -> None:
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError

    @property
    def in_flight(self) -> bool:
        raise NotImplementedError

    def completed(self) -> bool:
        """True when wait() would not block on the device (nothing in
        flight, or its completion has arrived; always for a synchronous
        backend, whose device work happens inside wait())."""
        return True


class PwriteBackend(Backend):
    """pwrite in submit (so `after_write_before_fsync` sits between write and
    sync), fdatasync in wait. Everything goes through Storage. Not
    asynchronous: the data only goes to the device in wait()."""

    name = "pwrite"

    def __init__(self, storage: Storage) -> None:
        self._storage = storage
        self._fd: int | None = None
        self._pending = False

    def attach(self, path: Path, end_offset: int) -> None:
        assert not self._pending
        self._close_fd()
        self._fd = self._storage.open(path, write=True)

    def submit(self, buffer: bytearray, offset: int) -> None:
        assert self._fd is not None and not self._pending
        self._pending = True
        self._storage.pwrite_all(self._fd, buffer, offset)

    def wait(self) -> None:
        assert self._fd is not None and self._pending
        self._storage.fdatasync(self._fd)
        self._pending = False

    @property
    def in_flight(self) -> bool:
        return self._pending

    def close(self) -> None:
        self._pending = False
        self._close_fd()

    def _close_fd(self) -> None:
        fd, self._fd = self._fd, None
        if fd is not None:
            self._storage.close(fd)


def uring_unavailable_reason() -> str | None:
    """Why io_uring cannot be used here, or None if a ring can be set up."""
    try:
        import liburing
    except Exception as error:  # noqa: BLE001 - any import failure means "not available"
        return f"liburing is not importable ({type(error).__name__}: {error})"
    try:
        with open("/proc/sys/kernel/io_uring_disabled") as f:
            disabled = f.read().strip()
    except OSError:
        disabled = "0"  # Kernels before 6.6 have no such switch.
    if disabled == "2":
        return "io_uring is disabled (kernel.io_uring_disabled=2)"
    ring = liburing.Ring()
    try:
        liburing.io_uring_queue_init(2, ring, 0)
    except OSError as error:
        return f"io_uring setup failed ({error.strerror or error})"
    liburing.io_uring_queue_exit(ring)
    return None


def make_backend(kind: str | Backend, storage: Storage) -> Backend:
    """Build a backend by name. "auto" picks io_uring where a ring can be set
    up (and the storage is the real OS), else pwrite with a one-line notice."""
    if isinstance(kind, Backend):
        return kind
    if kind not in BACKEND_KINDS:
        raise ValueError(f"unknown journal backend {kind!r}; expected one of {', '.join(BACKEND_KINDS)}")
    if kind == "pwrite":
        return PwriteBackend(storage)
    real_os = type(storage) is OsStorage
    if kind == "auto":
        if not real_os:
            return PwriteBackend(storage)
        reason = uring_unavailable_reason()
        if reason is not None:
            print(f"jex.journal: {reason}; using the pwrite backend", file=sys.stderr)
            return PwriteBackend(storage)
        return UringBackend()
    if not real_os:
        raise ValueError("the io_uring backend writes from the kernel; it needs OsStorage, not a fault-injecting twin")
    reason = uring_unavailable_reason()
    if reason is not None:
        raise JournalError(f"journal backend {kind}: {reason}")
    mode = URING_MODE_DEFAULT if kind == "uring" else kind.removeprefix("uring-")
    return UringBackend(mode=mode)


class _AlignedBuffer:
    """A page-aligned buffer for O_DIRECT writes, with cached Iovecs.

    The liburing wrapper takes only bytes/bytearray for plain writes, which
    are not page-aligned, so O_DIRECT goes through writev with an Iovec over
    an mmap. Creating an Iovec from a memoryview leaks a reference (a known
    wrapper trap), so each (start, end) Iovec is made once and cached, and
    the buffers are pooled for the life of the process. Whole writes start
    at 0, so the cache holds at most BATCH_BYTES_MAX / BLOCK_BYTES + 2
    entries, plus one per distinct short-write restart (rare).
    """

    SIZE_BYTES = BATCH_BYTES_MAX + 2 * BLOCK_BYTES
    _pool: list[_AlignedBuffer] = []
    _pool_lock = threading.Lock()

    def __init__(self) -> None:
        import liburing

        self._make_iovec = liburing.Iovec
        self.map = mmap.mmap(-1, self.SIZE_BYTES)
        self.view = memoryview(self.map)
        self._iovecs: dict[tuple[int, int], object] = {}

    def iovec(self, start: int, end: int):  # noqa: ANN201 - liburing.Iovec
        """The Iovec over bytes [start, end) of the buffer, made once."""
        iov = self._iovecs.get((start, end))
        if iov is None:
            iov = self._iovecs[(start, end)] = self._make_iovec([self.view[start:end]])
        return iov

    @classmethod
    def take(cls) -> _AlignedBuffer:
        with cls._pool_lock:
            return cls._pool.pop() if cls._pool else cls()

    def give_back(self) -> None:
        with self._pool_lock:
            self._pool.append(self)


_WRITE, _FSYNC = 1, 2  # user_data kinds; user_data = generation << 2 | kind


class UringBackend(Backend):
    """io_uring writer (see module docstring for the three modes)."""

    asynchronous = True

    def __init__(self, mode: str = URING_MODE_DEFAULT, *, setup_flags: int = 0, skip_success: bool = False) -> None:
        import liburing

        if mode not in URING_MODES:
            raise ValueError(f"unknown io_uring mode {mode!r}; expected one of {', '.join(URING_MODES)}")
        self._L = liburing
        self.mode = mode
        self.setup_flags = setup_flags
        self.skip_success = skip_success
        self._cqe = liburing.Cqe()
        self._fd: int | None = None
        self._generation = 0
        self._buffers: list = []  # Everything the kernel may still read; freed only after completion.
        self._op: tuple | None = None  # The write in flight: (buffer, offset, length, used)
        self._aligned: _AlignedBuffer | None = None
        self._tail = b""  # O_DIRECT: bytes of the partial block before the write offset.
        self._end = 0
        self._event_fd: int | None = None
        self._ring = liburing.Ring()
        liburing.io_uring_queue_init(URING_ENTRIES, self._ring, setup_flags)
        self._ring_open = True
        try:
            liburing.io_uring_ring_dontfork(self._ring)  # A forked snapshot child must not touch it.
            if not setup_flags & liburing.IORING_SETUP_DEFER_TASKRUN:
                # Completions also bump an eventfd, which is waited on with a
                # plain read(): that releases the GIL, io_uring_wait_cqe does
                # not. (DEFER_TASKRUN posts completions only from inside
                # io_uring_enter, so it keeps io_uring_wait_cqe.)
                self._event_fd = os.eventfd(0, os.EFD_CLOEXEC)
                liburing.io_uring_register_eventfd(self._ring, self._event_fd)
        except BaseException:
            self.close()
            raise

    @property
    def name(self) -> str:  # type: ignore[override]
        return f"uring-{self.mode}"

    @property
    def in_flight(self) -> bool:
        return self._op is not None

    def completed(self) -> bool:
        return self._op is None or self._L.io_uring_cq_ready(self._ring) > 0

    # --- segment files -------------------------------------------------------

    def attach(self, path: Path, end_offset: int) -> None:
        assert self._op is None
        self._close_fd()
        flags = os.O_RDWR | os.O_CLOEXEC
        if self.mode in ("direct", "dsync"):
            flags |= os.O_DSYNC
        if self.mode == "direct":
            try:
                self._fd = os.open(path, flags | os.O_DIRECT)
            except OSError as error:
                if error.errno != errno.EINVAL:
                    raise
                print(f"jex.journal: O_DIRECT unsupported on {path.parent}; using O_DSYNC writes", file=sys.stderr)
                self.mode = "dsync"
            else:
                self._tail = _read_tail_block(path, end_offset)
                self._aligned = self._aligned or _AlignedBuffer.take()
        if self._fd is None:
            self._fd = os.open(path, flags)
        self._end = end_offset

    # --- submission --------------------------------------------------------------

    def submit(self, buffer: bytearray, offset: int) -> None:
        assert self._fd is not None and self._op is None and len(buffer) > 0
        if self.mode == "direct":
            assert offset == self._end, (offset, self._end)
            start, length, used = self._stage_direct(buffer, offset)
            self._op = (buffer, start, length, used)
            self._start(start, 0, length)
        else:
            self._op = (buffer, offset, len(buffer), len(buffer))
            self._start(offset, 0, len(buffer))

    def _stage_direct(self, buffer: bytearray, offset: int) -> tuple[int, int, int]:
        """Copy tail block + batch into the aligned buffer, zero-padded to
        whole blocks. Returns (file offset, write length, bytes that matter)."""
        aligned = self._aligned
        assert aligned is not None
        tail = self._tail
        start = offset - len(tail)
        assert start % BLOCK_BYTES == 0
        used = len(tail) + len(buffer)
        length = -(-used // BLOCK_BYTES) * BLOCK_BYTES
        view = aligned.view
        view[: len(tail)] = tail
        view[len(tail) : used] = buffer
        view[used:length] = bytes(length - used)
        return start, length, used

    def _start(self, file_offset: int, done: int, length: int) -> None:
        """Queue and submit the write of bytes [done, length) of the current
        op (plus a linked fdatasync in "link" mode) under a new generation."""
        L = self._L
        self._generation += 1
        fd, link = self._fd, self.mode == "link"
        if self.mode == "direct":
            iov = self._aligned.iovec(done, length)
            self._queue(lambda sqe: L.io_uring_prep_writev(sqe, fd, iov, file_offset + done), _WRITE, 0)
        else:
            buffer = self._op[0]
            data = buffer if (done, length) == (0, len(buffer)) else bytes(memoryview(buffer)[done:length])
            self._buffers.append(data)
            flags = L.IOSQE_IO_LINK | (L.IOSQE_CQE_SKIP_SUCCESS if self.skip_success else 0) if link else 0
            self._queue(lambda sqe: L.io_uring_prep_write(sqe, fd, data, file_offset + done), _WRITE, flags)
        if link:
            self._queue(lambda sqe: L.io_uring_prep_fsync(sqe, fd, L.IORING_FSYNC_DATASYNC), _FSYNC, 0)
        expected = 2 if link else 1
        submitted = L.io_uring_submit(self._ring)
        if submitted != expected:
            raise OSError(errno.EIO, f"io_uring_submit queued {submitted} of {expected} entries")

    def _queue(self, prep, kind: int, flags: int) -> None:  # noqa: ANN001 - a prep_* closure
        L = self._L
        sqe = L.io_uring_get_sqe(self._ring)
        assert sqe is not None, "submission queue full: a previous batch was not drained"
        try:
            prep(sqe)
        except BaseException:
            L.io_uring_prep_nop(sqe)  # A half-filled SQE would go out with the next submit.
            raise
        sqe.user_data = self._generation << 2 | kind
        if flags:
            L.io_uring_sqe_set_flags(sqe, flags)

    # --- completion ----------------------------------------------------------------

    def wait(self) -> None:
        """Block until the batch is durable, continuing short writes.

        An OSError means the kernel is done with the batch and it failed.
        Any other exception (KeyboardInterrupt) leaves the op in flight, so
        close() drains it before the buffers are released.
        """
        assert self._op is not None
        try:
            self._complete()
        except OSError:
            self._forget_op()
            raise
        self._forget_op()

    def _complete(self) -> None:
        _, file_offset, length, used = self._op
        done = 0
        for _ in range(SHORT_WRITE_ATTEMPTS_MAX):
            written = self._reap_one_write(length - done)
            done += written
            if done == length:
                break
            if self.mode == "direct":
                done -= done % BLOCK_BYTES  # O_DIRECT resumes on a block boundary; rewriting is harmless.
            self._start(file_offset, done, length)
        else:
            raise OSError(errno.EIO, f"write still short after {SHORT_WRITE_ATTEMPTS_MAX} attempts")
        if self.mode == "direct":
            tail_from = (used // BLOCK_BYTES) * BLOCK_BYTES
            self._tail = bytes(self._aligned.view[tail_from:used])
            self._end = file_offset + used

    def _reap_one_write(self, length: int) -> int:
        """Collect the completions of one submitted write (and its linked
        fsync). Returns the bytes written (< length: short, resubmit);
        raises OSError on any error."""
        results = self._reap()
        write_res = results.get(_WRITE, length)  # Absent: skipped because it fully succeeded.
        fsync_res = results.get(_FSYNC, 0)
        if write_res < 0:
            raise OSError(-write_res, f"io_uring write: {os.strerror(-write_res)}")
        if write_res == 0:
            raise OSError(errno.EIO, "io_uring write made no progress")
        if write_res < length:
            if fsync_res not in (0, -errno.ECANCELED):
                raise OSError(-fsync_res, f"io_uring fdatasync: {os.strerror(-fsync_res)}")
            return write_res
        if fsync_res < 0:
            raise OSError(-fsync_res, f"io_uring fdatasync: {os.strerror(-fsync_res)}")
        return write_res

    def _reap(self, timeout_s: float | None = None) -> dict[int, int]:
        """Wait for every completion of the current generation. Only the
        fsync of a link always completes (ok, error or ECANCELED); with
        CQE_SKIP_SUCCESS the write completes only when it failed or was
        short, which is exactly when the fsync reports ECANCELED."""
        results: dict[int, int] = {}
        link = self.mode == "link"
        while True:
            kind, res = self._next_completion(timeout_s)
            results[kind] = res
            if not link:
                return results
            if _FSYNC in results:
                if _WRITE in results:
                    return results
                if self.skip_success and results[_FSYNC] != -errno.ECANCELED:
                    return results

    def _next_completion(self, timeout_s: float | None) -> tuple[int, int]:
        """One completion: user_data read first, cqe_seen always called."""
        L = self._L
        if self._event_fd is not None:
            self._await_completion(timeout_s)
            timeout_s = None  # A completion is ready: the wait below returns at once.
        while True:
            try:
                if timeout_s is None:
                    L.io_uring_wait_cqe(self._ring, self._cqe)
                else:
                    L.io_uring_wait_cqe_timeout(self._ring, self._cqe, L.timespec(timeout_s))
            except InterruptedError:
                continue
            break
        cqe = self._cqe[0]
        user_data = cqe.user_data
        try:
            res = cqe.res
        except OSError as error:
            res = -(error.errno or errno.EIO)
        finally:
            L.io_uring_cqe_seen(self._ring, cqe)
        generation, kind = user_data >> 2, user_data & 3
        if generation != self._generation or kind not in (_WRITE, _FSYNC):
            raise OSError(errno.EIO, f"unexpected io_uring completion {user_data:#x} (generation {self._generation})")
        return kind, res

    def _await_completion(self, timeout_s: float | None) -> None:
        """Block until a completion is in the ring, GIL released (a read of
        the eventfd, or poll() with a timeout: OSError ETIME when it
        passes). The eventfd may still count completions already reaped:
        the ring, not the count, says whether one is ready."""
        ready, ring, event_fd = self._L.io_uring_cq_ready, self._ring, self._event_fd
        if timeout_s is None:
            while not ready(ring):
                os.read(event_fd, 8)
            return
        deadline = time.monotonic() + timeout_s
        poller = select.poll()  # not select(): the descriptor may be above FD_SETSIZE in a busy server
        poller.register(event_fd, select.POLLIN)
        while not ready(ring):
            left = deadline - time.monotonic()
            if left <= 0:
                raise OSError(errno.ETIME, "timed out waiting for an io_uring completion")
            if poller.poll(max(1, int(left * 1000))):
                os.read(event_fd, 8)

    def _forget_op(self) -> None:
        self._op = None
        self._buffers.clear()

    # --- shutdown ------------------------------------------------------------------

    def close(self) -> None:
        """Drain a write still in flight (bounded wait), exit the ring, close files."""
        if not self._ring_open:
            return
        if self._op is not None:
            try:
                self._reap(URING_DRAIN_TIMEOUT_S)
            except OSError:
                pass  # Timed out or failed: the batch was never acknowledged either way.
            self._forget_op()
        self._L.io_uring_queue_exit(self._ring)
        self._ring_open = False
        if self._event_fd is not None:
            os.close(self._event_fd)
            self._event_fd = None
        self._close_fd()
        if self._aligned is not None:
            self._aligned.give_back()
            self._aligned = None

    def _close_fd(self) -> None:
        fd, self._fd = self._fd, None
        if fd is not None:
            os.close(fd)


def _read_tail_block(path: Path, end_offset: int) -> bytes:
    """Bytes of the partial block before `end_offset`, read through the page
    cache (an O_DIRECT read would need an aligned buffer)."""
    start = end_offset - end_offset % BLOCK_BYTES
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        data = os.pread(fd, end_offset - start, start)
    finally:
        os.close(fd)
    if len(data) != end_offset - start:
        raise OSError(errno.EIO, f"{path}: short read of the tail block")
    return data
