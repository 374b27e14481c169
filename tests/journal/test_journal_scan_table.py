"""The recovery decision table: every input pattern matches exactly one row,
and every row is produced by a real on-disk state and acted on as it says
(CLEAN opens, TORN is repaired, CORRUPT is refused with nothing changed)."""

from __future__ import annotations

from pathlib import Path

import pytest

from jex.journal import damage
from jex.journal.errors import JournalCorrupt
from jex.journal.limits import SEGMENT_HEADER_BYTES, TORN_WINDOW_BYTES
from jex.journal.record import RecordType
from jex.journal.scan import DECISION_TABLE, ROWS_BY_NAME, Decision, all_facts, decide, verify
from jex.journal.segment import FLAG_PREV_UNSEALED
from jex.journal.writer import Journal

SEGMENT_BYTES = 16 * 1024


def open_journal(root: Path, **kwargs) -> Journal:
    kwargs.setdefault("segment_bytes", SEGMENT_BYTES)
    return Journal.open(root / "wal", backend="pwrite", prepare_ahead=False, **kwargs)


def build(root: Path, count: int = 20, **kwargs) -> Path:
    with open_journal(root, **kwargs) as journal:
        damage.write_commands(journal, count)
    return root / "wal"


def build_segments(root: Path, segments: int) -> Path:
    """A log of `segments` segments, the last one holding a batch."""
    with open_journal(root) as journal:
        while len(damage.segment_paths(root / "wal")) < segments:
            damage.write_commands(journal, 4)
    return root / "wal"


def seal_of(path: Path) -> damage.RecordLocation:
    seal = damage.locate_records(path)[-1]
    assert seal.type == RecordType.SEAL
    return seal


def empty_last_segment(wal: Path) -> None:
    """Zero every record of the last segment: as if no batch reached it yet."""
    last = damage.segment_paths(wal)[-1]
    damage.zero_range(last, SEGMENT_HEADER_BYTES, last.stat().st_size - SEGMENT_HEADER_BYTES)


# --- the table itself -----------------------------------------------------------


def test_every_input_pattern_matches_exactly_one_row():
    patterns = list(all_facts())
    assert len(patterns) == 3 * 7 * 2 * 5
    for facts in patterns:
        matching = [row.name for row in DECISION_TABLE if row.matches(facts)]
        assert len(matching) == 1, (facts, matching)
        assert decide(facts).name == matching[0]


def test_every_row_is_reachable():
    used = {decide(facts).name for facts in all_facts()}
    assert used == set(ROWS_BY_NAME)


def test_only_interrupted_writes_are_repairable():
    torn = {row.name for row in DECISION_TABLE if row.decision is Decision.TORN}
    assert torn == {"torn_tail", "rollover_incomplete", "rollover_incomplete_torn_seal"}


# --- one on-disk state per row ------------------------------------------------------


def make_empty_log(root):
    return root / "wal"


def make_bad_segment_header(root):
    wal = build(root)
    damage.flip_bit(damage.segment_paths(wal)[0], 30)
    return wal


def make_clean_end(root):
    return build(root)


def make_unsealed_by_repair(root):
    wal = build(root)
    last = damage.locate_all(wal)[-1]
    damage.zero_range(last.path, last.offset + 40, last.length - 40)
    with open_journal(root) as journal:  # repairs: new segment flagged PREV_UNSEALED
        damage.write_commands(journal, 4)
    return wal


def make_unsealed_without_flag(root):
    wal = make_unsealed_by_repair(root)
    damage.rewrite_segment_header(damage.segment_paths(wal)[-1], flags=0)
    return wal


def make_rollover_incomplete(root):
    wal = build_segments(root, 2)
    first = damage.segment_paths(wal)[0]
    seal = seal_of(first)
    damage.zero_range(first, seal.offset, seal.length)
    empty_last_segment(wal)
    return wal


def make_broken_segment_chain(root):
    wal = build_segments(root, 2)
    first = damage.segment_paths(wal)[0]
    seal = seal_of(first)
    damage.zero_range(first, seal.offset, seal.length)  # the SEAL is gone, records follow it
    return wal


def make_sealed(root):
    return build_segments(root, 3)


def make_successor_missing(root):
    wal = build_segments(root, 2)
    damage.segment_paths(wal)[-1].unlink()
    return wal


def make_seal_contradiction(root):
    wal = build_segments(root, 2)
    damage.rewrite_segment_header(damage.segment_paths(wal)[-1], flags=FLAG_PREV_UNSEALED)
    return wal


