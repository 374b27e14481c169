"""The core leaves no cyclic garbage: a closed contingent group and its done
members, a done order, an emptied level or trailing-stop group are freed by
reference counting alone (jex/core/contingent.py ``_maybe_close``,
``Level.unlink``, jex/core/stops.py).

Why it matters: a recovered node freezes its heap (jex/snapshots/gcpolicy.py),
and the cyclic collector never frees a frozen object, so anything frozen
while live and later dropped *in a cycle* would stay for the life of the
process. The tests run flows with the collector off, then count the jex
objects that only a collection could free (``gc.DEBUG_SAVEALL`` keeps what
it finds in ``gc.garbage``): there must be none.
"""

from __future__ import annotations

import gc
import random
from collections import Counter
from decimal import Decimal
from typing import Iterator

import pytest

from golden import Runner, load_scenarios
from jex.core import Codec, CommandError, Engine
from jex.core import commands as C
from jex.core.events import Accepted, Cancelled, Triggered
from jex.core.state import export_state, restore_state
from jex.workload import mixed_flow

OCO_MODES = (None, "cancel_on_any_fill", "reduce", "cancel_on_full_fill")  # None: the instrument's default
ACTIVATIONS = ("first_fill", "full_fill")
GROUP_CANCEL_RATE = 0.05  # after a command, the chance of cancelling a group or one of its members
FLOW_COMMANDS = 12_000


def _ticks(price: str) -> int:
    return int(Decimal(price) * 100)


def _price(ticks: int) -> str:
    return f"{ticks // 100}.{ticks % 100:02d}"


def contingent_flow(seed: int, count: int) -> Iterator[dict]:
    """``mixed_flow`` with groups of every kind: OCOs in each mode, brackets
    with both activations, stop-limit stop-losses and market entries, and
    cancels of whole groups and of single members (which cascade)."""
    rng = random.Random(seed * 7919 + 1)
    groups: list[tuple[str, str, tuple[str, ...]]] = []  # (account, client_id, member client-id suffixes)
    for cmd in mixed_flow(seed, count, with_ts=True):
        kind = cmd["type"]
        if kind == "oco":
            mode = rng.choice(OCO_MODES)
            if mode is not None:
                cmd["mode"] = mode
            groups.append((cmd["account"], cmd["client_id"], ("/1", "/2")))
        elif kind == "bracket":
            cmd["activation"] = rng.choice(ACTIVATIONS)
            entry, stop_loss = cmd["entry"], cmd["stop_loss"]
            if rng.random() < 0.5:  # a stop-limit stop-loss, its limit two ticks through the trigger
                trigger = _ticks(stop_loss["trigger"])
                stop_loss["price"] = _price(trigger - 2 if entry["side"] == "buy" else trigger + 2)
            if rng.random() < 0.2:
                cmd["entry"] = {"side": entry["side"], "kind": "market", "qty": entry["qty"], "tif": "IOC"}
            groups.append((cmd["account"], cmd["client_id"], ("/entry", "/tp", "/sl")))
        elif kind == "conditional":
            groups.append((cmd["account"], cmd["client_id"], ("/order",)))
        yield cmd
        if groups and rng.random() < GROUP_CANCEL_RATE:
            account, client_id, members = groups.pop(rng.randrange(len(groups)))
            target = client_id if rng.random() < 0.5 else client_id + rng.choice(members)
            yield {"type": "cancel", "account": account, "client_id": target, "ts": cmd["ts"]}


def _label(group) -> str:
    name = type(group).__name__
    if name == "OcoGroup":
        return f"oco/{C.OCO_MODE_NAMES[group.mode]}"
    if name == "BracketGroup":
        return f"bracket/{C.ACTIVATION_NAMES[group.activation]}"
    return "conditional"


class Driver:
    """Applies JSON commands to one engine and notes, by id and label only
    (holding no group or order), every group it saw and how members ended."""

    def __init__(self, engine: Engine, seq: int = 0) -> None:
        self.engine = engine
        self.codec = Codec.for_engine(engine)
        self.seq = seq
        self.labels: dict[int, str] = {}  # group id -> label
        self.endings: Counter[str] = Counter()  # how group members and trailing stops ended
        self.trailing: set[str] = set()  # client ids of trailing stops

    def send(self, raw: dict) -> None:
        try:
            command, ts = self.codec.command(raw)
        except CommandError:
            return
        if raw.get("kind") == "trailing_stop":
            self.trailing.add(raw["client_id"])
        self.seq += 1
        groups = self.engine.groups
        for event in self.engine.apply(command, self.seq, ts):
            if type(event) is Accepted and event.order_id in groups:
                self.labels[event.order_id] = _label(groups[event.order_id])
            elif type(event) in (Cancelled, Triggered):
                self._note_ending(event)

    def _note_ending(self, event) -> None:
        what = "triggered" if type(event) is Triggered else f"cancelled {event.reason}"
        cid = event.client_id
        if cid in self.trailing:
            self.endings[f"trailing stop {what}"] += 1
        elif "/" in cid:
            self.endings[f"{cid.rsplit('/', 1)[1]} {what}"] += 1

    def closed(self) -> Counter[str]:
        """Labels of the groups seen that are closed now."""
        return Counter(label for group_id, label in self.labels.items() if group_id not in self.engine.groups)


