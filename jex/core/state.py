"""Whole-engine state as plain data, for snapshots (core room).

``export_state(engine)`` returns nested lists/ints/strings (msgpack-ready,
deterministic: the same state always exports to equal data) and
``restore_state(data)`` rebuilds an ``Engine`` whose behaviour and
``digest()`` are identical to the original's. Everything the engine keeps is
here: instruments (config, statistics, phase, TOP orders, VPIN buckets),
every live order with every field, book queues in time priority, the stop
index with its trailing-stop groups, OCO/bracket/conditional groups, the
client-id registry and the id counter. Derived indexes (the GTD heap, the
conditional watch lists) are rebuilt.

Bump ``STATE_VERSION`` whenever the shape changes.
"""

from __future__ import annotations

import heapq

import msgspec

from . import commands as C
from .base import InstrumentState
from .book import DONE, ORDER_SLOTS, Order
from .contingent import BracketGroup, ConditionalGroup, OcoGroup
from .stops import export_stops, restore_stops

STATE_VERSION = 1

# Every Order slot except the links a restore rebuilds (queue pointers,
# level, trailing group, group).
_ORDER_FIELDS = tuple(f for f in ORDER_SLOTS if f not in ("prev", "next", "level", "trail_group", "group"))
# _order_row and _restore_order spell these fields out (an attribute access
# each instead of a getattr/setattr by name: ~4x faster per order); they
# must follow _ORDER_FIELDS exactly, which this checks whenever a slot changes.
_ORDER_ROW_FIELDS = (
    "order_id", "client_id", "account", "symbol", "side", "kind", "price", "qty", "filled", "tif", "expire_at",
    "post_only", "stp", "status", "priority_seq", "trigger", "trail_amount", "trail_percent_e6",
    "activation_price", "extreme", "entry_seq", "orig_qty", "in_call",
)  # fmt: skip
assert _ORDER_FIELDS == _ORDER_ROW_FIELDS, "update _order_row and _restore_order with Order's slots"

_condition_decoder = msgspec.msgpack.Decoder(C.Condition)
_instrument_decoder = msgspec.msgpack.Decoder(C.Instrument)


def export_state(engine) -> list:
    orders = [_order_row(o) for o in sorted(engine.orders.values(), key=lambda o: o.order_id)]
    instruments = []
    for symbol, inst in engine.instruments.items():
        book = []
        for side in (inst.book.bids, inst.book.asks):
            book.append([[level.price, [o.order_id for o in level.orders()]] for level in side.iter_levels()])
        instruments.append(
            [
                msgspec.msgpack.encode(inst.config),
                inst.last,
                inst.volume,
                inst.trades,
                inst.in_call,
                [list(d) for d in inst.call_market],
                list(inst.top),
                book,
                export_stops(inst.stops),
                inst.vpin.state() if inst.vpin is not None else None,
            ]
        )
    groups = [_export_group(engine.groups[g]) for g in sorted(engine.groups)]
    # Members of live groups that already ended (e.g. a filled bracket entry,
    # whose filled quantity still sizes the children) are kept with the group.
    ended = sorted(
        {o.order_id: o for g in engine.groups.values() for o in g.members() if o.order_id not in engine.orders}.values(),
        key=lambda o: o.order_id,
    )
    orders += [_order_row(o) for o in ended]
    registry = [[a, c, i] for (a, c), i in engine.client_ids.items()]
    return [STATE_VERSION, engine.next_id, engine.seq, engine.ts, instruments, orders, groups, registry]


def _order_row(o: Order) -> list:
    """An order's exported fields, in _ORDER_FIELDS order."""
    return [
        o.order_id, o.client_id, o.account, o.symbol, o.side, o.kind, o.price, o.qty, o.filled, o.tif, o.expire_at,
        o.post_only, o.stp, o.status, o.priority_seq, o.trigger, o.trail_amount, o.trail_percent_e6,
        o.activation_price, o.extreme, o.entry_seq, o.orig_qty, o.in_call,
    ]  # fmt: skip


