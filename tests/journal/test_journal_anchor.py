"""Opening from an anchor: scan(start=Anchor) and Journal.open(verify_from=...)
verify the log from a known record (the newest snapshot's) on, and only the
headers of the segments before it; readers find that record by its chain
value (reader.find_anchor) instead of walking to it. The verdict on the part
verified must be the full scan's, damage there must be refused exactly as
before, and the shortcut must fall back to the full scan whenever it does
not apply. Also: the reader checks segment boundaries it crosses."""

from __future__ import annotations

from pathlib import Path

import pytest

from jex.journal import damage
from jex.journal.errors import JournalCorrupt
from jex.journal.reader import Anchor
from jex.journal.record import RecordType
from jex.journal.scan import Decision, iter_segment_records, scan
from jex.journal.storage import OsStorage
from jex.journal.writer import QUARANTINE_DIR_NAME, Journal

SEGMENT_BYTES = 16 * 1024


def open_journal(root: Path, **kwargs) -> Journal:
    return Journal.open(root / "wal", backend="pwrite", prepare_ahead=False, segment_bytes=SEGMENT_BYTES, **kwargs)


def build(root: Path, segments: int = 4, batch: int = 4) -> Path:
    with open_journal(root) as journal:
        while len(damage.segment_paths(root / "wal")) < segments:
            damage.write_commands(journal, batch, batch=batch)
    return root / "wal"


def anchor_of(location: damage.RecordLocation) -> Anchor:
    return Anchor(location.seq, damage.read_at(location.path, location.offset, 16))


def batch_ends_in(wal: Path, segment: int) -> list[damage.RecordLocation]:
    path = damage.segment_paths(wal)[segment]
    return [r for r in damage.locate_all(wal) if r.path == path and r.batch_end]


def same_verdict(anchored, full) -> None:
    assert (anchored.decision, anchored.row, anchored.problem) == (full.decision, full.row, full.problem)
    assert (anchored.first_seq, anchored.last_seq, anchored.chain, anchored.last_ts) == (
        full.first_seq, full.last_seq, full.chain, full.last_ts)  # fmt: skip
    assert anchored.end == full.end and anchored.active_header == full.active_header


