"""The scanner and the recovery decision table (room: jex.journal).

Scanning walks the segments in segid order, verifying every record (magic,
checksums, nonce, gapless seq, parent chain, padding) and the chain across
segment boundaries. For each segment it reduces what it saw to four facts,
and the DECISION_TABLE maps the facts to exactly one row: CONTINUE to the
next segment, or stop with CLEAN, TORN (repairable) or CORRUPT (refuse to
start, change nothing). The Report names the rows used and, when something
is wrong, the file, offset, seq and reason.

The facts (what a torn write can and cannot explain):

  header     the segment's own header: ABSENT (no segments at all), VALID,
             INVALID. Only the first segment's header is judged here; a later
             header is part of its predecessor's `successor` fact.
  tail       what follows the last verified record E of the segment:
               ZERO         only zero bytes
               SEALED       a SEAL record, then only zero bytes
               SEAL_GARBAGE a SEAL record, then something non-zero
               TORN_LIKE    damage (bad checksum, foreign nonce, cut-off body,
                            garbage) and no later record validates with this
                            segment's nonce
               VALID_AFTER  damage, then a later record that does validate:
                            the damaged record was once written whole
               MISPLACED    the record at E carries a correct header checksum and
                            this segment's nonce but is not the record expected
                            there (duplicate, swap, seq gap, chain break, unknown
                            version/type, oversized payload_len): a torn write
                            never produces a valid header for the wrong record
  window     INSIDE if every non-zero byte after E lies within the bytes the
             interrupted write could have touched: one maximum batch
             (TORN_WINDOW_BYTES) for a last segment, one SEAL record for a
             segment whose successor is waiting for its SEAL; else BEYOND
  successor  how the next segment's header continues this one:
               NONE                this is the last segment
               CONTINUES_SEALED    first_seq = last seq + 1, prev_chain = chain
               CONTINUES_UNSEALED  the same, with FLAG_PREV_UNSEALED (the next
                                   segment was started by a torn-tail repair)
               EXPECTS_SEAL        the next segment is the last, holds no
                                   records, and its header continues from the
                                   exact SEAL this segment is missing: a
                                   rollover was interrupted before its SEAL
               BROKEN              anything else: bad header, missing segid,
                                   seq gap, chain break, SEAL lost under records

The verdict is CORRUPT unless a row explains the state as an interrupted
write. As spec/journal.md demands, a bad record followed by a valid one is
CORRUPT even inside the last batch: the format has no batch boundaries, so
"bit rot in record N-1" and "the in-flight batch persisted out of order"
look the same, and the node refuses rather than guesses.

Public: scan(), verify(), stat(), read_records(), iter_segment_records(),
decide(), DECISION_TABLE, Report. No function here writes anything.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path

from jex.journal.errors import JournalCorrupt, RecordError, SegmentHeaderError
from jex.journal.limits import (
    RECORD_ALIGN_BYTES,
    SEAL_RECORD_BYTES,
    SEGMENT_HEADER_BYTES,
    TORN_WINDOW_BYTES,
)
from jex.journal.record import (
    Record,
    RecordCursor,
    RecordType,
    encode_one,
    find_validating_header,
    header_validates,
)
from jex.journal.segment import FLAG_PREV_UNSEALED, SegmentFile, SegmentHeader, list_segments
from jex.journal.storage import OsStorage, Storage


class Decision(str, Enum):
    CLEAN = "clean"
    TORN = "torn"
    CORRUPT = "corrupt"
    CONTINUE = "continue"  # This segment is fine; judge the next one.


class HeaderFact(str, Enum):
    ABSENT = "absent"
    VALID = "valid"
    INVALID = "invalid"


class TailFact(str, Enum):
    ZERO = "zero"
    SEALED = "sealed"
    SEAL_GARBAGE = "seal_garbage"
    TORN_LIKE = "torn_like"
    VALID_AFTER = "valid_after"
    MISPLACED = "misplaced"


class WindowFact(str, Enum):
    INSIDE = "inside"
    BEYOND = "beyond"


class SuccessorFact(str, Enum):
    NONE = "none"
    CONTINUES_SEALED = "continues_sealed"
    CONTINUES_UNSEALED = "continues_unsealed"
    EXPECTS_SEAL = "expects_seal"
    BROKEN = "broken"


@dataclass(frozen=True)
class Facts:
    header: HeaderFact
    tail: TailFact
    window: WindowFact
    successor: SuccessorFact


@dataclass(frozen=True)
class Row:
    """One row of the decision table. None in a column means "any value"."""

    name: str
    header: frozenset[HeaderFact] | None
    tail: frozenset[TailFact] | None
    window: frozenset[WindowFact] | None
    successor: frozenset[SuccessorFact] | None
    decision: Decision
    why: str

    def matches(self, facts: Facts) -> bool:
        return (
            (self.header is None or facts.header in self.header)
            and (self.tail is None or facts.tail in self.tail)
            and (self.window is None or facts.window in self.window)
            and (self.successor is None or facts.successor in self.successor)
        )


def _row(name, header, tail, window, successor, decision, why) -> Row:  # noqa: ANN001 - table sugar
    def column(values):  # noqa: ANN001, ANN202
        if values is None:
            return None
        return frozenset(values if isinstance(values, (set, frozenset, tuple, list)) else (values,))

    return Row(name, column(header), column(tail), column(window), column(successor), decision, why)


H, T, W, S, D = HeaderFact, TailFact, WindowFact, SuccessorFact, Decision
ANY = None

# fmt: off
DECISION_TABLE: tuple[Row, ...] = (
    _row("empty_log", H.ABSENT, ANY, ANY, ANY, D.CLEAN,
         "no segment files: a new log"),
    _row("bad_segment_header", H.INVALID, ANY, ANY, ANY, D.CORRUPT,
         "the first segment's header is damaged; it was synced before the file got its name"),
    _row("clean_end", H.VALID, T.ZERO, ANY, S.NONE, D.CLEAN,
         "the last segment ends in zeros after its last record"),
    _row("unsealed_by_repair", H.VALID, T.ZERO, ANY, S.CONTINUES_UNSEALED, D.CONTINUE,
         "closed by a torn-tail repair; the next header continues it and says so"),
    _row("unsealed_without_flag", H.VALID, T.ZERO, ANY, S.CONTINUES_SEALED, D.CORRUPT,
         "no SEAL, yet the next header claims a plain continuation"),
    _row("rollover_incomplete", H.VALID, T.ZERO, ANY, S.EXPECTS_SEAL, D.TORN,
         "crash after the next segment was created, before the SEAL was written"),
    _row("broken_segment_chain", H.VALID, (T.ZERO, T.SEALED), ANY, S.BROKEN, D.CORRUPT,
         "the next segment does not continue this one (missing segment, seq gap, chain break, bad header)"),
    _row("sealed", H.VALID, T.SEALED, ANY, S.CONTINUES_SEALED, D.CONTINUE,
         "sealed, and the next header continues from the SEAL"),
    _row("successor_missing", H.VALID, T.SEALED, ANY, S.NONE, D.CORRUPT,
         "sealed, but the segment created before the SEAL is gone"),
    _row("seal_contradiction", H.VALID, T.SEALED, ANY, (S.CONTINUES_UNSEALED, S.EXPECTS_SEAL), D.CORRUPT,
         "sealed, yet the next header says it was closed without a SEAL"),
    _row("torn_tail", H.VALID, T.TORN_LIKE, W.INSIDE, S.NONE, D.TORN,
         "the last batch was torn by a crash: damage within one batch of the tail, nothing valid after"),
    _row("rollover_incomplete_torn_seal", H.VALID, T.TORN_LIKE, W.INSIDE, S.EXPECTS_SEAL, D.TORN,
         "crash while writing the SEAL after the next segment was created"),
    _row("damage_beyond_window", H.VALID, T.TORN_LIKE, W.BEYOND, (S.NONE, S.EXPECTS_SEAL), D.CORRUPT,
         "damage reaches further than the one write that could have been in flight"),
    _row("damage_in_closed_segment", H.VALID, T.TORN_LIKE, ANY,
         (S.CONTINUES_SEALED, S.CONTINUES_UNSEALED, S.BROKEN), D.CORRUPT,
         "damage in a segment that was synced and closed before its successor was written"),
    _row("valid_record_after_damage", H.VALID, T.VALID_AFTER, ANY, ANY, D.CORRUPT,
         "a later record validates, so the damaged one was once written whole"),
    _row("misplaced_record", H.VALID, T.MISPLACED, ANY, ANY, D.CORRUPT,
         "a valid header of the wrong record (duplicate, swap, gap, unknown field)"),
    _row("garbage_after_seal", H.VALID, T.SEAL_GARBAGE, ANY, ANY, D.CORRUPT,
         "bytes after a SEAL: nothing is ever written there"),
)
# fmt: on

ROWS_BY_NAME = {row.name: row for row in DECISION_TABLE}
assert len(ROWS_BY_NAME) == len(DECISION_TABLE)


def all_facts() -> Iterator[Facts]:
    """Every input pattern of the table (for the exactly-one-row test)."""
    for values in itertools.product(HeaderFact, TailFact, WindowFact, SuccessorFact):
        yield Facts(*values)


def decide(facts: Facts) -> Row:
    """The one row of DECISION_TABLE that matches `facts`."""
    rows = [row for row in DECISION_TABLE if row.matches(facts)]
    assert len(rows) == 1, (facts, [row.name for row in rows])
    return rows[0]


# Reasons that a record at E with a valid header and this segment's nonce
# can fail with: none of them can be produced by a torn write.
_MISPLACED_REASONS = frozenset(
    {"unknown_version", "unknown_type", "payload_len_too_large", "seq_gap", "chain_break", "seal_with_payload"}
)


@dataclass(frozen=True)
class Problem:
    path: Path
    offset: int
    seq: int
    reason: str  # The decision-table row.
    detail: str  # The decoder's reason, e.g. body_checksum, missing_segment.

    def __str__(self) -> str:
        return f"{self.path} offset {self.offset} seq {self.seq}: {self.reason} ({self.detail})"


@dataclass(frozen=True)
class SegmentSummary:
    path: Path
    segid: int
    first_seq: int
    last_seq: int  # first_seq - 1 when it holds no verified record
    records: int  # verified records, SEAL included
    size_bytes: int
    used_bytes: int  # header + verified records
    sealed: bool
    flags: int

    @property
    def fill(self) -> float:
        return self.used_bytes / self.size_bytes if self.size_bytes else 0.0


@dataclass(frozen=True)
class SegmentEnd:
    """Where the verified records of one segment end: what a writer needs to
    continue it, or a repair needs to fix it."""

    path: Path
    segid: int
    nonce: int
    size_bytes: int
    records_end: int  # E: offset just after the last verified record
    nonzero_end: int  # D: offset just after the last non-zero byte at or after E
    last_seq: int
    chain: bytes
    last_ts: int
    sealed: bool

    def seal_record(self) -> tuple[bytearray, bytes]:
        """The SEAL a rollover appends here: (bytes, chain). Deterministic, so
        recovery can rebuild a SEAL that a crash prevented from landing and
        check it against the chain value the next header already holds."""
        return encode_one(
            self.last_seq + 1, self.last_ts, b"",
            parent=self.chain, nonce=self.nonce, record_type=RecordType.SEAL,
        )  # fmt: skip


@dataclass
class Report:
    """The outcome of a scan. `row` decided; `rows` lists one row per segment judged."""

    wal_dir: Path
    decision: Decision
    row: str
    rows: list[str]
    problem: Problem | None
    segments: list[SegmentSummary]
    segment_files: list[Path]
    first_seq: int  # seq of the first record the log holds (log may start after pruning)
    last_seq: int  # last verified seq (0 for an empty log)
    chain: bytes  # chain value at last_seq
    last_ts: int
    records: int
    end: SegmentEnd | None  # where a writer continues (CLEAN), or what to repair (TORN)
    active_header: SegmentHeader | None  # the last segment's header
    tmp_files: list[Path] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.decision is Decision.CLEAN

    def as_dict(self) -> dict:
        """JSON-ready summary (the `journal verify --json` shape)."""
        return {
            "wal_dir": str(self.wal_dir),
            "decision": self.decision.value,
            "row": self.row,
            "rows": self.rows,
            "problem": None if self.problem is None else {
                "path": str(self.problem.path), "offset": self.problem.offset,
                "seq": self.problem.seq, "reason": self.problem.reason, "detail": self.problem.detail,
            },
            "segments": len(self.segment_files),
            "records": self.records,
            "first_seq": self.first_seq,
            "last_seq": self.last_seq,
            "chain": self.chain.hex(),
        }  # fmt: skip


@dataclass
class _Walk:
    """One segment's records walked: the state the facts are computed from."""

    file: SegmentFile
    header: SegmentHeader
    data: bytes
    end: SegmentEnd
    first_seq: int
    records: int
    error: RecordError | None  # why the walk stopped, None for a clean stop


