"""The thread-safe front of the node (node room).

``Exchange`` is single-threaded: one caller sequences, journals and applies.
A network server has many concurrent callers, so ``Gateway`` owns one
``Exchange`` in one writer thread and everything else talks to it through a
bounded request queue:

    callers ──► queue (bounded) ──► writer thread ──► Exchange pipeline ──► futures resolved
                                         │            (stage, launch,        (after durability)
                                         │             land, deliver)
                                         ├──► reads (at a boundary: durable state only)
                                         ├──► Exchange.tick() (GTD expiry without traffic)
                                         └──► listeners (durable events, watched books)

Group commit, pipelined (the classic policy: when the writer is idle it
writes at once; while a write is in flight it accumulates). The writer
blocks for the first request only when nothing is in flight; it takes
whatever else is queued (up to ``drain_requests_max``), validates,
sequences and matches it and hands the batch to the journal at once. While
that batch is being written, the requests that arrive meanwhile are taken
and (with io_uring, whose write progresses meanwhile) matched as the next
batch; as soon as the first is durable, what arrived during the wait joins
the second, the second goes to the journal, and only then are the first's
futures resolved and its events published, so nothing unacknowledged ever
leaves this module. No timer: a batch is never held back waiting for more
input. (With pwrite the device work happens inside the wait, so the next
batch is matched after it.) Reads, the GTD ``tick`` and a due snapshot need
a boundary where everything applied is durable: while one is pending the
writer takes no new requests, lets those in hand land, then runs it. Book
snapshots published with a batch are taken right after it is handed to the
journal, before anything later is matched: they show exactly the state that
batch leaves.

A journal failure (or any unexpected error) stops the writer: every pending
and queued request fails with ``GatewayStopped``, nothing more is
acknowledged, ``failure`` holds the cause and the ``on_stop`` callbacks run
so the process can exit non-zero. Restart recovers from the log.
"""

from __future__ import annotations

import queue
import sys
import threading
import time
from collections import deque
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any, Callable

from jex.node.exchange import Exchange, Result, _Batch, _Encoded

REQUEST_QUEUE_MAX = 16_384  # requests waiting for the writer; beyond this callers get Overloaded
DRAIN_REQUESTS_MAX = 2_048  # requests taken per group-commit drain
TICK_INTERVAL_S = 0.02  # how often the writer checks for due GTD orders
STAGE_STEP_REQUESTS = 8  # matched per step while a write is in flight (it is checked for completion between steps)
BOOK_DEPTH_PUBLISHED = 10  # levels per side in published book updates
STOP_JOIN_TIMEOUT_S = 30.0  # how long stop() waits for the writer to finish

_SUBMIT = 0
_READ = 1


class GatewayError(Exception):
    """Base class of the gateway's refusals. ``str()`` is one line."""


class GatewayStopped(GatewayError):
    """The writer has stopped (journal failure or shutdown): nothing more is
    acknowledged. A request that gets this was not acknowledged; it may or
    may not be in the log (a retry with the same client_id is safe)."""


class Overloaded(GatewayError):
    """The request queue is full; the caller should back off and retry."""


@dataclass(slots=True)
class _Ticket:
    kind: int
    payload: Any  # a command (dict/str/bytes) or a read callable
    future: Future


@dataclass(slots=True)
class _Flight:
    """A staged batch and the tickets of its commands, in order; ``books``
    are the watched books it leaves (taken when it is launched)."""

    batch: _Batch
    tickets: list[_Ticket]
    books: dict[str, dict] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Publication:
    """What one durable drain changed, delivered to listeners in seq order.

    ``events`` are the contract events of every command in the drain (each
    carries its ``seq``); ``books`` holds a fresh book (top
    ``BOOK_DEPTH_PUBLISHED`` levels) of every watched symbol the drain
    touched.
    """

    events: list[dict]
    books: dict[str, dict] = field(default_factory=dict)


