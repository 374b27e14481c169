"""The exchange node: the one place that composes (node room).

``Exchange`` owns the single-writer lock, the sequencer (seq and ts), the
journal writer, the engine and the group-commit pipeline:

    edge codec ─► sequencer ─► encode ─► engine.apply      (_stage: batch k+1, no I/O)
                                 │
                                 └──► journal.submit_records ─► journal.wait ─► hand-out
                                      (_launch: batch k)        (_land)        (_deliver)

A batch of commands is validated, sequenced, encoded and applied; its
records go to the journal as one write (linked to one sync). Its results
are released only after that completion reports success, so nothing is
ever acknowledged before it is durable. The steps are pipelined: while
batch k is on its way to disk, batch k+1 is already being matched; the
moment k is durable, k+1 goes to the journal, and only then are k's results
handed out (their events encoded to contract dicts at that point), so the
caller's handling of them overlaps the next write too. At most one batch is
in flight: a batch is written only after the previous one's sync completed
(recovery relies on it). Any journal error stops the node: nothing more is
acknowledged, and the next open recovers from the log.

Batching. ``submit_many`` closes a batch at ``batch_records_max`` commands
or ``batch_bytes_max`` framed bytes; for input that trickles in (an
iterator, not a list) also ``batch_wait_ns`` after the batch's first
command, checked as commands arrive. It never waits on a timer. The
``Gateway`` (gateway.py) drives the same steps for concurrent callers: a
batch goes to the journal as soon as the writer is idle, and whatever
arrives while a write is in flight is matched meanwhile and written next.

Snapshots (DESIGN §7). Opening recovers from the newest usable snapshot
plus the tail of the log (jex.replay.recover), falling back to older
snapshots and then genesis. Every ``snapshot_every`` seqs the node takes a
snapshot in the background: at a batch boundary where everything applied
is durable (the batch that crosses the threshold is committed without
overlap), it forks; the child writes the snapshot (copy-on-write image),
keeps the newest two and prunes WAL segments wholly before the older one,
while the parent goes on matching and reaps it with a non-blocking waitpid
after later batches. At most one child is in flight. A failed snapshot is a
one-line notice, never a node failure: the log is the truth.
``snapshot()`` takes one now, in-process, durable before it returns.
"""

from __future__ import annotations

import os
import sys
import time
from collections import deque
from itertools import islice
from pathlib import Path
from typing import Iterable, Iterator

import msgspec

from jex import killpoints
from jex.core import Codec, CommandError, Engine, encode_command
from jex.core import commands as C
from jex.core.book import STATUS_NAMES
from jex.core.events import Trade
from jex.journal import DirLock, Journal
from jex.journal.limits import RECORD_ALIGN_BYTES, RECORD_HEADER_BYTES
from jex.journal.record import record_bytes
from jex.replay.rebuild import ReplayStats
from jex.replay.recover import JournalView, Start, recover, recovery_anchor, retain_and_prune
from jex.snapshots import snapshot_dir
from jex.snapshots import store as snapshot_store
from jex.snapshots.fork import BackgroundJob, ChildOutcome
from jex.snapshots import gcpolicy
from jex.snapshots.heap import HugepageCompactor

DEFAULT_DATA_DIR = ".jex"
BATCH_RECORDS_MAX = 4096  # commands per group commit
BATCH_BYTES_MAX = 1 << 20  # encoded bytes per group commit
BATCH_WAIT_NS_MAX = 200_000  # an iterator's batch closes this long after its first command (default)
BULK_BATCH_WAIT_NS = 20_000_000  # for bulk input (files, imports): fill batches, not latency
COMMAND_FRAMED_BYTES_MAX = 80 + 96 * 1024  # one logged command at most (header + payload + padding)
TRADES_KEPT = 1000  # recent trades kept per symbol for `jex trades`
# record_bytes(n) == (n + _FRAME_ADD) & _FRAME_MASK (the header is a whole number
# of alignment units), inlined on the per-command path.
_FRAME_ADD = RECORD_HEADER_BYTES + RECORD_ALIGN_BYTES - 1
_FRAME_MASK = ~(RECORD_ALIGN_BYTES - 1)
assert RECORD_HEADER_BYTES % RECORD_ALIGN_BYTES == 0

