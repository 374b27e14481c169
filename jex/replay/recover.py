"""Recovery from snapshots: newest valid snapshot + tail replay (room: jex.replay).

    recover(log, snapshot_dir) -> Recovered(engine, stats, start, notices)

Selection walks the snapshots at or before the target, newest first. A
snapshot is used only if, in this order (cheapest first):

  1. its header verifies (magic, checksum, version, size);
  2. the log still holds its seq (not pruned away, not past the end);
  3. the log's chain value at its seq equals the header's (same history);
     record seq is found by that chain value (reader.find_anchor), not by
     walking the records before it;
  4. its body checksum verifies, the header's digest is that checksum (the
     digest is the hash of the exported state, i.e. of the body), and it
     decodes and restores (with check_digest=True, the restored engine's
     recomputed digest must equal the header's too: verification mode).

Any refusal is a one-line notice and the previous snapshot is tried; after
the last one, genesis, if the log still starts at seq 1. A log pruned past
every usable snapshot cannot be rebuilt: RecoveryError (exit 3), having
changed nothing. Then the tail after the snapshot is replayed exactly as a
genesis replay would replay it (record seq and ts), so the result is the
same engine.

`log` is a LogView: the node passes its open Journal (already scanned and
repaired; opened with verify_from=recovery_anchor(data_dir), so that scan
verified the log from the newest snapshot's record on), read-only callers
pass `wal_view(wal_dir)`, which finds the end of the log by walking only the
last segment (not the journal's whole-log pre-scan; anything irregular there
is handed to the journal's scanner to judge) and then reads with the
journal's verifying reader.

Retention (`retain_and_prune`): keep the newest SNAPSHOTS_KEPT snapshots
that pass checks 1-3 plus the body checksum, delete the other snapshot
files, and prune WAL segments wholly before the older kept one. Nothing is
pruned until SNAPSHOTS_KEPT valid snapshots exist, so there is always a
fallback.
"""

from __future__ import annotations

import itertools
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator, Protocol

from jex.core import Engine
from jex.journal import JournalCorrupt, Record
from jex.journal.limits import SEGMENT_HEADER_BYTES
from jex.journal.reader import Anchor, SegmentCursor, find_anchor, segment_cursor
from jex.journal.scan import Decision, SegmentRecords, corrupt_error, iter_segment_records, scan
from jex.journal.segment import SegmentHeader, list_segments
from jex.journal.errors import SegmentHeaderError
from jex.journal.storage import OsStorage, Storage
from jex.replay.rebuild import ReplayError, ReplayStats, replay_records
from jex.snapshots import SNAPSHOTS_KEPT, SnapshotError, SnapshotFile, list_snapshots, snapshot_dir
from jex.snapshots import store
from jex.snapshots.format import SnapshotHeader


class RecoveryError(ReplayError):
    """The log cannot be rebuilt: it was pruned and no usable snapshot covers
    its start. An integrity failure (exit 3); nothing was changed."""

    def __init__(self, message: str) -> None:
        Exception.__init__(self, " ".join(message.split()))
        self.seq = 0
        self.reason = "no_usable_start"


# ------------------------------------------------------------------ log views


class LogView(Protocol):
    """The records a rebuild reads. `first_seq` is the first record the log
    holds (1 unless pruned). `anchor`, when given, is the chain value of
    record from_seq as the caller knows it (a snapshot's): the reader finds
    that record by it instead of walking the records before it in its
    segment (scan.iter_segment_records)."""

    @property
    def first_seq(self) -> int: ...

    def records(self, from_seq: int, to_seq: int | None = None, *, anchor: bytes | None = None) -> Iterator[Record]: ...


class JournalView:
    """An open Journal (the node's): scanned and repaired at open."""

    def __init__(self, journal) -> None:
        self.journal = journal

    @property
    def first_seq(self) -> int:
        return self.journal.first_seq if self.journal.last_seq else 1

    def records(self, from_seq: int, to_seq: int | None = None, *, anchor: bytes | None = None) -> Iterator[Record]:
        return self.journal.records(from_seq, to_seq, anchor=anchor)


class WalView:
    """A WAL directory read without the lock (beside a live writer)."""

    def __init__(self, wal_dir: Path | str, storage: Storage | None = None) -> None:
        self.wal_dir = Path(wal_dir)
        self.storage = storage or OsStorage()

    @property
    def first_seq(self) -> int:
        segments = list_segments(self.storage, self.wal_dir).segments
        return segments[0].first_seq if segments else 1

    def records(self, from_seq: int, to_seq: int | None = None, *, anchor: bytes | None = None) -> Iterator[Record]:
        return read_from(self.wal_dir, from_seq, to_seq, storage=self.storage, anchor=anchor)


