"""A deliberately naive reference engine: the oracle for ``jex.core.Engine``.

Tests room. This module is written from ``docs/semantics.md`` alone (plus the
command and event Structs of ``jex/core/commands.py`` and
``jex/core/events.py``), never from the fast engine's source, so that the two
implementations can only agree by both following the written rules.

Clarity over speed on purpose: each instrument keeps one plain list of resting
orders; the best price and the next maker are found by sorting or scanning on
every access; an order is looked up by a linear scan over all instruments.
There is no caching, no sorted container and no linked list.

Covered (docs/semantics.md §1–§8): ``Instrument`` (FIFO only), ``NewOrder``
of kind limit or market with GTC/IOC/FOK/GTD, post-only (reject / slide), the
four self-trade prevention modes and ``none``, ``Cancel``, ``Replace``,
``Clock`` and GTD expiry. Anything else (stop kinds, OCO, brackets,
conditionals, auctions, pro-rata instruments) is outside the written
semantics, so it raises ``NotImplementedError`` instead of guessing.

Readings chosen where the document leaves room (each one is reported with the
oracle, see ``tests/test_reference_oracle.py``):

- ``rejected`` events carry the command's own ``client_id`` and ``account``
  (``None``/``None`` for an instrument); the ``message`` text is not
  specified, so this engine writes the reason's description from
  ``jex.core.reasons`` and the oracle compares messages only as "some text".
- Only GTD orders expire (``expire_at`` is "GTD only" in ``NewOrder``); a GTC,
  IOC or FOK order that happens to carry ``expire_at`` never expires.
- A replace is checked for its target first (``unknown_order``), then for its
  structure (``invalid_order``), the order the bullets of §6 are written in.
- ``book(symbol)["seq"]`` is the engine's seq (the last applied command).
- An order whose ``side``, ``tif``, ``stp`` or ``kind`` is outside its enum is
  structurally invalid (``invalid_order``, §3 check 3), though §3 does not list
  these cases.
- A post-only slide applies literally even if the slid price is 0 or less
  (best ask at 1 tick); §3 does not say otherwise. The oracle's price band
  never gets there.
"""

from __future__ import annotations

from dataclasses import dataclass

from jex.core import commands as C
from jex.core import events as E
from jex.core.reasons import REJECT_REASONS


@dataclass
class RefOrder:
    """One resting (or incoming) order. ``open_qty`` is what is left to trade."""

    order_id: int
    client_id: str
    account: str
    symbol: str
    side: int
    kind: int
    price: int | None  # None for a market order
    open_qty: int
    tif: int
    expire_at: int | None
    post_only: bool
    stp: int
    priority: int  # the seq at which it (last) lost/got time priority


@dataclass
class RefInstrument:
    symbol: str
    tick: str
    lot: str
    post_only_mode: int
    last: int | None = None
    volume: int = 0
    trade_count: int = 0
    # Every resting order of both sides, in no particular order.
    orders: list[RefOrder] | None = None


