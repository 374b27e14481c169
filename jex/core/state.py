"""Whole-engine state as plain data, for snapshots (core room).

``export_state(engine)`` returns nested lists/ints/strings/bytes
(msgpack-ready, deterministic: the same state always exports to equal data)
and ``restore_state(data)`` rebuilds an ``Engine`` whose behaviour and
``digest()`` are identical to the original's. Everything the engine keeps is
here: instruments (config, statistics, phase, TOP orders, VPIN buckets),
every live order with every field, book queues in time priority, the stop
index with its trailing-stop groups, OCO/bracket/conditional groups, the
client-id registry and the id counter. Derived indexes (the GTD heap, the
conditional watch lists) are rebuilt.

The orders are a column table (one column per ``Order`` field, rows in id
order), not a row per order: a snapshot of a million resting orders decodes
as a few dozen byte strings and one list of client ids instead of millions
of small lists, and restoring walks columns. Each column is
``[const, width, blob, positions, values]`` (``_pack_ints``): the values are
``const`` repeated (width 0) or ``blob``, little-endian signed integers of
``width`` bytes, with the listed positions overriding (None prices, bools,
integers beyond 64 bits, sparse fields that are mostly None). Account and
symbol columns index a table of their distinct strings. The book's queues
are columns of table positions. The client-id registry (every client id
ever accepted, so it grows with the history, not with the book) is a cold
registry (core/registry.py): packed columns and a hash table that a restore
wraps without building anything per entry; the restored engine asks it
where its dicts miss and keeps new entries in the dicts, and its next
export extends the cold columns by them.

A restore of a million orders is bound by memory more than by
instructions (fresh pages, cache misses), so it allocates nothing it does
not keep where it can: constant columns are ``repeat``, packed ones are
read through their ``array`` (``_values``); index columns are checked on
their packed bytes (``_check_indexes``), not value by value; the book
queues that are in table order are linked in one pass in table order, the
order the objects were made in (``_restore_side``, ``_link_rows``); and the
registry's dicts keep their keys' hashes (``_hash_keeping_dict``).

Bump ``STATE_VERSION`` whenever the shape changes (2: the column table; 3:
the registry packed and hash-indexed, where 2 held the entries the table
did not say as a list of strings, restored into dicts: version 2 is still
restored, and exported for its digest, ``export_state(engine, 2)``).
"""

from __future__ import annotations

import heapq
import sys
from array import array
from itertools import repeat
from typing import Any, Iterable

import msgspec

from . import commands as C
from .base import EngineBase, InstrumentState, _third
from .book import DONE, OPEN, ORDER_SLOTS, BookSide, Level, Order
from .contingent import BracketGroup, ConditionalGroup, OcoGroup
from .registry import ColdRegistry
from .registry import build as build_cold
from .stops import export_stops, restore_stops

STATE_VERSION = 3
STATE_VERSIONS_RESTORED = (2, STATE_VERSION)  # 2 holds its registry as columns of strings, restored into dicts
# A restored registry of at most this many entries goes into the engine's
# dicts (~0.1 s at this size), where a new order's duplicate check costs
# nothing extra; a larger one stays cold (core/registry.py): restored in
# O(1), each new order's check then also asks it (~1.5k instructions).
HOT_REGISTRY_MAX = 250_000

# Every Order slot except the links a restore rebuilds (queue pointers,
# level, trailing group, group): the columns of the order table, in this order.
_ORDER_FIELDS = tuple(f for f in ORDER_SLOTS if f not in ("prev", "next", "level", "trail_group", "group"))
# export_state and _restore_orders spell these fields out (an attribute access
# each instead of a getattr/setattr by name); they must follow _ORDER_FIELDS
# exactly, which this checks whenever a slot changes.
_ORDER_ROW_FIELDS = (
    "order_id", "client_id", "account", "symbol", "side", "kind", "price", "qty", "filled", "tif", "expire_at",
    "post_only", "stp", "status", "priority_seq", "trigger", "trail_amount", "trail_percent_e6",
    "activation_price", "extreme", "entry_seq", "orig_qty", "in_call",
)  # fmt: skip
assert _ORDER_FIELDS == _ORDER_ROW_FIELDS, "update export_state and _restore_orders with Order's slots"

