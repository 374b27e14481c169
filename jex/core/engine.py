"""The deterministic state machine (core room).

``Engine.apply(command, seq, ts)`` is a pure function of (state, command, seq,
ts): no I/O, no clock, no randomness, no hash-ordered iteration. The same
commands with the same (seq, ts) always produce byte-identical events and the
same ``digest()``.

Processing order of one command:

1. GTD orders with ``expire_at <= ts`` expire (``cancelled`` reason
   ``expired``), earliest ``expire_at`` first, then lowest order id.
2. The command itself. An incoming order is matched to completion first (it
   rests or is cancelled), then orders released by triggers (stops, bracket
   children, conditionals) are processed one at a time from a FIFO queue;
   anything they trigger joins the back of the queue.

The semantics of every rule are written down in docs/semantics.md; the naive
reference engine in tests/ implements the same document independently.
"""

from __future__ import annotations

import heapq

import msgspec
import xxhash

from . import commands as C
from .book import DONE, OPEN, PENDING, Book, BookSide, Level, Order
from .commands import (
    BUY,
    FOK,
    GTD,
    IOC,
    LIMIT,
    MARKET,
    SELL,
    STP_DECREMENT,
    STP_EXPIRE_BOTH,
    STP_EXPIRE_MAKER,
    STP_EXPIRE_TAKER,
    STP_NAMES,
    STP_NONE,
)
from .events import (
    Accepted,
    Amended,
    Cancelled,
    InstrumentAdded,
    Prevented,
    Rejected,
    Trade,
)

_AGGRESSOR = ("buy", "sell")


class InstrumentState:
    """Everything the engine keeps per symbol."""

    __slots__ = ("config", "symbol", "book", "last", "volume", "trades")

    def __init__(self, config: C.Instrument) -> None:
        self.config = config
        self.symbol = config.symbol
        self.book = Book()
        self.last: int | None = None  # last trade price, ticks
        self.volume = 0  # cumulative traded lots
        self.trades = 0  # number of trades


class InvariantError(AssertionError):
    """Raised by ``check_invariants`` when internal state is inconsistent."""


