"""Rebuild engine state from the log (replay room).

Used by the node on open (recovery) and by the read side of the CLI (book,
orders, stats, replay) without taking the writer lock. Replay never reads a
clock: each command is applied with the seq and timestamp stored in its
record header, so replay reproduces the live events byte for byte.

The replay loop is the read path's hot loop: per record one msgspec
decode and one apply; everything optional (event hashing, the caller's
callback, invariant checks) is one call behind one test, and per-type counts
are kept by class and named once at the end. `rebuild` reads the log once:
the scanner hands each segment's cursor to the replay as it walks it
(scan(consume=...)), the cursor verifies and applies in one fused loop
(journal.record.RecordCursor.apply_commands, compiled with the record
framing by `make fast`: no Record and no generator step per record), and
the verdict comes at the end of that one pass. Journal reads that nobody
has iterated yet (scan.SegmentRecords: recovery's genesis replay) are
walked the same way; any other iterable of records goes through `feed`.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Iterable, NoReturn

import msgspec
import xxhash

from jex.core import Engine
from jex.core.commands import Command
from jex.core.events import encode_events
from jex.journal.record import CommandSink, RecordType

if TYPE_CHECKING:
    from jex.journal.reader import SegmentCursor

# The log's command decoder (core.decode_command's, without the wrapper that
# re-raises UnicodeError and RecursionError as DecodeError: replay maps all
# three to ReplayError itself, and the call is per record).
_decode = msgspec.msgpack.Decoder(Command).decode
_DECODE_ERRORS = (msgspec.MsgspecError, UnicodeError, RecursionError)
_NO_LIMIT = 1 << 64  # to_seq when there is none: above every u64 seq


class ReplayError(Exception):
    """A logged record that cannot be replayed (undecodable payload)."""

    def __init__(self, seq: int, reason: str) -> None:
        super().__init__(f"record seq {seq}: {reason}")
        self.seq = seq
        self.reason = reason


@dataclass
class ReplayStats:
    """What a replay did: counts, the events' running digest, and speed."""

    records: int = 0
    commands: int = 0
    events: int = 0
    last_seq: int = 0
    last_ts: int = 0
    seconds: float = 0.0
    events_digest: str = ""
    kinds: dict[str, int] = field(default_factory=dict)

    @property
    def commands_per_second(self) -> float:
        return self.commands / self.seconds if self.seconds > 0 else 0.0


class Replayer:
    """Applies the COMMAND records (seq <= to_seq) of one or more record
    sources to ``engine``, in order, and accumulates the ReplayStats.

    ``consume`` takes a segment cursor (the scanner's consumer: the fused,
    verifying walk of journal.record.RecordCursor.apply_commands), ``feed``
    any iterable of records (objects that unpack as Record does: seq, ts_ns,
    type, payload, chain); either may be called once per segment or once
    with everything. Both keep their counts in one journal.record.CommandSink.
    """

    def __init__(
        self,
        engine: Engine,
        *,
        to_seq: int | None = None,
        on_events: Callable[[int, list], None] | None = None,
        check_invariants: bool = False,
        hash_events: bool = False,
    ) -> None:
        self.engine = engine
        self.to_seq = _NO_LIMIT if to_seq is None else to_seq
        self.stats = ReplayStats()
        self._hasher = xxhash.xxh3_128() if hash_events else None
        after = _after_apply(engine, on_events, check_invariants, self._hasher)
        self.sink = CommandSink(
            _decode, engine.apply, to_seq=self.to_seq, after=after, decode_errors=_DECODE_ERRORS, undecodable=_undecodable
        )

    @property
    def done(self) -> bool:
        """A record past to_seq was seen: nothing more is applied."""
        return self.sink.done

    def feed(self, records: Iterable) -> None:
        """Apply the records until one is past to_seq. O(records); per
        record one decode and one apply. Raises ReplayError naming the seq
        of an undecodable payload (everything before it applied). Records
        from scan.iter_segment_records (the journal's reads, recovery's
        genesis replay) that nobody has iterated yet are walked fused
        (SegmentRecords.apply_commands), verified exactly as iterating does."""
        sink = self.sink
        if sink.done:
            return
        if getattr(records, "fusable", False):  # scan.SegmentRecords not yet iterated: one fused walk
            started = time.perf_counter()
            try:
                records.apply_commands(sink)
            finally:
                self.stats.seconds += time.perf_counter() - started
            return
        apply, decode, to_seq, after = sink.apply, sink.decode, sink.to_seq, sink.after
        counts = sink.counts
        count_of = counts.get
        command_type = int(RecordType.COMMAND)
        applied = others = events = 0
        last_seq, last_ts = sink.last_seq, sink.last_ts
        started = time.perf_counter()
        try:
            for seq, ts, kind, payload, _ in records:
                if seq > to_seq:
                    sink.done = True
                    break
                last_seq = seq
                last_ts = ts
                if kind != command_type:
                    others += 1
                    continue
                try:
                    command = decode(payload)
                except _DECODE_ERRORS as exc:
                    _undecodable(seq, exc)
                produced = apply(command, seq, ts)
                applied += 1
                events += len(produced)
                cls = type(command)
                counts[cls] = count_of(cls, 0) + 1
                if after is not None:
                    after(seq, produced)
        finally:
            sink.commands += applied
            sink.others += others
            sink.events += events
            sink.last_seq, sink.last_ts = last_seq, last_ts
            self.stats.seconds += time.perf_counter() - started

    def consume(self, cursor: SegmentCursor) -> None:
        """The scanner's consumer: walk one segment's cursor to its end,
        applying as it verifies (records past to_seq are verified, not
        applied). O(records); no Record or generator step per record."""
        started = time.perf_counter()
        try:
            cursor.apply_commands(self.sink)
        finally:
            self.stats.seconds += time.perf_counter() - started

    def finish(self) -> ReplayStats:
        stats, sink = self.stats, self.sink
        stats.records += sink.commands + sink.others
        stats.commands += sink.commands
        stats.events += sink.events
        stats.last_seq, stats.last_ts = sink.last_seq, sink.last_ts
        sink.commands = sink.others = sink.events = 0
        kinds = stats.kinds
        for cls, count in sink.counts.items():
            kinds[cls.__name__] = kinds.get(cls.__name__, 0) + count
        sink.counts.clear()
        if self._hasher is not None:
            stats.events_digest = self._hasher.hexdigest()
        return stats