def test_an_anchored_scan_reaches_the_full_scans_verdict_and_end(tmp_path):
    wal = build(tmp_path)
    full = scan(wal)
    assert full.decision is Decision.CLEAN and full.verified_from_seq == 1
    anchors = [r for r in damage.locate_all(wal) if r.batch_end]
    for location in anchors[:: max(1, len(anchors) // 12)] + [anchors[-1]]:
        anchored = scan(wal, start=anchor_of(location))
        same_verdict(anchored, full)
        assert anchored.verified_from_seq == location.seq
        assert anchored.records < full.records or location.seq == 1


def test_a_seal_can_be_the_anchor(tmp_path):
    wal = build(tmp_path)
    seal = next(r for r in damage.locate_all(wal) if r.type == RecordType.SEAL)
    anchored = scan(wal, start=anchor_of(seal))
    same_verdict(anchored, scan(wal))
    assert anchored.verified_from_seq == seal.seq


@pytest.mark.parametrize("where", ["same_segment", "later_segment", "last_segment", "last_record"])
def test_damage_after_the_anchor_is_refused_as_without_it(tmp_path, where):
    wal = build(tmp_path, segments=4)
    anchor = batch_ends_in(wal, 1)[1]
    records = damage.locate_all(wal)
    after = [r for r in records if r.seq > anchor.seq and r.type == RecordType.COMMAND]
    victim = {
        "same_segment": next(r for r in after if r.path == anchor.path),
        "later_segment": next(r for r in after if r.path == damage.segment_paths(wal)[2]),
        "last_segment": next(r for r in after if r.path == damage.segment_paths(wal)[3]),
        "last_record": after[-1],
    }[where]
    damage.flip_bit(victim.path, victim.payload_offset + 3)
    full = scan(wal)
    anchored = scan(wal, start=anchor_of(anchor))
    same_verdict(anchored, full)
    assert anchored.verified_from_seq == anchor.seq
    if where != "last_record":  # the last record of the log alone may be a torn or unproven final batch
        assert full.decision is Decision.CORRUPT and full.problem.seq == victim.seq
    before = damage.file_hashes(wal)
    if full.decision is Decision.CORRUPT:
        with pytest.raises(JournalCorrupt) as caught:
            open_journal(tmp_path, verify_from=anchor_of(anchor))
        assert caught.value.reason == full.row and caught.value.seq == full.problem.seq
        assert damage.file_hashes(wal) == before and not (tmp_path / QUARANTINE_DIR_NAME).exists()


def test_damage_to_the_anchors_own_record_is_refused(tmp_path):
    wal = build(tmp_path)
    anchor = batch_ends_in(wal, 2)[1]
    expected = anchor_of(anchor)
    damage.flip_bit(anchor.path, anchor.payload_offset + 1)  # its header (and chain value) still validate
    anchored = scan(wal, start=expected)
    same_verdict(anchored, scan(wal))
    assert anchored.decision is Decision.CORRUPT and anchored.problem.seq == anchor.seq
    assert anchored.verified_from_seq == 1  # fell back to the full scan


def test_damage_before_the_anchor_is_left_to_whoever_reads_it(tmp_path):
    """What opening from an anchor does not verify, stated: the records
    before the anchor. The full scan (`jex journal verify`) still refuses
    them, and any reader that reads them refuses them."""
    wal = build(tmp_path)
    anchor = batch_ends_in(wal, 2)[1]
    victim = next(r for r in damage.locate_all(wal) if r.path == damage.segment_paths(wal)[1])
    damage.flip_bit(victim.path, victim.payload_offset + 2)
    assert scan(wal).decision is Decision.CORRUPT
    anchored = scan(wal, start=anchor_of(anchor))
    assert anchored.decision is Decision.CLEAN and anchored.verified_from_seq == anchor.seq
    with open_journal(tmp_path, verify_from=anchor_of(anchor)) as journal:
        tail = [r.seq for r in journal.records(anchor.seq, anchor=anchor_of(anchor).chain)]
        assert tail == list(range(anchor.seq, journal.last_seq + 1))
        with pytest.raises(JournalCorrupt) as caught:
            list(journal.records(1))
        assert caught.value.seq == victim.seq and caught.value.path == victim.path


def test_a_damaged_header_before_the_anchor_falls_back_to_the_full_scan(tmp_path):
    wal = build(tmp_path)
    anchor = anchor_of(batch_ends_in(wal, 3)[0])
    damage.flip_bit(damage.segment_paths(wal)[1], 100)
    anchored = scan(wal, start=anchor)
    same_verdict(anchored, scan(wal))
    assert anchored.decision is Decision.CORRUPT and anchored.verified_from_seq == 1


def test_a_missing_segment_before_the_anchor_falls_back_to_the_full_scan(tmp_path):
    wal = build(tmp_path, segments=5)
    anchor = anchor_of(batch_ends_in(wal, 3)[0])
    damage.segment_paths(wal)[1].unlink()
    anchored = scan(wal, start=anchor)
    same_verdict(anchored, scan(wal))
    assert anchored.decision is Decision.CORRUPT and "missing_segment" in anchored.problem.detail


@pytest.mark.parametrize("how", ["other_chain", "inside_a_batch", "past_the_end", "before_the_log"])
def test_an_anchor_that_does_not_apply_falls_back_to_the_full_scan(tmp_path, how):
    wal = build(tmp_path, batch=4)
    records = damage.locate_all(wal)
    inner = next(r for r in records if not r.batch_end and r.path == damage.segment_paths(wal)[2])
    anchor = {
        "other_chain": Anchor(records[-1].seq, bytes(range(16))),
        "inside_a_batch": anchor_of(inner),
        "past_the_end": Anchor(records[-1].seq + 100, damage.read_at(records[-1].path, records[-1].offset, 16)),
        "before_the_log": Anchor(0, bytes(16)),
    }[how]
    anchored = scan(wal, start=anchor)
    same_verdict(anchored, scan(wal))
    assert anchored.verified_from_seq == 1


def test_a_torn_tail_is_judged_and_repaired_as_without_an_anchor(tmp_path):
    wal = build(tmp_path)
    records = damage.locate_all(wal)
    anchor = anchor_of([r for r in records if r.batch_end][-3])
    last = records[-1]
    damage.truncate(last.path, last.offset + last.length - 5)  # the last record cut short
    full = scan(wal)
    assert full.decision is Decision.TORN
    same_verdict(scan(wal, start=anchor), full)
    with open_journal(tmp_path, verify_from=anchor) as journal:
        assert journal.last_seq == last.seq - 1
        assert journal.report.row == full.row and journal.report.verified_from_seq == anchor.seq


def test_records_read_from_an_anchor_are_the_records_read_by_walking(tmp_path):
    wal = build(tmp_path)
    last = scan(wal).last_seq
    storage = OsStorage()
    for location in damage.locate_all(wal)[5::7]:
        anchor = anchor_of(location)
        walked = list(iter_segment_records(storage, wal, location.seq, last))
        found = list(iter_segment_records(storage, wal, location.seq, last, anchor=anchor.chain))
        assert found == walked and found[0].chain == anchor.chain
    # An anchor that is not there: the segment is walked, and the caller sees the real chain value.
    location = damage.locate_all(wal)[9]
    records = list(iter_segment_records(storage, wal, location.seq, last, anchor=bytes(16)))
    assert records[0].seq == location.seq and records[0].chain == anchor_of(location).chain


def test_the_reader_refuses_a_segment_that_does_not_continue_the_chain(tmp_path):
    """A segment header with a valid checksum but a foreign prev_chain: the
    scanner says broken_segment_chain, and so does a reader crossing into it."""
    wal = build(tmp_path)
    third = damage.segment_paths(wal)[2]
    damage.rewrite_segment_header(third, prev_chain=bytes(range(16)))
    report = scan(wal)
    assert report.decision is Decision.CORRUPT and report.row == "broken_segment_chain"
    first_of_second = next(r for r in damage.locate_all(wal) if r.path == damage.segment_paths(wal)[1])
    with pytest.raises(JournalCorrupt) as caught:
        list(iter_segment_records(OsStorage(), wal, first_of_second.seq, 10**9))
    assert caught.value.reason == "broken_segment_chain" and caught.value.path.name.startswith("0000000000000002-")


def test_the_reader_refuses_an_unsealed_segment_followed_by_a_plain_continuation(tmp_path):
    """A closed segment without its SEAL is only legitimate when the next
    header says FLAG_PREV_UNSEALED (a repair closed it)."""
    wal = build(tmp_path)
    second = damage.segment_paths(wal)[1]
    seal = [r for r in damage.locate_all(wal) if r.path == second][-1]
    assert seal.type == RecordType.SEAL
    damage.zero_range(second, seal.offset, seal.length)
    last_command = [r for r in damage.locate_all(wal) if r.path == second][-1]
    third = damage.segment_paths(wal)[2]
    damage.rewrite_segment_header(third, first_seq=seal.seq, prev_chain=damage.read_at(second, last_command.offset, 16))
    assert scan(wal).row == "unsealed_without_flag"
    with pytest.raises(JournalCorrupt) as caught:
        list(iter_segment_records(OsStorage(), wal, last_command.seq, 10**9))
    assert caught.value.reason == "broken_segment_chain"
