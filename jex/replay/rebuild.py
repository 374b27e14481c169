"""Rebuild engine state from the log (replay room).

Used by the node on open (recovery) and by the read side of the CLI (book,
orders, stats, replay) without taking the writer lock. Replay never reads a
clock: each command is applied with the seq and timestamp stored in its
record header, so replay reproduces the live events byte for byte.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable

import msgspec

from jex.core import Engine, decode_command
from jex.core.events import encode_events
from jex.journal.record import RecordType

import xxhash


class ReplayError(Exception):
    """A logged record that cannot be replayed (undecodable payload)."""

    def __init__(self, seq: int, reason: str) -> None:
        super().__init__(f"record seq {seq}: {reason}")
        self.seq = seq
        self.reason = reason


@dataclass
class ReplayStats:
    """What a replay did: counts, the events' running digest, and speed."""

    records: int = 0
    commands: int = 0
    events: int = 0
    last_seq: int = 0
    last_ts: int = 0
    seconds: float = 0.0
    events_digest: str = ""
    kinds: dict[str, int] = field(default_factory=dict)

    @property
    def commands_per_second(self) -> float:
        return self.commands / self.seconds if self.seconds > 0 else 0.0


def replay_records(
    engine: Engine,
    records: Iterable,
    *,
    to_seq: int | None = None,
    on_events: Callable[[int, list], None] | None = None,
    check_invariants: bool = False,
    hash_events: bool = False,
) -> ReplayStats:
    """Apply every COMMAND record (seq <= ``to_seq``) to ``engine``.

    ``records`` yields objects with ``seq``, ``ts_ns``, ``type`` and
    ``payload``. ``hash_events`` folds every event list into a running
    xxh3-128 (the events digest that ``replay --verify`` compares).
    """
    stats = ReplayStats()
    hasher = xxhash.xxh3_128() if hash_events else None
    decode = decode_command
    apply = engine.apply
    kinds = stats.kinds
    started = time.perf_counter()
    for record in records:
        seq = record.seq
        if to_seq is not None and seq > to_seq:
            break
        stats.records += 1
        stats.last_seq = seq
        stats.last_ts = record.ts_ns
        if record.type != RecordType.COMMAND:
            continue
        try:
            command = decode(record.payload)
        except (msgspec.MsgspecError, UnicodeError, RecursionError) as exc:
            raise ReplayError(seq, f"undecodable command payload: {type(exc).__name__}: {str(exc)[:200]!r}") from None
        events = apply(command, seq, record.ts_ns)
        stats.commands += 1
        stats.events += len(events)
        name = type(command).__name__
        kinds[name] = kinds.get(name, 0) + 1
        if hasher is not None:
            hasher.update(encode_events(events))
        if on_events is not None:
            on_events(seq, events)
        if check_invariants:
            engine.check_invariants()
    stats.seconds = time.perf_counter() - started
    if hasher is not None:
        stats.events_digest = hasher.hexdigest()
    return stats


def rebuild(data_dir: Path, *, to_seq: int | None = None, hash_events: bool = False, on_events=None):
    """Read-only rebuild of a data directory's state (no lock, no repair).

    Raises ``JournalCorrupt`` if the log is corrupt; a torn tail is simply
    not read (the writer repairs it on its next open).
    """
    from jex.journal import read_records

    engine = Engine()
    stats = replay_records(
        engine, read_records(Path(data_dir) / "wal"), to_seq=to_seq, hash_events=hash_events, on_events=on_events
    )
    return engine, stats
