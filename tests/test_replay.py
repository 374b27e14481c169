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


# Recovery from a snapshot takes the snapshot's record first (its chain value
# is checked before the snapshot is loaded: SegmentRecords.take_first), then
# replays the records after it. Taking that record must leave the read exactly
# where iterating past it leaves it, and the rest must still be walked fused.


def _collecting_sink():
    from jex.journal.record import CommandSink

    got: list[tuple[int, int, bytes]] = []

    def apply(payload, seq, ts):
        got.append((seq, ts, bytes(payload)))
        return ()

    def undecodable(seq, error):
        raise AssertionError("the identity decoder refuses nothing")

    sink = CommandSink(lambda payload: payload, apply, to_seq=1 << 64, after=None, decode_errors=(),
                       undecodable=undecodable)  # fmt: skip
    return sink, got


def _first_then_iterated(root: Path, from_seq: int, to_seq: int, anchor=None):
    """What recovery read before take_first: the first record by next(),
    the rest by iterating. (first chain or None, COMMAND records after it),
    or the error's text where reading stopped."""
    records = (r for r in _segment_records(root, from_seq, to_seq, anchor))  # a generator: iterated
    try:
        first = next(records, None)
    except JournalCorrupt as error:
        return ("error", str(error))
    chain = None if first is None or first.seq != from_seq else first.chain
    try:
        return chain, [(r.seq, r.ts_ns, r.payload) for r in records if r.type == RecordType.COMMAND]
    except JournalCorrupt as error:
        return chain, ("error", str(error))


def _first_then_fused(root: Path, from_seq: int, to_seq: int, anchor=None):
    """The same through take_first and one fused walk of the rest."""
    records = _segment_records(root, from_seq, to_seq, anchor)
    try:
        chain = records.take_first()
    except JournalCorrupt as error:
        return ("error", str(error))
    assert records.fusable
    sink, got = _collecting_sink()
    try:
        records.apply_commands(sink)
    except JournalCorrupt as error:
        return chain, ("error", str(error))
    return chain, got


def _interesting_seqs(root: Path) -> list[int]:
    """Both ends, each SEAL and its neighbours (segment boundaries), and a sample."""
    import random

    records = damage.locate_all(root / "wal")
    last = records[-1].seq
    seals = [r.seq for r in records if r.type == RecordType.SEAL]
    picked = {1, 2, last - 1, last} | {s + d for s in seals for d in (-1, 0, 1)}
    return sorted(picked | set(random.Random(5).sample(range(1, last + 1), 12)))


def test_taking_the_first_record_leaves_the_read_where_iterating_past_it_does(data_dir):
    every = {r.seq: r for r in _segment_records(data_dir, 1, damage.locate_all(data_dir / "wal")[-1].seq)}
    last = max(every)
    for from_seq in _interesting_seqs(data_dir):
        for to_seq in (last, min(last, from_seq + 37), from_seq):
            for anchor in (None, every[from_seq].chain):
                expected = _first_then_iterated(data_dir, from_seq, to_seq, anchor)
                assert expected[0] == every[from_seq].chain
                assert _first_then_fused(data_dir, from_seq, to_seq, anchor) == expected, (from_seq, to_seq, anchor)
                # Iterating after take_first reads the same records too.
                read = _segment_records(data_dir, from_seq, to_seq, anchor)
                assert read.take_first() == every[from_seq].chain
                assert [r.seq for r in read] == list(range(from_seq + 1, to_seq + 1))