def scan(wal_dir: Path, *, storage: Storage | None = None) -> Report:
    """Verify the whole log and decide. Reads only; O(log bytes), one
    segment in memory at a time (~1 us per 64-byte record)."""
    storage = storage or OsStorage()
    listing = list_segments(storage, wal_dir)
    files = listing.segments
    base = _Base(wal_dir, [s.path for s in files], listing.tmp_files)
    if listing.bad_names:
        return base.header_problem(listing.bad_names[0], "bad_segment_name", 0)
    if not files:
        row = decide(Facts(H.ABSENT, T.ZERO, W.INSIDE, S.NONE))
        return base.report(row, [row.name], None, [], None, None, 0)
    try:
        header = SegmentHeader.decode(_read_header(storage, files[0].path), name=files[0].path.name)
    except SegmentHeaderError as error:
        return base.header_problem(files[0].path, error.reason, files[0].first_seq, error.detail)
    rows: list[str] = []
    summaries: list[SegmentSummary] = []
    ts_ns = 0
    for index, file in enumerate(files):
        walk = _walk_segment(storage, file, header, ts_ns)
        summaries.append(_summary(walk))
        successor, detail, next_header = _successor(storage, walk, files[index + 1 :])
        facts = _facts(walk, successor)
        row = decide(facts)
        rows.append(row.name)
        if row.decision is not Decision.CONTINUE:
            problem = _problem(row, walk, successor, detail, files[index + 1 :])
            first_seq = summaries[0].first_seq
            active = next_header if successor is S.EXPECTS_SEAL else walk.header
            return base.report(row, rows, problem, summaries, walk.end, active, first_seq)
        header, ts_ns = next_header, walk.end.last_ts
    raise AssertionError("the last segment always has successor NONE, which never continues")


