"""The cold client-id registry (core/registry.py): packed entries a snapshot
restores without building a dict entry per client id, asked where the
engine's dicts miss."""

from __future__ import annotations

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from jex.core import Codec, Engine
from jex.core import registry as R
from jex.core.registry import ColdRegistry
from jex.core.state import export_state, restore_state


def _cold(rows: list[tuple[str, str, int]], base: ColdRegistry | None = None) -> ColdRegistry:
    columns = R.build([a for a, _, _ in rows], [c for _, c, _ in rows], [i for _, _, i in rows], base)
    return ColdRegistry(msgspec.msgpack.decode(msgspec.msgpack.encode(columns)))


_accounts = st.sampled_from(["A", "B", "ünï", "", "A\0B"])
_client_ids = st.text(max_size=12)


@st.composite
def _rows(draw, min_size=0):
    keys = draw(st.lists(st.tuples(_accounts, _client_ids), unique=True, min_size=min_size, max_size=300))
    ids = sorted(draw(st.lists(st.integers(1, 2**62), unique=True, min_size=len(keys), max_size=len(keys))))
    return [(a, c, i) for (a, c), i in zip(keys, ids)]


@settings(max_examples=150, deadline=None)
@given(_rows(), st.lists(st.tuples(_accounts, _client_ids), max_size=30))
def test_every_entry_answers_and_nothing_else(rows, probes):
    cold = _cold(rows)
    assert len(cold) == len(rows) and cold.entries() == rows
    known = {(a, c): i for a, c, i in rows}
    for account, client_id, order_id in rows:
        assert cold.get(account, client_id) == order_id
    for account, client_id in probes:
        assert cold.get(account, client_id) == known.get((account, client_id))
    owners = {i: a for a, _, i in rows}
    for account, _, order_id in rows:
        assert cold.account_of(order_id) == account
    for order_id in (0, 2**62 + 1, *(i + 1 for _, _, i in rows[:5])):
        assert cold.account_of(order_id) == owners.get(order_id)


@settings(max_examples=100, deadline=None)
@given(_rows(), st.integers(0, 300))
def test_extending_a_base_gives_the_columns_of_one_build(rows, cut):
    """build(new, base=cold) equals building everything at once, whether the
    table keeps its size (copied, then the new entries inserted) or grows."""
    cut = min(cut, len(rows))
    whole = R.build([a for a, _, _ in rows], [c for _, c, _ in rows], [i for _, _, i in rows])
    head = _cold(rows[:cut])
    tail = rows[cut:]
    extended = R.build([a for a, _, _ in tail], [c for _, c, _ in tail], [i for _, _, i in tail], head)
    assert msgspec.msgpack.encode(extended) == msgspec.msgpack.encode(whole)


def test_the_same_client_id_in_many_accounts_stays_apart():
    rows = [(f"acct{a}", "c1", a + 1) for a in range(200)]
    cold = _cold(rows)
    assert [cold.get(f"acct{a}", "c1") for a in range(200)] == list(range(1, 201))
    assert cold.get("acct200", "c1") is None and cold.get("acct1", "c2") is None


def test_table_sizes_keep_the_load_at_most_half():
    assert [R.table_size(n) for n in (0, 1, 2, 3, 4, 5, 1000)] == [0, 2, 4, 8, 8, 16, 2048]
    assert _cold([("A", f"c{i}", i) for i in range(1, 1001)]).mask + 1 == 2048


@pytest.mark.parametrize(
    "mutate",
    [
        lambda c: c.__setitem__(0, -1),  # negative count
        lambda c: c.__setitem__(0, c[0] + 1),  # more entries than the columns hold
        lambda c: c.__setitem__(1, [1, 2]),  # account names not strings
        lambda c: c.__setitem__(2, [1, 1, 1]),  # widths of the wrong shape
        lambda c: c.__setitem__(2, [3, 1, 1, 4]),  # no such width
        lambda c: c.__setitem__(2, [1, 1, 1, 8]),  # the wrong slot width for the count
        lambda c: c.__setitem__(4, c[4] + b"x"),  # client ids do not fill the blob
        lambda c: c.__setitem__(5, c[5][:-1]),  # a partial offset
        lambda c: c.__setitem__(7, c[7][:-4]),  # a table of the wrong size
        lambda c: c.__setitem__(4, "text"),  # not bytes
        lambda c: c.__setitem__(6, "text"),  # not bytes
        lambda c: c.pop(),  # wrong shape
    ],
)
def test_malformed_columns_are_refused(mutate):
    columns = msgspec.msgpack.decode(msgspec.msgpack.encode(R.build(["A", "B"], ["x", "y"], [1, 2])))
    mutate(columns)
    with pytest.raises((ValueError, TypeError)):
        ColdRegistry(columns)


def test_columns_take_the_narrowest_widths():
    small = R.build(["A", "B"], ["x", "y"], [1, 2])
    assert small[2] == [1, 1, 1, 4]
    wide = R.build([f"a{i}" for i in range(300)], ["c" * 300] * 300, [2**40 + i for i in range(300)])
    assert wide[2] == [2, 4, 8, 4]
    cold = ColdRegistry(wide)
    assert cold.get("a299", "c" * 300) == 2**40 + 299 and cold.account_of(2**40 + 7) == "a7"