# Packed column widths (bytes) and their array type codes; the bounds of each.
_WIDTH_CODES = {1: "b", 2: "h", 4: "i", 8: "q"}
_WIDTH_BOUNDS = ((1, -(1 << 7), (1 << 7) - 1), (2, -(1 << 15), (1 << 15) - 1), (4, -(1 << 31), (1 << 31) - 1),
                 (8, -(1 << 63), (1 << 63) - 1))  # fmt: skip
assert all(array(code).itemsize == width for width, code in _WIDTH_CODES.items())
_BIG_ENDIAN = sys.byteorder == "big"  # packed columns are little-endian on every machine

_condition_decoder = msgspec.msgpack.Decoder(C.Condition)
_instrument_decoder = msgspec.msgpack.Decoder(C.Instrument)


def export_state(engine: Any, version: int = STATE_VERSION) -> list:
    """The engine's state as plain data of state ``version`` (the current
    one, or 2: what a version-2 snapshot's digest is the hash of)."""
    if version not in (2, STATE_VERSION):
        raise ValueError(f"cannot export engine state version {version}")
    live = sorted(engine.orders.values(), key=lambda o: o.order_id)
    # Members of live groups that already ended (e.g. a filled bracket entry,
    # whose filled quantity still sizes the children) are kept with the group.
    ended = sorted(
        {o.order_id: o for g in engine.groups.values() for o in g.members() if o.order_id not in engine.orders}.values(),
        key=lambda o: o.order_id,
    )
    table: list[Order] = live + ended
    position = {o.order_id: p for p, o in enumerate(table)}
    names: dict[str, int] = {}  # account and symbol strings -> index, in order of first use
    instruments = []
    for inst in engine.instruments.values():
        book = [_export_side(side, position) for side in (inst.book.bids, inst.book.asks)]
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
    orders = [len(table), _export_columns(table, names)]
    if version == 2:
        registry = _export_registry_v2(engine, table, position, names)
    else:
        registry = export_registry(engine)
    strings = list(names)
    return [version, engine.next_id, engine.seq, engine.ts, strings, instruments, orders, groups, registry]


def _name_column(values: list[str], names: dict[str, int]) -> list:
    """A string column as indexes into the shared table of distinct strings."""
    return _pack_ints([names.setdefault(v, len(names)) for v in values])


def _export_columns(table: list[Order], names: dict[str, int]) -> list:
    """The order table's columns, in _ORDER_FIELDS order."""
    return [
        _pack_ints([o.order_id for o in table]),
        [o.client_id for o in table],
        _name_column([o.account for o in table], names),
        _name_column([o.symbol for o in table], names),
        _pack_ints([o.side for o in table]),
        _pack_ints([o.kind for o in table]),
        _pack_ints([o.price for o in table]),
        _pack_ints([o.qty for o in table]),
        _pack_ints([o.filled for o in table]),
        _pack_ints([o.tif for o in table]),
        _pack_ints([o.expire_at for o in table]),
        _pack_flags([o.post_only for o in table]),
        _pack_ints([o.stp for o in table]),
        _pack_ints([o.status for o in table]),
        _pack_ints([o.priority_seq for o in table]),
        _pack_ints([o.trigger for o in table]),
        _pack_ints([o.trail_amount for o in table]),
        _pack_ints([o.trail_percent_e6 for o in table]),
        _pack_ints([o.activation_price for o in table]),
        _pack_ints([o.extreme for o in table]),
        _pack_ints([o.entry_seq for o in table]),
        _pack_ints([o.orig_qty for o in table]),
        _pack_flags([o.in_call for o in table]),
    ]


def _export_side(side: BookSide, position: dict[int, int]) -> list:
    """A book side, best level first: [levels, prices, order counts, table positions in queue order]."""
    prices: list[int] = []
    counts: list[int] = []
    queue: list[int] = []
    for level in side.iter_levels():
        before = len(queue)
        queue.extend([position[o.order_id] for o in level.orders()])
        prices.append(level.price)
        counts.append(len(queue) - before)
    return [len(prices), _pack_ints(prices), _pack_ints(counts), _pack_ints(queue)]


