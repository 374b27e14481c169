"""The deterministic state machine (core room).

``Engine.apply(command, seq, ts)`` is a pure function of (state, command, seq,
ts): no I/O, no clock, no randomness, no hash-ordered iteration. The same
commands with the same (seq, ts) always produce byte-identical events and the
same ``digest()``.

Processing order of one command:

1. GTD orders with ``expire_at <= ts`` expire (``cancelled`` reason
   ``expired``), earliest ``expire_at`` first, then lowest order id.
2. The command itself. An incoming order is matched to completion first (it
   rests or is cancelled); then orders released by triggers (stops, bracket
   children, conditionals) are processed one at a time from a FIFO queue,
   and anything they trigger joins the back of the queue.

The semantics of every rule are written down in docs/semantics.md; the naive
reference engine in tests/ implements the same document independently.
Triggered and contingent orders live in ``contingent.py``, call auctions in
``auction.py``; this module is the order flow they share.
"""

from __future__ import annotations

import heapq
from collections import deque
from typing import Any, Callable, Final

import msgspec
import msgspec.structs
import xxhash

from . import analytics
from . import commands as C
from . import events as E
from .auction import AuctionMixin
from .base import InstrumentState, shape_problem
from .book import DONE, INACTIVE, OPEN, PENDING, BookSide, Level, Order
from .commands import (
    BUY,
    FOK,
    GTD,
    IOC,
    LIMIT,
    MARKET,
    SELL,
    STOP,
    STOP_LIMIT,
    STP_EXPIRE_BOTH,
    STP_EXPIRE_MAKER,
    STP_EXPIRE_TAKER,
    STP_NAMES,
    STP_NONE,
    TRAILING_STOP,
)
from .contingent import BracketGroup, ConditionalGroup, OcoGroup
from .errors import InvariantError
from .prorata import allocate
from .state import export_state
from .vpin import toxicity

# Final aliases of the classes and functions the hot path calls: the compiled
# core keeps a Final in a C static instead of looking the name up in the
# module's dict at every use.
Accepted: Final = E.Accepted
Amended: Final = E.Amended
Cancelled: Final = E.Cancelled
InstrumentAdded: Final = E.InstrumentAdded
Prevented: Final = E.Prevented
Rejected: Final = E.Rejected
Trade: Final = E.Trade
NEW_ORDER: Final = C.NewOrder
CANCEL: Final = C.Cancel
REPLACE: Final = C.Replace
astuple: Final = msgspec.structs.astuple

_AGGRESSOR: Final = ("buy", "sell")
# ``_on_new_order`` and ``_order_from`` unpack ``astuple(NewOrder)`` in this order.
NEW_ORDER_FIELDS: Final = (
    "account", "client_id", "symbol", "side", "kind", "qty", "price", "trigger", "trail_amount",
    "trail_percent_e6", "activation_price", "tif", "expire_at", "post_only", "stp",
)
if C.NewOrder.__struct_fields__ != NEW_ORDER_FIELDS:  # pragma: no cover - a schema change must update both
    raise ImportError("NewOrder fields changed: update engine.NEW_ORDER_FIELDS and its unpacking")
REPLACE_FIELDS: Final = ("account", "client_id", "order_id", "qty", "price")  # _on_replace unpacks astuple(Replace)
if C.Replace.__struct_fields__ != REPLACE_FIELDS:  # pragma: no cover - a schema change must update both
    raise ImportError("Replace fields changed: update engine.REPLACE_FIELDS and _on_replace's unpacking")
STOP_KINDS: Final = (STOP, STOP_LIMIT, TRAILING_STOP)