def _restore_order(row: list) -> Order:
    """The Order an exported row describes, every field set; its links
    (queue, level, trailing group, group) are set by whoever holds it. A row
    of another length raises ValueError."""
    (
        order_id, client_id, account, symbol, side, kind, price, qty, filled, tif, expire_at, post_only, stp,
        status, priority_seq, trigger, trail_amount, trail_percent_e6, activation_price, extreme, entry_seq,
        orig_qty, in_call,
    ) = row  # fmt: skip
    order = Order(order_id, client_id, account, symbol, side, kind, price, qty, tif, expire_at, post_only, stp,
                  entry_seq)  # fmt: skip
    # The fields the constructor derives or defaults.
    order.filled = filled
    order.status = status
    order.priority_seq = priority_seq
    order.trigger = trigger
    order.trail_amount = trail_amount
    order.trail_percent_e6 = trail_percent_e6
    order.activation_price = activation_price
    order.extreme = extreme
    order.orig_qty = orig_qty
    order.in_call = in_call
    return order


def _export_group(group) -> list:
    if isinstance(group, OcoGroup):
        return ["oco", group.group_id, group.client_id, group.account, group.symbol, group.mode,
                [o.order_id for o in group.legs]]
    if isinstance(group, BracketGroup):
        return ["bracket", group.group_id, group.client_id, group.account, group.symbol, group.activation,
                group.active, group.queued, group.closed, [o.order_id for o in group.members()]]
    return ["conditional", group.group_id, group.client_id, group.account, msgspec.msgpack.encode(group.when),
            list(group.symbols), group.order.order_id]


def restore_state(data: list, engine_class=None):
    """Rebuild an Engine from ``export_state`` output. Raises ValueError on a
    shape it does not understand."""
    from .engine import Engine

    if engine_class is None:
        engine_class = Engine

    if not isinstance(data, list) or not data or data[0] != STATE_VERSION:
        raise ValueError(f"unsupported engine state version {data[0] if data else None!r}")
    _, next_id, seq, ts, instruments, order_rows, groups, registry = data
    engine = engine_class()
    engine.next_id, engine.seq, engine.ts = next_id, seq, ts
    orders: dict[int, Order] = {}
    live: dict[int, Order] = {}
    for row in order_rows:
        order = _restore_order(row)
        orders[order.order_id] = order
        if order.status != DONE:
            live[order.order_id] = order
        else:
            live.pop(order.order_id, None)
    engine.orders = live
    for row in instruments:
        config_bytes, last, volume, trades, in_call, call_market, top, book, stops, vpin = row
        inst = InstrumentState(_instrument_decoder.decode(config_bytes))
        inst.last, inst.volume, inst.trades, inst.in_call = last, volume, trades, in_call
        for side_index, ids in enumerate(call_market):
            for i in ids:
                inst.call_market[side_index][i] = orders[i]
        inst.top = list(top)
        for side, levels in zip((inst.book.bids, inst.book.asks), book):
            for price, ids in levels:
                level = side.level_for_insert(price)
                for i in ids:
                    level.append(orders[i])
        inst.stops = restore_stops(stops, orders)
        if vpin is not None and inst.vpin is not None:
            inst.vpin.load(vpin)
        engine.instruments[inst.symbol] = inst
    for row in groups:
        group = _restore_group(row, orders)
        engine.groups[group.group_id] = group
        if isinstance(group, ConditionalGroup):
            for symbol in group.symbols:
                engine.watch.setdefault(symbol, {})[group.group_id] = group
    engine.client_ids = {(a, c): i for a, c, i in registry}
    engine._gtd = [(o.expire_at, o.order_id) for o in orders.values() if o.expire_at is not None]
    heapq.heapify(engine._gtd)
    return engine


def _restore_group(row: list, orders: dict[int, Order]) -> OcoGroup | BracketGroup | ConditionalGroup:
    kind = row[0]
    group: OcoGroup | BracketGroup | ConditionalGroup
    if kind == "oco":
        _, gid, cid, account, symbol, mode, ids = row
        oco = OcoGroup(gid, cid, account, symbol, mode)
        oco.legs = [orders[i] for i in ids]
        group = oco
    elif kind == "bracket":
        _, gid, cid, account, symbol, activation, active, queued, closed, ids = row
        bracket = BracketGroup(gid, cid, account, symbol, activation)
        bracket.active, bracket.queued, bracket.closed = active, queued, closed
        bracket.entry, bracket.tp, bracket.sl = (orders[i] for i in ids)
        group = bracket
    elif kind == "conditional":
        _, gid, cid, account, when, symbols, order_id = row
        conditional = ConditionalGroup(gid, cid, account, _condition_decoder.decode(when), list(symbols))
        conditional.order = orders[order_id]
        group = conditional
    else:
        raise ValueError(f"unknown group kind {kind!r}")
    for member in group.members():
        member.group = group
    return group