@dataclass
class _Base:
    wal_dir: Path
    segment_files: list[Path]
    tmp_files: list[Path]

    def report(self, row, rows, problem, summaries, end, active, first_seq) -> Report:  # noqa: ANN001
        records = sum(s.records for s in summaries)
        return Report(
            self.wal_dir, row.decision, row.name, rows, problem, summaries, self.segment_files,
            first_seq=first_seq or (summaries[0].first_seq if summaries else 1),
            last_seq=end.last_seq if end else 0,
            chain=end.chain if end else bytes(16),
            last_ts=end.last_ts if end else 0,
            records=records, end=end, active_header=active, tmp_files=self.tmp_files,
        )  # fmt: skip

    def header_problem(self, path: Path, detail: str, seq: int, more: str = "") -> Report:
        row = decide(Facts(H.INVALID, T.ZERO, W.INSIDE, S.NONE))
        problem = Problem(path, 0, seq, row.name, f"{detail} {more}".strip())
        return self.report(row, [row.name], problem, [], None, None, 0)


def _read_header(storage: Storage, path: Path) -> bytes:
    fd = storage.open(path)
    try:
        return storage.pread(fd, SEGMENT_HEADER_BYTES, 0)
    finally:
        storage.close(fd)


def _walk_segment(storage: Storage, file: SegmentFile, header: SegmentHeader, ts_ns: int) -> _Walk:
    """Verify the records of one segment from its header on."""
    data = storage.read_all(file.path)
    cursor = RecordCursor(
        data, SEGMENT_HEADER_BYTES, len(data),
        nonce=header.nonce, seq=header.first_seq, parent=header.prev_chain, ts_ns=ts_ns,
    )  # fmt: skip
    for _ in cursor:
        pass
    end = SegmentEnd(
        file.path, header.segid, header.nonce, len(data), cursor.offset,
        _nonzero_end(data, cursor.offset), cursor.seq - 1, cursor.parent, cursor.ts_ns, cursor.sealed,
    )  # fmt: skip
    return _Walk(file, header, data, end, header.first_seq, cursor.count, cursor.stop_error())


