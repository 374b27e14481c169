"""Snapshot bodies of earlier state versions (room: jex.snapshots).

State version 1 stored the order table as one msgpack row per order and the
client-id registry as one row per entry (``core.state`` before the column
table of version 2). A node upgraded over a data directory whose snapshots
are version 1 must still start: its log may be pruned up to them. So
version 1 stays readable here, the code that wrote and read it kept as it
was: ``restore_v1`` rebuilds the engine, ``digest_v1`` hashes an engine the
way version 1 did (its header's digest), for a load that checks the digest.
New snapshots are always written in the current version, so version 1 files
leave with the retention of the next two snapshots.
"""

from __future__ import annotations

import heapq
from typing import Any

import msgspec
import xxhash

from jex.core import commands as C
from jex.core.base import InstrumentState
from jex.core.book import DONE, Order
from jex.core.contingent import ConditionalGroup
from jex.core.engine import Engine
from jex.core.state import _export_group, _restore_group
from jex.core.stops import export_stops, restore_stops

STATE_VERSION_1 = 1

_instrument_decoder = msgspec.msgpack.Decoder(C.Instrument)


def digest_v1(engine: Any) -> str:
    """``Engine.digest()`` as state version 1 defined it: xxh3-128 of the version 1 export."""
    return xxhash.xxh3_128_hexdigest(msgspec.msgpack.encode(export_v1(engine)))


def export_v1(engine: Any) -> list:
    orders = [_order_row(o) for o in sorted(engine.orders.values(), key=lambda o: o.order_id)]
    instruments = []
    for inst in engine.instruments.values():
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
    ended = sorted(
        {o.order_id: o for g in engine.groups.values() for o in g.members() if o.order_id not in engine.orders}.values(),
        key=lambda o: o.order_id,
    )
    orders += [_order_row(o) for o in ended]
    registry = [[a, c, i] for a, c, i in engine.registry()]  # id order, as version 1 wrote a live engine's
    return [STATE_VERSION_1, engine.next_id, engine.seq, engine.ts, instruments, orders, groups, registry]


def _order_row(o: Order) -> list:
    return [
        o.order_id, o.client_id, o.account, o.symbol, o.side, o.kind, o.price, o.qty, o.filled, o.tif, o.expire_at,
        o.post_only, o.stp, o.status, o.priority_seq, o.trigger, o.trail_amount, o.trail_percent_e6,
        o.activation_price, o.extreme, o.entry_seq, o.orig_qty, o.in_call,
    ]  # fmt: skip


def _restore_order(row: list) -> Order:
    (
        order_id, client_id, account, symbol, side, kind, price, qty, filled, tif, expire_at, post_only, stp,
        status, priority_seq, trigger, trail_amount, trail_percent_e6, activation_price, extreme, entry_seq,
        orig_qty, in_call,
    ) = row  # fmt: skip
    order = Order(order_id, client_id, account, symbol, side, kind, price, qty, tif, expire_at, post_only, stp,
                  entry_seq)  # fmt: skip
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


def restore_v1(data: list) -> Any:
    """An Engine from a version 1 body. Raises ValueError (or whatever a
    malformed body provokes) on a shape it does not understand."""
    if not isinstance(data, list) or not data or data[0] != STATE_VERSION_1:
        raise ValueError(f"not a version 1 engine state: {data[0] if isinstance(data, list) and data else None!r}")
    _, next_id, seq, ts, instruments, order_rows, groups, registry = data
    engine = Engine()
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
    engine.client_ids = {}
    for a, c, i in registry:
        engine.register(a, c, i)
    engine._gtd = [(o.expire_at, o.order_id) for o in orders.values() if o.expire_at is not None]
    heapq.heapify(engine._gtd)
    return engine
