"""Engine state export/restore (the snapshot body): exact round trips."""

from __future__ import annotations

import msgspec
import pytest

from jex.core import Codec, CommandError, Engine
from jex.core import state
from jex.core.state import STATE_VERSION, export_state, restore_state
from jex.workload import mixed_flow


def _commands(seed: int, count: int) -> list:
    engine = Engine()
    codec = Codec.for_engine(engine)
    out = []
    for seq, raw in enumerate(mixed_flow(seed, count, with_ts=True), 1):
        try:
            command, ts = codec.command(raw)
        except CommandError:
            continue
        out.append((command, len(out) + 1, ts))
        engine.apply(command, len(out), ts)
    return out


def _roundtrip(engine: Engine, **options) -> Engine:
    return restore_state(msgspec.msgpack.decode(msgspec.msgpack.encode(export_state(engine))), **options)


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_restore_then_continue_is_identical(seed):
    commands = _commands(seed, 6000)
    full = Engine()
    events = [full.apply(c, s, t) for c, s, t in commands]
    for cut in (1, len(commands) // 3, len(commands) // 2, len(commands) - 1):
        head = Engine()
        for c, s, t in commands[:cut]:
            head.apply(c, s, t)
        restored = _roundtrip(head)
        assert restored.digest() == head.digest()
        restored.check_invariants()
        assert [restored.apply(c, s, t) for c, s, t in commands[cut:]] == events[cut:]
        assert restored.digest() == full.digest()


def test_export_is_deterministic():
    commands = _commands(9, 3000)
    a, b = Engine(), Engine()
    for c, s, t in commands:
        a.apply(c, s, t)
        b.apply(c, s, t)
    assert msgspec.msgpack.encode(export_state(a)) == msgspec.msgpack.encode(export_state(b))


def test_unknown_version_is_refused():
    with pytest.raises(ValueError):
        restore_state([STATE_VERSION + 1])
    with pytest.raises(ValueError):
        restore_state([])


# --- the column table (state version 2) -----------------------------------------------------------


COLUMNS = [
    [],
    [7],
    [7] * 5,
    [None] * 4,
    [1, None, 3, None, 5],  # some None: packed with exceptions
    [None, None, None, 9],  # mostly None: sparse
    [0, -1, 127, -128],  # one byte
    [0, 128, -129, 32767],  # two bytes
    [1, 2**31 - 1, -(2**31)],  # four bytes
    [1, 2**63 - 1, -(2**63)],  # eight bytes
    [1, 2**63, 5],  # beyond 64 bits: every value listed
    [2**64 - 1, None, -3],  # msgpack reaches 2**64 - 1; the column lists it
]


@pytest.mark.parametrize("values", COLUMNS)
def test_packed_columns_round_trip_exactly(values):
    packed = state._pack_ints(values)
    restored = state._unpack(msgspec.msgpack.decode(msgspec.msgpack.encode(packed)), len(values))
    assert restored == values and [type(v) for v in restored] == [type(v) for v in values]
    assert state._pack_ints(list(values)) == packed  # deterministic


@pytest.mark.parametrize("values", [[], [False], [True] * 3, [False, True, False], [True, False, True, True]])
def test_flag_columns_keep_bools(values):
    restored = state._unpack(state._pack_flags(values), len(values))
    assert restored == values and all(type(v) is bool for v in restored)


@pytest.mark.parametrize(
    "column, n",
    [
        ([0, 4, b"\0\0\0", [], []], 1),  # a partial value
        ([0, 1, b"\1\2", [], []], 3),  # fewer values than rows
        ([0, 3, b"\1\2\3", [], []], 1),  # no such width
        ([5, 0, b"", [0, 1], [1]], 2),  # positions and values differ
        ([5, 0, b"", [-1], [1]], 2),  # a negative position
        ([5, 0, b"", [2], [1]], 2),  # past the end
        ([0, 1, "x", [], []], 1),  # not bytes
    ],
)
def test_malformed_columns_are_refused(column, n):
    with pytest.raises((ValueError, TypeError, IndexError, KeyError)):
        state._unpack(column, n)


def _engine(seed: int, count: int) -> Engine:
    engine = Engine()
    for c, s, t in _commands(seed, count):
        engine.apply(c, s, t)
    return engine


def test_registry_keeps_entries_the_table_does_not_say():
    """Version 2: registry entries of finished orders and groups are stored;
    those of the table's rows are derived. A table row that is not
    registered (not a state the engine makes, but one the format must not
    misread) stays so."""
    engine = _engine(4, 3000)
    exported = export_state(engine, 2)
    registered, _, extra_client_ids, _ = exported[8]
    rows = exported[6][0]  # live orders and the ended members of live groups
    assert registered is None and rows >= len(engine.orders)
    assert len(extra_client_ids) == len(engine.registry()) - rows > 0
    restored = restore_state(msgspec.msgpack.decode(msgspec.msgpack.encode(exported)))
    assert restored.client_ids == engine.client_ids and restored.digest() == engine.digest()
    # The restored registry holds the table's entries first; its export is the same.
    assert msgspec.msgpack.encode(export_state(restored, 2)) == msgspec.msgpack.encode(exported)
    order = next(iter(engine.orders.values()))
    del engine.client_ids[order.account][order.client_id]
    restored = restore_state(msgspec.msgpack.decode(msgspec.msgpack.encode(export_state(engine, 2))))
    assert restored.client_ids == engine.client_ids and restored.digest() == engine.digest()


def test_registry_is_restored_cold_and_answers_as_before():
    """Version 3: the whole registry is one cold registry (core/registry.py);
    a restore builds no dict entry, yet every entry answers, the export is
    the same bytes, and both engines go on alike (new entries hot, the
    export extending the cold columns)."""
    commands = _commands(4, 4500)
    engine = Engine()
    for c, s, t in commands[:3000]:
        engine.apply(c, s, t)
    exported = export_state(engine)
    restored = _roundtrip(engine, hot_registry_max=0)
    assert restored.client_ids == {} and len(restored.cold_registry) == len(engine.registry())
    assert restored.registry() == engine.registry() and restored.digest() == engine.digest()
    assert msgspec.msgpack.encode(export_state(restored)) == msgspec.msgpack.encode(exported)
    for account, client_id, order_id in engine.registry()[::7]:
        assert restored.registered(account, client_id) == order_id
    for c, s, t in commands[3000:]:
        assert engine.apply(c, s, t) == restored.apply(c, s, t)
    assert restored.client_ids and restored.registry() == engine.registry()
    assert restored.digest() == engine.digest()
    again = _roundtrip(restored, hot_registry_max=0)  # cold columns extended by the hot entries
    assert again.digest() == engine.digest() and again.client_ids == {}
    # At most HOT_REGISTRY_MAX entries, a restore enters them into the dicts instead.
    hot = _roundtrip(restored)
    assert hot.cold_registry is None and hot.client_ids == engine.client_ids
    assert hot.digest() == engine.digest() and hot.registry() == engine.registry()


def test_a_registry_entry_below_the_cold_part_is_merged():
    """Not a shape the engine makes (entries made after a restore have
    higher ids), but the export must still be the canonical one."""
    engine = _engine(4, 1000)
    restored = _roundtrip(engine, hot_registry_max=0)
    for e in (engine, restored):
        e.register("A-odd", "odd", 0)
    assert restored.registry() == engine.registry() and restored.digest() == engine.digest()


def test_book_queues_are_rebuilt_in_time_priority():
    """Both ways a queue is linked: levels whose time priority is id order
    (linked in table order, state._link_rows) and levels where a replace
    moved an order behind younger ones (linked by their queue)."""
    engine = _engine(5, 4000)
    in_id_order = [
        [o.order_id for o in level.orders()] == sorted(o.order_id for o in level.orders())
        for inst in engine.instruments.values()
        for side in (inst.book.bids, inst.book.asks)
        for level in side.iter_levels()
    ]
    assert any(in_id_order) and not all(in_id_order)
    restored = _roundtrip(engine)
    restored.check_invariants()
    for symbol, inst in engine.instruments.items():
        for side, other in ((inst.book.bids, restored.instruments[symbol].book.bids),
                            (inst.book.asks, restored.instruments[symbol].book.asks)):
            assert other.keys == side.keys and (other.best is None) == (side.best is None)
            for level in side.iter_levels():
                twin = other.levels[level.price]
                assert [o.order_id for o in twin.orders()] == [o.order_id for o in level.orders()]
                assert (twin.qty, twin.count) == (level.qty, level.count)


def test_a_book_queue_naming_an_order_twice_is_refused():
    engine = _engine(6, 3000)
    exported = msgspec.msgpack.decode(msgspec.msgpack.encode(export_state(engine)))
    for inst in exported[5]:
        side = inst[7][0]
        if side[0] >= 2:  # two levels: make the second queue repeat the first's head
            queue = state._unpack(side[3], sum(state._unpack(side[2], side[0])))
            counts = state._unpack(side[2], side[0])
            queue[counts[0]] = queue[0]
            side[3] = state._pack_ints(queue)
            break
    else:
        pytest.skip("no instrument with two bid levels")
    with pytest.raises(ValueError, match="queued twice"):
        restore_state(exported)


def test_registry_lists_every_entry_in_id_order_across_accounts():
    """Engine.registry(): ids ascending whatever the accounts' interleaving
    (the layout is account -> client_id -> id); unordered, the same entries;
    registered() answers for each and for nothing else."""
    engine = _engine(6, 2500)
    rows = engine.registry()
    ids = [order_id for _, _, order_id in rows]
    assert len({account for account, _, _ in rows}) > 1
    assert ids == sorted(ids) and len(set(ids)) == len(ids) > 100
    assert sorted(engine.registry(ordered=False), key=lambda row: row[2]) == rows
    for account, client_id, order_id in rows[::37]:
        assert engine.registered(account, client_id) == order_id
    account, client_id, _ = rows[0]
    assert engine.registered(account, client_id + "-never") is None
    assert engine.registered("no-such-account", client_id) is None


@pytest.mark.parametrize(
    "column, n",
    [
        ([0, 1, b"\x01\xff", [], []], 2),  # a packed -1
        ([0, 2, b"\x05\x00\x00\x80", [], []], 2),  # a packed -32768
        ([0, 8, b"\0" * 7 + b"\x80", [], []], 1),  # the lowest 64-bit value
        ([-1, 0, b"", [], []], 3),  # a constant -1
        ([None, 0, b"", [], []], 2),  # a constant that is no int
        ([0, 0, b"", [1], [-2]], 2),  # a listed -2
        ([0, 1, b"\0\0", [0], ["0"]], 2),  # a listed value that is no int
        ([0, 1, "\0\0", [], []], 2),  # not bytes
    ],
)
def test_index_columns_refuse_anything_but_non_negative_ints(column, n):
    """A negative index would count from the end of the string or order
    table: the index columns refuse it (checked on the packed bytes)."""
    with pytest.raises(ValueError):
        state._index_list(column, n)
    with pytest.raises(ValueError):
        list(state._indexes(column, n))


@pytest.mark.parametrize("values", [[], [0], [3] * 4, [0, 1, 127, 128, 255, 40000, 2**31 - 1, 2**40], [5, 0, 5]])
def test_index_columns_read_back_what_was_packed(values):
    packed = msgspec.msgpack.decode(msgspec.msgpack.encode(state._pack_ints(values)))
    assert state._index_list(packed, len(values)) == values
    assert list(state._indexes(packed, len(values))) == values


@pytest.mark.parametrize("field", ["account", "symbol"])
def test_a_negative_string_index_in_the_order_table_is_refused(field):
    engine = _engine(7, 2000)
    exported = msgspec.msgpack.decode(msgspec.msgpack.encode(export_state(engine)))
    n, columns = exported[6]
    column = state._ORDER_FIELDS.index(field)
    indexes = state._unpack(columns[column], n)
    indexes[n // 2] = -1  # would name the last string
    columns[column] = state._pack_ints(indexes)
    with pytest.raises(ValueError, match="negative index"):
        restore_state(exported)


def test_a_negative_position_in_a_book_queue_is_refused():
    engine = _engine(8, 2000)
    exported = msgspec.msgpack.decode(msgspec.msgpack.encode(export_state(engine)))
    side = next(inst[7][0] for inst in exported[5] if inst[7][0][0] >= 1)
    queue = state._unpack(side[3], sum(state._unpack(side[2], side[0])))
    queue[-1] = -1  # would name the table's last row
    side[3] = state._pack_ints(queue)
    with pytest.raises(ValueError, match="negative index"):
        restore_state(exported)


def test_restored_registry_dicts_behave_as_dicts():
    """A version-2 registry's per-account dicts are built to keep their keys'
    hashes (state._hash_keeping_dict): equal, and the same answers (their
    order is the table's entries first, see export_state)."""
    engine = _engine(9, 3000)
    restored = restore_state(msgspec.msgpack.decode(msgspec.msgpack.encode(export_state(engine, 2))))
    assert restored.client_ids == engine.client_ids
    for account, ids in engine.client_ids.items():
        twin = restored.client_ids[account]
        assert type(twin) is dict and twin == ids
        for client_id, order_id in list(ids.items())[::50]:
            assert restored.registered(account, client_id) == order_id
        assert restored.registered(account, "no-such-client-id") is None
    restored.register("A-new", "c-new", 10**6)
    assert restored.registered("A-new", "c-new") == 10**6