def _nonzero_end(data: bytes, start: int, chunk_bytes: int = 1 << 16) -> int:
    """Offset just after the last non-zero byte at or after `start` (or
    `start` if there is none). Scans backwards in bounded chunks."""
    hi = len(data)
    while hi > start:
        lo = max(start, hi - chunk_bytes)
        kept = data[lo:hi].rstrip(b"\0")
        if kept:
            return lo + len(kept)
        hi = lo
    return start


def _tail(walk: _Walk) -> TailFact:
    end, data = walk.end, walk.data
    nonzero_after = end.nonzero_end > end.records_end
    if end.sealed:
        return T.SEAL_GARBAGE if nonzero_after else T.SEALED
    error = walk.error
    if error is None and not nonzero_after:
        return T.ZERO
    nonce = walk.header.nonce
    if error is not None and error.reason in _MISPLACED_REASONS:
        if header_validates(data, end.records_end, nonce):
            return T.MISPLACED
    search_from = end.records_end + RECORD_ALIGN_BYTES
    if find_validating_header(data, search_from, end.nonzero_end, nonce) is not None:
        return T.VALID_AFTER
    return T.TORN_LIKE


def _facts(walk: _Walk, successor: SuccessorFact) -> Facts:
    limit = SEAL_RECORD_BYTES if successor is S.EXPECTS_SEAL else TORN_WINDOW_BYTES
    damage = walk.end.nonzero_end - walk.end.records_end
    window = W.INSIDE if damage <= limit else W.BEYOND
    return Facts(H.VALID, _tail(walk), window, successor)