class Engine(AuctionMixin):
    """The matching engine for many instruments.

    Public surface: ``apply``, ``book``, ``queue``, ``open_orders``,
    ``order``, ``stats``, ``digest``, ``state``, ``check_invariants``.
    """

    def __init__(self) -> None:
        # The attributes are declared (typed and explained) in EngineBase.
        self.instruments = {}
        self.orders = {}
        self.groups = {}
        self.client_ids = {}
        self.cold_registry = None
        self.next_id = 1
        self.seq = 0
        self.seq_obj = 0
        self.ts = 0
        self.watch = {}
        self._gtd = []
        self._events = []
        self._releases = deque()
        # Every command but the order flow (new order, cancel, replace),
        # which ``apply`` dispatches directly.
        self._handlers: dict[type, Callable[[Any], None]] = {
            C.Instrument: self._on_instrument,
            C.Clock: self._on_clock,
            C.Oco: self._on_oco,
            C.Bracket: self._on_bracket,
            C.Conditional: self._on_conditional,
            C.Auction: self._on_auction,
        }

    # ------------------------------------------------------------------ apply

    def apply(self, command: C.Command, seq: int, ts: int) -> list:
        """Apply one command stamped with (seq, ts); return its events.

        Complexity: O(log L) per price level touched plus O(1) per order
        filled, cancelled or expired (L = levels), plus O(log S + k) per trade
        for the stop index (S pending stops, k fired).
        """
        events: list = []
        self._events = events
        self.seq = seq
        self.seq_obj = seq
        self.ts = ts
        gtd = self._gtd
        if gtd and gtd[0][0] <= ts:
            self._expire_due(ts)
        # The three commands of the order flow are dispatched directly (a
        # native call when compiled), the rest through the handler table.
        kind = type(command)
        if kind is NEW_ORDER:
            self._on_new_order(command)  # type: ignore[arg-type]
        elif kind is CANCEL:
            self._on_cancel(command)  # type: ignore[arg-type]
        elif kind is REPLACE:
            self._on_replace(command)  # type: ignore[arg-type]
        else:
            handler = self._handlers.get(kind)
            if handler is None:
                events.append(Rejected(seq, None, None, "invalid_order", f"unsupported command {kind.__name__}"))
                return events
            handler(command)
        if self._releases:
            self._drain_releases()
        return events

    # ------------------------------------------------------------- handlers

    def _reject(self, client_id: str | None, account: str | None, reason: str, message: str) -> None:
        self._events.append(Rejected(self.seq_obj, client_id, account, reason, message))

    def _on_instrument(self, cmd: C.Instrument) -> None:
        if cmd.symbol in self.instruments:
            self._reject(None, None, "instrument_exists", f"instrument {cmd.symbol} is already defined")
            return
        self.instruments[cmd.symbol] = InstrumentState(cmd)
        self._events.append(InstrumentAdded(self.seq_obj, cmd.symbol, cmd.tick, cmd.lot))

    def _on_clock(self, cmd: C.Clock) -> None:
        """Time passed; GTD expiry already ran in ``apply``."""

    def _on_new_order(self, cmd: C.NewOrder) -> None:
        # One C call reads every field (a compiled core pays a generic
        # attribute lookup per field read on a msgspec Struct).
        fields = astuple(cmd)
        account: str
        client_id: str
        symbol: str
        side: int
        kind: int
        qty: int
        tif: int
        post_only: bool
        stp: int
        account, client_id, symbol, side, kind, qty, price, _, _, _, _, tif, _, post_only, stp = fields
        inst = self.instruments.get(symbol)
        if inst is None:
            self._reject(client_id, account, "unknown_symbol", f"unknown symbol {symbol}")
            return
        known = self.client_ids.get(account)
        if known is not None and client_id in known or (
            self.cold_registry is not None and self.cold_registry.get(account, client_id) is not None
        ):
            self._reject(client_id, account, "duplicate_client_id", f"client_id {client_id} was already used")
            return
        # Fast path: a plain GTC limit or IOC market order in continuous
        # trading passes every check below; skip straight to it.
        plain = (
            qty > 0
            and not post_only
            and not inst.in_call
            and (side == BUY or side == SELL)
            and 0 <= stp <= 4
            and (
                (kind == LIMIT and tif == C.GTC and price is not None and price > 0)
                or (kind == MARKET and tif == IOC and price is None)
            )
        )
        if not plain:
            problem = self._order_problem(cmd, inst)
            if problem is not None:
                self._reject(client_id, account, problem[0], problem[1])
                return
            order = self._order_from(fields, OPEN, known)
            self._submit(order, inst)
            return
        order = self._order_from(fields, OPEN, known)  # the account's registry: no second lookup
        self._process_incoming(order, inst)

    def _order_problem(self, cmd: C.NewOrder, inst: InstrumentState) -> tuple[str, str] | None:
        """Business checks an order must pass before it gets an id."""
        problem = shape_problem(cmd)
        if problem is not None:
            return ("invalid_order", problem)
        if cmd.tif == GTD and cmd.expire_at is not None and cmd.expire_at <= self.ts:
            return ("expire_in_past", f"expire_at {cmd.expire_at} is not after the command time {self.ts}")
        if inst.in_call and (cmd.tif in (IOC, FOK) and cmd.kind != MARKET or cmd.tif == FOK or cmd.post_only):
            return ("call_phase_tif", f"{cmd.symbol} is in a call phase: IOC, FOK and post-only orders are refused")
        last, trigger = inst.last, cmd.trigger
        if cmd.kind in (STOP, STOP_LIMIT) and inst.config.stop_entry_check and last is not None and trigger is not None:
            if (last >= trigger) if cmd.side == BUY else (last <= trigger):
                return ("stop_already_triggered", f"last price {last} already reached the trigger {trigger}")
        return None

    def _create_order(self, cmd: C.NewOrder, status: int = OPEN) -> Order:
        """Assign an id, register the client id and emit ``accepted``."""
        return self._order_from(astuple(cmd), status)

    def _order_from(self, fields: tuple, status: int, ids: dict[str, Any] | None = None) -> Order:
        """``_create_order`` from ``astuple(NewOrder)`` (field order:
        ``NEW_ORDER_FIELDS``); ``ids``: the account's client-id registry if
        the caller has it at hand (else it is looked up)."""
        account: str
        client_id: str
        symbol: str
        side: int
        kind: int
        qty: int
        tif: int
        post_only: bool
        stp: int
        (account, client_id, symbol, side, kind, qty, price, trigger, trail_amount, trail_pct, activation, tif,
         expire_at, post_only, stp) = fields
        order_id = self.next_id
        self.next_id = order_id + 1
        # The id as one Python int object: the order, the index, the registry
        # and the events share it (a compiled core would box it for each).
        boxed_id: Any = order_id
        order = Order(
            boxed_id, client_id, account, symbol, side, kind, price, qty, tif,
            expire_at if tif == GTD else None, post_only, stp, self.seq,
        )
        if kind in STOP_KINDS:
            order.trigger = trigger
            order.trail_amount = trail_amount
            order.trail_percent_e6 = trail_pct
            order.activation_price = activation
        order.status = status
        self.orders[boxed_id] = order
        if ids is None:
            ids = self.client_ids.get(account)
            if ids is None:
                ids = self.client_ids[account] = {}
        ids[client_id] = boxed_id
        self._events.append(Accepted(self.seq_obj, boxed_id, client_id, account, symbol))
        if order.expire_at is not None:
            heapq.heappush(self._gtd, (order.expire_at, boxed_id))
        return order

    def _submit(self, order: Order, inst: InstrumentState) -> None:
        """Route a live order: a stop waits in the stop index, anything else comes in."""
        if order.kind in STOP_KINDS:
            order.status = PENDING
            inst.stops.add(order, inst.last)
        else:
            order.status = OPEN
            self._process_incoming(order, inst)

    # --------------------------------------------------------- incoming flow

    def _process_incoming(self, order: Order, inst: InstrumentState) -> None:
        """Match an incoming limit/market order, then rest or cancel the rest."""
        book = inst.book
        if inst.in_call:
            self._rest_in_call(order, inst)
            return
        opp = book.asks if order.side == BUY else book.bids
        if order.post_only:
            best = opp.best
            price = order.price
            assert price is not None  # post-only orders are limits
            if best is not None and (price >= best.price if order.side == BUY else price <= best.price):
                if inst.config.post_only_mode == C.POST_ONLY_SLIDE and (order.side == SELL or best.price > 1):
                    order.price = best.price - 1 if order.side == BUY else best.price + 1
                    self._events.append(
                        Amended(self.seq_obj, order.order_id, order.client_id, order.qty, order.price, order.symbol)
                    )
                else:
                    self._end(order, "post_only")
                    return
        if order.tif == FOK and not self._fok_fillable(order, opp, inst.pro_rata):
            self._end(order, "fok")
            return
        self._match(order, inst, opp)
        if order.status != OPEN:
            return
        if order.qty == 0:
            self._retire(order)
        elif order.kind == MARKET or order.tif == IOC or order.tif == FOK:
            self._end(order, "ioc")
        else:
            self._rest(order, inst)

    def _rest(self, order: Order, inst: InstrumentState) -> None:
        book = inst.book
        side = book.bids if order.side == BUY else book.asks
        price: Any = order.price  # the int object: the level lookup keys on it (not unboxed and boxed anew)
        assert price is not None  # only limit orders rest
        if inst.pro_rata and inst.config.top_order:
            best = side.best
            if best is None or (price > best.price if order.side == BUY else price < best.price):
                inst.top[order.side] = order.order_id
        side.level_for_insert(price).append(order)

    def _rest_in_call(self, order: Order, inst: InstrumentState) -> None:
        """Call phase: nothing matches; limits rest (even crossed), markets queue."""
        if order.tif in (IOC, FOK) and order.kind != MARKET or order.tif == FOK or order.post_only:
            self._end(order, "auction")
            return
        if order.kind == MARKET:
            order.in_call = True
            inst.call_market[order.side][order.order_id] = order
        else:
            self._rest(order, inst)

    def _fok_fillable(self, taker: Order, opp: BookSide, pro_rata: bool = False) -> bool:
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
            if pro_rata:
                # A pro-rata level resolves every own order before allocating.
                own = sum(m.qty for m in level.orders() if m.account == account)
                if own and stp != STP_EXPIRE_MAKER:
                    return False
                need -= level.qty - own
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
        """Price-time matching of ``taker`` against the opposite side.

        Always re-reads the head of the best level: any side effect of a fill
        (a group reacting) may remove orders, so no iterator is kept.
        """
        buy = taker.side == BUY
        limit = taker.price if taker.kind == LIMIT else None
        stp = taker.stp
        pro_rata = inst.pro_rata
        while taker.qty > 0 and taker.status == OPEN:
            level = opp.best
            if level is None:
                return
            price = level.price
            if limit is not None and (price > limit if buy else price < limit):
                return
            if pro_rata:
                self._match_level_pro_rata(taker, inst, opp, level)
                continue
            maker = level.head
            assert maker is not None  # a level on the book is never empty
            if stp != STP_NONE and maker.account == taker.account:
                if not self._prevent(taker, maker, stp):
                    return
                continue
            self._fill(taker, maker, taker.qty if taker.qty < maker.qty else maker.qty, inst, opp)

    def _fill(self, taker: Order, maker: Order, qty: int, inst: InstrumentState, opp: BookSide) -> None:
        """One trade of ``qty`` at the maker's price; the maker leaves the book when filled."""
        # The price as its Python int object: the trade event and the last
        # price share it (narrowed to int, a compiled core would box it anew).
        price: Any = maker.price
        level = maker.level
        assert price is not None and level is not None  # the maker rests on ``opp``
        if taker.side == BUY:
            buyer, seller = taker.account, maker.account
        else:
            buyer, seller = maker.account, taker.account
        self._events.append(
            Trade(
                self.seq_obj,
                inst.symbol,
                price,
                qty,
                maker.order_id,
                taker.order_id,
                maker.client_id,
                taker.client_id,
                buyer,
                seller,
                _AGGRESSOR[taker.side],
            )
        )
        taker.qty -= qty
        taker.filled += qty
        maker.filled += qty
        level.qty -= qty
        if qty == maker.qty:
            maker.qty = 0
            level.unlink(maker)
            if level.count == 0:
                opp.remove_level(level)
            top = inst.top[maker.side]
            if top is not None and top == maker.order_id:  # narrowed: a native int compare when compiled
                inst.top[maker.side] = None
            self._retire(maker)
        else:
            maker.qty -= qty
        self._after_trade(inst, price, qty, taker.side)
        if maker.group is not None:
            self._on_member_fill(maker, qty)
        if taker.group is not None:
            self._on_member_fill(taker, qty)

    def _after_trade(self, inst: InstrumentState, price: Any, qty: int, aggressor: int | None) -> None:
        """Statistics, VPIN, stop triggers and conditionals after one trade
        (``price``: an int, passed as the object the trade event holds)."""
        inst.last = price
        inst.volume += qty
        inst.trades += 1
        if inst.vpin is not None:
            inst.vpin.on_trade(price, qty, aggressor, self.ts)
        if inst.stops.count and not inst.in_call:
            for order in inst.stops.on_trade(price):
                self._on_stop_fired(order)
        watchers = self.watch.get(inst.symbol)
        if watchers:
            self._evaluate_conditionals(watchers)

    def _match_level_pro_rata(self, taker: Order, inst: InstrumentState, opp: BookSide, level: Level) -> None:
        """Allocate the taker over one level pro rata (market-rules §3).

        Self-trade prevention first resolves every same-account maker of the
        level in time priority (the taker's mode decides), then the rest is
        allocated among the other makers; trades are printed TOP first, then
        in time priority.
        """
        stp = taker.stp
        if stp != STP_NONE:
            for maker in list(level.orders()):
                if maker.account == taker.account and maker.status == OPEN:
                    if not self._prevent(taker, maker, stp):
                        return
            if opp.best is not level or taker.qty == 0:
                return
        makers = list(level.orders())
        top_id = inst.top[SELL if taker.side == BUY else BUY]
        top_index = next((i for i, m in enumerate(makers) if m.order_id == top_id), None)
        shares = allocate([m.qty for m in makers], taker.qty, top_index, inst.config.min_alloc, inst.config.residual)
        order_of_print = list(range(len(makers)))
        if top_index is not None:
            order_of_print.remove(top_index)
            order_of_print.insert(0, top_index)
        for i in order_of_print:
            share = shares[i]
            maker = makers[i]
            if share > 0 and maker.status == OPEN and taker.status == OPEN and taker.qty > 0:
                self._fill(taker, maker, min(share, maker.qty, taker.qty), inst, opp)

    def _prevent(self, taker: Order, maker: Order, stp: int) -> bool:
        """Self-trade prevention between ``taker`` and same-account ``maker``.

        Returns True when the taker may keep matching.
        """
        qty = taker.qty if taker.qty < maker.qty else maker.qty
        self._events.append(Prevented(self.seq_obj, taker.order_id, maker.order_id, qty, STP_NAMES[stp], taker.symbol))
        if stp == STP_EXPIRE_TAKER:
            self._end(taker, "stp")
            return False
        if stp == STP_EXPIRE_MAKER:
            self._end(maker, "stp")
            return True
        if stp == STP_EXPIRE_BOTH:
            self._end(maker, "stp")
            self._end(taker, "stp")
            return False
        # Decrement: both shrink by the smaller open quantity; the smaller
        # (or both, when equal) expires with that quantity as its remainder.
        if maker.qty == qty:
            self._end(maker, "stp")
        else:
            self._shrink(maker, qty)
        if taker.qty == qty:
            self._end(taker, "stp")
            return False
        taker.qty -= qty
        return True

    # ------------------------------------------------------ order endings

    def _retire(self, order: Order) -> None:
        """An order is done because it is filled: drop it from the live index."""
        order.status = DONE
        del self.orders[order.order_id]
        if order.group is not None:
            self._maybe_close(order.group)

    def _end(self, order: Order, reason: str, cascade: bool = True) -> None:
        """End a live order unfilled: take it off wherever it waits, emit
        ``cancelled`` with its open quantity, and let its group react
        (``cascade=False`` when the group itself is the cause)."""
        status = order.status
        inst = self.instruments[order.symbol]
        if status == OPEN:
            if order.level is not None:
                self._unrest(order, inst)
            elif order.in_call:
                del inst.call_market[order.side][order.order_id]
                order.in_call = False
        elif status == PENDING:
            inst.stops.remove(order)
        self._events.append(Cancelled(self.seq_obj, order.order_id, order.client_id, reason, order.qty, order.symbol))
        order.status = DONE
        del self.orders[order.order_id]
        if order.group is not None:
            self._on_member_end(order, reason, cascade)

    def _unrest(self, order: Order, inst: InstrumentState) -> None:
        """Take a resting order off its level (dropping an emptied level and
        its TOP status). O(1), plus O(log L) when the level empties."""
        level = order.level
        assert level is not None  # only called for a resting order
        level.unlink(order)
        if level.count == 0:
            (inst.book.bids if order.side == BUY else inst.book.asks).remove_level(level)
        top = inst.top[order.side]
        if top is not None and top == order.order_id:  # narrowed: a native int compare when compiled
            inst.top[order.side] = None

    def _shrink(self, order: Order, qty: int) -> None:
        """Reduce a live order's open quantity in place (keeps priority)."""
        order.qty -= qty
        if order.level is not None:
            order.level.qty -= qty

    def _expire_due(self, ts: int) -> None:
        gtd = self._gtd
        orders = self.orders
        while gtd and gtd[0][0] <= ts:
            _, order_id = heapq.heappop(gtd)
            order = orders.get(order_id)
            if order is not None and order.expire_at is not None and order.expire_at <= ts:
                self._end(order, "expired")

    # ------------------------------------------------------ cancel/replace

    def _lookup(
        self, account: str, client_id: str | None, order_id: int | None
    ) -> Order | OcoGroup | BracketGroup | ConditionalGroup | None:
        """The live order or group named by id or client id, if it belongs to ``account``."""
        key: Any = order_id  # the id as its object (narrowed to int, a compiled core would box it per lookup)
        if key is None:
            if client_id is None:
                return None
            key = self.registered(account, client_id)
            if key is None:
                return None
        target: Order | OcoGroup | BracketGroup | ConditionalGroup | None = self.orders.get(key)
        if target is None:
            target = self.groups.get(key)
        if target is None or target.account != account:
            return None
        if client_id is not None and target.client_id != client_id:
            return None
        return target

    def _on_cancel(self, cmd: C.Cancel) -> None:
        target = self._lookup(cmd.account, cmd.client_id, cmd.order_id)
        if target is None:
            self._reject(cmd.client_id, cmd.account, "unknown_order", _unknown_message(cmd))
        elif isinstance(target, Order):
            self._end(target, "user")
        else:
            self._cancel_group(target)

    def _on_replace(self, cmd: C.Replace) -> None:
        # One C call reads every field (a compiled core pays a generic
        # attribute lookup per field read on a msgspec Struct).
        client_id: str | None
        qty: int | None
        price: int | None
        account, client_id, order_id, qty, price = astuple(cmd)
        order = self._lookup(account, client_id, order_id)
        if not isinstance(order, Order) or not (order.level is not None or order.status == PENDING):
            self._reject(client_id, account, "unknown_order", _unknown_message(cmd))
            return
        if qty is None and price is None:
            self._reject(client_id, account, "invalid_order", "replace needs qty or price")
            return
        if (qty is not None and qty <= 0) or (price is not None and price <= 0):
            self._reject(client_id, account, "invalid_order", "replace qty and price must be positive")
            return
        if qty is not None and isinstance(order.group, BracketGroup) and order is not order.group.entry:
            position = order.group.entry.filled - order.group.closed
            if qty > position:
                self._reject(client_id, account, "invalid_order",
                             f"a bracket child cannot exceed the open position of {position}")
                return
        if order.status == PENDING:
            self._replace_pending(order, cmd)
            return
        new_price = order.price if price is None else price
        new_qty = order.qty if qty is None else qty
        if new_price == order.price and new_qty <= order.qty:
            self._shrink(order, order.qty - new_qty)
            self._events.append(Amended(self.seq_obj, order.order_id, order.client_id, new_qty, new_price, order.symbol))
            return
        inst = self.instruments[order.symbol]
        opp = inst.book.asks if order.side == BUY else inst.book.bids
        if order.post_only and new_price != order.price:
            assert new_price is not None  # a resting post-only order is a limit
            best = opp.best
            if best is not None and (new_price >= best.price if order.side == BUY else new_price <= best.price):
                if inst.config.post_only_mode == C.POST_ONLY_SLIDE and (order.side == SELL or best.price > 1):
                    new_price = best.price - 1 if order.side == BUY else best.price + 1
                else:
                    self._reject(client_id, account, "post_only_would_cross", "the new price would cross the book")
                    return
        self._unrest(order, inst)
        order.price = new_price
        order.qty = new_qty
        order.priority_seq = self.seq
        self._events.append(Amended(self.seq_obj, order.order_id, order.client_id, new_qty, new_price, order.symbol))
        if inst.in_call:  # no matching in a call phase: it rests at its new price
            self._rest(order, inst)
            return
        self._match(order, inst, opp)
        if order.status != OPEN:
            return
        if order.qty == 0:
            self._retire(order)
        else:
            self._rest(order, inst)

    def _replace_pending(self, order: Order, cmd: C.Replace) -> None:
        """A pending stop: change its quantity, or a stop-limit's limit price."""
        if cmd.price is not None and order.kind != STOP_LIMIT:
            self._reject(cmd.client_id, cmd.account, "invalid_order", "only a stop-limit's limit price can be replaced")
            return
        if cmd.qty is not None:
            order.qty = cmd.qty
        if cmd.price is not None:
            order.price = cmd.price
        self._events.append(Amended(self.seq_obj, order.order_id, order.client_id, order.qty, order.price, order.symbol))

    # ------------------------------------------------------------ queries

    def book(self, symbol: str, depth: int | None = None) -> dict | None:
        """Aggregated levels, best first, in ticks and lots; None if unknown."""
        inst = self.instruments.get(symbol)
        if inst is None:
            return None

        def levels(side: BookSide) -> list[dict]:
            out: list[dict] = []
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

    def next_expiry(self) -> int | None:
        """The earliest ``expire_at`` of a live GTD order, or None. O(log n) amortised."""
        gtd = self._gtd
        while gtd:
            expire_at, order_id = gtd[0]
            order = self.orders.get(order_id)
            if order is not None and order.expire_at == expire_at:
                return expire_at
            heapq.heappop(gtd)
        return None

    def order(self, order_id: int) -> Order | None:
        return self.orders.get(order_id)

    def open_orders(self, account: str | None = None, symbol: str | None = None) -> list[Order]:
        """Live orders (resting, pending stops, inactive group members) by order id."""
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

    def stats(self, symbol: str, depth: int = 1) -> dict | None:
        """Top-of-book statistics in ticks/lots with exact Fractions; None if unknown.

        ``mid``, ``imbalance``, ``microprice`` and ``vpin`` are Fractions (or
        None); ``depth`` sums that many levels for imbalance and microprice.
        """
        inst = self.instruments.get(symbol)
        if inst is None:
            return None
        book = inst.book
        vpin = inst.vpin.value() if inst.vpin is not None else None
        return {
            "symbol": symbol,
            "seq": self.seq,
            "best_bid": book.bids.best.price if book.bids.best else None,
            "best_ask": book.asks.best.price if book.asks.best else None,
            "mid": analytics.mid(book),
            "spread": analytics.spread(book),
            "imbalance": analytics.imbalance(book, depth),
            "microprice": analytics.microprice(book, depth),
            "vpin": vpin,
            "toxicity": toxicity(vpin),
            "last": inst.last,
            "volume": inst.volume,
        }

    # ---------------------------------------------------- digest, invariants

    def digest(self) -> str:
        """xxh3-128 of the exported state (``core/state.py``: everything the
        engine keeps, exactly as a snapshot stores it), as 32 hex digits.
        Equal histories give equal digests; a restored snapshot gives the
        digest of the engine it was taken from. O(state)."""
        return xxhash.xxh3_128_hexdigest(msgspec.msgpack.encode(export_state(self)))

    def check_invariants(self) -> None:
        """Assert every internal invariant; raises InvariantError."""
        seen: set[int] = set()
        for symbol, inst in self.instruments.items():
            _check(inst.symbol == symbol, f"instrument key {symbol}")
            for side_code, side in ((BUY, inst.book.bids), (SELL, inst.book.asks)):
                _check_side(self, inst, side_code, side, seen)
            for side_code in (BUY, SELL):
                for order_id, order in inst.call_market[side_code].items():
                    _check(inst.in_call and order.in_call and order.kind == MARKET, f"call market order {order_id}")
                    _check(self.orders.get(order_id) is order and order.status == OPEN, f"call order {order_id} live")
                    seen.add(order_id)
                top = inst.top[side_code]
                if top is not None:
                    top_order = self.orders.get(top)
                    _check(top_order is not None and top_order.level is not None, f"TOP {top} not resting")
            bid, ask = inst.book.bids.best, inst.book.asks.best
            if not inst.in_call:
                _check(bid is None or ask is None or bid.price < ask.price, f"{symbol} book crossed")
            stops = list(inst.stops.orders())
            _check(len(stops) == inst.stops.count, f"{symbol} stop count {inst.stops.count} != {len(stops)}")
            for order in stops:
                _check(self.orders.get(order.order_id) is order and order.status == PENDING, f"stop {order.order_id}")
            trailing = sum(1 for o in stops if o.kind == TRAILING_STOP)
            _check(inst.stops.trail_count == trailing, f"{symbol} trailing count {inst.stops.trail_count} != {trailing}")
            buys, sells = inst.stops.plain
            _check(inst.stops.buy_min == (buys.peekitem(0)[0] if buys else None), f"{symbol} cached buy trigger")
            _check(inst.stops.sell_max == (sells.peekitem(-1)[0] if sells else None), f"{symbol} cached sell trigger")
        scheduled = {oid for _, oid in self._gtd}
        for order_id, order in self.orders.items():
            _check(order.order_id == order_id, f"order index key {order_id}")
            _check(order.status in (OPEN, PENDING, INACTIVE), f"order {order_id} live with status {order.status}")
            if order.status == OPEN:
                _check(order_id in seen, f"open order {order_id} not on a book")
            _check(self.registered(order.account, order.client_id) == order_id, f"registry for {order_id}")
            _check(order.order_id < self.next_id, f"order id {order_id} >= next id")
            if order.expire_at is not None:
                _check(order_id in scheduled, f"GTD order {order_id} not scheduled")
            if order.group is not None:
                _check(self.groups.get(order.group.group_id) is order.group, f"order {order_id} in a dead group")
        _check(len(seen) == sum(1 for o in self.orders.values() if o.status == OPEN), "book/index size mismatch")
        for group_id, group in self.groups.items():
            group.check(self)
        _check(not self._releases, "release queue not empty between commands")


def _unknown_message(cmd) -> str:
    name = f"order_id {cmd.order_id}" if cmd.order_id is not None else f"client_id {cmd.client_id}"
    return f"no open order with {name} for account {cmd.account}"



def _check(condition: bool, what: str) -> None:
    if not condition:
        raise InvariantError(what)


def _check_side(engine: Engine, inst: InstrumentState, side_code: int, side: BookSide, seen: set[int]) -> None:
    levels = side.levels
    prices = side.prices()
    _check(sorted(levels) == prices and len(set(prices)) == len(prices), f"{inst.symbol} level keys out of order")
    if not levels:
        _check(side.best is None, f"{inst.symbol} best cached on an empty side")
        return
    best_price = prices[-1] if side.is_bid else prices[0]
    _check(side.best is not None and side.best.price == best_price, f"{inst.symbol} cached best is stale")
    for price in prices:
        level = levels[price]
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