def _undecodable(seq: int, exc: BaseException) -> NoReturn:
    raise ReplayError(seq, f"undecodable command payload: {type(exc).__name__}: {str(exc)[:200]!r}") from None


def _after_apply(
    engine: Engine,
    on_events: Callable[[int, list], None] | None,
    check_invariants: bool,
    hasher: xxhash.xxh3_128 | None,
) -> Callable[[int, list], None] | None:
    """What runs after each applied command, as one callable (None: nothing)."""
    steps: list[Callable[[int, list], None]] = []
    if hasher is not None:
        update = hasher.update
        steps.append(lambda seq, events: update(encode_events(events)))
    if on_events is not None:
        steps.append(on_events)
    if check_invariants:
        check = engine.check_invariants
        steps.append(lambda seq, events: check())
    if not steps:
        return None
    if len(steps) == 1:
        return steps[0]

    def after(seq: int, events: list) -> None:
        for step in steps:
            step(seq, events)

    return after


def replay_records(
    engine: Engine,
    records: Iterable,
    *,
    to_seq: int | None = None,
    on_events: Callable[[int, list], None] | None = None,
    check_invariants: bool = False,
    hash_events: bool = False,
) -> ReplayStats:
    """Apply every COMMAND record (seq <= ``to_seq``) to ``engine``.

    ``records`` yields Records (or anything that unpacks as one: seq,
    ts_ns, type, payload, chain); iteration stops at the first record past
    ``to_seq``. ``hash_events`` folds every event list into a running
    xxh3-128 (the events digest that ``replay --verify`` compares).
    """
    replayer = Replayer(
        engine, to_seq=to_seq, on_events=on_events, check_invariants=check_invariants, hash_events=hash_events
    )
    replayer.feed(records)
    return replayer.finish()


def rebuild(data_dir: Path, *, to_seq: int | None = None, hash_events: bool = False, on_events=None):
    """Read-only rebuild of a data directory's state (no lock, no repair).

    Raises ``JournalCorrupt`` if the log is corrupt; a torn tail is simply
    not read (the writer repairs it on its next open). The log is read once:
    the scanner verifies and judges each segment while the replay applies
    its records, and corruption anywhere raises once the scan is done (the
    half-built engine is dropped). With ``on_events`` the whole log is
    verified first, so the callback never sees a record of a corrupt log.
    O(log bytes + replay).
    """
    from jex.journal.scan import Decision, corrupt_error, read_records, scan

    wal_dir = Path(data_dir) / "wal"
    engine = Engine()
    if on_events is not None:
        stats = replay_records(
            engine, read_records(wal_dir), to_seq=to_seq, hash_events=hash_events, on_events=on_events
        )
        return engine, stats
    replayer = Replayer(engine, to_seq=to_seq, hash_events=hash_events)
    report = scan(wal_dir, consume=replayer.consume)
    if report.decision is Decision.CORRUPT:
        raise corrupt_error(report)
    return engine, replayer.finish()