def wal_view(wal_dir: Path | str, storage: Storage | None = None) -> WalView:
    return WalView(wal_dir, storage)


def read_from(
    wal_dir: Path,
    from_seq: int,
    to_seq: int | None = None,
    *,
    storage: Storage | None = None,
    anchor: bytes | None = None,
) -> Iterator[Record]:
    """Verified records from_seq..to_seq (default: to the end of the log).
    Read-only, no lock; the journal's reader does the reading and the
    verifying (checksums, nonce, seq, chain). Asking for records before the
    log's first seq raises JournalCorrupt (record_missing). `anchor`: the
    chain value of record from_seq, if known (LogView).

    The end of the log is found at once (log_end); the records are read
    lazily, as a scan.SegmentRecords that a replay walks fused.
    """
    storage = storage or OsStorage()
    wal_dir = Path(wal_dir)
    files = list_segments(storage, wal_dir).segments
    if not files:
        return iter(())
    if from_seq < files[0].first_seq:
        raise JournalCorrupt(files[0].path, 0, from_seq, "record_missing", f"the log starts at seq {files[0].first_seq} (pruned)")
    end = log_end(wal_dir, storage=storage, anchor=None if anchor is None else Anchor(from_seq, anchor))
    last = end if to_seq is None else min(to_seq, end)
    if from_seq > last:
        return iter(())
    return iter_segment_records(storage, wal_dir, from_seq, last, anchor=anchor)


def log_end(wal_dir: Path, *, storage: Storage | None = None, anchor: Anchor | None = None) -> int:
    """The last seq a reader may use (0 for an empty log), cheaply: walk
    only the last segment (and the one before it if the last holds nothing
    yet), from `anchor`'s record on where that record ends a batch in the
    last segment. Records after the last complete batch are not counted (a
    writer may be writing that batch, or a crash tore it). Anything
    irregular (a walk that stops on damage, an interrupted rollover) is
    left to the journal's scanner, which raises JournalCorrupt for
    corruption. O(bytes of one or two segments), read in chunks."""
    storage = storage or OsStorage()
    files = list_segments(storage, wal_dir).segments
    if not files:
        return 0
    last = _walk_end(storage, files[-1], anchor if anchor is not None and anchor.seq >= files[-1].first_seq else None)
    if last is None:
        return _scanned_end(storage, wal_dir)
    cursor, header = last
    if cursor.sealed:  # a sealed segment must have a successor: let the scanner judge
        return _scanned_end(storage, wal_dir)
    if cursor.count or len(files) == 1:
        return cursor.seq - 1
    previous = _walk_end(storage, files[-2])
    if previous is None or not previous[0].sealed or previous[0].seq != header.first_seq:
        return _scanned_end(storage, wal_dir)
    return previous[0].seq - 1


def _walk_end(storage: Storage, file, anchor: Anchor | None = None) -> tuple[SegmentCursor, SegmentHeader] | None:
    """Walk one segment, in chunks, from its first record or from `anchor`'s
    record when that is found there and ends a batch (so that where the
    final batch starts is known exactly); None if its header does not
    verify or it does not end cleanly after a whole batch."""
    fd = storage.open(file.path)
    try:
        try:
            header = SegmentHeader.decode(storage.pread(fd, SEGMENT_HEADER_BYTES, 0), name=file.path.name)
        except SegmentHeaderError:
            return None
        size = storage.size(fd)
        found = None if anchor is None else find_anchor(storage, fd, size, header.nonce, anchor)
        cursor = segment_cursor(storage, fd, size, header, found if found is not None and found[1].batch_end else None)
        cursor.verify()
        if cursor.stop_error() is not None or cursor.batch_offset < cursor.offset:
            return None
        return cursor, header
    finally:
        storage.close(fd)


def _scanned_end(storage: Storage, wal_dir: Path) -> int:
    report = scan(wal_dir, storage=storage)
    if report.decision is Decision.CORRUPT:
        raise corrupt_error(report)
    return report.last_seq


# ------------------------------------------------------------------ recovery


def recovery_anchor(data_dir: Path | str) -> Anchor | None:
    """Where a recovery of `data_dir` will most likely start: the newest
    snapshot whose header verifies, as an Anchor (its seq and the chain value
    it names), for Journal.open(verify_from=...), so that opening verifies
    the log from there on instead of all of it. Only a hint: the journal
    verifies from the anchor's record on whatever the snapshot turns out to
    be, and if recovery falls back to an older start, every record it reads
    before the anchor is verified as it is read. O(snapshot files), one
    header each."""
    for snap in reversed(list_snapshots(snapshot_dir(Path(data_dir))).snapshots):
        try:
            header = store.read_header(snap.path)
        except SnapshotError:
            continue
        return Anchor(header.seq, header.chain)
    return None