class Engine:
    """The matching engine for many instruments.

    Public surface: ``apply``, ``book``, ``orders``, ``order``, ``digest``,
    ``check_invariants``. Everything else is internal.
    """

    def __init__(self) -> None:
        self.instruments: dict[str, InstrumentState] = {}
        self.orders: dict[int, Order] = {}  # live orders (open or pending), by id
        self.client_ids: dict[tuple[str, str], int] = {}  # (account, client_id) -> id, forever
        self.next_id = 1
        self.seq = 0  # seq of the last applied command
        self.ts = 0  # ts of the last applied command
        self._gtd: list[tuple[int, int]] = []  # heap of (expire_at, order_id), lazily cleaned
        self._events: list = []
        self._handlers = {
            C.Instrument: self._on_instrument,
            C.NewOrder: self._on_new_order,
            C.Cancel: self._on_cancel,
            C.Replace: self._on_replace,
            C.Clock: self._on_clock,
        }

    # ------------------------------------------------------------------ apply

    def apply(self, command: C.Command, seq: int, ts: int) -> list:
        """Apply one command stamped with (seq, ts); return its events.

        Complexity: O(log L) per price level touched plus O(1) per order
        filled, cancelled or expired, where L is the number of levels.
        """
        events: list = []
        self._events = events
        self.seq = seq
        self.ts = ts
        gtd = self._gtd
        if gtd and gtd[0][0] <= ts:
            self._expire_due(ts)
        handler = self._handlers.get(type(command))
        if handler is None:
            events.append(Rejected(seq, None, None, "invalid_order", f"unsupported command {type(command).__name__}"))
        else:
            handler(command)
        return events

    # ------------------------------------------------------------- handlers

    def _reject(self, client_id: str | None, account: str | None, reason: str, message: str) -> None:
        self._events.append(Rejected(self.seq, client_id, account, reason, message))

    def _on_instrument(self, cmd: C.Instrument) -> None:
        if cmd.symbol in self.instruments:
            self._reject(None, None, "instrument_exists", f"instrument {cmd.symbol} is already defined")
            return
        self.instruments[cmd.symbol] = InstrumentState(cmd)
        self._events.append(InstrumentAdded(self.seq, cmd.symbol, cmd.tick, cmd.lot))

    def _on_clock(self, cmd: C.Clock) -> None:
        """Time passed; GTD expiry already ran in ``apply``."""

    def _on_new_order(self, cmd: C.NewOrder) -> None:
        inst = self.instruments.get(cmd.symbol)
        if inst is None:
            self._reject(cmd.client_id, cmd.account, "unknown_symbol", f"unknown symbol {cmd.symbol}")
            return
        if (cmd.account, cmd.client_id) in self.client_ids:
            self._reject(
                cmd.client_id, cmd.account, "duplicate_client_id", f"client_id {cmd.client_id} was already used"
            )
            return
        problem = self._entry_problem(cmd)
        if problem is not None:
            self._reject(cmd.client_id, cmd.account, problem[0], problem[1])
            return
        order = self._create_order(cmd)
        self._process_incoming(order, inst)

    def _entry_problem(self, cmd: C.NewOrder) -> tuple[str, str] | None:
        """Business checks an order must pass before it gets an id."""
        kind = cmd.kind
        if cmd.qty <= 0:
            return ("invalid_order", "qty must be positive")
        if kind == LIMIT:
            if cmd.price is None:
                return ("invalid_order", "a limit order needs a price")
        elif kind == MARKET:
            if cmd.price is not None:
                return ("invalid_order", "a market order has no price")
            if cmd.tif not in (IOC, FOK):
                return ("invalid_order", "a market order must be IOC or FOK")
        else:
            return ("invalid_order", f"order kind {C.KIND_NAMES[kind]} is not supported yet")
        if cmd.post_only and (kind != LIMIT or cmd.tif in (IOC, FOK)):
            return ("invalid_order", "post-only needs a GTC or GTD limit order")
        if cmd.tif == GTD:
            if cmd.expire_at is None:
                return ("invalid_order", "a GTD order needs expire_at")
            if cmd.expire_at <= self.ts:
                return ("expire_in_past", f"expire_at {cmd.expire_at} is not after the command time {self.ts}")
        return None

    def _create_order(self, cmd: C.NewOrder) -> Order:
        """Assign an id, register the client id and emit ``accepted``."""
        order_id = self.next_id
        self.next_id = order_id + 1
        order = Order(
            order_id,
            cmd.client_id,
            cmd.account,
            cmd.symbol,
            cmd.side,
            cmd.kind,
            cmd.price,
            cmd.qty,
            cmd.tif,
            cmd.expire_at if cmd.tif == GTD else None,
            cmd.post_only,
            cmd.stp,
            self.seq,
        )
        self.orders[order_id] = order
        self.client_ids[(cmd.account, cmd.client_id)] = order_id
        self._events.append(Accepted(self.seq, order_id, cmd.client_id, cmd.account, cmd.symbol))
        return order

    # --------------------------------------------------------- incoming flow

    def _process_incoming(self, order: Order, inst: InstrumentState) -> None:
        """Match an incoming limit/market order, then rest or cancel the rest."""
        book = inst.book
        opp = book.asks if order.side == BUY else book.bids
        if order.post_only:
            best = opp.best
            if best is not None and (order.price >= best.price if order.side == BUY else order.price <= best.price):
                if inst.config.post_only_mode == C.POST_ONLY_SLIDE:
                    order.price = best.price - 1 if order.side == BUY else best.price + 1
                    self._events.append(
                        Amended(self.seq, order.order_id, order.client_id, order.qty, order.price, order.symbol)
                    )
                else:
                    self._finish(order, "post_only")
                    return
        if order.tif == FOK and not self._fok_fillable(order, opp):
            self._finish(order, "fok")
            return
        self._match(order, inst, opp)
        if order.status == DONE:
            return
        if order.qty == 0:
            self._retire(order)
        elif order.kind == MARKET or order.tif == IOC or order.tif == FOK:
            self._finish(order, "ioc")
        else:
            self._rest(order, book)

    def _rest(self, order: Order, book: Book) -> None:
        side = book.bids if order.side == BUY else book.asks
        side.level_for_insert(order.price).append(order)
        if order.expire_at is not None:
            heapq.heappush(self._gtd, (order.expire_at, order.order_id))

    def _fok_fillable(self, taker: Order, opp: BookSide) -> bool:
        """Simulate the whole match (limit price and STP) without side effects."""
        need = taker.qty
        limit = taker.price if taker.kind == LIMIT else None
        buy = taker.side == BUY
        stp = taker.stp
        account = taker.account
        for level in opp.iter_levels():
            if limit is not None and (level.price > limit if buy else level.price < limit):
                return False
            if stp == STP_NONE:
                need -= level.qty
                if need <= 0:
                    return True
                continue
            maker = level.head
            while maker is not None:
                if maker.account == account:
                    if stp != STP_EXPIRE_MAKER:
                        return False
                else:
                    need -= maker.qty
                    if need <= 0:
                        return True
                maker = maker.next
        return False

    def _match(self, taker: Order, inst: InstrumentState, opp: BookSide) -> None:
        """FIFO price-time matching of ``taker`` against the opposite side.

        Always re-reads the head of the best level: any side effect of a fill
        (a group reacting) may remove orders, so no iterator is kept.
        """
        buy = taker.side == BUY
        limit = taker.price if taker.kind == LIMIT else None
        stp = taker.stp
        events = self._events
        seq = self.seq
        symbol = inst.symbol
        aggressor = _AGGRESSOR[taker.side]
        while taker.qty > 0:
            level = opp.best
            if level is None:
                return
            price = level.price
            if limit is not None and (price > limit if buy else price < limit):
                return
            maker = level.head
            if stp != STP_NONE and maker.account == taker.account:
                if not self._prevent(taker, maker, stp):
                    return
                continue
            qty = taker.qty if taker.qty < maker.qty else maker.qty
            if buy:
                events.append(
                    Trade(
                        seq,
                        symbol,
                        price,
                        qty,
                        maker.order_id,
                        taker.order_id,
                        maker.client_id,
                        taker.client_id,
                        taker.account,
                        maker.account,
                        aggressor,
                    )
                )
            else:
                events.append(
                    Trade(
                        seq,
                        symbol,
                        price,
                        qty,
                        maker.order_id,
                        taker.order_id,
                        maker.client_id,
                        taker.client_id,
                        maker.account,
                        taker.account,
                        aggressor,
                    )
                )
            taker.qty -= qty
            taker.filled += qty
            maker.filled += qty
            inst.last = price
            inst.volume += qty
            inst.trades += 1
            level.qty -= qty
            if qty == maker.qty:
                maker.qty = 0
                level.unlink(maker)
                if level.count == 0:
                    opp.remove_level(level)
                self._retire(maker)
            else:
                maker.qty -= qty

    def _prevent(self, taker: Order, maker: Order, stp: int) -> bool:
        """Self-trade prevention between ``taker`` and same-account ``maker``.

        Returns True when the taker may keep matching.
        """
        qty = taker.qty if taker.qty < maker.qty else maker.qty
        self._events.append(Prevented(self.seq, taker.order_id, maker.order_id, qty, STP_NAMES[stp], taker.symbol))
        if stp == STP_EXPIRE_TAKER:
            self._finish(taker, "stp")
            return False
        if stp == STP_EXPIRE_MAKER:
            self._cancel_resting(maker, "stp")
            return True
        if stp == STP_EXPIRE_BOTH:
            self._cancel_resting(maker, "stp")
            self._finish(taker, "stp")
            return False
        # Decrement: both shrink by the smaller open quantity; the smaller
        # (or both, when equal) expires with that quantity as its remainder.
        if maker.qty == qty:
            self._cancel_resting(maker, "stp")
        else:
            maker.qty -= qty
            maker.level.qty -= qty
        if taker.qty == qty:
            self._finish(taker, "stp")
            return False
        taker.qty -= qty
        return True

    # ------------------------------------------------------ order endings

    def _retire(self, order: Order) -> None:
        """An order is done (filled): drop it from the live index."""
        order.status = DONE
        del self.orders[order.order_id]

    def _finish(self, order: Order, reason: str) -> None:
        """End a not-resting order with a ``cancelled`` event for its open qty."""
        self._events.append(
            Cancelled(self.seq, order.order_id, order.client_id, reason, order.qty, order.symbol)
        )
        order.qty = 0
        order.status = DONE
        del self.orders[order.order_id]

    def _cancel_resting(self, order: Order, reason: str) -> None:
        """Take a resting order off the book and end it."""
        level = order.level
        if level is not None:
            level.unlink(order)
            if level.count == 0:
                inst = self.instruments[order.symbol]
                side = inst.book.bids if order.side == BUY else inst.book.asks
                side.remove_level(level)
        self._finish(order, reason)

    def _expire_due(self, ts: int) -> None:
        gtd = self._gtd
        orders = self.orders
        while gtd and gtd[0][0] <= ts:
            _, order_id = heapq.heappop(gtd)
            order = orders.get(order_id)
            if order is not None and order.expire_at is not None and order.expire_at <= ts:
                self._cancel_resting(order, "expired")

    # ------------------------------------------------------ cancel/replace

    def _find(self, account: str, client_id: str | None, order_id: int | None) -> Order | None:
        """The live order named by id or client id, if it belongs to ``account``."""
        if order_id is None:
            if client_id is None:
                return None
            order_id = self.client_ids.get((account, client_id))
            if order_id is None:
                return None
        order = self.orders.get(order_id)
        if order is None or order.account != account:
            return None
        if client_id is not None and order.client_id != client_id:
            return None
        return order

    def _on_cancel(self, cmd: C.Cancel) -> None:
        order = self._find(cmd.account, cmd.client_id, cmd.order_id)
        if order is None:
            self._reject(cmd.client_id, cmd.account, "unknown_order", self._unknown_message(cmd))
            return
        self._cancel_resting(order, "user")

    @staticmethod
    def _unknown_message(cmd) -> str:
        name = f"order_id {cmd.order_id}" if cmd.order_id is not None else f"client_id {cmd.client_id}"
        return f"no open order with {name} for account {cmd.account}"

    def _on_replace(self, cmd: C.Replace) -> None:
        order = self._find(cmd.account, cmd.client_id, cmd.order_id)
        if order is None or order.level is None:
            self._reject(cmd.client_id, cmd.account, "unknown_order", self._unknown_message(cmd))
            return
        if cmd.qty is None and cmd.price is None:
            self._reject(cmd.client_id, cmd.account, "invalid_order", "replace needs qty or price")
            return
        if (cmd.qty is not None and cmd.qty <= 0) or (cmd.price is not None and cmd.price <= 0):
            self._reject(cmd.client_id, cmd.account, "invalid_order", "replace qty and price must be positive")
            return
        new_price = order.price if cmd.price is None else cmd.price
        new_qty = order.qty if cmd.qty is None else cmd.qty
        inst = self.instruments[order.symbol]
        if new_price == order.price and new_qty <= order.qty:
            order.level.qty -= order.qty - new_qty
            order.qty = new_qty
            self._events.append(Amended(self.seq, order.order_id, order.client_id, new_qty, new_price, order.symbol))
            return
        book = inst.book
        opp = book.asks if order.side == BUY else book.bids
        if order.post_only and new_price != order.price:
            best = opp.best
            if best is not None and (new_price >= best.price if order.side == BUY else new_price <= best.price):
                if inst.config.post_only_mode == C.POST_ONLY_SLIDE:
                    new_price = best.price - 1 if order.side == BUY else best.price + 1
                else:
                    self._reject(
                        cmd.client_id, cmd.account, "post_only_would_cross", "the new price would cross the book"
                    )
                    return
        level = order.level
        level.unlink(order)
        if level.count == 0:
            (book.bids if order.side == BUY else book.asks).remove_level(level)
        order.price = new_price
        order.qty = new_qty
        order.priority_seq = self.seq
        self._events.append(Amended(self.seq, order.order_id, order.client_id, new_qty, new_price, order.symbol))
        self._match(order, inst, opp)
        if order.status == DONE:
            return
        if order.qty == 0:
            self._retire(order)
        else:
            self._rest(order, book)

    # ------------------------------------------------------------ queries

    def book(self, symbol: str, depth: int | None = None) -> dict | None:
        """Aggregated levels, best first, in ticks and lots; None if unknown."""
        inst = self.instruments.get(symbol)
        if inst is None:
            return None

        def levels(side: BookSide) -> list[dict]:
            out = []
            for level in side.iter_levels():
                if depth is not None and len(out) >= depth:
                    break
                out.append({"price": level.price, "qty": level.qty, "orders": level.count})
            return out

        return {
            "symbol": symbol,
            "seq": self.seq,
            "last": inst.last,
            "bids": levels(inst.book.bids),
            "asks": levels(inst.book.asks),
        }

    def order(self, order_id: int) -> Order | None:
        return self.orders.get(order_id)

    def open_orders(self, account: str | None = None, symbol: str | None = None) -> list[Order]:
        """Live orders (resting and pending) in order-id order."""
        return [
            o
            for o in sorted(self.orders.values(), key=lambda o: o.order_id)
            if (account is None or o.account == account) and (symbol is None or o.symbol == symbol)
        ]

    def queue(self, symbol: str, side: int) -> list[list[tuple[int, int]]]:
        """Full per-level queues, best level first: [[(order_id, qty), ...], ...]."""
        inst = self.instruments[symbol]
        book_side = inst.book.bids if side == BUY else inst.book.asks
        return [[(o.order_id, o.qty) for o in level.orders()] for level in book_side.iter_levels()]

    # ---------------------------------------------------- digest, invariants

    def state(self) -> list:
        """A canonical, order-independent-where-it-should-be view of the state."""
        insts = []
        for symbol in sorted(self.instruments):
            inst = self.instruments[symbol]
            sides = []
            for side in (inst.book.bids, inst.book.asks):
                sides.append([[level.price, [_order_row(o) for o in level.orders()]] for level in side.iter_levels()])
            insts.append([msgspec.to_builtins(inst.config), inst.last, inst.volume, inst.trades, sides])
        pending = [_order_row(o) for o in sorted(self.orders.values(), key=lambda o: o.order_id) if o.status == PENDING]
        registry = sorted([a, c, i] for (a, c), i in self.client_ids.items())
        return [self.next_id, insts, pending, registry]

    def digest(self) -> str:
        """xxh3-128 of the canonical state, as 32 hex digits."""
        return xxhash.xxh3_128_hexdigest(msgspec.msgpack.encode(self.state()))

    def check_invariants(self) -> None:
        """Assert every internal invariant; raises InvariantError."""
        seen: set[int] = set()
        for symbol, inst in self.instruments.items():
            _check(inst.symbol == symbol, f"instrument key {symbol}")
            for side_code, side in ((BUY, inst.book.bids), (SELL, inst.book.asks)):
                _check_side(self, inst, side_code, side, seen)
            bid, ask = inst.book.bids.best, inst.book.asks.best
            _check(bid is None or ask is None or bid.price < ask.price, f"{symbol} book crossed")
        for order_id, order in self.orders.items():
            _check(order.order_id == order_id, f"order index key {order_id}")
            _check(order.status in (OPEN, PENDING), f"order {order_id} in index with status {order.status}")
            if order.status == OPEN:
                _check(order_id in seen, f"open order {order_id} not on a book")
            _check(self.client_ids.get((order.account, order.client_id)) == order_id, f"registry for {order_id}")
            _check(order.order_id < self.next_id, f"order id {order_id} >= next id")
            if order.expire_at is not None and order.status == OPEN:
                _check(any(oid == order_id for _, oid in self._gtd), f"GTD order {order_id} not scheduled")
        _check(len(seen) == sum(1 for o in self.orders.values() if o.status == OPEN), "book/index size mismatch")


