"""The io_uring backend on a real ring: every mode, real kernel errors
(ENOSPC from /dev/full, a real short write under RLIMIT_FSIZE), continued
short writes, draining on close."""

from __future__ import annotations

import errno
import os
import resource
import signal
import time
from pathlib import Path

import pytest

from jex.journal import damage
from jex.journal.backends import URING_MODES, PwriteBackend, UringBackend, uring_unavailable_reason
from jex.journal.errors import JournalIOError
from jex.journal.limits import BLOCK_BYTES, SEGMENT_HEADER_BYTES
from jex.journal.scan import Decision, read_records, verify
from jex.journal.storage import OsStorage
from jex.journal.writer import Journal

UNAVAILABLE = uring_unavailable_reason()
pytestmark = pytest.mark.skipif(UNAVAILABLE is not None, reason=f"io_uring unavailable: {UNAVAILABLE}")

SEGMENT_BYTES = 64 * 1024


def open_journal(root: Path, backend, **kwargs) -> Journal:
    kwargs.setdefault("segment_bytes", SEGMENT_BYTES)
    return Journal.open(root / "wal", backend=backend, prepare_ahead=False, **kwargs)


@pytest.mark.parametrize("mode, skip_success", [("link", False), ("link", True), ("dsync", False), ("direct", False)])
def test_every_mode_writes_what_pwrite_would(tmp_path, mode, skip_success):
    assert set(URING_MODES) == {"link", "dsync", "direct"}
    with open_journal(tmp_path, UringBackend(mode, skip_success=skip_success)) as journal:
        damage.write_commands(journal, 700, batch=9, size=50)  # unaligned sizes, several rollovers
        durable = list(journal.records())
    assert verify(tmp_path / "wal").decision is Decision.CLEAN
    assert list(read_records(tmp_path / "wal")) == durable
    commands = [r for r in durable if r.type == 1]
    assert len(commands) == 700 and all(r.payload == damage.payload_for(r.seq, 50) for r in commands)
    with open_journal(tmp_path, "pwrite") as journal:  # the other backend continues the same log
        damage.write_commands(journal, 10)
    assert verify(tmp_path / "wal").decision is Decision.CLEAN


def test_setup_flags_single_issuer_defer_taskrun(tmp_path):
    import liburing

    flags = liburing.IORING_SETUP_SINGLE_ISSUER | liburing.IORING_SETUP_DEFER_TASKRUN
    with open_journal(tmp_path, UringBackend("direct", setup_flags=flags)) as journal:
        damage.write_commands(journal, 50)
    assert verify(tmp_path / "wal").last_seq == 50


def test_direct_mode_rewrites_the_partial_block_unchanged(tmp_path):
    """O_DIRECT writes start at the block holding the write offset; what was
    already there must come back byte for byte."""
    with open_journal(tmp_path, UringBackend("direct")) as journal:
        for size in (1, 7, 300, 4000, 5000, 13):
            seq = journal.next_seq
            journal.append([(seq, 5, bytes([seq]) * size)])
            segment = journal.segment_path
    data = segment.read_bytes()
    records = damage.locate_records(segment)
    assert [r.payload_len for r in records] == [1, 7, 300, 4000, 5000, 13]
    end = records[-1].offset + records[-1].length
    assert not any(data[end:]) and end % BLOCK_BYTES != 0


class _HalfFirstWrite(UringBackend):
    """Submits only the first half of the first write of a batch. The kernel
    completes it in full, which the backend sees as a short write of the
    whole batch: this exercises the continuation path with real completions
    (in "link" mode the linked fsync of the half write is not cancelled,
    which the continuation must also accept)."""

    shortened = 0

    def _start(self, file_offset, done, length):  # noqa: ANN001
        if done == 0 and length >= 2 * BLOCK_BYTES and not self.shortened:
            self.shortened += 1
            half = length // 2
            half -= half % BLOCK_BYTES if self.mode == "direct" else 0
            return super()._start(file_offset, 0, half)
        return super()._start(file_offset, done, length)


@pytest.mark.parametrize("mode", URING_MODES)
def test_a_short_write_is_continued_from_where_it_stopped(tmp_path, mode):
    backend = _HalfFirstWrite(mode)
    with open_journal(tmp_path, backend) as journal:
        seq = journal.next_seq
        entries = [(seq + i, 1, damage.payload_for(seq + i, 200)) for i in range(60)]
        assert journal.append(entries) == entries[-1][0]
    assert backend.shortened == 1
    got = [(r.seq, r.ts_ns, r.payload) for r in read_records(tmp_path / "wal")]
    assert got == entries