@dataclass
class Start:
    """Where a rebuild started: a snapshot (seq, path, header) or genesis (seq 0)."""

    seq: int
    path: Path | None = None
    header: SnapshotHeader | None = None
    seconds: dict[str, float] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return "genesis" if self.path is None else f"snapshot {self.seq}"


@dataclass
class Recovered:
    engine: Engine
    stats: ReplayStats  # of the replay after the start
    start: Start
    notices: list[str] = field(default_factory=list)  # one line per refused snapshot
    seconds: float = 0.0  # everything: selection, load, replay

    @property
    def seq(self) -> int:
        return self.stats.last_seq if self.stats.records else self.start.seq


def check_against_log(log: LogView, header: SnapshotHeader, path: Path, to_seq: int | None = None) -> Iterator[Record]:
    """Checks 2 and 3: the log holds record `seq` with the header's chain
    value. Returns the iterator over the records after it (up to to_seq),
    so the tail is read in the same pass: a journal read
    (scan.SegmentRecords) takes that record without handing it over
    (take_first) and stays fusable, so the replay walks the tail in its
    fused loop. Raises SnapshotError."""
    if header.seq < log.first_seq:
        raise SnapshotError("not_in_log", path, f"seq {header.seq} is before the log's first seq {log.first_seq}")
    records = log.records(header.seq, to_seq, anchor=header.chain)
    chain = _first_chain(records, header.seq)
    if chain is None:
        raise SnapshotError("not_in_log", path, f"the log ends before seq {header.seq}")
    if chain != header.chain:
        raise SnapshotError("chain_mismatch", path, f"log chain {chain.hex()} at seq {header.seq}, snapshot {header.chain.hex()}")
    return records


def _first_chain(records: Iterator[Record], seq: int) -> bytes | None:
    """The chain value of record `seq`, taken from the front of `records`
    (None if they do not start with it)."""
    if isinstance(records, SegmentRecords):
        return records.take_first()
    first = next(records, None)
    return None if first is None or first.seq != seq else first.chain


def open_start(
    log: LogView,
    snapshots: Path | list[Path] | None,
    *,
    to_seq: int | None = None,
    to_ts: int | None = None,
    earliest: bool = False,
    notify: Callable[[str], None] | None = None,
    check_digest: bool = False,
) -> tuple[Engine, Start, Iterator[Record], list[str]]:
    """Choose and load the start of a rebuild: (engine at the start, the
    start, the records after it up to to_seq, refusal notices). The caller
    replays the records (filtering by time itself when it asked for to_ts).
    `snapshots` is a directory, or several whose snapshots are merged (the
    audit indexer adds its own). `check_digest` recomputes each loaded
    snapshot's digest (store.load); by default the header's digest must
    equal the body checksum the load verifies. Raises RecoveryError,
    JournalCorrupt."""
    notices: list[str] = []
    directories = [] if snapshots is None else [snapshots] if isinstance(snapshots, (str, Path)) else list(snapshots)
    candidates = sorted(
        (s for d in directories for s in list_snapshots(Path(d)).snapshots if to_seq is None or s.seq <= to_seq),
        key=lambda s: s.seq,
    )
    if earliest and log.first_seq == 1:
        candidates = []
    for snap in candidates if earliest else reversed(candidates):
        try:
            header = store.read_header(snap.path)
            if to_ts is not None and header.ts_ns > to_ts:
                continue
            tail = check_against_log(log, header, snap.path, to_seq)
            loaded = store.load(snap.path, check_digest=check_digest)
        except SnapshotError as error:
            line = f"jex: {error}; falling back to an earlier start"
            notices.append(line)
            if notify is not None:
                notify(line)
            continue
        return loaded.engine, Start(header.seq, snap.path, header, loaded.seconds), tail, notices
    first = log.first_seq
    if first > 1:
        target = "" if to_seq is None and to_ts is None else " at or before the point asked for"
        raise RecoveryError(
            f"the log starts at seq {first} (pruned after a snapshot) and no usable snapshot{target} covers it"
            + (f"; refused: {'; '.join(n.removeprefix('jex: ') for n in notices)}" if notices else "")
        )
    return Engine(), Start(0), log.records(1, to_seq), notices