Listener = Callable[[Publication], None]


class Gateway:
    """One ``Exchange`` behind one writer thread. Use as a context manager."""

    def __init__(
        self,
        exchange: Exchange,
        *,
        queue_max: int = REQUEST_QUEUE_MAX,
        drain_requests_max: int = DRAIN_REQUESTS_MAX,
        tick_interval_s: float = TICK_INTERVAL_S,
    ) -> None:
        assert queue_max >= 1 and drain_requests_max >= 1 and tick_interval_s > 0
        self.exchange = exchange
        self.drain_requests_max = drain_requests_max
        self.tick_interval_s = tick_interval_s
        self.failure: BaseException | None = None
        self.drains = 0  # group-commit drains completed (for stats and tests)
        self._queue: queue.Queue[_Ticket] = queue.Queue(maxsize=queue_max)
        self._listeners: list[Listener] = []
        self._on_stop: list[Callable[[BaseException | None], None]] = []
        self._watched: dict[str, int] = {}  # symbol -> number of book watchers
        # order id -> account, for every order and group accepted since the
        # engine's restore (the engine keeps the same registry keyed the
        # other way); those it restored are asked of its cold registry
        # (read-only, O(log n) by id), not copied here. Written only by the
        # writer thread, before the result naming the id is released.
        engine = exchange.engine
        self._owners: dict[int, str] = {oid: account for account, _, oid in engine.hot_registry(ordered=False)}
        self._cold = engine.cold_registry
        self._guard = threading.Lock()  # listeners, watched symbols, stop callbacks
        self._closing = threading.Event()
        self._dead = False  # the writer has left its loop: nothing more is accepted
        self._stopped = threading.Event()
        self._carried: _Ticket | None = None  # its command did not fit a batch: it opens the next one
        self._index = 0  # commands staged so far (Result.index)
        self._thread = threading.Thread(target=self._run, name="jex-gateway-writer", daemon=True)

    @classmethod
    def open(cls, data_dir, *, queue_max: int = REQUEST_QUEUE_MAX, drain_requests_max: int = DRAIN_REQUESTS_MAX,
             tick_interval_s: float = TICK_INTERVAL_S, **exchange_options) -> Gateway:
        """Open (lock, recover) the data directory and start the writer."""
        exchange = Exchange.open(data_dir, **exchange_options)
        try:
            gateway = cls(exchange, queue_max=queue_max, drain_requests_max=drain_requests_max,
                          tick_interval_s=tick_interval_s)
            gateway.start()
            return gateway
        except BaseException:
            exchange.close()
            raise

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout_s: float = STOP_JOIN_TIMEOUT_S) -> None:
        """Finish the drain in progress, refuse the rest, close the node."""
        self._closing.set()
        if self._thread.is_alive():
            self._thread.join(timeout_s)
        elif not self._stopped.is_set():  # never started
            self._dead = True
            self.exchange.close()
            self._stopped.set()

    def __enter__(self) -> Gateway:
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    @property
    def running(self) -> bool:
        return not self._dead and not self._closing.is_set()

    def wait_stopped(self, timeout_s: float | None = None) -> bool:
        """Wait until the writer has stopped, closed the node and run the
        ``on_stop`` callbacks."""
        return self._stopped.wait(timeout_s)

    # ------------------------------------------------------------ callers

    def submit(self, command: dict | str | bytes) -> Future:
        """Queue one command; the future resolves to its ``Result`` once the
        command is durable (``Result.error`` set if the edge refused it).

        Raises ``Overloaded`` when the queue is full and ``GatewayStopped``
        when the writer has stopped. Never blocks.
        """
        return self._enqueue(_Ticket(_SUBMIT, command, Future()))

    def read(self, fn: Callable[[Exchange], Any]) -> Future:
        """Run ``fn(exchange)`` in the writer thread between drains (it sees
        durable state only) and resolve the future with its return value.
        ``fn`` must not submit commands."""
        return self._enqueue(_Ticket(_READ, fn, Future()))

    def _enqueue(self, ticket: _Ticket) -> Future:
        if not self.running:
            raise GatewayStopped(self._stop_reason())
        try:
            self._queue.put_nowait(ticket)
        except queue.Full:
            raise Overloaded(f"request queue full ({self._queue.maxsize} requests waiting)") from None
        if self._dead:
            # The writer stopped between the check and the put: fail what it left behind.
            self._fail_queued()
        return ticket.future

    def _stop_reason(self) -> str:
        if self.failure is not None:
            return f"node stopped: {type(self.failure).__name__}: {self.failure}"
        return "node is shutting down"

    def owner_of(self, order_id: int) -> str | None:
        """The account of an order or group id that has been acknowledged
        (safe from any thread: the map only grows, one key at a time, and
        the cold registry is read-only)."""
        owner = self._owners.get(order_id)
        if owner is None and self._cold is not None:
            owner = self._cold.account_of(order_id)
        return owner

    # -------------------------------------------------------- subscribers

    def add_listener(self, listener: Listener) -> None:
        """Call ``listener(publication)`` in the writer thread after every
        durable drain. It must be quick and must not raise (hand off to
        another thread or event loop)."""
        with self._guard:
            self._listeners.append(listener)

    def remove_listener(self, listener: Listener) -> None:
        with self._guard:
            if listener in self._listeners:
                self._listeners.remove(listener)

    def on_stop(self, callback: Callable[[BaseException | None], None]) -> None:
        """Call ``callback(failure or None)`` once, when the writer stops."""
        with self._guard:
            if not self._stopped.is_set():
                self._on_stop.append(callback)
                return
        callback(self.failure)

    def watch_book(self, symbol: str) -> None:
        """Publish a fresh book of ``symbol`` after each drain that touches it."""
        with self._guard:
            self._watched[symbol] = self._watched.get(symbol, 0) + 1

    def unwatch_book(self, symbol: str) -> None:
        with self._guard:
            count = self._watched.get(symbol, 0) - 1
            if count > 0:
                self._watched[symbol] = count
            else:
                self._watched.pop(symbol, None)

    # ------------------------------------------------------- writer thread

    def _run(self) -> None:
        exchange = self.exchange
        backlog: deque[_Ticket] = deque()  # submits taken, not yet staged
        reads: list[_Ticket] = []  # reads waiting for a boundary
        flight: _Flight | None = None  # the batch being written
        staged: _Flight | None = None  # the next one, matched meanwhile
        landed: _Flight | None = None  # the durable one whose futures are being resolved
        next_tick = time.monotonic()
        tick_wanted = False
        try:
            while True:
                if time.monotonic() >= next_tick:
                    # Re-checked each turn: under traffic the commands applied
                    # expire due orders themselves and no tick is needed.
                    tick_wanted = exchange.tick_due()
                    if not tick_wanted:
                        next_tick = time.monotonic() + self.tick_interval_s
                closing = self._closing.is_set()
                work = bool(backlog) or self._carried is not None
                busy = flight is not None or work
                if closing and not busy:
                    self._run_reads(reads)  # the drain in progress still gets its reads
                    break
                # A read, a GTD tick or a due snapshot wants a boundary (all that
                # is applied is durable): no new requests are taken until the
                # ones in hand are written. Otherwise, idle: wait for the first
                # request; busy: take what is queued and, if the write in flight
                # progresses meanwhile (io_uring), match it now (the next batch
                # accumulates); with pwrite the write only happens in the wait,
                # so matching first would only delay it.
                hold = bool(reads) or tick_wanted or exchange._snapshot_due()
                if not closing and not (busy and hold):
                    self._take(backlog, reads, block=not busy and not reads and not tick_wanted)
                    work = bool(backlog) or self._carried is not None
                if work and flight is None:
                    staged = self._stage(backlog)
                elif work and exchange.journal.asynchronous_writes:
                    # Match in small steps, and only until the write completes:
                    # its batch's acknowledgements must not wait for matching.
                    while not exchange.journal.write_completed:
                        before = len(backlog)
                        staged = self._stage(backlog, staged, limit=STAGE_STEP_REQUESTS)
                        if not backlog or len(backlog) == before:  # all matched, or the batch is full
                            break
                if flight is not None:
                    exchange._land()  # raises if the batch did not become durable
                    landed, flight = flight, None
                    # What arrived during the wait joins the batch written next.
                    if not closing and not hold and not reads:
                        self._take(backlog, reads, block=False)
                    if backlog or self._carried is not None:
                        staged = self._stage(backlog, staged)
                    if staged is not None and staged.batch.payloads:
                        flight, staged = self._launch(staged), None  # the next write starts first
                    self._deliver(landed)
                    landed = None
                elif staged is not None and staged.batch.payloads:
                    flight, staged = self._launch(staged), None  # idle: write at once
                if staged is not None:  # refusals only: nothing to write
                    self._deliver(staged)
                    staged = None
                if flight is None and not backlog and self._carried is None:  # a boundary
                    if reads:
                        self._run_reads(reads)
                        reads = []
                    if tick_wanted:
                        tick_wanted = False
                        next_tick = time.monotonic() + self.tick_interval_s
                        self._publish(exchange.tick())
        except BaseException as exc:  # a journal failure, or a bug: stop, acknowledge nothing more
            self.failure = exc
            stopped = GatewayStopped(f"node stopped: {type(exc).__name__}: {exc}")
            for unit in (landed, flight, staged):
                if unit is not None:
                    for ticket in unit.tickets:
                        _fail(ticket.future, stopped)
            if self._carried is not None:
                _fail(self._carried.future, stopped)
            for ticket in (*backlog, *reads):
                _fail(ticket.future, stopped)
        finally:
            self._dead = True  # before draining the queue: see _enqueue
            self._fail_queued()
            try:
                self.exchange.close()
            except BaseException as exc:  # closing a failed journal may fail again; the first cause wins
                if self.failure is None:
                    self.failure = exc
            with self._guard:
                callbacks, self._on_stop = self._on_stop, []
                self._stopped.set()
            for callback in callbacks:
                try:
                    callback(self.failure)
                except Exception:  # a callback's own trouble must not hide the failure
                    pass

    def _take(self, backlog: deque, reads: list, *, block: bool) -> None:
        """Move queued requests into ``backlog`` (submits) and ``reads``:
        wait for the first one (at most one tick interval) only if ``block``,
        then take whatever else is already queued, up to the drain limit."""
        queue_ = self._queue
        room = self.drain_requests_max - len(backlog)
        if room <= 0:
            return
        try:
            ticket = queue_.get(timeout=self.tick_interval_s) if block else queue_.get_nowait()
            get = queue_.get_nowait
            while True:
                if ticket.kind == _SUBMIT:
                    backlog.append(ticket)
                else:
                    reads.append(ticket)
                room -= 1
                if room <= 0:
                    return
                ticket = get()
        except queue.Empty:
            return

    def _stage(self, backlog: deque, into: _Flight | None = None, limit: int | None = None) -> _Flight:
        """Validate, sequence and match commands from the backlog (no I/O),
        as a new batch or added to ``into`` (staged, not yet launched); at
        most ``limit`` of them."""
        exchange = self.exchange
        tickets: list[_Ticket] = [] if into is None else into.tickets
        if into is None and self._carried is not None:  # its command opens this batch (Exchange carries it)
            tickets.append(self._carried)
            self._carried = None
        count = min(len(backlog), exchange.batch_records_max, limit or len(backlog))
        taken = [backlog.popleft() for _ in range(count)]
        source = iter([ticket.payload for ticket in taken])
        try:
            batch = exchange._stage(source, self._index, timed=False, batch=None if into is None else into.batch)
        except BaseException:  # a bug: the writer stops; these requests fail with the rest
            backlog.extendleft(reversed(taken))
            if into is None:
                backlog.extendleft(reversed(tickets))
            raise
        pulled_count = count - sum(1 for _ in source)  # _stage pulls no further than it uses
        pulled = taken[:pulled_count]
        backlog.extendleft(reversed(taken[pulled_count:]))
        if exchange._carry is not None and pulled:  # the last one pulled did not fit: it opens the next batch
            self._carried = pulled.pop()
        tickets.extend(pulled)
        assert len(tickets) == len(batch.items), (len(tickets), len(batch.items))
        self._index = batch.index + len(batch.items)
        return into if into is not None else _Flight(batch, tickets)

    def _launch(self, staged: _Flight) -> _Flight:
        """Hand a staged batch to the journal; snapshot the watched books it
        touched now, before anything later is matched."""
        self.exchange._launch(staged.batch)
        with self._guard:
            watched = set(self._watched) if self._listeners else set()
        if watched:
            touched: set = set()
            for item in staged.batch.items:  # the engine's events (see _Batch), or a refusal
                events = () if type(item) is Result else item.events if type(item) is _Encoded else item
                touched.update(getattr(e, "symbol", None) for e in events)
            staged.books = self._books(touched & watched)
        return staged

    def _deliver(self, flight: _Flight) -> None:
        """Resolve the futures of a durable batch (or of refusals) and publish."""
        published: list[dict] = []
        owners = self._owners
        for result, ticket in zip(self.exchange._deliver(flight.batch), flight.tickets):
            for event in result.events:
                if event["type"] == "accepted":
                    owners[event["order_id"]] = event["account"]
            _resolve(ticket.future, result)
            published.extend(result.events)
        self.drains += 1
        self._publish(published, books=flight.books)

    def _run_reads(self, reads: list[_Ticket]) -> None:
        """Run reads; only at a boundary (everything applied is durable)."""
        for ticket in reads:
            if ticket.future.set_running_or_notify_cancel():
                try:
                    ticket.future.set_result(ticket.payload(self.exchange))
                except Exception as exc:  # a read's own error goes back to its caller
                    ticket.future.set_exception(exc)

    def _books(self, symbols) -> dict[str, dict]:
        books: dict[str, dict] = {}
        for symbol in sorted(s for s in symbols if s is not None):
            book = self.exchange.book(symbol, BOOK_DEPTH_PUBLISHED)
            if book is not None:
                books[symbol] = book
        return books

    def _publish(self, events: list[dict], books: dict[str, dict] | None = None) -> None:
        """Hand durable events to the listeners, with ``books`` (taken when
        their batch was launched) or, at a boundary, fresh watched books."""
        if not events:
            return
        with self._guard:
            listeners = list(self._listeners)
            watched = set(self._watched)
        if not listeners:
            return
        if books is None:
            books = self._books({e.get("symbol") for e in events} & watched) if watched else {}
        publication = Publication(events, books)
        for listener in listeners:
            try:
                listener(publication)
            except Exception as exc:  # a subscriber's bug must not stop the node
                print(f"jex gateway: listener {listener!r} failed: {type(exc).__name__}: {exc}",
                      file=sys.stderr, flush=True)

    def _fail_queued(self) -> None:
        stopped = GatewayStopped(self._stop_reason())
        while True:
            try:
                ticket = self._queue.get_nowait()
            except queue.Empty:
                return
            _fail(ticket.future, stopped)


def _resolve(future: Future, result: Result) -> None:
    if future.set_running_or_notify_cancel():
        future.set_result(result)


def _fail(future: Future, exc: BaseException) -> None:
    if future.done():
        return
    if future.running() or future.set_running_or_notify_cancel():
        future.set_exception(exc)