@pytest.mark.parametrize("mode", ["link", "dsync"])
def test_enospc_from_the_kernel_raises(tmp_path, mode):
    backend = UringBackend(mode)
    try:
        backend.attach(Path("/dev/full"), 0)
        backend.submit(bytearray(b"x" * 100), 0)
        with pytest.raises(OSError) as caught:
            backend.wait()
        assert caught.value.errno == errno.ENOSPC
        assert not backend.in_flight
    finally:
        backend.close()


@pytest.fixture
def file_size_limit():
    """Set RLIMIT_FSIZE (SIGXFSZ ignored) so writes crossing it come back
    short from the kernel; restored afterwards."""
    old_limit = resource.getrlimit(resource.RLIMIT_FSIZE)
    old_handler = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)

    def set_limit(limit: int) -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, old_limit[1]))

    yield set_limit
    resource.setrlimit(resource.RLIMIT_FSIZE, old_limit)
    signal.signal(signal.SIGXFSZ, old_handler)


@pytest.mark.parametrize("backend", ["pwrite", "uring-link", "uring-dsync", "uring-direct"])
def test_real_short_write_that_cannot_finish_is_never_acknowledged(tmp_path, backend, file_size_limit):
    with open_journal(tmp_path, backend) as journal:
        damage.write_commands(journal, 20)
        acked = journal.last_seq
        seq = journal.next_seq
        entries = [(seq + i, 10**9, damage.payload_for(seq + i, 100)) for i in range(40)]
        file_size_limit(journal._offset + 1000)  # the batch crosses the limit: the kernel writes part of it
        with pytest.raises(JournalIOError) as caught:
            journal.append(entries)
        assert caught.value.errno in (errno.EFBIG, errno.EINVAL, errno.EIO), str(caught.value)
        assert journal.failed and journal.last_seq == acked
    file_size_limit(resource.RLIM_INFINITY)
    sent = {s: damage.payload_for(s, 64) for s in range(1, acked + 1)} | {s: p for s, _, p in entries}
    with open_journal(tmp_path, "pwrite") as journal:
        # The part the kernel did write is complete records or a torn tail:
        # never acknowledged, possibly kept (a prefix of what was sent), never garbage.
        assert acked <= journal.last_seq < entries[-1][0]
        assert journal.report.row in ("torn_tail", "clean_end")
        commands = [r for r in journal.records() if r.type == 1]
        assert [r.seq for r in commands] == list(range(1, journal.last_seq + 1))
        assert all(r.payload == sent[r.seq] for r in commands)


def test_close_with_a_write_in_flight_drains_it(tmp_path):
    journal = open_journal(tmp_path, UringBackend("link"))
    journal.submit([(1, 1, b"in flight at close")])
    journal.close()  # must not leave the kernel reading a freed buffer
    assert verify(tmp_path / "wal").last_seq in (0, 1)


def test_pwrite_and_uring_backends_share_one_interface(tmp_path):
    path = tmp_path / "f"
    path.write_bytes(bytes(SEGMENT_HEADER_BYTES * 2))
    for backend in (PwriteBackend(OsStorage()), UringBackend("link"), UringBackend("direct")):
        backend.attach(path, 4096)
        backend.submit(bytearray(b"abc"), 4096)
        assert backend.in_flight
        backend.wait()
        assert not backend.in_flight
        backend.close()
        assert damage.read_at(path, 4096, 3) == b"abc"
        damage.zero_range(path, 4096, 3)
    assert os.path.getsize(path) == SEGMENT_HEADER_BYTES * 2


def test_waiting_for_a_completion_lets_other_threads_run(tmp_path):
    """io_uring_wait_cqe holds the GIL while it blocks; the backend waits on
    an eventfd instead, so other threads (API clients, the gateway's
    producers) run while a batch is being written. Here the completion the
    main thread waits for can only come from another thread: were the GIL
    held during the wait, that thread could never run and the wait would
    time out."""
    import threading

    import liburing

    backend = UringBackend("direct")
    try:
        waiting = threading.Event()

        def complete_a_nop() -> None:
            waiting.wait()
            time.sleep(0.05)  # let the main thread block in the wait first (ordering only, no bound)
            sqe = liburing.io_uring_get_sqe(backend._ring)
            liburing.io_uring_prep_nop(sqe)
            sqe.user_data = 0
            liburing.io_uring_submit(backend._ring)

        thread = threading.Thread(target=complete_a_nop)
        thread.start()
        waiting.set()
        backend._await_completion(30.0)  # raises OSError(ETIME) if no completion came
        thread.join()
        cqe = liburing.Cqe()
        liburing.io_uring_wait_cqe(backend._ring, cqe)
        liburing.io_uring_cqe_seen(backend._ring, cqe[0])
    finally:
        backend.close()
    idle = UringBackend("direct")
    try:
        with pytest.raises(OSError) as raised:
            idle._await_completion(0.01)  # nothing in flight: it times out
        assert raised.value.errno == errno.ETIME
    finally:
        idle.close()