def export_registry(engine: EngineBase) -> list:
    """The whole client-id registry as a cold registry's columns
    (core/registry.py), entries in id order. A restored engine holds the
    snapshot's entries cold and only those made since in its dicts, all of
    higher ids: the cold columns are extended, not rebuilt (O(new entries)
    plus copies, and the table's doubling now and then)."""
    cold = engine.cold_registry
    hot = engine.hot_registry()
    if cold is not None and hot and hot[0][2] <= cold.last_id:  # not the shape an engine makes: merge
        hot = sorted(cold.entries() + hot, key=_third)
        cold = None
    if cold is not None and not hot:
        return list(cold.columns)
    return build_cold([a for a, _, _ in hot], [c for _, c, _ in hot], [i for _, _, i in hot], cold)


def _export_registry_v2(engine: EngineBase, table: list[Order], position: dict[int, int],
                        names: dict[str, int]) -> list:
    """The client-id registry as state version 2 stored it: which table rows
    are registered under their own (account, client_id) -> order id (None:
    all of them), and the other entries as columns in id order."""
    accounts: list[str] = []
    client_id_list: list[str] = []
    ids: list[int] = []
    derived = 0
    for account, client_id, order_id in engine.registry():
        p = position.get(order_id)
        if p is not None:
            o = table[p]
            if o.account == account and o.client_id == client_id:
                derived += 1
                continue
        accounts.append(account)
        client_id_list.append(client_id)
        ids.append(order_id)
    registered: list[int] | None = None
    if derived != len(table):
        registered = [p for p, o in enumerate(table) if engine.registered(o.account, o.client_id) == o.order_id]
    return [registered, _name_column(accounts, names), client_id_list, _pack_ints(ids)]


def _pack_ints(values: list) -> list:
    """A column of integers (or None) as [const, width, blob, positions, values]:
    every value is ``const`` (width 0) or the little-endian signed ``width``-byte
    integers of ``blob``, except at ``positions`` (ascending), which hold
    ``values``. Deterministic: equal columns give equal output. A column holds
    one field's values, all of one type, so ``count`` (which compares with
    ``==``) decides constancy exactly. O(n), C loops except around None."""
    n = len(values)
    if n == 0:
        return [None, 0, b"", [], []]
    first = values[0]
    if values.count(first) == n:
        return [first, 0, b"", [], []]
    nones = values.count(None)
    if nones * 2 > n:  # mostly None: only the others are listed
        positions = [p for p, v in enumerate(values) if v is not None]
        return [None, 0, b"", positions, [values[p] for p in positions]]
    dense = values
    positions = []
    if nones:
        positions = [p for p, v in enumerate(values) if v is None]
        dense = [0 if v is None else v for v in values]
    low, high = min(dense), max(dense)
    for width, lowest, highest in _WIDTH_BOUNDS:
        if lowest <= low and high <= highest:
            packed = array(_WIDTH_CODES[width], dense)
            if _BIG_ENDIAN:
                packed.byteswap()
            return [0, width, packed.tobytes(), positions, [None] * len(positions)]
    return [None, 0, b"", list(range(n)), list(values)]  # beyond 64 bits: every value listed


def _pack_flags(values: list) -> list:
    """A column of bools: constant, or False with the positions that are True."""
    n = len(values)
    if n and values.count(values[0]) == n:
        return [values[0], 0, b"", [], []]
    positions = [p for p, v in enumerate(values) if v is not False]
    return [False, 0, b"", positions, [values[p] for p in positions]]


def _packed(width: int, blob: bytes, n: int) -> array:
    """The n little-endian signed integers of ``width`` bytes in ``blob``.
    Raises ValueError (KeyError: no such width; TypeError: not bytes)."""
    packed = array(_WIDTH_CODES[width])
    packed.frombytes(blob)
    if _BIG_ENDIAN:
        packed.byteswap()
    if len(packed) != n:
        raise ValueError(f"packed column of {len(packed)} values, expected {n}")
    return packed


