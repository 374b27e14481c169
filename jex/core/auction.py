"""Call auctions: the call phase and the uncross (core room).

A layer of ``Engine`` (see base.py), market-rules §4. ``auction open`` puts a symbol in a
call phase: orders rest without matching (the book may cross), market
orders wait in a per-side queue, IOC/FOK/post-only are refused, stops do
not trigger. ``auction uncross`` chooses one clearing price, executes the
maximum volume at it, and returns the symbol to continuous trading.
"""

from __future__ import annotations

from . import commands as C
from .base import InstrumentState
from .book import OPEN, Order
from .commands import AUCTION_OPEN, BUY, SELL
from .contingent import ContingentMixin
from .events import AuctionResult, Phase, Trade


class UncrossPlan:
    """The clearing price and what it executes (no side effects)."""

    __slots__ = ("price", "volume", "surplus")

    def __init__(self, price: int | None, volume: int, surplus: int) -> None:
        self.price = price
        self.volume = volume
        self.surplus = surplus


def plan_uncross(bids: list[tuple[int, int]], asks: list[tuple[int, int]], market_buy: int, market_sell: int,
                 reference: int | None) -> UncrossPlan:
    """Choose the clearing price (market-rules §4.3).

    ``bids``/``asks`` are (price, total qty) per level in any order;
    ``market_buy``/``market_sell`` the market quantities; ``reference`` the
    reference price (explicit, else the last trade) or None.

    (a) maximum executable volume, (b) then minimum |surplus|, then: if the
    market orders alone can supply the whole volume on both sides, the
    reference price clamped into the limit book's spread (rule e);
    otherwise (c) all surpluses > 0 → highest price, all < 0 → lowest,
    (d) else closest to the reference, ties (and no reference) to the
    higher price. (f) no uncross when the maximum volume is 0.
    O(L log L) in the number of levels.
    """
    prices = sorted({p for p, _ in bids} | {p for p, _ in asks})
    rows = []
    for p in prices:
        demand = market_buy + sum(q for bp, q in bids if bp >= p)
        supply = market_sell + sum(q for ap, q in asks if ap <= p)
        rows.append((p, min(demand, supply), demand - supply))
    best_volume = max((v for _, v, _ in rows), default=0)
    market_only = market_buy > 0 and market_sell > 0
    if not rows:
        if market_only and reference is not None:
            volume = min(market_buy, market_sell)
            return UncrossPlan(reference, volume, market_buy - market_sell)
        return UncrossPlan(None, 0, 0)
    if best_volume == 0:
        return UncrossPlan(None, 0, 0)
    rows = [r for r in rows if r[1] == best_volume]
    least = min(abs(s) for _, _, s in rows)
    rows = [r for r in rows if abs(r[2]) == least]
    if market_buy >= best_volume and market_sell >= best_volume and reference is not None:
        best_bid = max((p for p, _ in bids), default=None)
        best_ask = min((p for p, _ in asks), default=None)
        price = reference
        if best_bid is not None and price < best_bid:
            price = best_bid
        if best_ask is not None and price > best_ask:
            price = best_ask
        demand = market_buy + sum(q for bp, q in bids if bp >= price)
        supply = market_sell + sum(q for ap, q in asks if ap <= price)
        return UncrossPlan(price, best_volume, demand - supply)
    if all(s > 0 for _, _, s in rows):
        chosen = max(rows, key=lambda r: r[0])
    elif all(s < 0 for _, _, s in rows):
        chosen = min(rows, key=lambda r: r[0])
    elif reference is None:
        chosen = max(rows, key=lambda r: r[0])
    else:
        chosen = min(rows, key=lambda r: (abs(r[0] - reference), -r[0]))
    return UncrossPlan(chosen[0], chosen[1], chosen[2])