def _cyclic_jex_garbage() -> Counter[str]:
    """Collect, and count the jex objects the collection found unreachable
    (objects only the cyclic collector can free), by type."""
    gc.set_debug(gc.DEBUG_SAVEALL)
    try:
        gc.collect()
        return Counter(
            f"{type(o).__module__}.{type(o).__qualname__}" for o in gc.garbage if type(o).__module__.startswith("jex")
        )
    finally:
        gc.set_debug(0)
        gc.garbage.clear()


@pytest.fixture
def collector_off():
    """The cyclic collector off; restored after. (Each test collects first
    itself, so that only what it drops is counted, not what pytest lets go
    of between the fixture and the test.)"""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        gc.set_debug(0)
        gc.garbage.clear()
        if enabled:
            gc.enable()


def _assert_every_kind_closed(closed: Counter[str], minimum: int) -> None:
    expected = [f"oco/{mode}" for mode in C.OCO_MODE_NAMES] + [f"bracket/{a}" for a in ACTIVATIONS] + ["conditional"]
    assert all(closed[label] >= minimum for label in expected), closed


def test_closed_groups_and_done_orders_leave_no_cycles(collector_off):
    gc.collect()
    driver = Driver(Engine())
    for raw in contingent_flow(11, FLOW_COMMANDS):
        driver.send(raw)
    driver.engine.check_invariants()
    closed = driver.closed()
    _assert_every_kind_closed(closed, 20)
    endings = driver.endings
    # Members ended every way a group reacts: filled or cancelled by their
    # group, cancelled by the user (cascading), bracket children released.
    for ending in ("1 cancelled oco", "2 cancelled oco", "1 cancelled user", "entry cancelled user",
                   "tp triggered", "sl triggered", "tp cancelled bracket", "sl cancelled bracket",
                   "order triggered", "order cancelled user", "trailing stop triggered", "trailing stop cancelled user"):
        assert endings[ending] > 0, (ending, endings)
    garbage = _cyclic_jex_garbage()
    assert not garbage, f"cyclic garbage by type: {dict(garbage)}"
    assert len(driver.engine.groups) > 0  # live groups (and their cycles) are not garbage


def test_groups_restored_and_frozen_are_freed_when_they_close(collector_off):
    """The node's case: a state restored from a snapshot is frozen, and its
    groups close later; once thawed, a collection finds nothing to free."""
    if gc.get_freeze_count():
        pytest.skip("something in this process keeps objects frozen")
    gc.collect()
    flow = contingent_flow(12, FLOW_COMMANDS)
    first = Driver(Engine())
    for raw in flow:
        first.send(raw)
        if first.seq == FLOW_COMMANDS // 2:
            break
    restored = Driver(restore_state(export_state(first.engine)), first.seq)
    assert restored.engine.digest() == first.engine.digest()
    live_at_restore = {group_id: _label(group) for group_id, group in restored.engine.groups.items()}
    del first  # a whole engine is cyclic garbage: collected before counting
    gc.collect()
    gc.freeze()
    try:
        for raw in flow:
            restored.send(raw)
    finally:
        gc.unfreeze()
    restored.engine.check_invariants()
    closed = Counter(label for group_id, label in live_at_restore.items() if group_id not in restored.engine.groups)
    assert sum(closed.values()) > 0 and len(closed) >= 3, closed
    garbage = _cyclic_jex_garbage()
    assert not garbage, f"cyclic garbage by type: {dict(garbage)}"


def test_golden_scenarios_leave_no_cycles(collector_off):
    """Every golden scenario (tests/golden): each market rule's flow, with
    its groups, stops and auctions, drops nothing in a cycle."""
    gc.collect()
    runners = []
    for scenario in load_scenarios():
        runner = Runner(scenario)
        runner.run()
        runners.append(runner)  # the engines stay: only what they dropped may be garbage
    garbage = _cyclic_jex_garbage()
    assert not garbage, f"cyclic garbage by type: {dict(garbage)}"