def _unpack(column: list, n: int) -> list:
    """The n values of a packed column (``_pack_ints``, ``_pack_flags``).
    Raises ValueError (or TypeError, IndexError) on a column that does not
    describe n values."""
    const, width, blob, positions, values = column
    out: list
    if width == 0:
        out = [const] * n
    else:
        out = _packed(width, blob, n).tolist()
    if len(positions) != len(values):
        raise ValueError("column exceptions: positions and values differ in length")
    if positions:
        if min(positions) < 0:
            raise ValueError("negative position in a column")
        for p, v in zip(positions, values):
            out[p] = v
    return out


def _values(column: list, n: int) -> Iterable[Any]:
    """The n values of a packed column, as ``_unpack`` gives them, but
    without a list where none is needed: a constant column is ``repeat``
    (nothing per row) and a packed one without exceptions its ``array``
    (each value made when it is read, so no list of a million ints is
    built and freed). For the columns a restore reads once, in row order."""
    const, width, blob, positions, values = column
    if positions or values:
        return _unpack(column, n)
    if width == 0:
        return repeat(const, n)
    return _packed(width, blob, n)


def _indexes(column: list, n: int) -> Iterable[int]:
    """``_values`` of a column of indexes (into the string table or the
    order table), each checked to be a non-negative int (``_check_indexes``)."""
    _check_indexes(column, n)
    return _values(column, n)


def _index_list(column: list, n: int) -> list[int]:
    """``_unpack`` of a column of indexes, checked like ``_indexes``."""
    _check_indexes(column, n)
    return _unpack(column, n)


def _check_indexes(column: list, n: int) -> None:
    """Refuse a column of n indexes holding anything but non-negative ints:
    a negative index would silently count from the end (one too large fails
    where it is used, IndexError). A packed value is negative exactly when
    the top byte of its little-endian encoding has the high bit set, so a
    packed column is checked by one C pass over every width-th byte
    (``isascii``) instead of a comparison per value. O(n) in C."""
    if n == 0:
        return
    const, width, blob, positions, values = column
    if width == 0:
        if not positions and (type(const) is not int or const < 0):
            raise ValueError(f"index column of constant {const!r}")
    elif not isinstance(blob, bytes) or not blob[width - 1 :: width].isascii():
        raise ValueError("negative index in a column")
    for v in values:
        if type(v) is not int or v < 0:
            raise ValueError(f"index column holding {v!r}")


def _is_constant(column: list, value: object) -> bool:
    """Whether a packed column is ``value`` (same type, equal) in every row, read without unpacking it."""
    return column[1] == 0 and not column[3] and type(column[0]) is type(value) and column[0] == value


def _export_group(group) -> list:
    if isinstance(group, OcoGroup):
        return ["oco", group.group_id, group.client_id, group.account, group.symbol, group.mode,
                [o.order_id for o in group.legs]]
    if isinstance(group, BracketGroup):
        return ["bracket", group.group_id, group.client_id, group.account, group.symbol, group.activation,
                group.active, group.queued, group.closed, [o.order_id for o in group.members()]]
    return ["conditional", group.group_id, group.client_id, group.account, msgspec.msgpack.encode(group.when),
            list(group.symbols), group.order.order_id]


