"""The thread-safe front of the node (node room).

``Exchange`` is single-threaded: one caller sequences, journals and applies.
A network server has many concurrent callers, so ``Gateway`` owns one
``Exchange`` in one writer thread and everything else talks to it through a
bounded request queue:

    callers ──► queue (bounded) ──► writer thread ──► Exchange.submit_many ──► futures resolved
                                         │                                      (after durability)
                                         ├──► reads (between batches: durable state only)
                                         ├──► Exchange.tick() (GTD expiry without traffic)
                                         └──► listeners (durable events, watched books)

Group commit: the writer waits for the first request, then takes whatever
else is already queued (up to ``drain_requests_max``) and submits the
commands together through ``submit_many``, which yields each result only
after the batch holding it is durable. Only then is the caller's future
resolved and the events published, so nothing unacknowledged ever leaves
this module. Reads run in the writer thread after a drain is fully durable,
so they can never observe a command whose batch is still in flight.

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
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any, Callable

from jex.node.exchange import Exchange, Result

REQUEST_QUEUE_MAX = 16_384  # requests waiting for the writer; beyond this callers get Overloaded
DRAIN_REQUESTS_MAX = 2_048  # requests taken per group-commit drain
TICK_INTERVAL_S = 0.02  # how often the writer checks for due GTD orders
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
        # order id -> account, for every order and group ever accepted (the
        # engine keeps the same registry keyed the other way). Written only
        # by the writer thread, before the result naming the id is released.
        self._owners: dict[int, str] = {oid: account for (account, _), oid in exchange.engine.client_ids.items()}
        self._guard = threading.Lock()  # listeners, watched symbols, stop callbacks
        self._closing = threading.Event()
        self._dead = False  # the writer has left its loop: nothing more is accepted
        self._stopped = threading.Event()
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
        (safe from any thread: the map only grows, one key at a time)."""
        return self._owners.get(order_id)

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
        next_tick = time.monotonic()
        try:
            while not self._closing.is_set():
                tickets = self._take()
                if tickets:
                    self._process(tickets)
                if time.monotonic() >= next_tick:
                    self._publish(self.exchange.tick())
                    next_tick = time.monotonic() + self.tick_interval_s
        except BaseException as exc:  # a journal failure, or a bug: stop, acknowledge nothing more
            self.failure = exc
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

    def _take(self) -> list[_Ticket]:
        """Wait for the first request (at most one tick interval), then take
        whatever else is already queued, up to the drain limit."""
        try:
            first = self._queue.get(timeout=self.tick_interval_s)
        except queue.Empty:
            return []
        tickets = [first]
        get = self._queue.get_nowait
        try:
            while len(tickets) < self.drain_requests_max:
                tickets.append(get())
        except queue.Empty:
            pass
        return tickets

    def _process(self, tickets: list[_Ticket]) -> None:
        submits = [t for t in tickets if t.kind == _SUBMIT]
        published: list[dict] = []
        owners = self._owners
        if submits:
            try:
                for result in self.exchange.submit_many([t.payload for t in submits], overlap=True):
                    # submit_many yields a result only once its batch is durable.
                    for event in result.events:
                        if event["type"] == "accepted":
                            owners[event["order_id"]] = event["account"]
                    _resolve(submits[result.index].future, result)
                    published.extend(result.events)
            except BaseException as exc:
                stopped = GatewayStopped(f"node stopped: {type(exc).__name__}: {exc}")
                for ticket in submits:
                    _fail(ticket.future, stopped)
                for ticket in tickets:
                    if ticket.kind == _READ:
                        _fail(ticket.future, stopped)
                # Those events were durable and acknowledged; books are not
                # published, since the engine now holds unacknowledged state.
                self._publish(published, with_books=False)
                raise
        self.drains += 1
        self._publish(published)
        for ticket in tickets:
            if ticket.kind == _READ and ticket.future.set_running_or_notify_cancel():
                try:
                    ticket.future.set_result(ticket.payload(self.exchange))
                except Exception as exc:  # a read's own error goes back to its caller
                    ticket.future.set_exception(exc)

    def _publish(self, events: list[dict], with_books: bool = True) -> None:
        if not events:
            return
        with self._guard:
            listeners = list(self._listeners)
            watched = set(self._watched)
        if not listeners:
            return
        books: dict[str, dict] = {}
        if watched and with_books:
            touched = {e["symbol"] for e in events if e.get("symbol") in watched}
            for symbol in sorted(touched):
                book = self.exchange.book(symbol, BOOK_DEPTH_PUBLISHED)
                if book is not None:
                    books[symbol] = book
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
