"""The scanner and the recovery decision table (room: jex.journal).

Scanning walks the segments in segid order, verifying every record (magic,
checksums, nonce, gapless seq, parent chain, padding) and the chain across
segment boundaries. For each segment it reduces what it saw to four facts,
and the DECISION_TABLE maps the facts to exactly one row: CONTINUE to the
next segment, or stop with CLEAN, TORN (repairable) or CORRUPT (refuse to
start, change nothing). The Report names the rows used and, when something
is wrong, the file, offset, seq and reason.

Words. E is the end of the segment's verified records. The final batch
starts at B <= E: just after the last verified record that ends a batch
(record.FLAG_BATCH_END; every version-1 record counts as one), else at the
segment's first record. B < E means the records B..E verified but their
batch's last record did not (an open batch).

The facts (what a torn write can and cannot explain):

  header     the segment's own header: ABSENT (no segments at all), VALID,
             INVALID. Only the first segment's header is judged here; a later
             header is part of its predecessor's `successor` fact.
  tail       what follows E:
               ZERO           only zero bytes
               SEALED         a SEAL record, then only zero bytes
               SEAL_GARBAGE   a SEAL record, then something non-zero
               TORN_LIKE      damage (bad checksum, foreign nonce, cut-off body,
                              garbage) and no later record validates with this
                              segment's nonce
               VALID_IN_BATCH damage, then records that validate, and every one
                              of them may belong to the damaged record's batch:
                              COMMAND records of version 2, none following a
                              record flagged BATCH_END (nor is the damaged
                              record, if its header still validates, so
                              flagged), seqs rising and consistent with their
                              offsets, all within one maximum batch of B
               VALID_AFTER    damage, then a record that validates and proves
                              the damaged one was synced: it follows a
                              BATCH_END, or is a batch of its own (SEAL,
                              CHECKPOINT), or is version 1 (no batch
                              information), or is out of place, or lies beyond
                              what the final batch could span. The node writes
                              batch k+1 only after batch k's sync completed
               MISPLACED      the record at E carries a correct header checksum
                              and this segment's nonce but is not the record
                              expected there (duplicate, swap, seq gap, chain
                              break, unknown version/type, oversized
                              payload_len): a torn write never produces a valid
                              header for the wrong record
  window     INSIDE if every non-zero byte after E lies within the bytes the
             interrupted write could have touched: one maximum batch from B
             (TORN_WINDOW_BYTES) for a last segment, one SEAL record for a
             segment whose successor is waiting for its SEAL; else BEYOND
  successor  how the next segment's header continues this one:
               NONE                this is the last segment
               CONTINUES_SEALED    first_seq = last seq + 1, prev_chain = chain
               CONTINUES_UNSEALED  the same, with FLAG_PREV_UNSEALED (the next
                                   segment was started by a repair)
               EXPECTS_SEAL        the next segment is the last, holds no
                                   records, and its header continues from the
                                   exact SEAL this segment is missing: a
                                   rollover was interrupted before its SEAL
               BROKEN              anything else: bad header, missing segid,
                                   seq gap, chain break, SEAL lost under records

The verdict is CORRUPT unless a row explains the state as an interrupted
write. A bad record followed by a valid one is CORRUPT (spec/journal.md,
behaviour 10). When everything from the damage on lies inside the log's
final batch (VALID_IN_BATCH, INSIDE, last segment) the verdict is still
CORRUPT, under its own row `unproven_final_batch`: a batch in flight at a
power cut that landed out of order (never acknowledged) and bit rot in a
synced final batch look the same, so the node refuses, and the error (a
JournalUnproven) names the batch's seqs and the operator's way out
(`jex journal repair --final-batch`, writer.repair). Damage in any earlier
batch is plain CORRUPT.

What is read. Records are read in chunks up to E (reader.SegmentCursor):
O(data). After E the scanner reads TAIL_READ_BYTES (the window plus one
maximal record) and judges the facts there. Beyond that it reads on (at
memcmp speed, searching only non-zero chunks for the nonce) only where a
hidden record could matter: in the last segment, where acknowledged records
after a zeroed stretch must never be mistaken for free space, and after
damage. A closed segment's bytes beyond the window are not read: nothing is
ever written there, and the successor's header, which continues the chain
from this segment's last record, shows that no acknowledged record is.

Anchored scans. scan(start=Anchor(seq, chain)) (Journal.open(verify_from=),
the node passing its newest snapshot's record) reads only the headers of the
segments before the one holding that record, finds the record by its chain
value (reader.find_anchor) and walks from it: everything from there on is
judged exactly as above, nothing before it is read. Where the shortcut does
not apply cleanly the whole log is scanned (see scan()).

Public: scan(), verify(), stat(), read_records(), iter_segment_records(),
decide(), DECISION_TABLE, Report. No function here writes anything.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Generator, Iterator
from dataclasses import dataclass, field, replace
from enum import Enum
from pathlib import Path

from jex.journal.errors import JournalCorrupt, JournalUnproven, RecordError, SegmentHeaderError
from jex.journal.limits import (
    RECORD_ALIGN_BYTES,
    RECORD_HEADER_BYTES,
    SEAL_RECORD_BYTES,
    SEGMENT_HEADER_BYTES,
    TORN_WINDOW_BYTES,
)
from jex.journal.reader import (
    Anchor,
    Beyond,
    SegmentCursor,
    find_anchor,
    keep_nothing,
    last_nonzero,
    read_tail,
    scan_beyond,
    segment_cursor,
    zero_after,
)
from jex.journal.record import (
    VERSION,
    VERSIONS_READABLE,
    CommandSink,
    Header,
    Record,
    RecordType,
    decode_header,
    encode_one,
    find_validating_header,
    header_validates,
    record_bytes,
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
    VALID_IN_BATCH = "valid_in_batch"
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
CLOSED = (S.CONTINUES_SEALED, S.CONTINUES_UNSEALED, S.EXPECTS_SEAL, S.BROKEN)  # a later segment exists

# fmt: off
DECISION_TABLE: tuple[Row, ...] = (
    _row("empty_log", H.ABSENT, ANY, ANY, ANY, D.CLEAN,
         "no segment files: a new log"),
    _row("bad_segment_header", H.INVALID, ANY, ANY, ANY, D.CORRUPT,
         "the first segment's header is damaged; it was synced before the file got its name"),
    _row("clean_end", H.VALID, T.ZERO, ANY, S.NONE, D.CLEAN,
         "the last segment ends in zeros after its last record"),
    _row("unsealed_by_repair", H.VALID, T.ZERO, ANY, S.CONTINUES_UNSEALED, D.CONTINUE,
         "closed by a repair; the next header continues it and says so"),
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
         "the last batch was torn by a crash: damage within one batch of its start, nothing valid after"),
    _row("rollover_incomplete_torn_seal", H.VALID, T.TORN_LIKE, W.INSIDE, S.EXPECTS_SEAL, D.TORN,
         "crash while writing the SEAL after the next segment was created"),
    _row("damage_beyond_window", H.VALID, T.TORN_LIKE, W.BEYOND, (S.NONE, S.EXPECTS_SEAL), D.CORRUPT,
         "damage reaches further than the one write that could have been in flight"),
    _row("damage_in_closed_segment", H.VALID, T.TORN_LIKE, ANY,
         (S.CONTINUES_SEALED, S.CONTINUES_UNSEALED, S.BROKEN), D.CORRUPT,
         "damage in a segment that was synced and closed before its successor was written"),
    _row("unproven_final_batch", H.VALID, T.VALID_IN_BATCH, W.INSIDE, S.NONE, D.CORRUPT,
         "damage, then valid records, all inside the log's final batch: a write in flight at a power cut "
         "(never acknowledged) or rot in acknowledged data; refused, `repair --final-batch` may quarantine it"),
    _row("final_batch_beyond_window", H.VALID, T.VALID_IN_BATCH, W.BEYOND, ANY, D.CORRUPT,
         "damage and valid records of one batch, but non-zero bytes reach past what that batch could span"),
    _row("batch_damage_in_closed_segment", H.VALID, T.VALID_IN_BATCH, W.INSIDE, CLOSED, D.CORRUPT,
         "damage and valid records of one batch in a segment a later segment follows: that batch was synced"),
    _row("valid_record_after_damage", H.VALID, T.VALID_AFTER, ANY, ANY, D.CORRUPT,
         "a record of a later batch validates, so the damaged one was synced"),
    _row("misplaced_record", H.VALID, T.MISPLACED, ANY, ANY, D.CORRUPT,
         "a valid header of the wrong record (duplicate, swap, gap, unknown field)"),
    _row("garbage_after_seal", H.VALID, T.SEAL_GARBAGE, ANY, ANY, D.CORRUPT,
         "bytes after a SEAL: nothing is ever written there"),
)
# fmt: on

ROWS_BY_NAME = {row.name: row for row in DECISION_TABLE}
assert len(ROWS_BY_NAME) == len(DECISION_TABLE)
UNPROVEN_ROW = "unproven_final_batch"


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
    nonzero_end: int  # D: offset just after the last non-zero byte at or after E (of the bytes examined)
    last_seq: int
    chain: bytes
    last_ts: int
    sealed: bool
    # B: where the final batch starts, the seq its first record carries, and
    # the chain and timestamp before it (the log's end once that batch is
    # quarantined).
    batch_offset: int
    batch_seq: int
    batch_chain: bytes
    batch_ts: int

    @property
    def batch_open(self) -> bool:
        """The last verified record does not end its batch (the rest of that
        batch was lost or is damaged)."""
        return self.batch_offset < self.records_end

    def seal_record(self, version: int = VERSION) -> tuple[bytearray, bytes]:
        """The SEAL a rollover appends here: (bytes, chain). Deterministic, so
        recovery can rebuild a SEAL that a crash prevented from landing and
        check it against the chain value the next header already holds."""
        return encode_one(
            self.last_seq + 1, self.last_ts, b"",
            parent=self.chain, nonce=self.nonce, record_type=RecordType.SEAL, version=version,
        )  # fmt: skip

    def seal_for(self, prev_chain: bytes) -> tuple[bytearray, bytes] | None:
        """The SEAL (of any readable version: a crash may interrupt the
        rollover of a log written before an upgrade) whose chain value is
        `prev_chain`, or None."""
        for version in sorted(VERSIONS_READABLE, reverse=True):
            seal = self.seal_record(version)
            if seal[1] == prev_chain:
                return seal
        return None


@dataclass(frozen=True)
class FinalBatch:
    """The log's final batch when it is unproven (row unproven_final_batch):
    what `repair --final-batch` quarantines, from `offset` (B) on."""

    path: Path
    offset: int
    first_seq: int
    last_seq: int  # the highest seq that validates in it

    def advice(self) -> str:
        return (
            f"the last batch (seq {self.first_seq}..{self.last_seq}) is incomplete: either a write interrupted "
            f"by power loss (never acknowledged) or corruption of acknowledged data; if this machine lost power, "
            f"run `jex journal repair --final-batch` to quarantine it"
        )


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
    end: SegmentEnd | None  # where a writer continues (CLEAN), or what to repair (TORN, unproven)
    active_header: SegmentHeader | None  # the last segment's header
    tmp_files: list[Path] = field(default_factory=list)
    final_batch: FinalBatch | None = None  # set for row unproven_final_batch
    # The first seq whose record this scan verified: first_seq for a full
    # scan, the anchor's seq for an anchored one (scan(start=...)).
    verified_from_seq: int = 0

    @property
    def ok(self) -> bool:
        return self.decision is Decision.CLEAN

    @property
    def unproven(self) -> bool:
        """CORRUPT, but only because the final batch cannot be proven unacknowledged."""
        return self.row == UNPROVEN_ROW

    def as_dict(self) -> dict:
        """JSON-ready summary (the `journal verify --json` shape)."""
        batch = self.final_batch
        return {
            "wal_dir": str(self.wal_dir),
            "decision": self.decision.value,
            "row": self.row,
            "rows": self.rows,
            "problem": None if self.problem is None else {
                "path": str(self.problem.path), "offset": self.problem.offset,
                "seq": self.problem.seq, "reason": self.problem.reason, "detail": self.problem.detail,
            },
            "final_batch": None if batch is None else {
                "path": str(batch.path), "offset": batch.offset,
                "first_seq": batch.first_seq, "last_seq": batch.last_seq,
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
    end: SegmentEnd
    first_seq: int
    records: int
    error: RecordError | None  # why the walk stopped, None for a clean stop
    tail: bytes  # the bytes from E on (TAIL_READ_BYTES, fewer at the file's end)
    beyond: Beyond | None = None  # what lies after `tail`, when it was read (_needs_beyond)


def scan(
    wal_dir: Path,
    *,
    storage: Storage | None = None,
    start: Anchor | None = None,
    consume: Callable[[SegmentCursor], object] | None = None,
) -> Report:
    """Verify the log and decide. Reads only; one chunk in memory at a time.
    O(record bytes) (~0.8 us per 64-byte record) plus, for the last segment
    only, a memcmp-speed pass over its zeros (~9 ms per 64 MiB).

    `start` (an Anchor: a record the caller trusts, e.g. the newest
    snapshot's seq and chain value) verifies only what a recovery from it
    needs: the headers of the segments before the one holding it (checksum,
    name, segids without a gap, rising first seqs), then everything from
    that record on exactly as a full scan does (every record, the chain,
    padding, the tail window, the segment boundaries, the decision table).
    The records before it are not read. Whenever the shortcut does not
    apply cleanly (a skipped header does not verify, the anchor's record is
    not found, does not end a batch, or does not verify) the whole log is
    scanned instead, so the verdict on the part verified is always the full
    scan's. `Report.verified_from_seq` says where verification began.

    `consume`, if given, is called with each walked segment's cursor
    (reader.SegmentCursor) and must walk it to its end, by iterating its
    verified records or by handing it a CommandSink (apply_commands, the
    replay's fused loop): a reader that wants the records gets them in the
    same pass that judges them (rebuild). It sees a segment's records
    before the verdict: the caller checks `decision`.
    """
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
    log_first_seq = header.first_seq
    begin, anchored = 0, None
    if start is not None:
        assert consume is None, "a consumer reads the whole log"
        skipped = _skip_to_anchor(storage, files, header, start)
        if skipped is None:
            return scan(wal_dir, storage=storage)
        begin, header, anchored = skipped
    rows: list[str] = []
    summaries: list[SegmentSummary] = []
    ts_ns = 0
    for index in range(begin, len(files)):
        file = files[index]
        at = anchored if index == begin else None
        walk, successor, detail, next_header = _judge_segment(
            storage, file, header, ts_ns, files[index + 1 :], consume, at
        )
        if at is not None and walk.records == 0:
            return scan(wal_dir, storage=storage)  # The anchor's record itself does not verify.
        summaries.append(_summary(walk))
        facts = _facts(walk, successor)
        row = decide(facts)
        rows.append(row.name)
        if row.decision is not Decision.CONTINUE:
            problem = _problem(row, walk, successor, detail, files[index + 1 :])
            active = next_header if successor is S.EXPECTS_SEAL else walk.header
            final = _final_batch(walk) if row.name == UNPROVEN_ROW else None
            report = base.report(row, rows, problem, summaries, walk.end, active, log_first_seq, final)
            report.verified_from_seq = start.seq if anchored is not None else log_first_seq
            return report
        header, ts_ns = next_header, walk.end.last_ts
    raise AssertionError("the last segment always has successor NONE, which never continues")


def _skip_to_anchor(
    storage: Storage, files: list[SegmentFile], first: SegmentHeader, anchor: Anchor
) -> tuple[int, SegmentHeader, tuple[int, Header]] | None:
    """The segment holding `anchor` (by file name), with its header and
    where the anchor's record lies in it, after verifying the headers of
    every segment before it; None where the shortcut does not apply."""
    index = max((i for i, f in enumerate(files) if f.first_seq <= anchor.seq), default=0)
    header = first
    for file in files[1 : index + 1]:
        try:
            following = SegmentHeader.decode(_read_header(storage, file.path), name=file.path.name)
        except SegmentHeaderError:
            return None
        if following.segid != header.segid + 1 or following.first_seq <= header.first_seq:
            return None
        header = following
    fd = storage.open(files[index].path)
    try:
        found = find_anchor(storage, fd, storage.size(fd), header.nonce, anchor)
    finally:
        storage.close(fd)
    # A walk that starts at a record ending a batch knows where the final
    # batch starts exactly as a walk from the segment's start would.
    if found is None or not found[1].batch_end:
        return None
    return index, header, found


def _judge_segment(
    storage: Storage,
    file: SegmentFile,
    header: SegmentHeader,
    ts_ns: int,
    later: list[SegmentFile],
    consume: Callable[[SegmentCursor], object] | None = None,
    anchored: tuple[int, Header] | None = None,
) -> tuple[_Walk, SuccessorFact, str, SegmentHeader | None]:
    """Walk one segment (from its first record, or from the anchor's
    record), judge its successor, and read past the tail window where the
    facts need it; the file is open for exactly this long."""
    fd = storage.open(file.path)
    try:
        walk = _walk_segment(storage, fd, file, header, ts_ns, consume, anchored)
        successor, detail, next_header = _successor(storage, walk, later)
        if _needs_beyond(walk, successor):
            walk = _read_beyond(storage, fd, walk)
    finally:
        storage.close(fd)
    return walk, successor, detail, next_header


@dataclass
class _Base:
    wal_dir: Path
    segment_files: list[Path]
    tmp_files: list[Path]

    def report(self, row, rows, problem, summaries, end, active, first_seq, final=None) -> Report:  # noqa: ANN001
        records = sum(s.records for s in summaries)
        return Report(
            self.wal_dir, row.decision, row.name, rows, problem, summaries, self.segment_files,
            first_seq=first_seq or (summaries[0].first_seq if summaries else 1),
            last_seq=end.last_seq if end else 0,
            chain=end.chain if end else bytes(16),
            last_ts=end.last_ts if end else 0,
            records=records, end=end, active_header=active, tmp_files=self.tmp_files, final_batch=final,
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


def _walk_segment(
    storage: Storage,
    fd: int,
    file: SegmentFile,
    header: SegmentHeader,
    ts_ns: int,
    consume: Callable[[SegmentCursor], object] | None = None,
    anchored: tuple[int, Header] | None = None,
) -> _Walk:
    """Verify the records of one segment from its header on (or from the
    anchor's record on), chunk by chunk, then read the tail window after them."""
    size = storage.size(fd)
    cursor = segment_cursor(storage, fd, size, header, anchored, ts_ns=ts_ns)
    if consume is None:
        cursor.verify()
    else:
        consume(cursor)
    error = cursor.stop_error()
    tail = read_tail(storage, fd, size, cursor)
    end = SegmentEnd(
        file.path, header.segid, header.nonce, size, cursor.offset,
        cursor.offset + last_nonzero(tail), cursor.seq - 1, cursor.parent, cursor.ts_ns, cursor.sealed,
        cursor.batch_offset, cursor.batch_seq, cursor.batch_parent, cursor.batch_ts_ns,
    )  # fmt: skip
    return _Walk(file, header, end, header.first_seq, cursor.count, error, tail)


def _needs_beyond(walk: _Walk, successor: SuccessorFact) -> bool:
    """Read past the tail window only where a record hidden there could
    matter: in the last segment (acknowledged records after a zeroed stretch
    must not pass for free space) and wherever damage was seen. Never after
    a SEAL: nothing follows one, and the successor continues from it."""
    end = walk.end
    if end.sealed or end.records_end + len(walk.tail) >= end.size_bytes:
        return False
    damaged = walk.error is not None or end.nonzero_end > end.records_end
    return successor is S.NONE or damaged


def _read_beyond(storage: Storage, fd: int, walk: _Walk) -> _Walk:
    start = walk.end.records_end + len(walk.tail)
    beyond = scan_beyond(storage, fd, start, walk.end.size_bytes, walk.header.nonce)
    nonzero_end = beyond.nonzero_end if beyond.nonzero_end > start else walk.end.nonzero_end
    return replace(walk, end=replace(walk.end, nonzero_end=nonzero_end), beyond=beyond)


def _tail(walk: _Walk) -> TailFact:
    end, tail, nonce = walk.end, walk.tail, walk.header.nonce
    nonzero_after = end.nonzero_end > end.records_end
    if end.sealed:
        return T.SEAL_GARBAGE if nonzero_after else T.SEALED
    error = walk.error
    if error is None and not nonzero_after:
        return T.ZERO
    if error is not None and error.reason in _MISPLACED_REASONS and header_validates(tail, 0, nonce):
        return T.MISPLACED
    later = _later_headers(walk)
    beyond_valid = walk.beyond is not None and walk.beyond.valid_header is not None
    if not later and not beyond_valid:
        return T.TORN_LIKE
    if not beyond_valid and _one_batch(walk, later):
        return T.VALID_IN_BATCH
    return T.VALID_AFTER


def _later_headers(walk: _Walk) -> list[int]:
    """Offsets (in `walk.tail`) of the record headers after E that validate
    with this segment's nonce. Only called after damage; O(tail bytes)."""
    tail, nonce = walk.tail, walk.header.nonce
    found: list[int] = []
    at = RECORD_ALIGN_BYTES
    stop = len(tail) - RECORD_HEADER_BYTES + 1
    while stop > at:
        hit = find_validating_header(tail, at, stop, nonce)
        if hit is None:
            break
        found.append(hit)
        at = hit + RECORD_ALIGN_BYTES
    return found


def _one_batch(walk: _Walk, later: list[int]) -> bool:
    """True if the damaged record at E and every validating header after it
    may be one batch, the one starting at B (see TailFact.VALID_IN_BATCH)."""
    end, tail = walk.end, walk.tail
    first_seq = end.last_seq + 1  # The seq the record at E should carry.
    window_end = end.batch_offset + TORN_WINDOW_BYTES
    previous: tuple[int, Header] | None = None
    if header_validates(tail, 0, walk.header.nonce):
        at_e = decode_header(tail, 0)  # Decodes: a header failing to would have been MISPLACED.
        if at_e.batch_end or at_e.seq != first_seq:
            return False
        previous = (0, at_e)
    for offset in later:
        try:
            header = decode_header(tail, offset)
        except RecordError:
            return False  # Validates, yet no writer of this format wrote it.
        if not _may_follow(header, offset, previous, first_seq) or end.records_end + offset + record_bytes(
            header.payload_len
        ) > window_end:
            return False
        previous = (offset, header)
    return True


def _may_follow(header: Header, offset: int, previous: tuple[int, Header] | None, first_seq: int) -> bool:
    """True if `header` (at `offset` after E) may be a later record of the
    batch that `previous` (or the damaged record at E, seq first_seq) is in."""
    if header.version < 2 or header.type != RecordType.COMMAND:
        return False  # No batch information, or a batch of its own.
    if (header.seq - first_seq) * RECORD_HEADER_BYTES > offset:
        return False  # More records between E and here than fit.
    if previous is None:
        return header.seq > first_seq
    prev_offset, prev = previous
    if prev.batch_end or header.seq <= prev.seq:
        return False
    if prev_offset + record_bytes(prev.payload_len) == offset:
        return header.seq == prev.seq + 1 and header.parent == prev.header_checksum
    return True


def _final_batch(walk: _Walk) -> FinalBatch:
    """The unproven final batch: from B to the highest seq that validates after E."""
    tail, end = walk.tail, walk.end
    last_seq = max(decode_header(tail, offset).seq for offset in _later_headers(walk))
    return FinalBatch(end.path, end.batch_offset, end.batch_seq, last_seq)


def _facts(walk: _Walk, successor: SuccessorFact) -> Facts:
    limit = SEAL_RECORD_BYTES if successor is S.EXPECTS_SEAL else TORN_WINDOW_BYTES
    damage = walk.end.nonzero_end - walk.end.batch_offset
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
        and end.seal_for(header.prev_chain) is not None
    ):
        if len(later) == 1 and zero_after(storage, nxt.path, SEGMENT_HEADER_BYTES):
            return S.EXPECTS_SEAL, "seal_missing", header
        return S.BROKEN, "seal_lost (the next segment continues from a SEAL that is not there)", header
    if header.first_seq != end.last_seq + 1:
        return S.BROKEN, f"seq_gap (next segment starts at {header.first_seq}, expected {end.last_seq + 1})", header
    return S.BROKEN, "chain_break (next segment's prev_chain does not match)", header


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
    elif row.name in (UNPROVEN_ROW, "final_batch_beyond_window", "batch_damage_in_closed_segment"):
        reason = "zeroed record"
    else:
        reason = "non-zero bytes after the last record"
    if row.name == UNPROVEN_ROW:
        reason = f"{_final_batch(walk).advice()}; first damage: {reason}"
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
    O(record bytes read) either way; the zeros of preallocated segments are
    not read, except once by the verifying scan (the last segment's).
    The verifying scan runs at the call; the records are read lazily, as a
    SegmentRecords (a replay walks them fused).
    """
    storage = storage or OsStorage()
    wal_dir = Path(wal_dir)
    if to_seq is None:
        report = scan(wal_dir, storage=storage)
        if report.decision is Decision.CORRUPT:
            raise corrupt_error(report)
        to_seq = report.last_seq
    return iter_segment_records(storage, wal_dir, from_seq, to_seq)


def iter_segment_records(
    storage: Storage, wal_dir: Path, from_seq: int, to_seq: int, *, anchor: bytes | None = None
) -> SegmentRecords:
    """Records from_seq..to_seq, starting at the segment that holds from_seq.

    Every record is verified again (checksums, nonce, seq, chain from the
    segment's header), and so is every segment boundary crossed: the next
    header must continue the chain (first_seq the next seq, prev_chain the
    last record's chain value, FLAG_PREV_UNSEALED where the segment before
    ends without a SEAL). Records the caller knows are there (up to to_seq)
    that are missing or fail raise JournalCorrupt. O(bytes of the records
    read): segments are read in chunks up to to_seq, never whole, and
    earlier segments are skipped by their file names.

    `anchor`: the chain value of record from_seq, where the caller knows it
    (a snapshot's header names it). The record is then found by searching
    its segment for that value (reader.find_anchor, memchr speed) instead of
    walking and verifying the records before it, and reading starts there,
    verifying from it on. If it is not found, the segment is walked from its
    start as without an anchor; a caller that needs the record to carry the
    anchor's chain value checks the first record it gets.

    The result is a lazy iterator of Records (nothing is read before the
    first next()); a replay may instead hand it a CommandSink
    (SegmentRecords.apply_commands) before iterating it.
    """
    return SegmentRecords(storage, wal_dir, from_seq, to_seq, anchor)


class SegmentRecords:
    """The records of iter_segment_records: an iterator of Records, or, for
    a replay that has not iterated it, one fused walk that hands them to a
    CommandSink (record.RecordCursor.apply_commands: no Record or generator
    step per record). Both run the same segment-level checks and raise the
    same JournalCorrupt.

    The walk is resumable: `take_first()` verifies record from_seq and
    stops right after it (a snapshot's record, whose chain value recovery
    checks before it loads the snapshot), and a fused walk or an iteration
    continues from there. The segment being walked stays open between the
    two; `close()` (or dropping the object) closes it.
    """

    def __init__(self, storage: Storage, wal_dir: Path, from_seq: int, to_seq: int, anchor: bytes | None) -> None:
        self._storage, self._wal_dir = storage, wal_dir
        self._from_seq, self._to_seq, self._anchor = from_seq, to_seq, anchor
        self._files: list[SegmentFile] | None = None  # listed at the first read: nothing is read before
        self._index = 0  # the next segment to open
        self._seq = from_seq  # the seq the walk expects next
        self._before: tuple[bytes, bool] | None = None  # (chain value, sealed) where the last segment ended
        self._fd: int | None = None  # the segment being walked, its file and cursor
        self._file: SegmentFile | None = None
        self._cursor: SegmentCursor | None = None
        self._records: Generator[Record, None, None] | None = None  # the iteration, once begun

    def __iter__(self) -> SegmentRecords:
        return self

    def __next__(self) -> Record:
        if self._records is None:
            self._records = self._iterate()
        return next(self._records)

    def close(self) -> None:
        if self._records is not None:
            self._records.close()
        self._release()

    def __del__(self) -> None:
        if getattr(self, "_fd", None) is not None:
            self._release()

    @property
    def fusable(self) -> bool:
        """True until iteration begins: apply_commands may still walk everything."""
        return self._records is None

    def take_first(self) -> bytes | None:
        """Verify record from_seq (and, walking from a segment's start, the
        records before it) and stop right after it, handing nothing over:
        its chain value, or None if this read holds no such record (to_seq
        < from_seq, or the log starts after it). A missing or damaged
        record raises JournalCorrupt, as iterating does. The rest stays
        fusable. Only as the first read."""
        assert self._records is None and self._files is None, "take_first is the first read"
        first = self._from_seq
        if self._current() is None or self._seq > first:
            self._release()
            return None  # Nothing up to to_seq, or the log starts after `first`.
        self._walk(keep_nothing(), first + 1, first)  # The walk stops right after `first`.
        cursor = self._cursor
        assert cursor is not None and cursor.seq == first + 1
        return cursor.parent

    def apply_commands(self, sink: CommandSink) -> None:
        """Walk every record from_seq..to_seq (not yet walked) into `sink`,
        verifying as iterating does. Only before iteration has begun (`fusable`)."""
        assert self._records is None, "the records are being iterated"
        try:
            self._walk(sink, self._from_seq, self._to_seq)
        finally:
            self._release()

    def _walk(self, sink: CommandSink, hand_from: int, walk_to: int) -> None:
        """The fused walk up to record walk_to (the cursor left just after
        it, its segment open), handing the records >= hand_from to `sink`."""
        while True:
            cursor = self._current()
            if cursor is None:
                return
            cursor.apply_commands(sink, hand_from, walk_to)
            if cursor.seq > walk_to:  # Everything wanted was walked (stopped at the bound, or the segment ended).
                self._seq = cursor.seq
                return
            self._end_segment(cursor)

    def _iterate(self) -> Generator[Record, None, None]:
        try:
            while True:
                cursor = self._current()
                if cursor is None:
                    return
                for record in cursor:
                    if record.seq > self._to_seq:
                        return
                    if record.seq >= self._from_seq:
                        yield record
                self._end_segment(cursor)
        finally:
            self._release()

    def _current(self) -> SegmentCursor | None:
        """The cursor of the segment being walked, or of the next one (its
        header checked against where the last one ended); None when
        everything up to to_seq was walked. Raises JournalCorrupt."""
        if self._seq > self._to_seq:
            self._release()
            return None
        if self._cursor is not None:
            return self._cursor
        if self._files is None:
            self._files = list_segments(self._storage, self._wal_dir).segments
            files, from_seq = self._files, self._from_seq
            self._index = max((i for i, f in enumerate(files) if f.first_seq <= from_seq), default=0)
            self._seq = files[self._index].first_seq if files else from_seq
            if self._seq > self._to_seq:
                return None
        files = self._files
        if self._index >= len(files):
            raise JournalCorrupt(self._wal_dir, 0, self._seq, "record_missing",
                                 f"records up to {self._to_seq} were expected")  # fmt: skip
        anchor, self._anchor = self._anchor, None  # Only the first segment opened holds from_seq.
        file = files[self._index]
        self._index += 1
        fd = self._storage.open(file.path)
        try:
            self._cursor = self._open_segment(fd, file, anchor)
        except BaseException:
            self._storage.close(fd)
            raise
        self._fd, self._file = fd, file
        return self._cursor

    def _open_segment(self, fd: int, file: SegmentFile, anchor: bytes | None) -> SegmentCursor:
        """The cursor of one segment, after checking that its header
        continues where the segment before it ended."""
        storage, seq = self._storage, self._seq
        try:
            header = SegmentHeader.decode(storage.pread(fd, SEGMENT_HEADER_BYTES, 0), name=file.path.name)
        except SegmentHeaderError as error:
            raise JournalCorrupt(file.path, 0, seq, "bad_segment_header", error.reason) from None
        if header.first_seq != seq:
            raise JournalCorrupt(file.path, 0, seq, "record_missing", f"segment starts at {header.first_seq}")
        before = self._before  # (chain value, sealed) where the segment before ended
        continues = before is None or (
            header.prev_chain == before[0] and bool(before[1] or header.flags & FLAG_PREV_UNSEALED)
        )
        if not continues:
            raise JournalCorrupt(
                file.path, 0, seq, "broken_segment_chain", "the header does not continue the previous segment's chain"
            )
        size = storage.size(fd)
        found = None if anchor is None else find_anchor(storage, fd, size, header.nonce, Anchor(self._from_seq, anchor))
        return segment_cursor(storage, fd, size, header, found)

    def _end_segment(self, cursor: SegmentCursor) -> None:
        """The segment's records ended before to_seq: why (damage raises), and on to the next."""
        file = self._file
        assert file is not None
        error = cursor.stop_error()
        if cursor.seq <= self._to_seq and error is not None:
            raise JournalCorrupt(file.path, cursor.offset, cursor.seq, "record_unreadable", str(error))
        self._seq, self._before = cursor.seq, (cursor.parent, cursor.sealed)
        self._release()

    def _release(self) -> None:
        """Close the segment being walked, if any."""
        fd, self._fd, self._cursor = self._fd, None, None
        if fd is not None:
            self._storage.close(fd)


def corrupt_error(report: Report) -> JournalCorrupt:
    """The JournalCorrupt that a CORRUPT report stands for (a JournalUnproven
    for row unproven_final_batch)."""
    problem = report.problem
    assert problem is not None
    if report.final_batch is not None:
        batch = report.final_batch
        return JournalUnproven(
            problem.path, problem.offset, problem.seq, problem.reason, problem.detail,
            first_seq=batch.first_seq, last_seq=batch.last_seq,
        )  # fmt: skip
    return JournalCorrupt(problem.path, problem.offset, problem.seq, problem.reason, problem.detail)