class AuctionMixin(ContingentMixin):
    """Auction commands (a layer of ``Engine``)."""

    def _on_auction(self, cmd: C.Auction) -> None:
        inst = self.instruments.get(cmd.symbol)
        if inst is None:
            self._reject(None, None, "unknown_symbol", f"unknown symbol {cmd.symbol}")
            return
        if cmd.action == AUCTION_OPEN:
            if inst.in_call:
                self._reject(None, None, "auction_state", f"{cmd.symbol} is already in a call phase")
                return
            inst.in_call = True
            self._events.append(Phase(self.seq_obj, cmd.symbol, "call"))
            return
        if not inst.in_call:
            self._reject(None, None, "auction_state", f"{cmd.symbol} is not in a call phase")
            return
        self._uncross(inst, cmd.reference_price)

    def _uncross(self, inst: InstrumentState, reference_price: int | None) -> None:
        book = inst.book
        bids = [(lv.price, lv.qty) for lv in book.bids.iter_levels()]
        asks = [(lv.price, lv.qty) for lv in book.asks.iter_levels()]
        market_buys = list(inst.call_market[BUY].values())
        market_sells = list(inst.call_market[SELL].values())
        reference = reference_price if reference_price is not None else inst.last
        plan = plan_uncross(
            bids, asks, sum(o.qty for o in market_buys), sum(o.qty for o in market_sells), reference
        )
        self._events.append(AuctionResult(self.seq_obj, inst.symbol, plan.price, plan.volume, plan.surplus))
        if plan.price is not None and plan.volume > 0:
            buys = market_buys + [o for lv in book.bids.iter_levels() if lv.price >= plan.price for o in lv.orders()]
            sells = market_sells + [o for lv in book.asks.iter_levels() if lv.price <= plan.price for o in lv.orders()]
            self._execute_uncross(inst, plan.price, plan.volume, buys, sells)
        inst.in_call = False
        self._events.append(Phase(self.seq_obj, inst.symbol, "continuous"))
        if plan.price is not None and plan.volume > 0:
            self._after_auction_trades(inst, plan.price)
        leftovers = sorted(
            list(inst.call_market[BUY].values()) + list(inst.call_market[SELL].values()), key=lambda o: o.order_id
        )
        for order in leftovers:
            self._release_call_market(order, inst)

    def _execute_uncross(self, inst: InstrumentState, price: int, volume: int, buys: list[Order], sells: list[Order]) -> None:
        """Pair the two priority queues at the clearing ``price`` for ``volume`` lots (no STP, no aggressor)."""
        left = volume
        bi = si = 0
        while left > 0 and bi < len(buys) and si < len(sells):
            buy, sell = buys[bi], sells[si]
            if buy.status != OPEN or buy.qty == 0:
                bi += 1
                continue
            if sell.status != OPEN or sell.qty == 0:
                si += 1
                continue
            qty = min(buy.qty, sell.qty, left)
            left -= qty
            self._auction_fill(inst, buy, sell, qty, price)

    def _auction_fill(self, inst: InstrumentState, buy: Order, sell: Order, qty: int, price: int) -> None:
        maker, taker = (buy, sell) if (buy.priority_seq, buy.order_id) < (sell.priority_seq, sell.order_id) else (sell, buy)
        self._events.append(
            Trade(self.seq_obj, inst.symbol, price, qty, maker.order_id, taker.order_id, maker.client_id,
                  taker.client_id, buy.account, sell.account, None)
        )
        for order in (buy, sell):
            order.filled += qty
            level = order.level
            if level is not None:
                level.qty -= qty
            if qty == order.qty:
                order.qty = 0
                if inst.top[order.side] == order.order_id:
                    inst.top[order.side] = None
                if level is not None:
                    level.unlink(order)
                    if level.count == 0:
                        (inst.book.bids if order.side == BUY else inst.book.asks).remove_level(level)
                else:
                    del inst.call_market[order.side][order.order_id]
                    order.in_call = False
                self._retire(order)
            else:
                order.qty -= qty
        inst.last = price
        inst.volume += qty
        inst.trades += 1
        if inst.vpin is not None:
            inst.vpin.on_trade(price, qty, None, self.ts)
        for order in (buy, sell):
            if order.group is not None:
                self._on_member_fill(order, qty)

    def _after_auction_trades(self, inst: InstrumentState, price: int) -> None:
        """Last = the clearing price; stops and conditionals see it once."""
        if inst.stops.count:
            for order in inst.stops.on_trade(price):
                self._on_stop_fired(order)
        watchers = self.watch.get(inst.symbol)
        if watchers:
            self._evaluate_conditionals(watchers)

    def _release_call_market(self, order: Order, inst: InstrumentState) -> None:
        """An unfilled market order matches once in continuous trading; the
        rest is cancelled with reason ``auction``."""
        del inst.call_market[order.side][order.order_id]
        order.in_call = False
        if order.status != OPEN:
            return
        opp = inst.book.asks if order.side == BUY else inst.book.bids
        self._match(order, inst, opp)
        if order.status != OPEN:
            return
        if order.qty == 0:
            self._retire(order)
        else:
            self._end(order, "auction")