def restore_state(data: list, engine_class: Any = None, hot_registry_max: int | None = None) -> Any:
    """Rebuild an Engine from ``export_state`` output. Raises ValueError on a
    shape it does not understand (or TypeError, KeyError, IndexError on one
    whose parts have the wrong types). O(orders), plus O(registry) when the
    registry has at most ``hot_registry_max`` entries (default
    ``HOT_REGISTRY_MAX``): then it is entered into the engine's dicts, where
    lookups cost nothing extra; above, it stays cold (core/registry.py),
    restored in O(1) and asked where the dicts miss. Mostly C loops."""
    from .engine import Engine

    if engine_class is None:
        engine_class = Engine

    if not isinstance(data, list) or not data or data[0] not in STATE_VERSIONS_RESTORED:
        raise ValueError(f"unsupported engine state version {data[0] if data else None!r}")
    version, next_id, seq, ts, strings, instruments, order_table, groups, registry = data
    engine = engine_class()
    engine.next_id, engine.seq, engine.ts = next_id, seq, ts
    n, columns = order_table
    if not isinstance(n, int) or n < 0 or len(columns) != len(_ORDER_FIELDS):
        raise ValueError("order table of the wrong shape")
    # The book sides first (levels, and which level each table row joins),
    # so that the queues are linked right after the orders are made.
    level_of: list[Level | None] = [None] * n
    later: list[tuple[Level, list[int]]] = []
    states: list[InstrumentState] = []
    for row in instruments:
        inst = InstrumentState(_instrument_decoder.decode(row[0]))
        bids, asks = row[7]
        later += _restore_side(inst.book.bids, bids, level_of)
        later += _restore_side(inst.book.asks, asks, level_of)
        states.append(inst)
    table, ids, accounts, client_ids = _restore_orders(n, columns, strings)
    _link_rows(table, level_of)
    del level_of
    for level, queue in later:
        _link_queue(level, queue, table)
    orders: dict[Any, Order] = {i: o for i, o in zip(ids, table)}  # Any keys: see _restore_orders
    live = orders
    if not _is_constant(columns[_ORDER_FIELDS.index("status")], OPEN):
        live = {i: o for i, o in orders.items() if o.status != DONE}
    engine.orders = live
    for inst, row in zip(states, instruments):
        _, last, volume, trades, in_call, call_market, top, _, stops, vpin = row
        inst.last, inst.volume, inst.trades, inst.in_call = last, volume, trades, in_call
        for side_index, market_ids in enumerate(call_market):
            for i in market_ids:
                inst.call_market[side_index][i] = orders[i]
        inst.top = list(top)
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
    if version == 2:
        engine.client_ids = _restore_registry(registry, strings, accounts, client_ids, ids)
    else:
        cold = ColdRegistry(registry)
        limit = HOT_REGISTRY_MAX if hot_registry_max is None else hot_registry_max
        if len(cold) > limit:
            engine.cold_registry = cold
        elif len(cold):
            engine.client_ids = _registry_dicts(cold.entries())
    expire_at = columns[_ORDER_FIELDS.index("expire_at")]
    if _is_constant(expire_at, None):
        engine._gtd = []
    else:
        engine._gtd = [(e, i) for e, i in zip(_unpack(expire_at, n), ids) if e is not None]
        heapq.heapify(engine._gtd)
    return engine


def _name_values(column: list, n: int, strings: list) -> Iterable[Any]:
    """A column of indexes into the string table, as the strings (shared
    objects); a constant column as ``repeat``, without a list."""
    indexes = _indexes(column, n)
    if n and type(indexes) is repeat:
        return repeat(strings[column[0]], n)
    return [strings[i] for i in indexes]