class ReferenceEngine:
    """Naive, obviously-correct model of docs/semantics.md."""

    def __init__(self) -> None:
        self.instruments: dict[str, RefInstrument] = {}
        self.registry: dict[tuple[str, str], int] = {}
        self.next_order_id = 1
        self.seq = 0
        self.ts = 0

    # ------------------------------------------------------------------ reads

    def _side_sorted(self, inst: RefInstrument, side: int) -> list[RefOrder]:
        """Resting orders of one side, best price first, then time priority."""
        same_side = [o for o in inst.orders if o.side == side]
        if side == C.BUY:
            return sorted(same_side, key=lambda o: (-o.price, o.priority))
        return sorted(same_side, key=lambda o: (o.price, o.priority))

    def _levels(self, inst: RefInstrument, side: int) -> list[list[RefOrder]]:
        levels: list[list[RefOrder]] = []
        for order in self._side_sorted(inst, side):
            if levels and levels[-1][0].price == order.price:
                levels[-1].append(order)
            else:
                levels.append([order])
        return levels

    def book(self, symbol: str) -> dict | None:
        inst = self.instruments.get(symbol)
        if inst is None:
            return None

        def side_levels(side: int) -> list[dict]:
            return [
                {"price": lvl[0].price, "qty": sum(o.open_qty for o in lvl), "orders": len(lvl)}
                for lvl in self._levels(inst, side)
            ]

        return {
            "symbol": symbol,
            "seq": self.seq,
            "last": inst.last,
            "bids": side_levels(C.BUY),
            "asks": side_levels(C.SELL),
        }

    def queue(self, symbol: str, side: int) -> list[list[tuple[int, int]]]:
        inst = self.instruments[symbol]
        return [[(o.order_id, o.open_qty) for o in lvl] for lvl in self._levels(inst, side)]

    def stats(self, symbol: str) -> tuple[int | None, int, int]:
        inst = self.instruments[symbol]
        return inst.last, inst.volume, inst.trade_count

    def _find_live(self, order_id: int) -> RefOrder | None:
        for inst in self.instruments.values():
            for order in inst.orders:
                if order.order_id == order_id:
                    return order
        return None

    def _best_price(self, inst: RefInstrument, side: int) -> int | None:
        prices = [o.price for o in inst.orders if o.side == side]
        if not prices:
            return None
        return max(prices) if side == C.BUY else min(prices)

    # ----------------------------------------------------------------- apply

    def apply(self, cmd: C.Command, seq: int, ts: int) -> list:
        events: list = []
        self._expire_due(seq, ts, events)
        if isinstance(cmd, C.Instrument):
            self._instrument(cmd, seq, events)
        elif isinstance(cmd, C.NewOrder):
            self._new_order(cmd, seq, ts, events)
        elif isinstance(cmd, C.Cancel):
            self._cancel(cmd, seq, events)
        elif isinstance(cmd, C.Replace):
            self._replace(cmd, seq, events)
        elif isinstance(cmd, C.Clock):
            pass
        else:
            raise NotImplementedError(f"not covered by docs/semantics.md: {type(cmd).__name__}")
        self.seq = seq
        self.ts = ts
        return events

    @staticmethod
    def _reject(seq: int, client_id: str | None, account: str | None, reason: str) -> E.Rejected:
        return E.Rejected(seq, client_id, account, reason, REJECT_REASONS[reason])

    def _expire_due(self, seq: int, ts: int, events: list) -> None:
        due = []
        for inst in self.instruments.values():
            for order in inst.orders:
                if order.tif == C.GTD and order.expire_at is not None and order.expire_at <= ts:
                    due.append(order)
        due.sort(key=lambda o: (o.expire_at, o.order_id))
        for order in due:
            self.instruments[order.symbol].orders.remove(order)
            events.append(E.Cancelled(seq, order.order_id, order.client_id, "expired", order.open_qty, order.symbol))

    def _instrument(self, cmd: C.Instrument, seq: int, events: list) -> None:
        if cmd.symbol in self.instruments:
            events.append(self._reject(seq, None, None, "instrument_exists"))
            return
        if cmd.matching != C.MATCH_FIFO:
            raise NotImplementedError("pro-rata matching is not covered by docs/semantics.md")
        self.instruments[cmd.symbol] = RefInstrument(cmd.symbol, cmd.tick, cmd.lot, cmd.post_only_mode, orders=[])
        events.append(E.InstrumentAdded(seq, cmd.symbol, cmd.tick, cmd.lot))

    # ------------------------------------------------------------ new orders

    @staticmethod
    def _structurally_invalid(cmd: C.NewOrder) -> bool:
        # Enum fields outside their ranges are "structural" too (not listed in §3; see module docstring).
        if cmd.kind not in (C.LIMIT, C.MARKET):
            return True
        if cmd.side not in (C.BUY, C.SELL) or cmd.tif not in range(len(C.TIF_NAMES)):
            return True
        if cmd.stp not in range(len(C.STP_NAMES)):
            return True
        if cmd.qty <= 0:
            return True
        if cmd.kind == C.LIMIT:
            if cmd.price is None or cmd.price <= 0:
                return True
        elif cmd.kind == C.MARKET:
            if cmd.price is not None or cmd.tif not in (C.IOC, C.FOK):
                return True
        if cmd.post_only and (cmd.kind != C.LIMIT or cmd.tif in (C.IOC, C.FOK)):
            return True
        if cmd.tif == C.GTD and cmd.expire_at is None:
            return True
        return False

    def _would_cross(self, inst: RefInstrument, side: int, price: int) -> bool:
        if side == C.BUY:
            best_ask = self._best_price(inst, C.SELL)
            return best_ask is not None and price >= best_ask
        best_bid = self._best_price(inst, C.BUY)
        return best_bid is not None and price <= best_bid

    def _slid_price(self, inst: RefInstrument, side: int) -> int:
        if side == C.BUY:
            return self._best_price(inst, C.SELL) - 1
        return self._best_price(inst, C.BUY) + 1

    def _new_order(self, cmd: C.NewOrder, seq: int, ts: int, events: list) -> None:
        inst = self.instruments.get(cmd.symbol)
        if inst is None:
            events.append(self._reject(seq, cmd.client_id, cmd.account, "unknown_symbol"))
            return
        if (cmd.account, cmd.client_id) in self.registry:
            events.append(self._reject(seq, cmd.client_id, cmd.account, "duplicate_client_id"))
            return
        if cmd.kind in (C.STOP, C.STOP_LIMIT, C.TRAILING_STOP):
            raise NotImplementedError(f"order kind {C.KIND_NAMES[cmd.kind]} is not covered by docs/semantics.md")
        if self._structurally_invalid(cmd):
            events.append(self._reject(seq, cmd.client_id, cmd.account, "invalid_order"))
            return
        if cmd.tif == C.GTD and cmd.expire_at <= ts:
            events.append(self._reject(seq, cmd.client_id, cmd.account, "expire_in_past"))
            return

        order_id = self.next_order_id
        self.next_order_id += 1
        self.registry[(cmd.account, cmd.client_id)] = order_id
        events.append(E.Accepted(seq, order_id, cmd.client_id, cmd.account, cmd.symbol))
        order = RefOrder(
            order_id=order_id,
            client_id=cmd.client_id,
            account=cmd.account,
            symbol=cmd.symbol,
            side=cmd.side,
            kind=cmd.kind,
            price=cmd.price,
            open_qty=cmd.qty,
            tif=cmd.tif,
            expire_at=cmd.expire_at,
            post_only=cmd.post_only,
            stp=cmd.stp,
            priority=seq,
        )

        # §3.1 post-only (only limit GTC/GTD can get here with post_only set).
        if order.post_only and self._would_cross(inst, order.side, order.price):
            if inst.post_only_mode == C.POST_ONLY_REJECT:
                events.append(E.Cancelled(seq, order_id, order.client_id, "post_only", order.open_qty, order.symbol))
                return
            order.price = self._slid_price(inst, order.side)
            events.append(E.Amended(seq, order_id, order.client_id, order.open_qty, order.price, order.symbol))

        # §3.2 FOK: all or nothing, decided by a side-effect-free simulation.
        if order.tif == C.FOK and self._fok_fillable(inst, order) < order.open_qty:
            events.append(E.Cancelled(seq, order_id, order.client_id, "fok", order.open_qty, order.symbol))
            return

        ended_by_stp = self._match(inst, order, seq, events)
        self._finish_taker(inst, order, ended_by_stp, seq, events)

    def _finish_taker(self, inst: RefInstrument, order: RefOrder, ended_by_stp: bool, seq: int, events: list) -> None:
        """§3.4: what happens to the taker after matching."""
        if ended_by_stp or order.open_qty == 0:
            return
        if order.kind == C.MARKET or order.tif in (C.IOC, C.FOK):
            events.append(E.Cancelled(seq, order.order_id, order.client_id, "ioc", order.open_qty, order.symbol))
            return
        order.priority = seq
        inst.orders.append(order)

    @staticmethod
    def _acceptable(taker: RefOrder, maker_price: int) -> bool:
        if taker.kind == C.MARKET:
            return True
        if taker.side == C.BUY:
            return maker_price <= taker.price
        return maker_price >= taker.price

    def _fok_fillable(self, inst: RefInstrument, taker: RefOrder) -> int:
        """How much a FOK taker would fill, without changing anything."""
        counted = 0
        for maker in self._side_sorted(inst, 1 - taker.side):
            if not self._acceptable(taker, maker.price):
                break
            if taker.stp != C.STP_NONE and maker.account == taker.account:
                if taker.stp == C.STP_EXPIRE_MAKER:
                    continue
                break
            counted += maker.open_qty
            if counted >= taker.open_qty:
                break
        return counted

    # -------------------------------------------------------------- matching

    def _match(self, inst: RefInstrument, taker: RefOrder, seq: int, events: list) -> bool:
        """§4 FIFO matching with STP. Returns True if STP ended the taker."""
        while taker.open_qty > 0:
            opposite = self._side_sorted(inst, 1 - taker.side)
            if not opposite:
                return False
            maker = opposite[0]
            if not self._acceptable(taker, maker.price):
                return False
            q = min(taker.open_qty, maker.open_qty)
            if taker.stp != C.STP_NONE and maker.account == taker.account:
                if self._prevent(inst, taker, maker, q, seq, events):
                    return True
                continue
            self._trade(inst, taker, maker, q, seq, events)
        return False

    def _prevent(self, inst: RefInstrument, taker: RefOrder, maker: RefOrder, q: int, seq: int, events: list) -> bool:
        """One prevented match. Returns True if the taker was expired."""
        sym = inst.symbol
        mode = taker.stp
        events.append(E.Prevented(seq, taker.order_id, maker.order_id, q, C.STP_NAMES[mode], sym))
        if mode == C.STP_EXPIRE_TAKER:
            events.append(E.Cancelled(seq, taker.order_id, taker.client_id, "stp", taker.open_qty, sym))
            return True
        if mode == C.STP_EXPIRE_MAKER:
            events.append(E.Cancelled(seq, maker.order_id, maker.client_id, "stp", maker.open_qty, sym))
            inst.orders.remove(maker)
            return False
        if mode == C.STP_EXPIRE_BOTH:
            events.append(E.Cancelled(seq, maker.order_id, maker.client_id, "stp", maker.open_qty, sym))
            inst.orders.remove(maker)
            events.append(E.Cancelled(seq, taker.order_id, taker.client_id, "stp", taker.open_qty, sym))
            return True
        if mode == C.STP_DECREMENT:
            maker_expires = maker.open_qty == q
            taker_expires = taker.open_qty == q
            maker.open_qty -= q
            taker.open_qty -= q
            if maker_expires:
                events.append(E.Cancelled(seq, maker.order_id, maker.client_id, "stp", q, sym))
                inst.orders.remove(maker)
            if taker_expires:
                events.append(E.Cancelled(seq, taker.order_id, taker.client_id, "stp", q, sym))
                return True
            return False
        raise AssertionError(f"unknown stp mode {mode}")

    def _trade(self, inst: RefInstrument, taker: RefOrder, maker: RefOrder, q: int, seq: int, events: list) -> None:
        if taker.side == C.BUY:
            buyer, seller = taker.account, maker.account
        else:
            buyer, seller = maker.account, taker.account
        events.append(
            E.Trade(
                seq,
                inst.symbol,
                maker.price,
                q,
                maker.order_id,
                taker.order_id,
                maker.client_id,
                taker.client_id,
                buyer,
                seller,
                C.SIDE_NAMES[taker.side],
            )
        )
        taker.open_qty -= q
        maker.open_qty -= q
        if maker.open_qty == 0:
            inst.orders.remove(maker)
        inst.last = maker.price
        inst.volume += q
        inst.trade_count += 1

    # ------------------------------------------------------- cancel / replace

    def _target(self, account: str, client_id: str | None, order_id: int | None) -> RefOrder | None:
        """§5: the live order named by order_id and/or client_id, owned by account."""
        by_client = None
        if client_id is not None:
            by_client = self.registry.get((account, client_id))
            if by_client is None:
                return None
        if order_id is not None and by_client is not None and order_id != by_client:
            return None
        wanted = order_id if order_id is not None else by_client
        if wanted is None:
            return None
        order = self._find_live(wanted)
        if order is None or order.account != account:
            return None
        return order

    def _cancel(self, cmd: C.Cancel, seq: int, events: list) -> None:
        order = self._target(cmd.account, cmd.client_id, cmd.order_id)
        if order is None:
            events.append(self._reject(seq, cmd.client_id, cmd.account, "unknown_order"))
            return
        self.instruments[order.symbol].orders.remove(order)
        events.append(E.Cancelled(seq, order.order_id, order.client_id, "user", order.open_qty, order.symbol))

    def _replace(self, cmd: C.Replace, seq: int, events: list) -> None:
        order = self._target(cmd.account, cmd.client_id, cmd.order_id)
        if order is None:
            events.append(self._reject(seq, cmd.client_id, cmd.account, "unknown_order"))
            return
        if (cmd.qty is None and cmd.price is None) or (cmd.qty is not None and cmd.qty <= 0) or (
            cmd.price is not None and cmd.price <= 0
        ):
            events.append(self._reject(seq, cmd.client_id, cmd.account, "invalid_order"))
            return
        inst = self.instruments[order.symbol]
        new_qty = cmd.qty if cmd.qty is not None else order.open_qty
        new_price = cmd.price if cmd.price is not None else order.price

        if new_price == order.price and new_qty <= order.open_qty:
            order.open_qty = new_qty
            events.append(E.Amended(seq, order.order_id, order.client_id, new_qty, new_price, order.symbol))
            return

        # Loses priority. Post-only first: it may refuse or slide the new price.
        if order.post_only and self._would_cross(inst, order.side, new_price):
            if inst.post_only_mode == C.POST_ONLY_REJECT:
                events.append(self._reject(seq, cmd.client_id, cmd.account, "post_only_would_cross"))
                return
            new_price = self._slid_price(inst, order.side)
        inst.orders.remove(order)
        order.price = new_price
        order.open_qty = new_qty
        order.priority = seq
        events.append(E.Amended(seq, order.order_id, order.client_id, new_qty, new_price, order.symbol))
        ended_by_stp = self._match(inst, order, seq, events)
        if not ended_by_stp and order.open_qty > 0:
            inst.orders.append(order)