SNAPSHOT_EVERY_DEFAULT = 1_000_000  # seqs (≈ commands) between automatic snapshots; 0 disables
SNAPSHOT_EVERY_ENV = "JEX_SNAPSHOT_EVERY"  # overrides the default when open() is not told
SNAPSHOT_PAUSES_KEPT = 64  # recent background-snapshot pauses kept for stats and benchmarks

SNAPSHOT_FORK = "fork"  # background: a forked child writes (the default)
SNAPSHOT_INLINE = "inline"  # the node writes in-process and waits (tests, non-OS storage)

CLOCK_LIVE = "live"
CLOCK_INPUT = "input"


def default_data_dir() -> Path:
    """``$JEX_DATA_DIR`` or ``./.jex``: works with no configuration."""
    return Path(os.environ.get("JEX_DATA_DIR") or DEFAULT_DATA_DIR)


class Result(msgspec.Struct):
    """The answer to one submitted command, released after durability.

    ``events`` are JSON-contract dicts; ``error`` is set (and ``seq`` is
    None) when the edge refused the command: it was never logged.
    (A msgspec Struct: one is made per command, and it is built in C.)
    """

    index: int
    seq: int | None
    events: list[dict]
    error: CommandError | None = None


class _Batch:
    """One group commit on its way through the pipeline (see ``_stage``).

    ``items`` holds, per command pulled from the input in order: the
    engine's events (applied; ``_deliver`` encodes them), an ``_Encoded``
    (applied, events already encoded) or a refusal ``Result`` (never
    logged). The applied ones carry seqs first_seq, first_seq + 1, ... and
    their record columns are ``stamps`` and ``payloads``.
    """

    __slots__ = ("index", "first_seq", "items", "stamps", "payloads", "plain", "size")

    def __init__(self, index: int, first_seq: int) -> None:
        self.index = index  # input position of items[0]
        self.first_seq = first_seq
        self.plain = True  # every item is the events of an applied command
        self.size = 0  # framed bytes of the records
        self.items: list = []
        self.stamps: list[int] = []
        self.payloads: list[bytes] = []


class _Encoded:
    """An applied command's events with their contract dicts made early."""

    __slots__ = ("events", "out")

    def __init__(self, events: list, out: list[dict]) -> None:
        self.events = events
        self.out = out