def _restore_orders(n: int, columns: list, strings: list) -> tuple[list[Order], list[Any], list[int], list]:
    """The orders of the column table, in table order, every field set; their
    links (queue, level, trailing group, group) are set by whoever holds them.
    Also returns the id, account (string indexes) and client-id columns (for
    the indexes). The
    constructor's arguments are columns; the fields it derives or defaults
    are set only where a column differs from what it gave."""
    (order_id, client_id, account, symbol, side, kind, price, qty, filled, tif, expire_at, post_only, stp,
     status, priority_seq, trigger, trail_amount, trail_percent_e6, activation_price, extreme, entry_seq,
     orig_qty, in_call) = columns  # fmt: skip
    if not isinstance(client_id, list) or len(client_id) != n:
        raise ValueError("client id column of the wrong length")
    account_indexes = _index_list(account, n)
    accounts = [strings[i] for i in account_indexes]
    ids: list[Any] = _unpack(order_id, n)  # Any: the int objects themselves, not unboxed and boxed again compiled
    table = [
        Order(i, c, a, sym, sd, k, p, q, t, e, po, st, es)
        for i, c, a, sym, sd, k, p, q, t, e, po, st, es in zip(
            ids, client_id, accounts, _name_values(symbol, n, strings), _values(side, n),
            _values(kind, n), _values(price, n), _values(qty, n), _values(tif, n), _values(expire_at, n),
            _values(post_only, n), _values(stp, n), _values(entry_seq, n),
        )
    ]  # fmt: skip
    if not _is_constant(filled, 0):
        for o, v in zip(table, _values(filled, n)):
            o.filled = v
    if not _is_constant(status, OPEN):
        for o, v in zip(table, _values(status, n)):
            o.status = v
    if priority_seq != entry_seq:  # equal columns pack to equal data
        for o, v in zip(table, _values(priority_seq, n)):
            o.priority_seq = v
    if not _is_constant(trigger, None):
        for o, v in zip(table, _values(trigger, n)):
            o.trigger = v
    if not _is_constant(trail_amount, None):
        for o, v in zip(table, _values(trail_amount, n)):
            o.trail_amount = v
    if not _is_constant(trail_percent_e6, None):
        for o, v in zip(table, _values(trail_percent_e6, n)):
            o.trail_percent_e6 = v
    if not _is_constant(activation_price, None):
        for o, v in zip(table, _values(activation_price, n)):
            o.activation_price = v
    if not _is_constant(extreme, None):
        for o, v in zip(table, _values(extreme, n)):
            o.extreme = v
    if orig_qty != qty:
        for o, v in zip(table, _values(orig_qty, n)):
            o.orig_qty = v
    if not _is_constant(in_call, False):
        for o, v in zip(table, _values(in_call, n)):
            o.in_call = v
    return table, ids, account_indexes, client_id


def _restore_side(side: BookSide, data: list, level_of: list[Level | None]) -> list[tuple[Level, list[int]]]:
    """Rebuild a book side from ``_export_side`` output, all but the queue
    links: its levels best first (price and order count), the sorted keys
    and the best level. A level whose queue lists table rows in ascending
    order (time priority is id order: the usual case) is marked in
    ``level_of``, one entry per table row, and ``_link_rows`` links it in
    table order once the orders exist: each order is then linked right
    after the one before it in memory, instead of visiting a million orders
    in queue order, one cache miss each. The other levels are returned with
    their queues for ``_link_queue``. Raises ValueError on prices out of
    order, empty levels, or a row queued twice (in two marked levels; one
    in a returned level is caught by ``_link_queue``)."""
    n, price_column, count_column, queue_column = data
    rows = len(level_of)
    if not 0 <= n <= rows:  # a level holds at least one order of the table
        raise ValueError(f"{n} book levels for {rows} orders")
    prices: list[int] = _unpack(price_column, n)
    counts: list[int] = _unpack(count_column, n)
    queued = sum(counts)
    if not 0 <= queued <= rows:
        raise ValueError(f"{queued} queued orders for {rows} orders")
    queue = _index_list(queue_column, queued)
    levels: dict[int, Level] = {}
    keys: list[int] = []
    later: list[tuple[Level, list[int]]] = []
    is_bid = side.is_bid
    start = 0
    for price, count in zip(prices, counts):
        if count < 1:
            raise ValueError(f"empty level {price}")
        key = price if is_bid else -price
        if keys and key >= keys[-1]:
            raise ValueError(f"book level {price} out of order")
        keys.append(key)
        level = Level(price)
        level.count = count
        levels[price] = level
        end = start + count
        last = -1
        for k in range(start, end):
            p = queue[k]
            if p <= last:  # not in table order: undo this level's marks, link it by its queue
                for undo in range(start, k):
                    level_of[queue[undo]] = None
                later.append((level, queue[start:end]))
                break
            if level_of[p] is not None:
                raise ValueError(f"table row {p} queued twice")
            level_of[p] = level
            last = p
        start = end
    keys.reverse()
    side.levels = levels
    side.keys = keys
    side.best = levels[prices[0]] if prices else None
    return later