def _successor(
    storage: Storage, walk: _Walk, later: list[SegmentFile]
) -> tuple[SuccessorFact, str, SegmentHeader | None]:
    """How the next segment's header continues `walk`'s segment."""
    if not later:
        return S.NONE, "", None
    nxt = later[0]
    try:
        header = SegmentHeader.decode(_read_header(storage, nxt.path), name=nxt.path.name)
    except SegmentHeaderError as error:
        return S.BROKEN, f"next segment header: {error.reason}", None
    end = walk.end
    if header.segid != end.segid + 1:
        return S.BROKEN, f"missing_segment (segid {end.segid:x} is followed by {header.segid:x})", header
    if header.first_seq == end.last_seq + 1 and header.prev_chain == end.chain:
        if header.flags & FLAG_PREV_UNSEALED:
            return S.CONTINUES_UNSEALED, "", header
        return S.CONTINUES_SEALED, "", header
    if (
        not end.sealed
        and not header.flags & FLAG_PREV_UNSEALED
        and header.first_seq == end.last_seq + 2
        and header.prev_chain == end.seal_record()[1]
    ):
        if len(later) == 1 and _holds_no_records(storage, nxt.path):
            return S.EXPECTS_SEAL, "seal_missing", header
        return S.BROKEN, "seal_lost (the next segment continues from a SEAL that is not there)", header
    if header.first_seq != end.last_seq + 1:
        return S.BROKEN, f"seq_gap (next segment starts at {header.first_seq}, expected {end.last_seq + 1})", header
    return S.BROKEN, "chain_break (next segment's prev_chain does not match)", header


def _holds_no_records(storage: Storage, path: Path) -> bool:
    data = storage.read_all(path)
    return _nonzero_end(data, SEGMENT_HEADER_BYTES) == SEGMENT_HEADER_BYTES


_BOUNDARY_ROWS = frozenset({"broken_segment_chain", "unsealed_without_flag", "seal_contradiction"})


def _problem(
    row: Row, walk: _Walk, successor: SuccessorFact, detail: str, later: list[SegmentFile]
) -> Problem | None:
    """Where and why, for every row that is not CLEAN: at the next segment's
    header for boundary rows, otherwise at the end of the verified records."""
    if row.decision is Decision.CLEAN:
        return None
    if row.name in _BOUNDARY_ROWS:
        return Problem(later[0].path, 0, later[0].first_seq, row.name, detail or successor.value)
    end = walk.end
    if walk.error is not None:
        reason = walk.error.reason + (f": {walk.error.detail}" if walk.error.detail else "")
    elif row.name == "successor_missing":
        reason = "a sealed segment has no successor"
    elif row.name == "rollover_incomplete":
        reason = detail
    elif end.sealed:
        reason = "non-zero bytes after the SEAL"
    else:
        reason = "non-zero bytes after the last record"
    return Problem(end.path, end.records_end, end.last_seq + 1, row.name, reason)


