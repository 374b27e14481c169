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


# The journal's reads (scan.iter_segment_records: Journal.records, recovery's
# genesis replay) are replayed in one fused walk when nobody has iterated
# them yet; it must apply and refuse exactly what iterating them does.


def _segment_records(root: Path, from_seq: int, to_seq: int, anchor=None):
    from jex.journal.scan import iter_segment_records
    from jex.journal.storage import OsStorage

    return iter_segment_records(OsStorage(), root / "wal", from_seq, to_seq, anchor=anchor)


def _fused_and_iterated(root: Path, from_seq: int, last_seq: int, anchor=None, **kwargs):
    """(engine, stats) of replaying records from_seq..last_seq fused, and iterated."""
    records = _segment_records(root, from_seq, last_seq, anchor)
    assert records.fusable
    fused_engine, iterated_engine = Engine(), Engine()
    fused = fused_engine, replay_records(fused_engine, records, hash_events=True, **kwargs)
    iterated_records = (r for r in _segment_records(root, from_seq, last_seq, anchor))  # a generator: iterated
    iterated = iterated_engine, replay_records(iterated_engine, iterated_records, hash_events=True, **kwargs)
    return fused, iterated


@pytest.mark.parametrize(("from_seq", "to_seq", "replay_to"), [(1, 10**6, None), (1, 777, None), (1, 10**6, 500),
                                                               (300, 900, None), (5, 4, None)])  # fmt: skip
def test_a_fused_journal_read_replays_what_iterating_it_replays(data_dir, from_seq, to_seq, replay_to):
    last = damage.locate_all(data_dir / "wal")[-1].seq
    fused, iterated = _fused_and_iterated(data_dir, from_seq, min(to_seq, last), to_seq=replay_to)
    same(fused, iterated)
    assert fused[1].records == max(0, min(to_seq, last, replay_to or last) - from_seq + 1)


def test_a_fused_journal_read_from_an_anchor_replays_what_iterating_it_replays(data_dir):
    records = damage.locate_all(data_dir / "wal")
    at = next(r for r in records if r.seq > 600 and r.batch_end)
    chain = next(r.chain for r in _segment_records(data_dir, at.seq, at.seq))
    fused, iterated = _fused_and_iterated(data_dir, at.seq, records[-1].seq, anchor=chain)
    same(fused, iterated)
    assert fused[1].records == records[-1].seq - at.seq + 1


def test_a_fused_journal_read_refuses_damage_as_iterating_does(data_dir, tmp_path):
    import shutil

    last = damage.locate_all(data_dir / "wal")[-1].seq
    for index in (0, 2):
        root = tmp_path / f"copy-{index}"
        shutil.copytree(data_dir, root, ignore=shutil.ignore_patterns("LOCK", "*.tmp"))
        segment = damage.segment_paths(root / "wal")[index]
        victim = [r for r in damage.locate_records(segment) if r.type == RecordType.COMMAND][3]
        damage.flip_bit(segment, victim.payload_offset + 1)
        errors = []
        for records in (_segment_records(root, 1, last), (r for r in _segment_records(root, 1, last))):
            with pytest.raises(JournalCorrupt) as caught:
                replay_records(Engine(), records)
            errors.append((caught.value.seq, caught.value.reason, str(caught.value)))
        assert errors[0] == errors[1] and errors[0][0] == victim.seq
        # Damage past what is read is never looked at, either way.
        fused, iterated = _fused_and_iterated(root, 1, victim.seq - 1)
        same(fused, iterated)


def test_a_journal_read_that_was_iterated_is_not_walked_again(data_dir):
    records = _segment_records(data_dir, 1, 50)
    first = next(records)
    assert first.seq == 1 and not records.fusable
    engine = Engine()
    stats = replay_records(engine, records)
    assert (stats.records, stats.last_seq) == (49, 50)
