"""rebuild(): one pass over the log (the scanner hands each segment's
verified records to the replay as it judges them) must give exactly what
verify-then-read gives: the same engine, the same stats, the same refusal
of a corrupt log, the same end at a torn tail."""

from __future__ import annotations

from pathlib import Path

import pytest

from jex.core import Engine
from jex.journal import damage
from jex.journal.errors import JournalCorrupt
from jex.journal.record import RecordType
from jex.journal.scan import read_records
from jex.node.exchange import Exchange
from jex.replay.rebuild import ReplayError, rebuild, replay_records
from jex.workload import mixed_flow

SEGMENT = 32 * 1024  # several segments


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("replay")
    with Exchange.open(path, backend="pwrite", clock="input", segment_bytes=SEGMENT, snapshot_every=0) as node:
        for result in node.submit_many(mixed_flow(3, 1200, with_ts=True)):
            assert result.error is None
    assert len(damage.segment_paths(path / "wal")) > 3
    return path


def two_pass(path: Path, **kwargs):
    engine = Engine()
    stats = replay_records(engine, read_records(path / "wal"), **kwargs)
    return engine, stats


def same(one, other) -> None:
    (a, sa), (b, sb) = one, other
    assert a.digest() == b.digest()
    assert (sa.records, sa.commands, sa.events, sa.last_seq, sa.last_ts, sa.kinds, sa.events_digest) == (
        sb.records, sb.commands, sb.events, sb.last_seq, sb.last_ts, sb.kinds, sb.events_digest)  # fmt: skip


@pytest.mark.parametrize("to_seq", [None, 1, 377, 10**9])
def test_rebuild_in_one_pass_equals_verify_then_read(data_dir, to_seq):
    same(rebuild(data_dir, to_seq=to_seq, hash_events=True), two_pass(data_dir, to_seq=to_seq, hash_events=True))


def test_rebuild_with_a_callback_sees_every_command(data_dir):
    seen: list[int] = []
    engine, stats = rebuild(data_dir, on_events=lambda seq, events: seen.append(seq))
    assert len(seen) == stats.commands and seen == sorted(seen)
    same((engine, stats), rebuild(data_dir))


def test_rebuild_refuses_a_corrupt_log_wherever_the_damage_is(data_dir, tmp_path):
    import shutil

    for index in (0, 2):  # a closed segment (after records were already applied) and a later one
        root = tmp_path / f"copy-{index}"
        shutil.copytree(data_dir, root, ignore=shutil.ignore_patterns("LOCK", "*.tmp"))
        segment = damage.segment_paths(root / "wal")[index]
        victim = [r for r in damage.locate_records(segment) if r.type == RecordType.COMMAND][3]
        damage.flip_bit(segment, victim.payload_offset + 1)
        with pytest.raises(JournalCorrupt) as caught:
            rebuild(root)
        assert caught.value.seq == victim.seq


def test_rebuild_stops_at_a_torn_tail_like_the_two_pass_read(data_dir, tmp_path):
    import shutil

    root = tmp_path / "torn"
    shutil.copytree(data_dir, root, ignore=shutil.ignore_patterns("LOCK", "*.tmp"))
    last = damage.locate_all(root / "wal")[-1]
    damage.zero_range(last.path, last.offset + 40, last.length - 40)
    engine, stats = rebuild(root)
    assert stats.last_seq == last.seq - 1
    same((engine, stats), two_pass(root))


def test_an_undecodable_payload_stops_the_rebuild_at_its_seq(tmp_path):
    from jex.journal.writer import Journal

    with Journal.open(tmp_path / "wal", backend="pwrite", prepare_ahead=False) as journal:
        journal.append([(1, 10, b"\xc1"), (2, 11, b"\x91\x09")])
    with pytest.raises(ReplayError) as caught:
        rebuild(tmp_path)
    assert caught.value.seq == 1 and "seq 1" in str(caught.value)