def _summary(walk: _Walk) -> SegmentSummary:
    end = walk.end
    return SegmentSummary(
        end.path, end.segid, walk.first_seq, end.last_seq, walk.records,
        end.size_bytes, end.records_end, end.sealed, walk.header.flags,
    )  # fmt: skip


def verify(wal_dir: Path, *, storage: Storage | None = None) -> Report:
    """Walk the whole chain and report CLEAN / TORN / CORRUPT with the first
    problem. Needs no lock and changes nothing (on a live journal it may see
    the batch being written as a torn tail)."""
    return scan(Path(wal_dir), storage=storage)


def stat(wal_dir: Path, *, storage: Storage | None = None) -> Report:
    """Per-segment first/last seq, size and fill, plus the decision. The
    summaries cover the segments walked before any decision stopped the scan."""
    return scan(Path(wal_dir), storage=storage)


def read_records(
    wal_dir: Path, from_seq: int = 1, *, to_seq: int | None = None, storage: Storage | None = None
) -> Iterator[Record]:
    """Verified records with from_seq <= seq <= to_seq, in order; read-only,
    no lock needed.

    Without to_seq the whole log is verified first (one extra pass) and
    JournalCorrupt is raised before anything is yielded if it is corrupt; a
    torn tail just ends the iteration (it holds nothing acknowledged). With
    to_seq (e.g. a live journal's durable seq) it reads up to there and
    never looks at the tail, which a live writer may be changing.
    """
    storage = storage or OsStorage()
    wal_dir = Path(wal_dir)
    if to_seq is None:
        report = scan(wal_dir, storage=storage)
        if report.decision is Decision.CORRUPT:
            raise corrupt_error(report)
        to_seq = report.last_seq
    yield from iter_segment_records(storage, wal_dir, from_seq, to_seq)


def iter_segment_records(storage: Storage, wal_dir: Path, from_seq: int, to_seq: int) -> Iterator[Record]:
    """Records from_seq..to_seq, starting at the segment that holds from_seq.

    Every record is verified again (checksums, nonce, seq, chain from the
    segment's header). Records the caller knows are there (up to to_seq)
    that are missing or fail raise JournalCorrupt. O(bytes of the segments
    read); earlier segments are skipped by their file names.
    """
    files = list_segments(storage, wal_dir).segments
    start = max((i for i, f in enumerate(files) if f.first_seq <= from_seq), default=0)
    seq = files[start].first_seq if files else from_seq
    for file in files[start:]:
        if seq > to_seq:
            return
        data = storage.read_all(file.path)
        try:
            header = SegmentHeader.decode(data[:SEGMENT_HEADER_BYTES], name=file.path.name)
        except SegmentHeaderError as error:
            raise JournalCorrupt(file.path, 0, seq, "bad_segment_header", error.reason) from None
        if header.first_seq != seq:
            raise JournalCorrupt(file.path, 0, seq, "record_missing", f"segment starts at {header.first_seq}")
        cursor = RecordCursor(
            data, SEGMENT_HEADER_BYTES, len(data),
            nonce=header.nonce, seq=header.first_seq, parent=header.prev_chain, ts_ns=0,
        )  # fmt: skip
        for record in cursor:
            if record.seq > to_seq:
                return
            if record.seq >= from_seq:
                yield record
        seq = cursor.seq
        error = cursor.stop_error()
        if seq <= to_seq and error is not None:
            raise JournalCorrupt(file.path, cursor.offset, seq, "record_unreadable", str(error))
    if seq <= to_seq:
        raise JournalCorrupt(wal_dir, 0, seq, "record_missing", f"records up to {to_seq} were expected")


def corrupt_error(report: Report) -> JournalCorrupt:
    """The JournalCorrupt that a CORRUPT report stands for."""
    problem = report.problem
    assert problem is not None
    return JournalCorrupt(problem.path, problem.offset, problem.seq, problem.reason, problem.detail)
