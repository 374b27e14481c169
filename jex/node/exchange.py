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
from jex.journal import DirLock, Journal
from jex.replay.rebuild import ReplayStats, replay_records

DEFAULT_DATA_DIR = ".jex"
BATCH_RECORDS_MAX = 4096  # commands per group commit
BATCH_BYTES_MAX = 1 << 20  # encoded bytes per group commit
BATCH_WAIT_NS_MAX = 200_000  # a batch closes this long after its first command
TRADES_KEPT = 1000  # recent trades kept per symbol for `jex trades`

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
        self.check_invariants = check_invariants
        self.seq = journal.last_seq
        self.ts = journal.last_ts
        self.acknowledged = 0
        self.trades: dict[str, deque] = {}
        self._closed = False

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
        check_invariants: bool = False,
        storage=None,
    ) -> Exchange:
        """Lock the data directory, recover the journal and replay it."""
        if clock not in (CLOCK_LIVE, CLOCK_INPUT):
            raise ValueError(f"clock must be {CLOCK_LIVE!r} or {CLOCK_INPUT!r}")
        data_dir = Path(data_dir) if data_dir is not None else default_data_dir()
        data_dir.mkdir(parents=True, exist_ok=True)
        lock = DirLock.acquire(data_dir)
        try:
            options = {} if segment_bytes is None else {"segment_bytes": segment_bytes}
            journal = Journal.open(data_dir / "wal", backend=backend, storage=storage, lock=lock, **options)
            try:
                engine = Engine()
                node = cls(data_dir, lock, journal, engine, ReplayStats(), clock, batch_records_max,
                           batch_bytes_max, check_invariants)
                node.recovery = replay_records(engine, journal.records(), on_events=node._keep_trades,
                                               check_invariants=check_invariants)
                return node
            except BaseException:
                journal.close()
                raise
        except BaseException:
            lock.release()
            raise

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
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
        source = iter(commands)
        index = 0
        in_flight: list[Result] | None = None
        stopped = False
        while True:
            if stopped:
                results, entries = [], []
            else:
                results, entries = self._build_batch(source, index, stop_on_error)
                stopped = stop_on_error and bool(results) and results[-1].error is not None
            index += len(results)
            if in_flight is not None:
                yield from self._release(in_flight)
                in_flight = None
            if not results:
                return
            if entries:
                self.journal.submit(entries)
                if overlap and not stopped:
                    in_flight = results
                    continue
                yield from self._release(results)
            else:
                yield from results

    def _release(self, results: list[Result]) -> Iterator[Result]:
        self.journal.wait()
        killpoints.hit("after_fsync_before_ack")
        for result in results:
            if result.seq is not None:
                self.acknowledged += 1
            yield result

    def _build_batch(self, source: Iterator, index: int, stop_on_error: bool = False) -> tuple[list[Result], list[tuple[int, int, bytes]]]:
        """Validate, sequence, encode and apply up to one batch of commands."""
        results: list[Result] = []
        entries: list[tuple[int, int, bytes]] = []
        size = 0
        started = time.monotonic_ns()
        # The journal may have reserved a seq for a SEAL (a rollover decided
        # by the previous submit): stamp this batch from its next_seq.
        self.seq = self.journal.next_seq - 1
        for raw in source:
            result, entry = self._one(raw, index + len(results))
            results.append(result)
            if entry is not None:
                entries.append(entry)
                size += len(entry[2])
            elif stop_on_error:
                break
            if (
                len(results) >= self.batch_records_max
                or size >= self.batch_bytes_max
                or time.monotonic_ns() - started > BATCH_WAIT_NS_MAX
            ):
                break
        return results, entries

    def _one(self, raw, index: int) -> tuple[Result, tuple[int, int, bytes] | None]:
        try:
            command, input_ts = self.codec.command(raw)
            ts = self._stamp(input_ts)
        except CommandError as exc:
            return Result(index, None, [], exc), None
        payload = encode_command(command)
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
        from jex.core.events import Trade

        for event in events:
            if type(event) is Trade:
                ring = self.trades.get(event.symbol)
                if ring is None:
                    ring = self.trades[event.symbol] = deque(maxlen=TRADES_KEPT)
                ring.append(event)

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
    from jex.core.book import STATUS_NAMES

    symbol = order.symbol
    status = STATUS_NAMES[order.status]
    if order.group is not None and order.status == 3:
        status = "inactive"
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
        "status": status,
        "group_id": order.group.group_id if order.group is not None else None,
    }


def notice(message: str) -> None:
    """A one-line diagnostic on stderr."""
    print(message, file=sys.stderr)
