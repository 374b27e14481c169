"""The engine's shared state and the order-flow hooks its layers call (core room).

``Engine`` is built as one line of classes, each a layer of the same state
machine::

    EngineBase -> ContingentMixin (contingent.py) -> AuctionMixin (auction.py) -> Engine (engine.py)

``EngineBase`` declares the attributes every layer reads and the order-flow
methods that ``Engine`` implements, so that each layer type-checks on its
own and the whole line compiles to native classes with mypyc (single
inheritance, every attribute typed: see docs/benchmarks.md, "Compiled
core"). Nothing here runs on its own.
"""

from __future__ import annotations

from collections import deque
from typing import TYPE_CHECKING, Any, Union

from . import commands as C
from .book import Book, Order
from .registry import ColdRegistry
from .commands import MATCH_PRO_RATA
from .stops import StopBook
from .vpin import Vpin

if TYPE_CHECKING:
    from .book import BookSide
    from .contingent import BracketGroup, ConditionalGroup, OcoGroup
    from .events import Event

    Group = Union[OcoGroup, BracketGroup, ConditionalGroup]


class InstrumentState:
    """Everything the engine keeps per symbol."""

    __slots__ = (
        "config",
        "symbol",
        "book",
        "last",
        "volume",
        "trades",
        "stops",
        "vpin",
        "in_call",
        "call_market",
        "top",
        "pro_rata",
    )

    def __init__(self, config: C.Instrument) -> None:
        self.config = config
        self.symbol: str = config.symbol
        self.book = Book()
        self.last: int | None = None  # last trade price, ticks
        self.volume = 0  # cumulative traded lots
        self.trades = 0  # number of trades
        self.stops = StopBook()
        self.vpin: Vpin | None = (
            Vpin(config.vpin_bucket, config.vpin_window, config.vpin_classify, config.vpin_sigma_ticks, config.vpin_bar_ns)
            if config.vpin_bucket > 0
            else None
        )
        self.in_call = False  # in a call auction's call phase
        # Market orders resting in a call phase, per side, by order id.
        self.call_market: tuple[dict[int, Order], dict[int, Order]] = ({}, {})
        self.top: list[int | None] = [None, None]  # pro-rata TOP order id per side
        self.pro_rata: bool = config.matching == MATCH_PRO_RATA


