"""The GC policy for a recovered node's heap (jex/snapshots/gcpolicy.py) and
how the fork's freeze/unfreeze keeps to it."""

from __future__ import annotations

import gc
import weakref

import pytest

from jex.core import Codec, CommandError, Engine
from jex.snapshots import gcpolicy
from jex.snapshots.fork import BackgroundJob
from jex.workload import mixed_flow


class _Cycle:
    """A container in a reference cycle with itself: only the cyclic GC frees it."""

    def __init__(self) -> None:
        self.me = self


def _engine(orders: int) -> Engine:
    engine = Engine()
    codec = Codec.for_engine(engine)
    for seq, raw in enumerate(mixed_flow(3, orders, with_ts=True), 1):
        try:
            command, ts = codec.command(raw)
        except CommandError:
            continue
        engine.apply(command, seq, ts)
    return engine


@pytest.fixture
def unfrozen():
    """Each test starts and ends with nothing frozen and the policy off."""
    if gc.get_freeze_count():
        pytest.skip("something in this process keeps objects frozen")
    try:
        yield
    finally:
        gcpolicy.release_long_lived()
        gc.unfreeze()


def test_a_small_state_leaves_the_collector_alone(unfrozen):
    engine = _engine(300)
    assert 0 < gcpolicy.long_lived_objects(engine) < gcpolicy.LONG_LIVED_OBJECTS_MIN
    assert gcpolicy.freeze_long_lived(engine) is False
    assert not gcpolicy.long_lived() and gc.get_freeze_count() == 0


def test_frozen_objects_stay_out_of_every_collection_until_released(unfrozen):
    """What the policy buys and what it costs: after freezing, collections
    no longer see the state (nor free frozen cyclic garbage); objects made
    later are collected as usual; releasing hands everything back."""
    engine = _engine(300)
    frozen_cycle = _Cycle()
    frozen_ref = weakref.ref(frozen_cycle)
    assert gcpolicy.freeze_long_lived(engine, objects_min=0) is True
    assert gcpolicy.long_lived() and gc.get_freeze_count() > gcpolicy.long_lived_objects(engine)
    assert gc.get_count() == (0, 0, 0)
    del frozen_cycle
    later_cycle = _Cycle()
    later_ref = weakref.ref(later_cycle)
    del later_cycle
    gc.collect()
    assert later_ref() is None  # made after the freeze: collected
    assert frozen_ref() is not None  # frozen, then cyclic garbage: kept (gcpolicy's "what can leak")
    gcpolicy.release_long_lived()
    assert not gcpolicy.long_lived() and gc.get_freeze_count() == 0
    gc.collect()
    assert frozen_ref() is None


def test_the_young_generations_are_collected_before_freezing(unfrozen):
    young = _Cycle()
    young_ref = weakref.ref(young)
    del young
    assert gcpolicy.freeze_long_lived(_engine(50), objects_min=0)
    assert young_ref() is None


def _reap_one(job: BackgroundJob) -> weakref.ref:
    """Fork and reap one child while a cycle is alive; drop the cycle and
    collect. Returns a weak reference to it."""
    alive = _Cycle()
    ref = weakref.ref(alive)
    job.start(lambda: {"ok": 1})
    outcome = job.wait()
    assert outcome is not None and outcome.ok and outcome.result == {"ok": 1}
    del alive
    gc.collect()
    return ref


def test_reaping_a_snapshot_child_keeps_the_policy(unfrozen):
    """BackgroundJob freezes before fork and unfreezes after reaping, unless
    the policy holds: then what was alive at the fork stays frozen too
    (unfreeze is all or nothing and would thaw the recovered heap)."""
    job = BackgroundJob()
    assert _reap_one(job)() is None  # no policy: handed back and collected
    assert gc.get_freeze_count() == 0
    assert gcpolicy.freeze_long_lived(_engine(50), objects_min=0)
    assert _reap_one(job)() is not None  # alive at the fork: frozen for good
    assert gcpolicy.long_lived() and gc.get_freeze_count() > 0


def test_a_node_freezes_what_it_recovered_and_releases_it_on_close(unfrozen, tmp_path, monkeypatch):
    """Exchange keeps to the policy: its recovered state is frozen once open
    (here with the threshold lowered to 0) and handed back on close."""
    from jex.node.exchange import Exchange

    with Exchange.open(tmp_path, backend="pwrite", snapshot_every=0) as node:
        for result in node.submit_many(list(mixed_flow(5, 200, with_ts=False))):
            pass
    assert not gcpolicy.long_lived() and gc.get_freeze_count() == 0
    monkeypatch.setattr(gcpolicy, "LONG_LIVED_OBJECTS_MIN", 0)
    node = Exchange.open(tmp_path, backend="pwrite", snapshot_every=0)
    try:
        assert gcpolicy.long_lived() and gc.get_freeze_count() > 0
        digest = node.digest()
    finally:
        node.close()
    assert not gcpolicy.long_lived() and gc.get_freeze_count() == 0
    monkeypatch.undo()
    with Exchange.open(tmp_path, backend="pwrite", snapshot_every=0) as node:  # below the threshold again
        assert node.digest() == digest and not gcpolicy.long_lived()