def _order_row(o: Order) -> list:
    return [
        o.order_id,
        o.client_id,
        o.account,
        o.symbol,
        o.side,
        o.kind,
        o.price,
        o.qty,
        o.filled,
        o.tif,
        o.expire_at,
        o.post_only,
        o.stp,
        o.status,
        o.priority_seq,
        o.trigger,
    ]


def _check(condition: bool, what: str) -> None:
    if not condition:
        raise InvariantError(what)


def _check_side(engine: Engine, inst: InstrumentState, side_code: int, side: BookSide, seen: set[int]) -> None:
    levels = side.levels
    if not levels:
        _check(side.best is None, f"{inst.symbol} best cached on an empty side")
        return
    best_price = levels.peekitem(-1 if side.is_bid else 0)[0]
    _check(side.best is not None and side.best.price == best_price, f"{inst.symbol} cached best is stale")
    for price, level in levels.items():
        _check(isinstance(level, Level) and level.price == price, f"level key {price}")
        _check(level.count > 0 and level.head is not None, f"empty level {price} kept")
        qty = count = 0
        prev = None
        o = level.head
        while o is not None:
            _check(o.prev is prev, f"broken link at order {o.order_id}")
            _check(o.level is level and o.price == price and o.side == side_code, f"order {o.order_id} misplaced")
            _check(o.qty > 0 and o.status == OPEN, f"order {o.order_id} qty/status")
            _check(engine.orders.get(o.order_id) is o, f"order {o.order_id} not indexed")
            _check(o.order_id not in seen, f"order {o.order_id} twice on books")
            seen.add(o.order_id)
            qty += o.qty
            count += 1
            prev = o
            o = o.next
        _check(level.tail is prev, f"level {price} tail")
        _check(level.qty == qty and level.count == count, f"level {price} totals {level.qty}/{qty} {level.count}/{count}")