def test_taking_the_first_record_of_a_read_that_holds_none(data_dir, tmp_path):
    import shutil

    from jex.journal.prune import prune

    assert _segment_records(data_dir, 10, 9).take_first() is None
    root = tmp_path / "pruned"
    shutil.copytree(data_dir, root, ignore=shutil.ignore_patterns("LOCK", "*.tmp"))
    first_kept = damage.locate_records(damage.segment_paths(root / "wal")[2])[0].seq
    prune(root / "wal", first_kept)
    assert damage.locate_all(root / "wal")[0].seq == first_kept
    # The log starts after the record asked for: none is taken (iterating
    # would have given record first_kept, which is not the record asked for).
    assert _segment_records(root, first_kept - 1, first_kept + 5).take_first() is None
    assert _first_then_iterated(root, first_kept - 1, first_kept + 5)[0] is None


def test_taking_the_first_record_refuses_damage_as_iterating_does(data_dir, tmp_path):
    """Bit flips every 8 bytes through the record taken first, the record
    after it and a SEAL, and cuts (zeros to the end of the record) at every
    8th byte: the same chain value, records and errors either way."""
    import shutil

    root = tmp_path / "copy"
    shutil.copytree(data_dir, root, ignore=shutil.ignore_patterns("LOCK", "*.tmp"))
    records = damage.locate_all(root / "wal")
    last = records[-1].seq
    seal_index = next(i for i, r in enumerate(records) if r.type == RecordType.SEAL)
    middle = len(records) // 2
    cases = [(records[middle].seq, records[middle]), (records[middle].seq, records[middle + 1]),
             (records[seal_index - 1].seq, records[seal_index]), (records[seal_index].seq, records[seal_index])]
    errors = 0
    for from_seq, victim in cases:
        anchor = next(r.chain for r in _segment_records(root, from_seq, from_seq))
        original = damage.read_at(victim.path, victim.offset, victim.length)
        for at in range(0, victim.length, 8):
            for hurt in (lambda: damage.flip_bit(victim.path, victim.offset + at, at % 8),
                         lambda: damage.zero_range(victim.path, victim.offset + at, victim.length - at)):
                hurt()
                for start in (anchor, None):
                    expected = _first_then_iterated(root, from_seq, last, start)
                    assert _first_then_fused(root, from_seq, last, start) == expected, (from_seq, victim.seq, at)
                    errors += "error" in str(expected)
                damage.write_at(victim.path, victim.offset, original)
    assert errors > 0


def test_recovery_from_a_snapshot_replays_its_tail_fused(data_dir, tmp_path):
    import shutil

    from jex.journal.writer import Journal
    from jex.replay.recover import JournalView, check_against_log, recover, recovery_anchor, wal_view
    from jex.snapshots import snapshot_dir, store

    root = tmp_path / "snap"
    shutil.copytree(data_dir, root, ignore=shutil.ignore_patterns("LOCK", "*.tmp"))
    records = damage.locate_all(root / "wal")
    at = next(r for r in records if r.seq > len(records) // 3 and r.batch_end and r.type == RecordType.COMMAND)
    (record,) = read_records(root / "wal", at.seq, to_seq=at.seq)
    engine, _ = rebuild(root, to_seq=at.seq)
    path, _ = store.take(snapshot_dir(root), engine, seq=at.seq, chain=record.chain, ts_ns=record.ts_ns)
    header = store.read_header(path)
    genesis = rebuild(root, hash_events=True)
    anchor = recovery_anchor(root)
    with Journal.open(root / "wal", backend="pwrite", prepare_ahead=False, verify_from=anchor) as journal:
        for log in (wal_view(root / "wal"), JournalView(journal)):
            tail = check_against_log(log, header, path)
            assert getattr(tail, "fusable", False)  # nothing handed over yet: the replay walks it fused
            tail.close()
            recovered = recover(log, snapshot_dir(root), hash_events=True)
            assert recovered.start.seq == at.seq and recovered.engine.digest() == genesis[0].digest()
            fresh = Engine()
            replay_records(fresh, read_records(root / "wal"), to_seq=at.seq)
            iterated = replay_records(fresh, (r for r in read_records(root / "wal", at.seq + 1)), hash_events=True)
            same((recovered.engine, recovered.stats), (fresh, iterated))