class EngineBase:
    """State shared by every layer of ``Engine``, and the order-flow methods
    the layers call (implemented in ``Engine``)."""

    instruments: dict[str, InstrumentState]
    orders: dict[int, Order]  # live orders by id (open, pending, inactive)
    groups: dict[int, Group]  # live groups (OCO, bracket, conditional) by id
    # The client-id registry: account -> client_id -> order or group id,
    # forever (two levels: no key tuple is built, kept or hashed per order).
    client_ids: dict[str, dict[str, int]]
    # The entries a snapshot restored, packed and read-only (core/registry.py),
    # asked where client_ids misses; None until a restore of state version 3.
    cold_registry: ColdRegistry | None
    next_id: int
    seq: int  # seq of the last applied command
    # The same seq as one Python int object, boxed once per command: the hot
    # events (accepted, trade, cancelled) take it as is, where a compiled core
    # would box ``seq`` again for every event it builds.
    seq_obj: Any
    ts: int  # ts of the last applied command
    watch: dict[str, dict[int, ConditionalGroup]]  # symbol -> conditionals watching it, by id
    _gtd: list[tuple[int, int]]  # heap of (expire_at, order_id), cleaned lazily
    _events: list[Event]
    _releases: deque[tuple[int, Any]]

    def registered(self, account: str, client_id: str) -> int | None:
        """The order or group id ever registered under ``(account,
        client_id)`` (live or not), or None. O(1). The registry's layout is
        the engine's own business: everything outside core asks here."""
        ids = self.client_ids.get(account)
        if ids is not None:
            order_id = ids.get(client_id)
            if order_id is not None:
                return order_id
        cold = self.cold_registry
        return None if cold is None else cold.get(account, client_id)

    def registry(self, ordered: bool = True) -> list[tuple[str, str, int]]:
        """Every ``(account, client_id, id)`` registered: in id order (the
        order they were registered in: ids are handed out as entries are
        made), or with ``ordered=False`` grouped by account, for a caller
        that only builds a map. O(n log n) ordered, and about O(n) when a
        few accounts hold most entries (each account's entries are mostly in
        id order already, and the cold part is in id order); O(n) unordered."""
        rows = [] if self.cold_registry is None else self.cold_registry.entries()
        rows += self.hot_registry(False)
        if ordered:
            rows.sort(key=_third)
        return rows

    def hot_registry(self, ordered: bool = True) -> list[tuple[str, str, int]]:
        """``registry()`` of the entries in ``client_ids`` only (not the
        cold part a restore left): those made since the restore."""
        rows = [(account, client_id, order_id)
                for account, ids in self.client_ids.items() for client_id, order_id in ids.items()]
        if ordered:
            rows.sort(key=_third)
        return rows

    def register(self, account: str, client_id: str, order_id: Any) -> None:
        """Enter ``(account, client_id) -> order_id`` in the registry (ids only grow)."""
        ids = self.client_ids.get(account)
        if ids is None:
            ids = self.client_ids[account] = {}
        ids[client_id] = order_id

    def _reject(self, client_id: str | None, account: str | None, reason: str, message: str) -> None:
        raise NotImplementedError

    def _order_problem(self, cmd: C.NewOrder, inst: InstrumentState) -> tuple[str, str] | None:
        raise NotImplementedError

    def _create_order(self, cmd: C.NewOrder, status: int = 1) -> Order:
        raise NotImplementedError

    def _submit(self, order: Order, inst: InstrumentState) -> None:
        raise NotImplementedError

    def _process_incoming(self, order: Order, inst: InstrumentState) -> None:
        raise NotImplementedError

    def _match(self, taker: Order, inst: InstrumentState, opp: BookSide) -> None:
        raise NotImplementedError

    def _rest(self, order: Order, inst: InstrumentState) -> None:
        raise NotImplementedError

    def _retire(self, order: Order) -> None:
        raise NotImplementedError

    def _end(self, order: Order, reason: str, cascade: bool = True) -> None:
        raise NotImplementedError

    def _unrest(self, order: Order, inst: InstrumentState) -> None:
        raise NotImplementedError

    def _shrink(self, order: Order, qty: int) -> None:
        raise NotImplementedError


def _third(row: tuple[str, str, int]) -> int:
    return row[2]


def shape_problem(cmd: C.NewOrder) -> str | None:
    """Structural checks the edge also makes (the engine re-checks for embedders)."""
    kind = cmd.kind
    if cmd.qty <= 0:
        return "qty must be positive"
    if kind in (C.LIMIT, C.STOP_LIMIT) and (cmd.price is None or cmd.price <= 0):
        return "a limit or stop-limit order needs a positive price"
    if kind in (C.MARKET, C.STOP, C.TRAILING_STOP) and cmd.price is not None:
        return f"a {C.KIND_NAMES[kind]} order has no price"
    if kind == C.MARKET and cmd.tif not in (C.IOC, C.FOK):
        return "a market order must be IOC or FOK"
    if kind in (C.STOP, C.STOP_LIMIT) and (cmd.trigger is None or cmd.trigger <= 0):
        return "a stop order needs a positive trigger"
    if kind == C.TRAILING_STOP:
        if (cmd.trail_amount is None) == (cmd.trail_percent_e6 is None):
            return "a trailing stop needs exactly one of trail_amount and trail_percent"
        if (cmd.trail_amount is not None and cmd.trail_amount <= 0) or (
            cmd.trail_percent_e6 is not None and not 0 < cmd.trail_percent_e6 < 100_000_000
        ):
            return "a trailing distance must be positive (and below 100 percent)"
    if kind in (C.STOP, C.TRAILING_STOP) and cmd.tif not in (C.GTC, C.GTD):
        return "a stop order must be GTC or GTD"
    if kind not in (C.LIMIT, C.MARKET, C.STOP, C.STOP_LIMIT, C.TRAILING_STOP):
        return f"unknown order kind {kind}"
    if cmd.post_only and (kind != C.LIMIT or cmd.tif in (C.IOC, C.FOK)):
        return "post-only needs a GTC or GTD limit order"
    if cmd.tif == C.GTD and cmd.expire_at is None:
        return "a GTD order needs expire_at"
    if cmd.side not in (C.BUY, C.SELL) or cmd.stp not in range(len(C.STP_NAMES)) or cmd.tif not in range(4):
        return "side, tif or stp out of range"
    return None