def test_a_damaged_table_answers_not_here_and_never_raises():
    """Slots naming entries or accounts out of range (bytes no build made;
    a snapshot's checksum guards against them) give None from get."""
    columns = R.build(["A", "B"], ["x", "y"], [1, 2])
    width, entry_bits, _ = R.slot_layout(2)
    bad = ((31 << entry_bits) | 99).to_bytes(width, "little")  # entry 98, for any tag of 31
    columns[7] = bad * R.table_size(2)  # every slot full
    cold = ColdRegistry(columns)
    assert cold.get("A", "x") is None and cold.get("Z", "q") is None
    columns = R.build(["A"], ["x"], [1])
    columns[3] = bytes([7])  # account index past the names
    cold = ColdRegistry(columns)
    assert cold.get("A", "x") is None and cold.account_of(1) is None
    with pytest.raises(ValueError):
        cold.entries()


def _restored_engine() -> tuple[Engine, Codec]:
    engine = Engine()
    codec = Codec.for_engine(engine)
    flow = [
        {"type": "instrument", "symbol": "X", "tick": "0.01", "lot": "1"},
        {"type": "order", "account": "A", "client_id": "rest", "symbol": "X", "side": "buy", "kind": "limit",
         "qty": "5", "price": "10"},
        {"type": "order", "account": "A", "client_id": "gone", "symbol": "X", "side": "buy", "kind": "limit",
         "qty": "5", "price": "9"},
        {"type": "cancel", "account": "A", "client_id": "gone"},
    ]
    for seq, raw in enumerate(flow, 1):
        command, _ = codec.command(raw)
        engine.apply(command, seq, seq)
    restored = restore_state(msgspec.msgpack.decode(msgspec.msgpack.encode(export_state(engine))), hot_registry_max=0)
    assert restored.client_ids == {} and len(restored.cold_registry) == 2
    return restored, Codec.for_engine(restored)


def test_a_restored_engine_refuses_cold_client_ids_and_finds_cold_orders():
    engine, codec = _restored_engine()

    def apply(raw: dict, seq: int) -> list:
        command, _ = codec.command(raw)
        return [msgspec.to_builtins(e) for e in engine.apply(command, seq, seq)]

    order = {"type": "order", "account": "A", "symbol": "X", "side": "sell", "kind": "limit", "qty": "1",
             "price": "50"}
    for n, client_id in enumerate(("rest", "gone"), 10):
        (event,) = apply({**order, "client_id": client_id}, n)
        assert event["type"] == "rejected" and event["reason"] == "duplicate_client_id"
    (event,) = apply({**order, "account": "B", "client_id": "gone"}, 12)  # another account's namespace
    assert event["type"] == "accepted"
    leg = {k: v for k, v in order.items() if k != "type"}
    oco = {"type": "oco", "account": "A", "client_id": "pair", "symbol": "X",
           "legs": [{**leg, "client_id": "gone"}, {**leg, "client_id": "new", "price": "51"}]}
    (event,) = apply(oco, 13)
    assert event["type"] == "rejected" and "gone" in event["message"]
    (event,) = apply({"type": "cancel", "account": "A", "client_id": "rest"}, 14)  # a live order, found cold
    assert event["type"] == "cancelled" and event["client_id"] == "rest"
    (event,) = apply({"type": "cancel", "account": "A", "client_id": "gone"}, 15)
    assert event["type"] == "rejected" and event["reason"] == "unknown_order"
    engine.check_invariants()


@pytest.mark.skipif(not R.__file__.endswith(".py"), reason="the pure module's threshold is what is patched")
def test_wide_slots_above_the_small_table_limit(monkeypatch):
    """Past 2**27 - 2 entries a slot is 64 bits (a 29-bit tag, 32-bit entry
    index); the threshold is lowered here to walk that layout."""
    monkeypatch.setattr(R, "SMALL_TABLE_ENTRIES", 3)
    rows = [(f"acct{i % 3}", f"c{i}", i + 1) for i in range(50)]
    cold = _cold(rows[:3])
    assert cold.slot_width == 4
    extended = _cold(rows[3:], cold)
    assert extended.slot_width == 8 and extended.entries() == rows
    assert all(extended.get(a, c) == i for a, c, i in rows) and extended.get("acct0", "c1") is None


def test_check_proves_the_columns_are_their_entries_build():
    rows = [(f"acct{i % 3}", f"c{i}", i + 1) for i in range(40)]
    _cold(rows).check()
    swapped = R.build([a for a, _, _ in rows], [c for _, c, _ in rows], [i for _, _, i in rows])
    width = swapped[2][3]
    slots = bytearray(swapped[7])
    occupied = [at for at in range(0, len(slots), width) if any(slots[at : at + width])]
    a, b = occupied[0], occupied[1]
    slots[a : a + width], slots[b : b + width] = slots[b : b + width], slots[a : a + width]
    swapped[7] = bytes(slots)
    for columns, reason in (
        (swapped, "not what their entries build"),
        (R.build(["A", "A"], ["x", "y"], [2, 1]), "not ascending"),
        (R.build(["A", "A"], ["x", "x"], [1, 2]), "twice"),
    ):
        with pytest.raises(ValueError, match=reason):
            ColdRegistry(columns).check()