def make_torn_tail(root):
    wal = build(root)
    last = damage.locate_all(wal)[-1]
    damage.zero_range(last.path, last.offset + 100, last.length - 100)
    return wal


def make_rollover_incomplete_torn_seal(root):
    wal = build_segments(root, 2)
    first = damage.segment_paths(wal)[0]
    seal = seal_of(first)
    damage.write_at(first, seal.offset + 40, b"\xee" * 40)
    empty_last_segment(wal)
    return wal


def make_damage_beyond_window(root):
    wal = build(root, segment_bytes=2 * 1024 * 1024 + 64 * 1024)
    last = damage.locate_all(wal)[-1]
    damage.write_at(last.path, last.offset + last.length + TORN_WINDOW_BYTES + 64, b"\x01")
    return wal


def make_damage_in_closed_segment(root):
    wal = build_segments(root, 2)
    first = damage.segment_paths(wal)[0]
    damage.flip_bit(first, seal_of(first).offset + 60)
    return wal


def make_unproven_final_batch(root):
    wal = build(root)  # batches of 4: the last one is seqs 17..20
    records = damage.locate_all(wal)
    damage.flip_bit(records[-2].path, records[-2].payload_offset + 3)  # N-1 rots (or never landed); N is valid
    return wal


def make_final_batch_beyond_window(root):
    wal = build(root, segment_bytes=2 * 1024 * 1024 + 64 * 1024)
    records = damage.locate_all(wal)
    damage.flip_bit(records[-2].path, records[-2].payload_offset + 3)
    last = records[-1]
    damage.write_at(last.path, last.offset + last.length + TORN_WINDOW_BYTES + 64, b"\x01")
    return wal


def make_batch_damage_in_closed_segment(root):
    wal = make_unsealed_by_repair(root)  # segment 0 keeps 17..19 of the torn batch 17..20: an open batch
    first = damage.segment_paths(wal)[0]
    kept = damage.locate_records(first)
    assert [r.seq for r in kept[-3:]] == [17, 18, 19] and not kept[-1].batch_end
    damage.flip_bit(first, kept[-2].payload_offset)
    return wal


def make_valid_record_after_damage(root):
    wal = build(root)
    middle = damage.locate_all(wal)[10]
    damage.flip_bit(middle.path, middle.payload_offset + 3)
    return wal


def make_misplaced_record(root):
    wal = build(root)
    records = damage.locate_all(wal)
    a, b = records[7], records[8]
    damage.write_at(b.path, b.offset, damage.read_at(a.path, a.offset, a.length))
    return wal


def make_garbage_after_seal(root):
    wal = build_segments(root, 2)
    first = damage.segment_paths(wal)[0]
    seal = seal_of(first)
    damage.write_at(first, seal.offset + seal.length + 16, b"\x42")
    return wal


BUILDERS = {name[len("make_") :]: fn for name, fn in globals().items() if name.startswith("make_")}


def test_every_row_has_an_on_disk_builder():
    assert set(BUILDERS) == set(ROWS_BY_NAME)


@pytest.mark.parametrize("row_name", [row.name for row in DECISION_TABLE])
def test_row_on_disk(tmp_path, row_name):
    wal = BUILDERS[row_name](tmp_path)
    row = ROWS_BY_NAME[row_name]
    report = verify(wal)
    assert row_name in report.rows
    if row.decision is Decision.CONTINUE:
        assert report.decision is Decision.CLEAN
        return
    assert report.row == row_name and report.decision is row.decision
    if row.decision is Decision.CLEAN:
        with open_journal(tmp_path) as journal:
            assert journal.last_seq == report.last_seq
        return
    problem = report.problem
    assert problem is not None and problem.reason == row_name
    if row.decision is Decision.CORRUPT:
        before = damage.file_hashes(tmp_path)
        with pytest.raises(JournalCorrupt) as caught:
            open_journal(tmp_path)
        assert caught.value.reason == row_name and caught.value.exit_code == 3
        assert (caught.value.path, caught.value.offset, caught.value.seq) == (problem.path, problem.offset, problem.seq)
        assert damage.file_hashes(tmp_path) == before  # LOCK is rewritten only if the lock is taken
        return
    # TORN: open repairs, nothing verified is lost, the next append continues.
    kept = report.last_seq
    with open_journal(tmp_path) as journal:
        assert journal.last_seq >= kept
        seq = journal.append([(journal.next_seq, 10**9, b"after repair")])
    after = verify(wal)
    assert after.decision is Decision.CLEAN and after.last_seq == seq