def _link_rows(table: list[Order], level_of: list[Level | None]) -> None:
    """Append each order of a level ``_restore_side`` marked to its level's
    queue (Level.append spelled out; ``count`` is already set), in table
    order. O(rows), visiting the orders in the order they were made."""
    for order, level in zip(table, level_of):
        if level is not None:
            tail = level.tail
            order.prev = tail
            if tail is None:
                level.head = order
            else:
                tail.next = order
            level.tail = order
            order.level = level
            level.qty += order.qty


def _link_queue(level: Level, queue: list[int], table: list[Order]) -> None:
    """Link a level's queue (table rows in time priority) through its orders.
    Raises ValueError on an order already on a level."""
    prev: Order | None = None
    qty = 0
    for p in queue:
        order = table[p]
        if order.level is not None:
            raise ValueError(f"order {order.order_id} queued twice")
        order.level = level
        order.prev = prev
        if prev is None:
            level.head = order
        else:
            prev.next = order
        prev = order
        qty += order.qty
    level.tail = prev
    level.qty = qty


def _registry_dicts(rows: list[tuple[str, str, int]]) -> dict[str, dict[str, int]]:
    """A registry's (account, client_id, id) rows as the engine's dicts. O(n)."""
    registry: dict[str, dict[str, int]] = {}
    for account, client_id, order_id in rows:
        entries = registry.get(account)
        if entries is None:
            entries = registry[account] = _hash_keeping_dict()
        entries[client_id] = order_id
    return registry


def _restore_registry(data: list, strings: list, accounts: list[int], client_ids: list,
                      ids: list) -> dict[str, dict[str, int]]:
    """The client-id registry (account -> client_id -> id): the table rows
    registered under their own (account, client_id), then the other entries
    in their exported order. ``accounts`` are the table's account column as
    indexes into ``strings``."""
    registered, extra_accounts, extra_client_ids, extra_ids = data
    registry: dict[str, dict[str, int]] = {}
    by_index: list[dict[str, int] | None] = [None] * len(strings)
    if registered is None:
        _register_all(registry, by_index, strings, accounts, client_ids, ids)
    else:
        if registered and min(registered) < 0:
            raise ValueError("negative registered position")
        _register_all(registry, by_index, strings, [accounts[p] for p in registered],
                      [client_ids[p] for p in registered], [ids[p] for p in registered])
    m = len(extra_client_ids)
    _register_all(registry, by_index, strings, _index_list(extra_accounts, m), extra_client_ids,
                  _unpack(extra_ids, m))
    return registry


def _register_all(registry: dict[str, dict[str, int]], by_index: list[dict[str, int] | None], strings: list,
                  accounts: list[int], client_ids: list, ids: list) -> None:
    """Enter the (strings[accounts[i]], client_ids[i]) -> ids[i] entries.
    O(n). Each account's dict is found by its string index (``by_index``,
    one per entry of ``strings``), not by hashing the account per entry. An
    indexed loop, not a zip: compiled, it builds no tuple per entry."""
    n = len(client_ids)
    if len(accounts) != n or len(ids) != n:
        raise ValueError(f"registry columns of {len(accounts)}, {n} and {len(ids)} entries")
    for p in range(n):
        index = accounts[p]
        entries = by_index[index]
        if entries is None:
            account = strings[index]
            entries = registry.get(account)
            if entries is None:
                entries = registry[account] = _hash_keeping_dict()
            by_index[index] = entries
        entries[client_ids[p]] = ids[p]


def _hash_keeping_dict() -> dict[str, int]:
    """An empty dict for string keys that keeps each key's hash beside it.

    CPython lays out a dict whose keys have only ever been ``str`` without
    the hashes (the strings cache their own), so every probe that lands on
    another key while inserting, and every entry moved when the dict
    grows, reads that key's string object: at a million fresh client ids,
    spread over the heap, that is a cache miss each time, most of the
    registry's restore. A dict that has held a non-string key keeps the
    general layout, hashes in its entries, for good, so inserts and growth
    touch only the dict's own arrays (measured ~1/3 faster at 1 M entries,
    for ~40% more bytes per entry). Lookups, equality and iteration order
    are a dict's like any other: only speed depends on this."""
    entries: dict[Any, int] = {0: 0}
    del entries[0]
    return entries


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