class Exchange:
    """A durable exchange on a data directory. Use as a context manager."""

    def __init__(self, data_dir: Path, lock: DirLock, journal: Journal, engine: Engine, recovery: ReplayStats,
                 clock: str, batch_records_max: int, batch_bytes_max: int, check_invariants: bool) -> None:
        self.data_dir = data_dir
        self._lock = lock
        self.journal = journal
        self.engine = engine
        self.codec = Codec.for_engine(engine)
        self.recovery = recovery
        self.clock = clock
        self.batch_records_max = batch_records_max
        self.batch_bytes_max = batch_bytes_max
        self.batch_wait_ns = BATCH_WAIT_NS_MAX
        self._carry = None  # a prepared command waiting for the next batch
        self._in_flight: _Batch | None = None  # the batch being written
        self._undelivered: list[_Batch] = []  # staged batches whose results are not handed out yet
        self.check_invariants = check_invariants
        self.seq = journal.last_seq
        self.ts = journal.last_ts
        self.acknowledged = 0
        self.trades: dict[str, deque] = {}
        self._closed = False
        # Snapshots: configured by open(); see _configure_snapshots.
        self.snapshot_every = 0
        self.snapshot_mode = SNAPSHOT_INLINE
        self.prune_wal = True
        self.recovered_from = Start(0)
        self.recovery_notices: list[str] = []
        self.snapshot_pauses: deque = deque(maxlen=SNAPSHOT_PAUSES_KEPT)  # seconds the parent paused per fork
        self.last_snapshot: dict | None = None  # what the last finished snapshot reported
        self.snapshot_failures = 0
        self._snapshot_seq = 0  # seq of the last snapshot taken, attempted or recovered from
        self._snapshot_files = snapshot_store.OS_FILES
        self._storage = None
        self._background = BackgroundJob()
        self._compactor: HugepageCompactor | None = None

    # ----------------------------------------------------------- lifecycle

    @classmethod
    def open(
        cls,
        data_dir: Path | str | None = None,
        *,
        backend: str = "auto",
        clock: str = CLOCK_LIVE,
        segment_bytes: int | None = None,
        batch_records_max: int = BATCH_RECORDS_MAX,
        batch_bytes_max: int = BATCH_BYTES_MAX,
        batch_wait_ns: int = BATCH_WAIT_NS_MAX,
        check_invariants: bool = False,
        storage=None,
        snapshot_every: int | None = None,
        snapshot_mode: str = SNAPSHOT_FORK,
        prune_wal: bool = True,
        hugepages: bool = True,
    ) -> Exchange:
        """Lock the data directory, recover the journal, and rebuild the
        state from the newest usable snapshot plus the tail of the log.

        ``snapshot_every``: seqs between automatic snapshots (0 disables;
        default ``$JEX_SNAPSHOT_EVERY`` or SNAPSHOT_EVERY_DEFAULT).
        ``snapshot_mode``: "fork" (background child) or "inline"; a
        non-OS ``storage`` forces inline (a child's writes would bypass it).
        ``prune_wal``: delete WAL segments wholly before the older of the
        two kept snapshots. ``hugepages``: collapse a large heap into huge
        pages between snapshots so fork pauses less (snapshots/heap.py).
        Raises RecoveryError (exit 3) if the log was pruned past every
        usable snapshot.
        """
        if clock not in (CLOCK_LIVE, CLOCK_INPUT):
            raise ValueError(f"clock must be {CLOCK_LIVE!r} or {CLOCK_INPUT!r}")
        if snapshot_mode not in (SNAPSHOT_FORK, SNAPSHOT_INLINE):
            raise ValueError(f"snapshot_mode must be {SNAPSHOT_FORK!r} or {SNAPSHOT_INLINE!r}")
        if snapshot_every is None:
            snapshot_every = _snapshot_every_from_env()
        if snapshot_every < 0:
            raise ValueError("snapshot_every must be >= 0 (0 disables automatic snapshots)")
        data_dir = Path(data_dir) if data_dir is not None else default_data_dir()
        data_dir.mkdir(parents=True, exist_ok=True)
        lock = DirLock.acquire(data_dir)
        try:
            options = {} if segment_bytes is None else {"segment_bytes": segment_bytes}
            # Verify the log from where recovery starts (the newest snapshot) on, not all of it.
            journal = Journal.open(data_dir / "wal", backend=backend, storage=storage, lock=lock,
                                   verify_from=recovery_anchor(data_dir), **options)
            try:
                node = cls(data_dir, lock, journal, Engine(), ReplayStats(), clock, batch_records_max,
                           batch_bytes_max, check_invariants)
                node.batch_wait_ns = batch_wait_ns
                node._configure_snapshots(snapshot_every, snapshot_mode, prune_wal, hugepages, storage)
                node._recover()
                return node
            except BaseException:
                journal.close()
                raise
        except BaseException:
            lock.release()
            raise

    def _configure_snapshots(self, every: int, mode: str, prune_wal: bool, hugepages: bool, storage) -> None:
        self.snapshot_every = every
        self.prune_wal = prune_wal
        self._storage = storage
        if storage is not None:
            self._snapshot_files = storage
            mode = SNAPSHOT_INLINE
        self.snapshot_mode = mode
        if hugepages and mode == SNAPSHOT_FORK and every > 0:
            self._compactor = HugepageCompactor()

    def _recover(self) -> None:
        """Newest usable snapshot + tail (or genesis); orphan temp files of
        interrupted snapshot writes are removed first (we hold the lock)."""
        directory = snapshot_dir(self.data_dir)
        snapshot_store.remove_orphans(directory, self._snapshot_files)
        recovered = recover(JournalView(self.journal), directory, on_events=self._keep_trades,
                            check_invariants=self.check_invariants, notify=notice)
        self.engine = recovered.engine
        self.codec = Codec.for_engine(recovered.engine)
        self.recovery = recovered.stats
        self.recovered_from = recovered.start
        self.recovery_notices = recovered.notices
        self._snapshot_seq = recovered.start.seq
        # The recovered state lives as long as the node: keep the collector's
        # full collections off it (snapshots/gcpolicy.py; below 100 k objects, nothing).
        gcpolicy.freeze_long_lived(self.engine)
        if self._compactor is not None:
            self._compactor.start()

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        try:
            if self._compactor is not None:
                self._compactor.stop()
            self._reap(block=True)
        finally:
            try:
                self.journal.close()
            finally:
                self._lock.release()
                gcpolicy.release_long_lived()  # a frozen engine dropped later would never be freed

    def __enter__(self) -> Exchange:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    @property
    def backend(self) -> str:
        return self.journal.backend_name

    # ------------------------------------------------------------- submit

    def submit(self, command: dict | str | bytes) -> list[dict]:
        """Submit one command; return its events once durable.

        Raises ``CommandError`` (nothing logged) for malformed input.
        """
        (result,) = list(self.submit_many([command]))
        if result.error is not None:
            raise result.error
        return result.events

    def submit_many(self, commands: Iterable, *, overlap: bool = True, stop_on_error: bool = False) -> Iterator[Result]:
        """Submit commands with group commit; yield a Result per command, in
        order, each only after the batch holding it is durable.

        ``overlap`` pipelines the batches: batch k+1 is validated, sequenced
        and matched while batch k is being written; as soon as k is durable,
        k+1 goes to the journal and only then are k's results handed out, so
        that the caller's handling of them overlaps a write too.
        ``stop_on_error`` stops reading input at the first command the edge
        refuses (everything before it is still committed).
        """
        # Commands already in hand (a list) need no time bound: the bound only
        # keeps latency low while waiting for input that trickles in.
        timed = not isinstance(commands, (list, tuple))
        source = iter(commands)
        self._carry = None  # nothing carried over from an abandoned call
        index = 0
        stopped = False
        try:
            while True:
                if stopped:
                    batch = _Batch(index, self.journal.next_seq)
                else:
                    batch = self._stage(source, index, stop_on_error, timed)
                    items = batch.items
                    stopped = stop_on_error and bool(items) and type(items[-1]) is Result and items[-1].error is not None
                index += len(batch.items)
                launched = False
                if self._in_flight is not None:
                    landed = self._land()
                    if batch.payloads:
                        self._launch(batch)  # the next write starts before the hand-out
                        launched = True
                    yield from self._deliver(landed)
                if not batch.items:
                    return
                if not batch.payloads:  # refusals only: nothing to make durable
                    yield from self._deliver(batch)
                    continue
                if not launched:
                    self._launch(batch)
                # The batch that makes a snapshot due is committed without
                # overlap, so that after its wait everything applied is
                # durable: the snapshot's seq and chain are on disk.
                if overlap and not stopped and not self._snapshot_due():
                    continue
                yield from self._deliver(self._land())
        finally:
            self._abandon()

    # The pipeline's steps (the Gateway's writer thread drives them too):
    #   _stage    validate, sequence, encode and apply one batch (no I/O)
    #   _launch   hand its records to the journal: the write starts
    #   _land     wait until the batch in flight is durable
    #   _deliver  its Results, events encoded to contract dicts
    # At most one batch is in flight (``_in_flight``).

    def _launch(self, batch: _Batch) -> None:
        self.journal.submit_records(batch.first_seq, batch.stamps, batch.payloads)
        self._in_flight = batch

    def _land(self) -> _Batch:
        """Block until the batch in flight is durable (raises the journal's
        error if it is not: nothing of it is ever handed out), then run
        what waits for a durable boundary. Returns the landed batch."""
        self.journal.wait()
        killpoints.hit("after_fsync_before_ack")
        landed, self._in_flight = self._in_flight, None
        self._after_durable()
        return landed

    def _abandon(self) -> None:
        """After an iteration that ended early (the caller stopped, or an
        error): a write still in flight is waited for, so that the next
        call can submit; its results are never handed out."""
        self._in_flight = None
        self._undelivered.clear()
        if self.journal.in_flight and not self.journal.failed and not self._closed:
            self.journal.wait()

    def _deliver(self, batch: _Batch) -> Iterator[Result]:
        """The Results of a durable (or never logged) batch, in order.

        Events are encoded to contract dicts here, at hand-out time, not
        when the command was applied: the dicts of a whole batch are then
        never alive at once (kinder to the caches and the collector), and
        the caller's use of them overlaps the next write. The encoding is
        the same: the codec reads only instrument grids, which never change
        once defined, and ``_stage`` encodes everything undelivered before
        it applies a new instrument.
        """
        encode = self.codec.events
        if batch in self._undelivered:
            self._undelivered.remove(batch)
        base = index = batch.index
        if batch.plain:  # every item applied, none encoded yet: the common case, kept lean
            delta = batch.first_seq - base
            index -= 1
            try:
                for index, events in enumerate(batch.items, base):
                    out = encode(events)
                    if Trade in map(type, events):
                        self._keep_trades(index + delta, events)
                    yield Result(index, index + delta, out)
            finally:
                self.acknowledged += index + 1 - base
            return
        seq = batch.first_seq
        acknowledged = 0
        try:
            for item in batch.items:
                kind = type(item)
                if kind is Result:  # refused at the edge
                    yield item
                    index += 1
                    continue
                if kind is _Encoded:
                    events, out = item.events, item.out
                else:
                    events, out = item, encode(item)
                if Trade in map(type, events):
                    self._keep_trades(seq, events)
                acknowledged += 1
                yield Result(index, seq, out)
                index += 1
                seq += 1
        finally:
            self.acknowledged += acknowledged

    def _encode_undelivered(self) -> None:
        """Encode the events of every applied, undelivered command now."""
        encode = self.codec.events
        for batch in self._undelivered:
            items = batch.items
            for i, item in enumerate(items):
                kind = type(item)
                if kind is not Result and kind is not _Encoded:
                    items[i] = _Encoded(item, encode(item))
                    batch.plain = False

    def _stage(self, source: Iterator, index: int, stop_on_error: bool = False, timed: bool = True,
               batch: _Batch | None = None) -> _Batch:
        """Validate, sequence, encode and apply up to one batch of commands
        (no I/O). ``index`` is the position of the first command pulled.
        ``batch``: a staged batch, not yet launched, to add to (the Gateway
        adds what arrived while the previous write landed); it is returned
        unchanged when it is full.

        A command is encoded before it is applied, so a command that would
        push the batch past the journal's byte bound is carried, unapplied,
        into the next batch. This is the per-command hot path: everything
        it touches is bound to a local, and it allocates nothing per command
        beyond the codec's and the engine's own objects.
        """
        journal = self.journal
        if batch is None:
            # The journal may have reserved a seq for a SEAL (a rollover decided
            # by the previous submit): stamp this batch from its next_seq.
            batch = _Batch(index, journal.next_seq)
            self._undelivered.append(batch)
        elif self._carry is not None:  # it ended on the byte bound: the carried command opens the next
            return batch
        items, stamps, payloads = batch.items, batch.stamps, batch.payloads
        add_item, add_stamp, add_payload = items.append, stamps.append, payloads.append
        base = batch.index  # the input position of items[0]
        bytes_max = min(self.batch_bytes_max, journal.batch_bytes_max)
        framed_max = min(COMMAND_FRAMED_BYTES_MAX, journal.batch_bytes_max)
        records_max = self.batch_records_max
        wait_ns = self.batch_wait_ns
        clock = time.monotonic_ns
        started = clock() if timed else 0
        decode, apply, encode = self.codec.command, self.engine.apply, encode_command
        if self.check_invariants:
            apply = self._apply_checked
        live = self.clock == CLOCK_LIVE
        wall_ns = time.time_ns
        instrument = C.Instrument
        frame_add, frame_mask = _FRAME_ADD, _FRAME_MASK
        seq = batch.first_seq + len(payloads) - 1
        ts_last = self.ts
        size = batch.size  # framed bytes (headers and padding included), as the journal counts them
        try:
            carry, self._carry = self._carry, None
            if carry is not None:  # the command that did not fit the previous batch
                command, ts, payload = carry
                size = record_bytes(len(payload))
                if type(command) is instrument:
                    self._encode_undelivered()
                seq += 1
                add_item(apply(command, seq, ts))
                ts_last = ts
                add_stamp(ts)
                add_payload(payload)
            # islice bounds the batch's command count in C; it pulls no
            # command beyond the bound.
            for raw in islice(source, records_max - len(items)):
                try:
                    command, input_ts = decode(raw)
                    if live:  # the wall clock, never going back
                        ts = wall_ns()
                        if ts < ts_last:
                            ts = ts_last
                    elif input_ts is None:
                        raise CommandError("$.ts", "is required with --clock input")
                    elif input_ts < ts_last:
                        raise CommandError("$.ts", f"must not decrease (last ts {ts_last})")
                    else:
                        ts = input_ts
                except CommandError as exc:  # refused at the edge: never logged
                    add_item(Result(base + len(items), None, [], exc))
                    batch.plain = False
                    if stop_on_error:
                        break
                else:
                    payload = encode(command)
                    framed = (len(payload) + frame_add) & frame_mask  # record_bytes(len(payload))
                    if framed > framed_max:
                        add_item(Result(base + len(items), None, [], CommandError(
                            "$", f"command encodes to {len(payload)} bytes, too large to log")))
                        batch.plain = False
                        if stop_on_error:
                            break
                    elif size + framed > bytes_max and payloads:
                        self._carry = (command, ts, payload)
                        break
                    else:
                        size += framed
                        if type(command) is instrument:
                            self._encode_undelivered()
                        seq += 1
                        add_item(apply(command, seq, ts))
                        ts_last = ts
                        add_stamp(ts)
                        add_payload(payload)
                if timed and clock() - started > wait_ns:
                    break
        finally:
            self.seq = seq
            self.ts = ts_last
            batch.size = size
        return batch

    def _apply_checked(self, command, seq: int, ts: int) -> list:
        """``Engine.apply`` followed by the engine's invariant checks."""
        events = self.engine.apply(command, seq, ts)
        self.engine.check_invariants()
        return events

    def tick(self) -> list[dict]:
        """Journal a ``clock`` command if a GTD order is due (live mode), so
        expiry happens on time without traffic. Returns its events."""
        if not self.tick_due():
            return []
        return self.submit({"type": "clock"})

    def tick_due(self) -> bool:
        """True when ``tick()`` would journal a ``clock`` command now."""
        if self.clock != CLOCK_LIVE:
            return False
        due = self.engine.next_expiry()
        return due is not None and due <= time.time_ns()

    def _keep_trades(self, seq: int, events: list) -> None:
        for event in events:
            if type(event) is Trade:
                ring = self.trades.get(event.symbol)
                if ring is None:
                    ring = self.trades[event.symbol] = deque(maxlen=TRADES_KEPT)
                ring.append(event)

    # ---------------------------------------------------------- snapshots

    def _snapshot_due(self) -> bool:
        return self.snapshot_every > 0 and self.engine.seq - self._snapshot_seq >= self.snapshot_every

    def _at_boundary(self) -> bool:
        """Everything applied is durable and nothing is in flight."""
        return not self.journal.in_flight and self.engine.seq <= self.journal.last_seq

    def _after_durable(self) -> None:
        """After every durable batch: reap a finished child (non-blocking),
        and start a due snapshot if this is a boundary."""
        if self._background.busy:
            self._reap(block=False)
        if self._snapshot_due() and self._at_boundary() and not self._background.busy:
            if self._compactor is not None and self._compactor.busy:
                return  # fork would wait on the compactor's address-space lock: next boundary
            if self.snapshot_mode == SNAPSHOT_FORK:
                self._start_background()
            else:
                try:
                    self._snapshot_now()
                except OSError:
                    pass  # noticed; the log is the truth and the node goes on

    def _start_background(self) -> float | None:
        seq, chain, ts_ns = self.journal.last_seq, self.journal.chain, self.journal.last_ts
        engine, data_dir, prune_wal = self.engine, self.data_dir, self.prune_wal

        def job() -> dict:
            return _take_snapshot(data_dir, engine, seq, chain, ts_ns, prune_wal, snapshot_store.OS_FILES, None)

        self._snapshot_seq = seq  # also on failure: retry after another snapshot_every, not every batch
        try:
            pause_s = self._background.start(job)
        except OSError as error:
            self.snapshot_failures += 1
            notice(f"jex: snapshot at seq {seq} not started: fork failed: {error.strerror or error}")
            return None
        self.snapshot_pauses.append(pause_s)
        return pause_s

    def _reap(self, *, block: bool) -> ChildOutcome | None:
        outcome = self._background.wait() if block else self._background.poll()
        if outcome is None:
            return None
        if outcome.ok:
            self.last_snapshot = {**outcome.result, "pause_s": outcome.pause_s, "alive_s": outcome.alive_s}
            for line in outcome.result.get("retention", {}).get("notices", []):
                notice(line)
        else:
            self.snapshot_failures += 1
            notice(f"jex: background snapshot failed: {outcome.error}")
        if self._compactor is not None and not self._closed:
            self._compactor.start()  # copy-on-write split the huge pages the parent wrote to
        return outcome

    def snapshot(self, *, wait: bool = True) -> dict:
        """Take a snapshot of the durable state now and return what was
        written ({"seq", "path", "bytes", "digest", "seconds",
        "retention"}): in this process, durable (renamed and directory
        synced) before it returns. Waits for a background snapshot in flight
        first.

        ``wait=False`` (fork mode only) forks the background child instead
        and returns {"seq", "pause_s"} at once; ``wait_snapshot()`` or any
        later batch reaps it.

        Must not be called while a batch is in flight (i.e. from inside a
        ``submit_many`` loop that still has results to yield).
        """
        if self.journal.in_flight or self.engine.seq > self.journal.last_seq:
            raise RuntimeError("snapshot() needs a batch boundary: a batch is still in flight")
        if self.journal.last_seq == 0:
            raise ValueError("nothing to snapshot: the log is empty")
        if self._compactor is not None:
            self._compactor.stop()
        self._reap(block=True)
        if not wait and self.snapshot_mode == SNAPSHOT_FORK:
            return {"seq": self.journal.last_seq, "pause_s": self._start_background()}
        return self._snapshot_now()

    def wait_snapshot(self) -> dict | None:
        """Block until the background snapshot in flight (if any) ends;
        return its report, or None if there was none or it failed."""
        outcome = self._reap(block=True)
        return self.last_snapshot if outcome is not None and outcome.ok else None

    def _snapshot_now(self) -> dict:
        seq = self.journal.last_seq
        self._snapshot_seq = seq
        try:
            info = _take_snapshot(self.data_dir, self.engine, seq, self.journal.chain, self.journal.last_ts,
                                  self.prune_wal, self._snapshot_files, self._storage)
        except OSError as error:
            self.snapshot_failures += 1
            notice(f"jex: snapshot at seq {seq} failed: {error.strerror or error}")
            raise
        self.last_snapshot = info
        for line in info["retention"]["notices"]:
            notice(line)
        return info

    # -------------------------------------------------------------- reads

    def book(self, symbol: str, depth: int | None = None) -> dict | None:
        book = self.engine.book(symbol, depth)
        return None if book is None else self.codec.book(book)

    def stats(self, symbol: str) -> dict | None:
        stats = self.engine.stats(symbol)
        return None if stats is None else self.codec.stats(stats)

    def orders(self, account: str | None = None, symbol: str | None = None) -> list[dict]:
        return [order_dict(self.codec, o) for o in self.engine.open_orders(account, symbol)]

    def recent_trades(self, symbol: str, limit: int = 100) -> list[dict]:
        ring = self.trades.get(symbol, ())
        return [self.codec.event(t) for t in list(ring)[-limit:]]

    def digest(self) -> str:
        return self.engine.digest()