def recover(
    log: LogView,
    snapshots: Path | list[Path] | None,
    *,
    to_seq: int | None = None,
    to_ts: int | None = None,
    earliest: bool = False,
    on_events: Callable[[int, list], None] | None = None,
    check_invariants: bool = False,
    hash_events: bool = False,
    notify: Callable[[str], None] | None = None,
    check_digest: bool = False,
) -> Recovered:
    """Rebuild the state after `to_seq` / at time `to_ts` (default: the end
    of the log) from the nearest usable snapshot at or before it, else
    genesis. `earliest` prefers the earliest start (genesis, else the oldest
    usable snapshot): for callers that want the longest event history.
    `snapshots=None` means genesis only. `check_digest`: see open_start.
    Raises RecoveryError, JournalCorrupt, ReplayError."""
    started = time.perf_counter()
    engine, start, tail, notices = open_start(
        log, snapshots, to_seq=to_seq, to_ts=to_ts, earliest=earliest, notify=notify, check_digest=check_digest
    )
    stats = _replay(engine, tail, to_seq, to_ts, on_events, check_invariants, hash_events)
    return _done(engine, stats, start, notices, started)


def _replay(engine, records, to_seq, to_ts, on_events, check_invariants, hash_events) -> ReplayStats:
    if to_ts is not None:
        records = itertools.takewhile(lambda r: r.ts_ns <= to_ts, records)
    return replay_records(
        engine, records, to_seq=to_seq, on_events=on_events, check_invariants=check_invariants, hash_events=hash_events
    )


def _done(engine, stats: ReplayStats, start: Start, notices: list[str], started: float) -> Recovered:
    if not stats.records and start.header is not None:
        stats.last_seq, stats.last_ts = start.header.seq, start.header.ts_ns
    return Recovered(engine, stats, start, notices, time.perf_counter() - started)


# ----------------------------------------------------------------- retention


@dataclass
class Verdict:
    """One snapshot file judged against the log (checks 1-3 + body checksum)."""

    file: SnapshotFile
    header: SnapshotHeader | None
    error: SnapshotError | None
    size_bytes: int = 0
    chain_ok: bool = False  # the log holds record `seq` with the header's chain value

    @property
    def ok(self) -> bool:
        return self.error is None


def judge(log: LogView, file: SnapshotFile) -> Verdict:
    """Verify a snapshot file without restoring it: header, chain value
    against the log, body checksum. O(file bytes + one segment)."""
    try:
        size = file.path.stat().st_size
    except OSError:
        size = 0
    try:
        header = store.read_header(file.path)
    except SnapshotError as error:
        return Verdict(file, None, error, size)
    try:
        for _ in check_against_log(log, header, file.path, header.seq):
            pass
    except SnapshotError as error:
        return Verdict(file, header, error, size)
    try:
        store.verify(file.path)
    except SnapshotError as error:
        return Verdict(file, header, error, size, chain_ok=True)
    return Verdict(file, header, None, size, chain_ok=True)


@dataclass
class Retention:
    kept: list[int]  # seqs of the snapshots kept, newest first
    deleted_snapshots: list[str]
    pruned_segments: list[str]
    notices: list[str]

    def as_dict(self) -> dict:
        return {
            "kept": self.kept,
            "deleted_snapshots": self.deleted_snapshots,
            "pruned_segments": self.pruned_segments,
            "notices": self.notices,
        }


def retain_and_prune(data_dir: Path | str, *, prune_wal: bool = True, storage: Storage | None = None,
                     files=None) -> Retention:
    """Keep the newest SNAPSHOTS_KEPT valid snapshots, delete the other
    snapshot files, then (with prune_wal) prune WAL segments wholly before
    the older kept one. Needs the writer lock (the node's, or the child of a
    node that holds it). Raises OSError, JournalCorrupt."""
    from jex.journal.prune import prune

    data_dir = Path(data_dir)
    files = files or (storage if storage is not None else store.OS_FILES)
    directory = snapshot_dir(data_dir)
    log = WalView(data_dir / "wal", storage)
    kept: list[Verdict] = []
    dropped: list[Path] = []
    notices: list[str] = []
    for file in reversed(list_snapshots(directory, files).snapshots):
        if len(kept) >= SNAPSHOTS_KEPT:
            dropped.append(file.path)
            continue
        verdict = judge(log, file)
        if verdict.ok:
            kept.append(verdict)
        else:
            notices.append(f"jex: {verdict.error}; deleting it")
            dropped.append(file.path)
    store.delete(dropped, directory, files)
    pruned: list[Path] = []
    if prune_wal and len(kept) >= SNAPSHOTS_KEPT:
        pruned = prune(data_dir / "wal", min(v.header.seq for v in kept), storage=storage)
    return Retention([v.header.seq for v in kept], [p.name for p in dropped], [p.name for p in pruned], notices)
