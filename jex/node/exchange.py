"""The exchange node: the one place that composes (node room).

``Exchange`` owns the single-writer lock, the sequencer (seq and ts), the
journal writer, the engine and the group-commit pipeline:

    edge codec ─► sequencer ─► encode ─► engine.apply ─┐
                                 │                      │ (results held)
                                 └──► journal.submit ───┴─► journal.wait ─► release

A batch of commands is validated, sequenced, encoded and applied; its
records go to the journal as one write linked to one sync. Its results are
released only after that completion reports success, so nothing is ever
acknowledged before it is durable. While a batch is on its way to disk the
next one is already being matched (the overlap hides most of the sync).
Any journal error stops the node: nothing more is acknowledged, and the
next open recovers from the log.

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
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator

from jex import killpoints
from jex.core import Codec, CommandError, Engine, encode_command
from jex.core import commands as C
from jex.core.book import STATUS_NAMES
from jex.core.events import Trade
from jex.journal import DirLock, Journal
from jex.journal.record import record_bytes
from jex.replay.rebuild import ReplayStats
from jex.replay.recover import JournalView, Start, recover, retain_and_prune
from jex.snapshots import snapshot_dir
from jex.snapshots import store as snapshot_store
from jex.snapshots.fork import BackgroundJob, ChildOutcome
from jex.snapshots.heap import HugepageCompactor

DEFAULT_DATA_DIR = ".jex"
BATCH_RECORDS_MAX = 4096  # commands per group commit
BATCH_BYTES_MAX = 1 << 20  # encoded bytes per group commit
BATCH_WAIT_NS_MAX = 200_000  # a batch closes this long after its first command (live default)
BULK_BATCH_WAIT_NS = 20_000_000  # for bulk input (files, imports): fill batches, not latency
_END = object()  # end of input
COMMAND_FRAMED_BYTES_MAX = 80 + 96 * 1024  # one logged command at most (header + payload + padding)
TRADES_KEPT = 1000  # recent trades kept per symbol for `jex trades`

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


@dataclass
class Result:
    """The answer to one submitted command, released after durability.

    ``events`` are JSON-contract dicts; ``error`` is set (and ``seq`` is
    None) when the edge refused the command: it was never logged.
    """

    index: int
    seq: int | None
    events: list[dict]
    error: CommandError | None = None


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
            journal = Journal.open(data_dir / "wal", backend=backend, storage=storage, lock=lock, **options)
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

        ``overlap`` lets the next batch be matched while the previous one is
        being written. ``stop_on_error`` stops reading input at the first
        command the edge refuses (everything before it is still committed).
        """
        # Commands already in hand (a list) need no time bound: the bound only
        # keeps latency low while waiting for input that trickles in.
        timed = not isinstance(commands, (list, tuple))
        source = iter(commands)
        self._carry = None  # nothing carried over from an abandoned call
        index = 0
        in_flight: list[Result] | None = None
        stopped = False
        while True:
            if stopped:
                results, entries = [], []
            else:
                results, entries = self._build_batch(source, index, stop_on_error, timed)
                stopped = stop_on_error and bool(results) and results[-1].error is not None
            index += len(results)
            if in_flight is not None:
                yield from self._release(in_flight)
                in_flight = None
            if not results:
                return
            if entries:
                self.journal.submit(entries)
                # The batch that makes a snapshot due is committed without
                # overlap, so that after its wait everything applied is
                # durable: the snapshot's seq and chain are on disk.
                if overlap and not stopped and not self._snapshot_due():
                    in_flight = results
                    continue
                yield from self._release(results)
            else:
                yield from results

    def _release(self, results: list[Result]) -> Iterator[Result]:
        self.journal.wait()
        killpoints.hit("after_fsync_before_ack")
        self._after_durable()
        for result in results:
            if result.seq is not None:
                self.acknowledged += 1
            yield result

    def _build_batch(self, source: Iterator, index: int, stop_on_error: bool = False,
                     timed: bool = True) -> tuple[list[Result], list[tuple[int, int, bytes]]]:
        """Validate, sequence, encode and apply up to one batch of commands.

        A command is encoded before it is applied, so a command that would
        push the batch past the journal's byte bound is carried, unapplied,
        into the next batch.
        """
        results: list[Result] = []
        entries: list[tuple[int, int, bytes]] = []
        size = 0  # framed bytes (headers and padding included), as the journal counts them
        bytes_max = min(self.batch_bytes_max, self.journal.batch_bytes_max)
        wait_ns = self.batch_wait_ns if timed else 1 << 62
        started = time.monotonic_ns()
        # The journal may have reserved a seq for a SEAL (a rollover decided
        # by the previous submit): stamp this batch from its next_seq.
        self.seq = self.journal.next_seq - 1
        while True:
            if self._carry is not None:
                prepared, self._carry = self._carry, None
            else:
                raw = next(source, _END)
                if raw is _END:
                    break
                prepared = self._prepare(raw, index + len(results))
            if isinstance(prepared, Result):  # refused at the edge: never logged
                results.append(prepared)
                if stop_on_error:
                    break
            else:
                framed = record_bytes(len(prepared[3]))
                if entries and size + framed > bytes_max:
                    self._carry = prepared
                    break
                result, entry = self._commit(prepared)
                results.append(result)
                entries.append(entry)
                size += framed
            if len(results) >= self.batch_records_max or time.monotonic_ns() - started > wait_ns:
                break
        return results, entries

    def _prepare(self, raw, index: int):
        """Decode, stamp and encode one command: a refusal Result, or
        (index, command, ts, payload) ready to apply."""
        try:
            command, input_ts = self.codec.command(raw)
            ts = self._stamp(input_ts)
        except CommandError as exc:
            return Result(index, None, [], exc)
        payload = encode_command(command)
        if record_bytes(len(payload)) > min(COMMAND_FRAMED_BYTES_MAX, self.journal.batch_bytes_max):
            return Result(index, None, [], CommandError("$", f"command encodes to {len(payload)} bytes, too large to log"))
        return (index, command, ts, payload)

    def _commit(self, prepared) -> tuple[Result, tuple[int, int, bytes]]:
        """Apply a prepared command at the next seq; its record entry."""
        index, command, ts, payload = prepared
        seq = self.seq + 1
        events = self.engine.apply(command, seq, ts)
        self.seq = seq
        self.ts = ts
        if self.check_invariants:
            self.engine.check_invariants()
        out = [self.codec.event(e) for e in events]
        self._keep_trades(seq, events)
        return Result(index, seq, out), (seq, ts, payload)

    def _stamp(self, input_ts: int | None) -> int:
        """The sequencer's timestamp: the wall clock (never going back), or
        the command's own ``ts`` in simulation mode (must not decrease)."""
        if self.clock == CLOCK_LIVE:
            now = time.time_ns()
            return now if now > self.ts else self.ts
        if input_ts is None:
            raise CommandError("$.ts", "is required with --clock input")
        if input_ts < self.ts:
            raise CommandError("$.ts", f"must not decrease (last ts {self.ts})")
        return input_ts

    def tick(self) -> list[dict]:
        """Journal a ``clock`` command if a GTD order is due (live mode), so
        expiry happens on time without traffic. Returns its events."""
        if self.clock != CLOCK_LIVE:
            return []
        due = self.engine.next_expiry()
        if due is None or due > time.time_ns():
            return []
        return self.submit({"type": "clock"})

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