def order_dict(codec: Codec, order) -> dict:
    """The ``jex orders`` JSON shape of one live order."""
    symbol = order.symbol
    return {
        "order_id": order.order_id,
        "client_id": order.client_id,
        "account": order.account,
        "symbol": symbol,
        "side": C.SIDE_NAMES[order.side],
        "kind": C.KIND_NAMES[order.kind],
        "price": codec.price(symbol, order.price),
        "trigger": codec.price(symbol, order.trigger),
        "qty": codec.qty(symbol, order.orig_qty),
        "remaining": codec.qty(symbol, order.qty),
        "status": STATUS_NAMES[order.status],
        "group_id": order.group.group_id if order.group is not None else None,
    }


def _take_snapshot(data_dir: Path, engine: Engine, seq: int, chain: bytes, ts_ns: int, prune_wal: bool,
                   files, storage) -> dict:
    """Write a snapshot of ``engine`` at (seq, chain), then keep the newest
    two and prune the WAL behind them. Runs in the background child or
    in-process. Raises OSError."""
    directory = snapshot_dir(data_dir)
    path, image = snapshot_store.take(directory, engine, seq=seq, chain=chain, ts_ns=ts_ns, files=files)
    retention = retain_and_prune(data_dir, prune_wal=prune_wal, storage=storage, files=files)
    return {
        "seq": seq,
        "path": str(path),
        "bytes": len(image.body) + snapshot_store.HEADER_BYTES,
        "digest": image.header.digest_hex,
        "seconds": {k: round(v, 6) for k, v in image.seconds.items()},
        "retention": retention.as_dict(),
    }


def _snapshot_every_from_env() -> int:
    raw = os.environ.get(SNAPSHOT_EVERY_ENV)
    if not raw:
        return SNAPSHOT_EVERY_DEFAULT
    try:
        value = int(raw)
    except ValueError:
        raise ValueError(f"{SNAPSHOT_EVERY_ENV}={raw!r}: must be an integer >= 0") from None
    if value < 0:
        raise ValueError(f"{SNAPSHOT_EVERY_ENV}={raw!r}: must be an integer >= 0")
    return value


def notice(message: str) -> None:
    """A one-line diagnostic on stderr."""
    print(message, file=sys.stderr)
