"""Journal: the write-ahead log as the node uses it (room: jex.journal).

    journal = Journal.open(data_dir / "wal", backend="auto", lock=dir_lock)
    seq = journal.next_seq                       # stamp the batch from here
    journal.submit([(seq, ts_ns, payload), ...]) # encode, join, start write+sync
    ...apply the batch to the engine meanwhile...
    durable = journal.wait()                     # block; returns the last durable seq
    ...release the batch's results...

API (what the node calls):
    Journal.open(wal_dir, *, backend="auto"|"pwrite"|"uring"|"uring-direct"|"uring-dsync"
                 |"uring-link"|Backend, segment_bytes=None (existing size, else 64 MiB),
                 batch_bytes_max=None, storage=None, repair=True, lock=None,
                 prepare_ahead=True, repair_final_batch=False, verify_from=None) -> Journal
    journal.next_seq -> int        seq the next submitted entry must carry
    journal.submit(entries: list[tuple[int, int, bytes]]) -> None
    journal.submit_records(first_seq, stamps: list[int], payloads: list[bytes]) -> None
                                   the same batch as columns (the node's form)
    journal.wait() -> int          last durable seq
    journal.append(entries) -> int submit + wait
    journal.append_checkpoint(ts_ns, digest: bytes) -> int   a CHECKPOINT record; its seq
    journal.records(from_seq=1, to_seq=None, *, anchor=None) -> Iterator[Record]
    journal.last_seq / last_ts / chain   the last DURABLE record (0 / 0 / zero chain when empty)
    journal.batch_bytes_max        bound on a batch's framed bytes (record.record_bytes)
    journal.asynchronous_writes    a write in flight progresses while the caller works (io_uring)
    journal.write_completed        wait() would not block on the device
    journal.first_seq, journal.report (the open-time scan), journal.backend_name
    journal.close()                (also a context manager)

Seqs. Every record consumes a seq: COMMAND, CHECKPOINT and the SEAL that
closes a segment. A rollover is decided when a batch is submitted (the
segment cannot take another maximal batch), and from then on `next_seq`
already skips the SEAL's seq, so the node may stamp the next batch while the
current one is in flight. The engine therefore sees gaps in command seqs at
segment boundaries; replay skips non-COMMAND records.

Batches. Each submit() is one batch: one joined buffer, one write, one
sync, its last record flagged BATCH_END (record.py). Recovery relies on a
batch being written only after the previous one's sync completed.

One batch in flight. submit() then wait(), strictly alternating; a second
submit while one is in flight raises JournalStateError. Single-threaded: the
only other thread is the segment preparer, which touches only its own temp
file.

Failure. Any write or sync error (EIO, ENOSPC, a short write that cannot be
completed, a failed or cancelled fsync) raises JournalIOError, acknowledges
nothing, and marks the journal failed: every later submit/wait raises. An
fsync is never retried (after a failed fsync the kernel may have dropped
the dirty pages, so a second "successful" fsync would lie). Exit and reopen.

Open. Take the data-dir lock, fsync every segment and the directory (a
killed process's page cache may hold unsynced data), scan (scan.py). CLEAN:
continue at the end, or, if the last batch is open (its last records were
lost, so no record there ends the batch), in a NEW segment, so that no later
batch is ever written onto an open one and batch boundaries stay exact.
TORN: copy the damaged bytes to
`<wal_dir>/../quarantine/<segment>@<offset>.torn`, zero them, fdatasync,
then continue in a NEW segment with a new nonce (torn_tail), or write the
SEAL a crash prevented and continue in the waiting segment
(rollover_incomplete*). CORRUPT: raise JournalCorrupt having changed nothing;
for row unproven_final_batch that is a JournalUnproven, unless the caller
passed repair_final_batch=True (the operator's `jex journal repair
--final-batch`, after a power loss): then the whole final batch, from its
first record, is quarantined (`...@<offset>.unproven`) and zeroed like a torn
tail, and the log continues in a new segment after the previous batch.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path

from jex import killpoints
from jex.journal.backends import Backend, make_backend
from jex.journal.errors import JournalIOError, JournalStateError, JournalTorn
from jex.journal.limits import (
    BATCH_BYTES_MAX,
    BATCH_RECORDS_MAX,
    BLOCK_BYTES,
    RECORD_ALIGN_BYTES,
    RECORD_HEADER_BYTES,
    SEAL_RECORD_BYTES,
    SEGMENT_BATCHES_MIN,
    SEGMENT_BYTES_DEFAULT,
    SEGMENT_BYTES_MAX,
    SEGMENT_BYTES_MIN,
    SEGMENT_HEADER_BYTES,
)
from jex.journal.lock import DirLock
from jex.journal.reader import Anchor
from jex.journal.record import ZERO_CHAIN, Record, RecordType, encode_one, encode_records, record_bytes
from jex.journal.scan import UNPROVEN_ROW, Decision, Report, SegmentEnd, corrupt_error, iter_segment_records, scan
from jex.journal.segment import (
    FLAG_PREV_UNSEALED,
    SegmentHeader,
    SegmentPreparer,
    create_segment,
    list_segments,
    new_nonce,
)
from jex.journal.storage import OsStorage, Storage

QUARANTINE_DIR_NAME = "quarantine"
TORN_SUFFIX = ".torn"
UNPROVEN_SUFFIX = ".unproven"  # A final batch quarantined by `repair --final-batch`.
QUARANTINE_COPIES_MAX = 1000  # Copies of one range kept apart (a repair repeated after crashes).


def default_batch_bytes_max(segment_bytes: int) -> int:
    """The largest batch a segment of this size takes SEGMENT_BATCHES_MIN of."""
    room = (segment_bytes - SEGMENT_HEADER_BYTES - SEAL_RECORD_BYTES) // SEGMENT_BATCHES_MIN
    return min(BATCH_BYTES_MAX, room - room % RECORD_ALIGN_BYTES)


class Journal:
    """The single writer of one WAL directory. Build it with Journal.open()."""

    def __init__(
        self,
        wal_dir: Path,
        storage: Storage,
        backend: Backend,
        lock: DirLock | None,
        segment_bytes: int,
        batch_bytes_max: int,
        prepare_ahead: bool,
        report: Report,
    ) -> None:
        self.wal_dir = wal_dir
        self.report = report
        self._storage = storage
        self._backend = backend
        self._own_lock = lock
        self._segment_bytes = segment_bytes
        self._batch_bytes_max = batch_bytes_max
        self._preparer = SegmentPreparer(storage, wal_dir, segment_bytes) if prepare_ahead else None
        # The active segment.
        self._path = wal_dir
        self._segid = -1
        self._nonce = 0
        self._size_bytes = 0
        self._offset = 0  # Where the next write goes.
        # The last durable record, and the batch in flight (last_seq, chain, ts, end offset).
        self._last_seq = 0
        self._chain = ZERO_CHAIN
        self._last_ts = 0
        self._pending: tuple[int, bytes, int, int] | None = None
        self._rollover_pending = False
        self._failed: JournalIOError | None = None
        self._closed = False

    # --- opening ---------------------------------------------------------------

    @classmethod
    def open(
        cls,
        wal_dir: Path | str,
        *,
        backend: str | Backend = "auto",
        segment_bytes: int | None = None,
        batch_bytes_max: int | None = None,
        storage: Storage | None = None,
        repair: bool = True,
        lock: DirLock | None = None,
        prepare_ahead: bool = True,
        repair_final_batch: bool = False,
        verify_from: Anchor | None = None,
    ) -> Journal:
        """Open (or create) the WAL in `wal_dir`; see the module docstring.

        `segment_bytes` sizes new segments (default: the size of the last
        existing segment, else SEGMENT_BYTES_DEFAULT). `lock`: the caller's
        held DirLock of wal_dir's parent (the node's data-dir lock); without
        one the journal takes that lock itself and releases it on close.
        `repair_final_batch`: quarantine an unproven final batch instead of
        refusing it (only an operator who knows the machine lost power may
        ask for this; see repair()). `verify_from`: the record recovery will
        start from (the newest snapshot's seq and chain value): the open-time
        scan then verifies the log from that record on, and only the headers
        of the segments before it (scan.scan(start=...)). Raises
        JournalCorrupt (JournalUnproven), JournalTorn (repair=False),
        JournalIOError, DirLocked, or ValueError for bad sizes.
        """
        wal_dir = Path(wal_dir)
        storage = storage or OsStorage()
        if segment_bytes is None:
            segment_bytes = _existing_segment_bytes(storage, wal_dir) or SEGMENT_BYTES_DEFAULT
        batch_bytes_max = _check_sizes(segment_bytes, batch_bytes_max)
        if lock is not None:
            assert lock.held and lock.data_dir.resolve() == wal_dir.parent.resolve(), "lock the WAL's parent dir"
        own_lock = None if lock is not None else DirLock.acquire(wal_dir.parent)
        backend_impl: Backend | None = None
        try:
            try:
                storage.mkdir(wal_dir)
                _sync_log(storage, wal_dir)
                report = scan(wal_dir, storage=storage, start=verify_from)
            except OSError as error:
                raise JournalIOError("open", wal_dir, error) from error
            if report.decision is Decision.CORRUPT and not (repair_final_batch and report.row == UNPROVEN_ROW):
                raise corrupt_error(report)
            if report.decision is Decision.TORN and not repair:
                p = report.problem
                raise JournalTorn(p.path, p.offset, p.seq, p.reason, p.detail)
            try:
                backend_impl = make_backend(backend, storage)
            except OSError as error:
                raise JournalIOError("backend setup", wal_dir, error) from error
            journal = cls(wal_dir, storage, backend_impl, own_lock, segment_bytes, batch_bytes_max,
                          prepare_ahead, report)  # fmt: skip
            journal._start(report)
            return journal
        except BaseException:
            if backend_impl is not None:
                backend_impl.close()
            if own_lock is not None:
                own_lock.release()
            raise

    def _start(self, report: Report) -> None:
        """Act on the scan's row: continue, repair, or start a new log."""
        try:
            # Orphans first: a repair below creates the next segment through
            # the same temp name a preparer may have left behind.
            self._remove_orphans(report.tmp_files)
            if report.row == "empty_log":
                header = SegmentHeader(0, new_nonce(), 1, ZERO_CHAIN)
                self._activate(create_segment(self._storage, self.wal_dir, header, self._segment_bytes), header)
            elif report.row == "clean_end" and not report.end.batch_open:
                self._resume(report.end, report.active_header)
            elif report.row in ("clean_end", "torn_tail"):  # An open batch is never continued.
                self._repair_torn_tail(report.end)
            elif report.row == UNPROVEN_ROW:
                self._quarantine_final_batch(report.end)
            elif report.row in ("rollover_incomplete", "rollover_incomplete_torn_seal"):
                self._finish_rollover(report.end, report.active_header)
            else:
                raise AssertionError(f"no open action for decision-table row {report.row}")
        except OSError as error:
            raise JournalIOError(f"open ({report.row})", self.wal_dir, error) from error
        self._rollover_pending = self._needs_rollover(self._offset)
        if self._preparer is not None:
            self._preparer.start(self._segid + 1)

    def _resume(self, end: SegmentEnd, header: SegmentHeader) -> None:
        self._last_seq, self._chain, self._last_ts = end.last_seq, end.chain, end.last_ts
        self._activate(end.path, header, offset=end.records_end, size_bytes=end.size_bytes)

    def _repair_torn_tail(self, end: SegmentEnd) -> None:
        """Quarantine and zero the torn bytes, then start a new segment (new
        nonce) that continues the chain and flags its predecessor unsealed:
        a SEAL would take the seq the next command must get."""
        self._quarantine(end.path, end.records_end, end.nonzero_end)
        header = SegmentHeader(end.segid + 1, new_nonce(), end.last_seq + 1, end.chain, FLAG_PREV_UNSEALED)
        path = create_segment(self._storage, self.wal_dir, header, self._segment_bytes)
        self._last_seq, self._chain, self._last_ts = end.last_seq, end.chain, end.last_ts
        self._activate(path, header)

    def _quarantine_final_batch(self, end: SegmentEnd) -> None:
        """Quarantine and zero the whole final batch, from its first record
        (B, just after the previous BATCH_END) to the last non-zero byte,
        then continue after the previous batch in a new segment, as a torn
        tail repair does. Only on the operator's word (repair_final_batch)."""
        assert end.batch_offset <= end.records_end < end.nonzero_end
        self._quarantine(end.path, end.batch_offset, end.nonzero_end, UNPROVEN_SUFFIX)
        header = SegmentHeader(end.segid + 1, new_nonce(), end.batch_seq, end.batch_chain, FLAG_PREV_UNSEALED)
        path = create_segment(self._storage, self.wal_dir, header, self._segment_bytes)
        self._last_seq, self._chain, self._last_ts = end.batch_seq - 1, end.batch_chain, end.batch_ts
        self._activate(path, header)

    def _finish_rollover(self, end: SegmentEnd, header: SegmentHeader) -> None:
        """Write the SEAL a crash kept from landing. It is rebuilt exactly
        (deterministic) and must hash to the chain value the waiting
        segment's header already names."""
        self._quarantine(end.path, end.records_end, end.nonzero_end)
        rebuilt = end.seal_for(header.prev_chain)
        assert rebuilt is not None, "scan matched EXPECTS_SEAL, so the SEAL must rebuild exactly"
        seal, seal_chain = rebuilt
        fd = self._storage.open(end.path, write=True)
        try:
            self._storage.pwrite_all(fd, seal, end.records_end)
            self._storage.fdatasync(fd)
        finally:
            self._storage.close(fd)
        self._last_seq, self._chain, self._last_ts = end.last_seq + 1, seal_chain, end.last_ts
        self._activate(self.wal_dir / header.file_name, header)

    def _quarantine(self, path: Path, start: int, end: int, suffix: str = TORN_SUFFIX) -> None:
        """Copy [start, end) of `path` to the quarantine dir (durably), then
        zero it in place and fdatasync. Safe if a crash repeats it: an
        earlier copy of the range is never overwritten (a repeated repair
        may find the range half zeroed), the new one gets a numbered name."""
        if end <= start:
            return
        storage = self._storage
        quarantine = self.wal_dir.parent / QUARANTINE_DIR_NAME
        storage.mkdir(quarantine)
        fd = storage.open(path, write=True)
        try:
            damaged = storage.pread(fd, end - start, start)
            copy_path = _fresh_path(storage, quarantine / f"{path.name}@{start:016x}{suffix}")
            copy_fd = storage.open(copy_path, create=True)
            try:
                storage.pwrite_all(copy_fd, damaged, 0)
                storage.fdatasync(copy_fd)
            finally:
                storage.close(copy_fd)
            storage.fsync_dir(quarantine)
            storage.zero_fill(fd, start, end - start)
            storage.fdatasync(fd)
        finally:
            storage.close(fd)

    def _remove_orphans(self, tmp_files: list[Path]) -> None:
        """Delete temp files of interrupted segment creations (never read)."""
        for path in tmp_files:
            self._storage.unlink(path)
        if tmp_files:
            self._storage.fsync_dir(self.wal_dir)

    def _activate(
        self, path: Path, header: SegmentHeader, *, offset: int = SEGMENT_HEADER_BYTES, size_bytes: int | None = None
    ) -> None:
        """Make `path` the segment that writes go to, at `offset`."""
        if size_bytes is None:
            fd = self._storage.open(path)
            try:
                size_bytes = self._storage.size(fd)
            finally:
                self._storage.close(fd)
        self._backend.attach(path, offset)
        self._path, self._segid, self._nonce = path, header.segid, header.nonce
        self._size_bytes, self._offset = size_bytes, offset

    # --- properties --------------------------------------------------------------

    @property
    def last_seq(self) -> int:
        """Seq of the last durable record (0 for an empty log)."""
        return self._last_seq

    @property
    def last_ts(self) -> int:
        return self._last_ts

    @property
    def chain(self) -> bytes:
        """Chain value (header checksum) of the last durable record; zeros at genesis."""
        return self._chain

    @property
    def next_seq(self) -> int:
        """The seq the next submitted entry must carry. Valid as soon as
        submit() returns: it counts the batch in flight and a pending SEAL."""
        last = self._pending[0] if self._pending else self._last_seq
        return last + 1 + (1 if self._rollover_pending else 0)

    @property
    def first_seq(self) -> int:
        return self.report.first_seq

    @property
    def batch_bytes_max(self) -> int:
        """Bound on one batch's FRAMED bytes: sum of record_bytes(len(payload)).
        The sequencer must close a batch before it exceeds this."""
        return self._batch_bytes_max

    @property
    def backend_name(self) -> str:
        return self._backend.name

    @property
    def in_flight(self) -> bool:
        return self._pending is not None

    @property
    def asynchronous_writes(self) -> bool:
        """True when a batch in flight is written while the caller goes on
        (io_uring); False when the device work happens in wait() (pwrite)."""
        return self._backend.asynchronous

    @property
    def write_completed(self) -> bool:
        """True when wait() would not block on the device: nothing in flight,
        or the write's completion has arrived (io_uring; a synchronous
        backend does its device work inside wait() and always says True)."""
        return self._pending is None or self._backend.completed()

    @property
    def failed(self) -> bool:
        return self._failed is not None

    @property
    def preparing(self) -> bool:
        """True while the next segment is being zero-filled in the background."""
        return self._preparer is not None and self._preparer.busy

    @property
    def segment_path(self) -> Path:
        """The segment being written."""
        return self._path

    # --- appending -------------------------------------------------------------------

    def submit(self, entries: Sequence[tuple[int, int, bytes]]) -> None:
        """Start the durable write of a batch of COMMAND records.

        `entries` are (seq, ts_ns, payload), seqs gapless from next_seq,
        timestamps non-decreasing. Rolls over to a new segment first if one
        is due. Returns once the write is submitted; wait() makes it durable.
        Raises ValueError for a malformed batch (nothing written),
        JournalIOError on an I/O failure, JournalStateError if misused.
        """
        if entries:
            seq_want = entries[0][0]
            for seq, _, _ in entries:
                if seq != seq_want:
                    raise ValueError(f"seq {seq} is not the next seq {seq_want}")
                seq_want += 1
        self.submit_records(entries[0][0] if entries else self.next_seq,
                            [entry[1] for entry in entries], [entry[2] for entry in entries])

    def submit_records(self, first_seq: int, stamps: Sequence[int], payloads: Sequence[bytes]) -> None:
        """submit() with the batch as columns: COMMAND records first_seq,
        first_seq + 1, ... stamped `stamps`, carrying `payloads` (the node's
        form: no tuple per record). Same checks and errors as submit()."""
        self._submit(first_seq, stamps, payloads, RecordType.COMMAND)

    def wait(self) -> int:
        """Block until the batch in flight is durable; return the last durable seq."""
        self._check_usable()
        if self._pending is None:
            return self._last_seq
        try:
            self._backend.wait()
        except OSError as error:
            raise self._fail("commit (write completion or fdatasync)", error) from error
        self._last_seq, self._chain, self._last_ts, self._offset = self._pending
        self._pending = None
        return self._last_seq

    def append(self, entries: Sequence[tuple[int, int, bytes]]) -> int:
        """submit() + wait(): returns the last durable seq."""
        self.submit(entries)
        return self.wait()

    def append_checkpoint(self, ts_ns: int, digest: bytes) -> int:
        """Append a CHECKPOINT record (payload: the state digest) durably; its seq."""
        self._submit(self.next_seq, [ts_ns], [digest], RecordType.CHECKPOINT)
        return self.wait()

    def _submit(self, first_seq: int, stamps: Sequence[int], payloads: Sequence[bytes], record_type: int) -> None:
        self._check_usable()
        if self._pending is not None:
            raise JournalStateError("submit while a batch is in flight: call wait() first")
        self._check_batch(first_seq, payloads)
        if self._rollover_pending:
            self._rollover()
        buffer, chain, ts_ns = encode_records(
            first_seq, stamps, payloads, parent=self._chain, nonce=self._nonce,
            ts_floor=self._last_ts, record_type=record_type,
        )  # fmt: skip
        assert len(buffer) <= self._batch_bytes_max
        assert self._offset + len(buffer) + SEAL_RECORD_BYTES <= self._size_bytes
        self._write(buffer)
        end = self._offset + len(buffer)
        self._pending = (first_seq + len(payloads) - 1, chain, ts_ns, end)
        self._rollover_pending = self._needs_rollover(end)

    def _check_batch(self, first_seq: int, payloads: Sequence[bytes]) -> None:
        """Bounds first, so a batch that can never be written fails before
        anything (a rollover) happens. Timestamps are checked while
        encoding."""
        count = len(payloads)
        if not count:
            raise ValueError("empty batch")
        if count > BATCH_RECORDS_MAX:
            raise ValueError(f"batch of {count} records exceeds {BATCH_RECORDS_MAX}")
        if first_seq != self.next_seq:
            raise ValueError(f"batch starts at seq {first_seq}, expected next_seq {self.next_seq}")
        # Framed bytes: a header per record plus each payload padded to the
        # alignment. The padding is at most ALIGN - 1 a record, so the exact
        # sum is needed only near the bound.
        total = count * RECORD_HEADER_BYTES + sum(map(len, payloads))
        if total + count * (RECORD_ALIGN_BYTES - 1) > self._batch_bytes_max:
            total = sum(record_bytes(len(payload)) for payload in payloads)
            if total > self._batch_bytes_max:
                raise ValueError(f"batch of {total} bytes exceeds batch_bytes_max {self._batch_bytes_max}")

    def _write(self, buffer: bytearray) -> None:
        """Hand one joined buffer to the backend at the write offset."""
        killpoints.hit("before_write")
        try:
            self._backend.submit(buffer, self._offset)
        except OSError as error:
            raise self._fail("write", error) from error
        killpoints.hit("after_write_before_fsync")

    def _needs_rollover(self, end: int) -> bool:
        """True when the segment could not take one more maximal batch plus its SEAL."""
        return self._size_bytes - end < self._batch_bytes_max + SEAL_RECORD_BYTES

    def _rollover(self) -> None:
        """Create the next segment (header continuing from the SEAL about to
        be written), then SEAL the old one and make that durable, then move
        writes to the new segment."""
        seal_seq = self._last_seq + 1
        seal, seal_chain = encode_one(
            seal_seq, self._last_ts, b"", parent=self._chain, nonce=self._nonce, record_type=RecordType.SEAL
        )
        header = SegmentHeader(self._segid + 1, new_nonce(), seal_seq + 1, seal_chain)
        try:
            path = create_segment(self._storage, self.wal_dir, header, self._segment_bytes, self._preparer)
        except OSError as error:
            raise self._fail("segment creation", error) from error
        killpoints.hit("mid_rollover")
        self._write(seal)
        try:
            self._backend.wait()
        except OSError as error:
            raise self._fail("fdatasync of SEAL", error) from error
        self._last_seq, self._chain = seal_seq, seal_chain
        try:
            self._activate(path, header)
        except OSError as error:
            raise self._fail("switching segment", error) from error
        self._rollover_pending = False
        if self._preparer is not None:
            self._preparer.start(self._segid + 1)

    def _fail(self, operation: str, error: OSError) -> JournalIOError:
        """Stop the journal for good: nothing more is written or acknowledged."""
        self._failed = JournalIOError(operation, self._path, error)
        self._pending = None
        return self._failed

    def _check_usable(self) -> None:
        if self._closed:
            raise JournalStateError("journal is closed")
        if self._failed is not None:
            raise JournalIOError("submit", self._path, f"journal stopped after an earlier failure: {self._failed}")

    # --- reading and closing -------------------------------------------------------

    def records(self, from_seq: int = 1, to_seq: int | None = None, *, anchor: bytes | None = None) -> Iterator[Record]:
        """Durable records from_seq..to_seq (default: the last durable seq),
        read back from disk and verified. Non-COMMAND records included.
        `anchor`: record from_seq's chain value, if the caller knows it; the
        record is then found without walking its segment up to it
        (scan.iter_segment_records)."""
        last = self._last_seq if to_seq is None else min(to_seq, self._last_seq)
        first = max(from_seq, self.first_seq)
        return iter_segment_records(self._storage, self.wal_dir, first, last,
                                    anchor=anchor if first == from_seq else None)  # fmt: skip

    def close(self) -> None:
        """Release everything. Writes nothing: a batch still in flight is
        drained but was never acknowledged."""
        if self._closed:
            return
        self._closed = True
        try:
            if self._preparer is not None:
                self._preparer.close()
            self._backend.close()
        finally:
            if self._own_lock is not None:
                self._own_lock.release()

    def __enter__(self) -> Journal:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _check_sizes(segment_bytes: int, batch_bytes_max: int | None) -> int:
    """Validate the size configuration; return the batch bound to use."""
    if not SEGMENT_BYTES_MIN <= segment_bytes <= SEGMENT_BYTES_MAX or segment_bytes % BLOCK_BYTES:
        raise ValueError(
            f"segment_bytes {segment_bytes} must be a multiple of {BLOCK_BYTES} "
            f"in [{SEGMENT_BYTES_MIN}, {SEGMENT_BYTES_MAX}]"
        )
    default = default_batch_bytes_max(segment_bytes)
    if batch_bytes_max is None:
        return default
    if not record_bytes(0) <= batch_bytes_max <= default:
        raise ValueError(f"batch_bytes_max {batch_bytes_max} must be in [{record_bytes(0)}, {default}]")
    return batch_bytes_max


def _existing_segment_bytes(storage: Storage, wal_dir: Path) -> int | None:
    """Size of the newest segment file, if it is a usable segment size."""
    if not storage.exists(wal_dir):
        return None
    segments = list_segments(storage, wal_dir).segments
    if not segments:
        return None
    fd = storage.open(segments[-1].path)
    try:
        size = storage.size(fd)
    finally:
        storage.close(fd)
    usable = SEGMENT_BYTES_MIN <= size <= SEGMENT_BYTES_MAX and size % BLOCK_BYTES == 0
    return size if usable else None


def _sync_log(storage: Storage, wal_dir: Path) -> None:
    """fsync every segment and the directory before reading: data a killed
    process left in the page cache becomes what the disk holds, so the scan
    judges what a later power loss would keep."""
    for segment in list_segments(storage, wal_dir).segments:
        fd = storage.open(segment.path)
        try:
            storage.fdatasync(fd)
        finally:
            storage.close(fd)
    storage.fsync_dir(wal_dir)


def _fresh_path(storage: Storage, path: Path) -> Path:
    """`path`, or `path.1`, `path.2`, ... : the first that does not exist."""
    for copy in range(QUARANTINE_COPIES_MAX):
        candidate = path if copy == 0 else path.with_name(f"{path.name}.{copy}")
        if not storage.exists(candidate):
            return candidate
    raise OSError(f"{path}: {QUARANTINE_COPIES_MAX} quarantined copies already")


def repair(
    wal_dir: Path | str, *, storage: Storage | None = None, lock: DirLock | None = None, final_batch: bool = False
) -> Report:
    """Fix a torn tail (and only that), as opening would; returns the report
    that was acted on. A clean log is left untouched (not even created);
    corruption raises JournalCorrupt having changed nothing, and an unproven
    final batch raises JournalUnproven, which says to use final_batch.

    final_batch=True (`jex journal repair --final-batch`) is the operator's
    statement that this machine lost power: it quarantines an unproven final
    batch (row unproven_final_batch) and refuses everything else without
    changing anything. Any other corruption raises JournalCorrupt; a torn
    tail raises JournalTorn (plain repair, or opening, fixes that); a clean
    log is returned untouched (a repeated repair is harmless).
    """
    wal_dir = Path(wal_dir)
    report = scan(wal_dir, storage=storage or OsStorage())
    if report.decision is Decision.CORRUPT and not (final_batch and report.unproven):
        raise corrupt_error(report)
    if report.decision is Decision.CLEAN:
        return report
    if final_batch and report.decision is Decision.TORN:
        p = report.problem
        raise JournalTorn(p.path, p.offset, p.seq, p.reason, f"{p.detail}; not an unproven final batch: "
                          "plain `jex journal repair` quarantines a torn tail")  # fmt: skip
    journal = Journal.open(
        wal_dir, backend="pwrite", storage=storage, lock=lock, prepare_ahead=False,
        repair=not final_batch, repair_final_batch=final_batch,
    )  # fmt: skip
    report = journal.report  # Rescanned under the lock.
    journal.close()
    return report
