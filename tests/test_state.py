"""Engine state export/restore (the snapshot body): exact round trips."""

from __future__ import annotations

import msgspec
import pytest

from jex.core import Codec, CommandError, Engine
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


def _roundtrip(engine: Engine) -> Engine:
    return restore_state(msgspec.msgpack.decode(msgspec.msgpack.encode(export_state(engine))))


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
