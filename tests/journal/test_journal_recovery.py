"""Recovery on real files: spec failure behaviours 6-14, plus verify / stat /
repair / read_records. Damage is applied with jex.journal.damage."""

from __future__ import annotations

import tracemalloc
from pathlib import Path

import pytest

from jex.journal import damage
from jex.journal.backends import uring_unavailable_reason
from jex.journal.errors import JournalCorrupt, JournalTorn, JournalUnproven
from jex.journal.limits import SEGMENT_HEADER_BYTES
from jex.journal.record import ZERO_CHAIN, RecordType
from jex.journal.scan import Decision, read_records, stat, verify
from jex.journal.segment import new_nonce, tmp_name
from jex.journal.writer import QUARANTINE_DIR_NAME, Journal, repair

SEGMENT_BYTES = 16 * 1024
URING = pytest.param(
    "uring",
    marks=pytest.mark.skipif(uring_unavailable_reason() is not None, reason=f"io_uring: {uring_unavailable_reason()}"),
)


def open_journal(root: Path, backend: str = "pwrite", **kwargs) -> Journal:
    kwargs.setdefault("segment_bytes", SEGMENT_BYTES)
    return Journal.open(root / "wal", backend=backend, prepare_ahead=False, **kwargs)


def build(root: Path, count: int = 12, batch: int = 4, **kwargs) -> Path:
    with open_journal(root, **kwargs) as journal:
        damage.write_commands(journal, count, batch=batch)
    return root / "wal"


def build_segments(root: Path, segments: int) -> Path:
    with open_journal(root) as journal:
        while len(damage.segment_paths(root / "wal")) < segments:
            damage.write_commands(journal, 4)
    return root / "wal"


def commands(wal: Path) -> list[tuple[int, bytes]]:
    return [(r.seq, r.payload) for r in read_records(wal) if r.type == RecordType.COMMAND]


def assert_refused_unchanged(root: Path, reason: str) -> JournalCorrupt:
    before = damage.file_hashes(root / "wal")
    with pytest.raises(JournalCorrupt) as caught:
        open_journal(root)
    assert caught.value.reason == reason, str(caught.value)
    assert damage.file_hashes(root / "wal") == before
    assert not (root / QUARANTINE_DIR_NAME).exists()
    message = str(caught.value)
    assert "\n" not in message and caught.value.path.name in message
    assert f"offset {caught.value.offset}" in message and f"seq {caught.value.seq}" in message
    return caught.value


# --- behaviour 1: clean restart -------------------------------------------------------


@pytest.mark.parametrize("backend", ["pwrite", URING])
def test_clean_restart_returns_the_same_records(tmp_path, backend):
    with open_journal(tmp_path, backend) as journal:
        damage.write_commands(journal, 150, batch=7)
        before = list(journal.records())
        chain, last_ts = journal.chain, journal.last_ts
    assert len(damage.segment_paths(tmp_path / "wal")) > 2
    with open_journal(tmp_path, backend) as journal:
        assert list(journal.records()) == before
        assert (journal.chain, journal.last_ts, journal.last_seq) == (chain, last_ts, before[-1].seq)
        assert journal.report.row == "clean_end"


# --- behaviour 6: last record truncated at every byte ------------------------------------


@pytest.mark.parametrize("how", ["zeroed", "file_truncated"])
def test_last_record_cut_at_every_byte_is_torn_and_next_append_is_n(tmp_path, how):
    template = build(tmp_path / "template", count=9)
    last = damage.locate_all(template)[-1]
    n = last.seq
    segment_bytes = last.path.read_bytes()
    for cut in range(last.length):
        root = tmp_path / f"cut{cut}"
        wal = root / "wal"
        wal.mkdir(parents=True)
        path = wal / last.path.name
        if how == "zeroed":
            path.write_bytes(segment_bytes[: last.offset + cut] + bytes(len(segment_bytes) - last.offset - cut))
        else:
            path.write_bytes(segment_bytes[: last.offset + cut])
        report = verify(wal)
        if cut == 0:
            assert report.row == "clean_end"  # nothing of record N was written: a clean end at N-1
        else:
            assert report.row == "torn_tail", (cut, report.problem)
            assert report.problem.seq == n and report.problem.offset == last.offset
        # A file cut exactly after record N-1 is a clean end of a short
        # segment: the journal seals it (SEAL takes seq N) and moves on.
        expected = n + 1 if cut == 0 and how == "file_truncated" else n
        with open_journal(root) as journal:
            assert journal.last_seq == n - 1
            assert journal.append([(journal.next_seq, 10**12, b"again")]) == expected
        assert [seq for seq, _ in commands(wal)] == list(range(1, n)) + [expected]


@pytest.mark.parametrize("backend", ["pwrite", URING])
def test_torn_tail_continues_in_a_new_segment_with_a_new_nonce(tmp_path, backend):
    wal = build(tmp_path, count=9)
    last = damage.locate_all(wal)[-1]
    damage.zero_range(last.path, last.offset + 90, last.length - 90)
    old_nonce = damage.read_header(last.path).nonce
    with open_journal(tmp_path, backend) as journal:
        assert journal.report.row == "torn_tail"
        assert journal.next_seq == last.seq
        journal.append([(last.seq, 10**12, b"n again")])
        assert journal.segment_path != last.path
        assert damage.read_header(journal.segment_path).nonce != old_nonce
    assert verify(wal).rows == ["unsealed_by_repair", "clean_end"]


# --- behaviour 7: garbage or a zeroed sector after the tail ----------------------------------


def test_garbage_sector_after_tail_is_quarantined_and_zeroed(tmp_path):
    wal = build(tmp_path, count=10)
    last = damage.locate_all(wal)[-1]
    garbage_at = last.offset + last.length
    garbage = bytes(range(7, 7 + 200)) * 2 + b"\xff" * 112  # one 512-byte sector
    damage.write_at(last.path, garbage_at, garbage)
    report = verify(wal)
    assert report.row == "torn_tail" and report.problem.offset == garbage_at
    with open_journal(tmp_path) as journal:
        assert journal.last_seq == last.seq
    quarantined = tmp_path / QUARANTINE_DIR_NAME / f"{last.path.name}@{garbage_at:016x}.torn"
    assert quarantined.read_bytes() == garbage.rstrip(b"\0")
    assert not any(damage.read_at(last.path, garbage_at, len(garbage)))
    assert verify(wal).decision is Decision.CLEAN
    assert len(commands(wal)) == 10


def test_zeroed_sector_holding_the_last_records_is_torn(tmp_path):
    wal = build(tmp_path, count=30, batch=10)
    records = damage.locate_all(wal)
    end = records[-1].offset + records[-1].length
    sector = (end - 1) // 512 * 512
    damage.zero_range(records[-1].path, sector, 512)
    survivors = [r.seq for r in records if r.offset + r.length <= sector]
    report = verify(wal)
    assert report.decision is Decision.TORN and report.last_seq == survivors[-1]
    with open_journal(tmp_path) as journal:
        assert journal.next_seq == survivors[-1] + 1
    assert [seq for seq, _ in commands(wal)] == survivors


# --- behaviours 8-13: corruption is refused, nothing changes ------------------------------------


def test_bit_flip_in_a_middle_payload_is_corrupt(tmp_path):
    wal = build(tmp_path, count=20)
    middle = damage.locate_all(wal)[9]
    damage.flip_bit(middle.path, middle.payload_offset + 5, 3)
    error = assert_refused_unchanged(tmp_path, "valid_record_after_damage")
    assert (error.seq, error.offset, error.detail.split(":")[0]) == (10, middle.offset, "body_checksum")
    assert_refused_unchanged(tmp_path, "valid_record_after_damage")  # and again: still refused, still unchanged


def test_bit_flip_in_payload_len_is_corrupt_without_a_huge_allocation(tmp_path):
    wal = build(tmp_path, count=20)
    middle = damage.locate_all(wal)[9]
    damage.flip_bit(middle.path, middle.offset + 72 + 3, 6)  # payload_len += 1 GiB
    tracemalloc.start()
    try:
        report = verify(wal)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert report.row == "valid_record_after_damage" and report.problem.detail.startswith("header_checksum")
    assert peak < 4 * SEGMENT_BYTES
    assert_refused_unchanged(tmp_path, "valid_record_after_damage")


@pytest.mark.parametrize("batch", [1, 4])
def test_bit_flip_in_record_n_minus_1_while_n_is_valid_is_corrupt_not_torn(tmp_path, batch):
    wal = build(tmp_path, count=9, batch=batch)  # N-1 and N in different batches: N's batch proves N-1 synced
    records = damage.locate_all(wal)
    assert records[-2].batch_end
    damage.flip_bit(records[-2].path, records[-2].payload_offset)
    error = assert_refused_unchanged(tmp_path, "valid_record_after_damage")
    assert error.seq == records[-2].seq and not isinstance(error, JournalUnproven)


@pytest.mark.parametrize("victim", ["payload", "header"])
def test_bit_flip_in_record_n_minus_1_of_the_final_batch_is_unproven_not_torn(tmp_path, victim):
    """N-1 and N in the same, final, batch: a power cut that kept N but lost
    N-1, or rot in an acknowledged batch. Refused (exit 3) either way, with
    the batch named and the way out."""
    wal = build(tmp_path, count=8, batch=8)
    records = damage.locate_all(wal)
    assert not records[-2].batch_end and records[-1].batch_end
    damage.flip_bit(records[-2].path, records[-2].payload_offset if victim == "payload" else records[-2].offset + 50)
    error = assert_refused_unchanged(tmp_path, "unproven_final_batch")
    assert isinstance(error, JournalUnproven) and error.exit_code == 3
    assert (error.seq, error.first_seq, error.last_seq) == (7, 1, 8)
    assert "the last batch (seq 1..8) is incomplete" in str(error)
    assert "run `jex journal repair --final-batch` to quarantine it" in str(error)


def test_a_record_whose_header_is_lost_may_have_ended_its_batch(tmp_path):
    """The format's one blind spot, stated: a record destroyed with its
    header takes its BATCH_END flag along. Here seq 8 ended batch 5..8 and
    seq 9 is a batch of its own, but with 8's flag gone 5..9 look like one
    final batch: unproven, not plain corrupt. It is refused all the same."""
    wal = build(tmp_path, count=9, batch=4)  # batches 1..4, 5..8, 9
    records = damage.locate_all(wal)
    damage.zero_range(records[-2].path, records[-2].offset, 80)  # seq 8: header gone, flag gone
    error = assert_refused_unchanged(tmp_path, "unproven_final_batch")
    assert (error.first_seq, error.seq, error.last_seq) == (5, 8, 9)


@pytest.mark.parametrize("target", ["last_command", "seal"])
def test_bit_flip_in_the_last_record_of_a_sealed_segment_is_corrupt(tmp_path, target):
    wal = build_segments(tmp_path, 2)
    first = damage.segment_paths(wal)[0]
    records = damage.locate_records(first)
    assert records[-1].type == RecordType.SEAL
    victim = records[-2] if target == "last_command" else records[-1]
    damage.flip_bit(first, victim.offset + 20)
    reason = "valid_record_after_damage" if target == "last_command" else "damage_in_closed_segment"
    assert_refused_unchanged(tmp_path, reason)


@pytest.mark.parametrize("how", ["duplicate", "swap", "duplicate_after_tail"])
def test_duplicated_or_swapped_records_are_corrupt(tmp_path, how):
    wal = build(tmp_path, count=12)
    records = damage.locate_all(wal)
    a, b = records[4], records[5]
    bytes_a, bytes_b = damage.read_at(a.path, a.offset, a.length), damage.read_at(b.path, b.offset, b.length)
    if how == "duplicate":
        damage.write_at(b.path, b.offset, bytes_a)
    elif how == "swap":
        damage.write_at(a.path, a.offset, bytes_b)
        damage.write_at(b.path, b.offset, bytes_a)
    else:
        last = records[-1]
        damage.write_at(last.path, last.offset + last.length, damage.read_at(last.path, last.offset, last.length))
    error = assert_refused_unchanged(tmp_path, "misplaced_record")
    assert error.detail.startswith("seq_gap")


def _foreign_record(seq: int, like: damage.RecordLocation) -> bytes:
    data = damage.forge_record(seq, 5, damage.payload_for(seq), parent=ZERO_CHAIN, nonce=new_nonce())
    assert len(data) == like.length
    return data


def test_foreign_nonce_record_mid_log_is_corrupt(tmp_path):
    wal = build(tmp_path, count=12)
    victim = damage.locate_all(wal)[5]
    damage.write_at(victim.path, victim.offset, _foreign_record(victim.seq, victim))
    error = assert_refused_unchanged(tmp_path, "valid_record_after_damage")
    assert error.detail.startswith("foreign_nonce")


def test_foreign_nonce_record_right_after_the_tail_is_torn(tmp_path):
    wal = build(tmp_path, count=12)
    last = damage.locate_all(wal)[-1]
    damage.write_at(last.path, last.offset + last.length, _foreign_record(last.seq + 1, last))
    report = verify(wal)
    assert report.row == "torn_tail" and report.problem.detail.startswith("foreign_nonce")
    with open_journal(tmp_path) as journal:
        assert journal.next_seq == last.seq + 1


# --- behaviour 14: segments ----------------------------------------------------------------


def test_missing_middle_segment_is_corrupt(tmp_path):
    wal = build_segments(tmp_path, 3)
    damage.segment_paths(wal)[1].unlink()
    error = assert_refused_unchanged(tmp_path, "broken_segment_chain")
    assert "missing_segment" in error.detail


@pytest.mark.parametrize("field", ["prev_chain", "first_seq"])
def test_broken_segment_chain_is_corrupt(tmp_path, field):
    wal = build_segments(tmp_path, 3)
    second = damage.segment_paths(wal)[1]
    header = damage.read_header(second)
    change = {"prev_chain": bytes(16)} if field == "prev_chain" else {"first_seq": header.first_seq + 1}
    damage.rewrite_segment_header(second, **change)
    error = assert_refused_unchanged(tmp_path, "broken_segment_chain")
    assert ("chain_break" if field == "prev_chain" else "seq_gap") in error.detail


def test_bad_header_of_a_later_segment_is_corrupt(tmp_path):
    wal = build_segments(tmp_path, 3)
    damage.flip_bit(damage.segment_paths(wal)[1], 100)
    error = assert_refused_unchanged(tmp_path, "broken_segment_chain")
    assert "header_checksum" in error.detail


def test_orphan_tmp_files_are_ignored_by_readers_and_deleted_on_open(tmp_path):
    wal = build(tmp_path, count=8)
    orphan = wal / tmp_name(99)
    orphan.write_bytes(b"\xff" * 5000)
    assert verify(wal).decision is Decision.CLEAN
    assert len(commands(wal)) == 8
    with open_journal(tmp_path) as journal:
        assert journal.last_seq == 8
    assert not orphan.exists()


def test_segment_file_with_a_bad_name_is_corrupt(tmp_path):
    wal = build(tmp_path, count=4)
    (wal / "0000000000000005.wal").write_bytes(b"x")
    assert_refused_unchanged(tmp_path, "bad_segment_header")


# --- the tools: verify, stat, repair, read_records ----------------------------------------


def test_stat_reports_segments_with_seq_ranges_and_fill(tmp_path):
    wal = build_segments(tmp_path, 3)
    report = stat(wal)
    assert [s.segid for s in report.segments] == [0, 1, 2]
    assert report.segments[0].first_seq == 1
    for before, after in zip(report.segments, report.segments[1:]):
        assert before.sealed and after.first_seq == before.last_seq + 1
    assert not report.segments[-1].sealed and report.segments[-1].last_seq == report.last_seq
    assert all(0 < s.fill <= 1 and s.size_bytes == SEGMENT_BYTES for s in report.segments)
    assert report.as_dict()["segments"] == 3


def test_repair_fixes_a_torn_tail_and_refuses_corruption(tmp_path):
    wal = build(tmp_path / "torn", count=10)
    last = damage.locate_all(wal)[-1]
    damage.zero_range(last.path, last.offset + 8, 8)
    with pytest.raises(JournalTorn):
        open_journal(tmp_path / "torn", repair=False)
    assert repair(wal).row == "torn_tail"
    assert verify(wal).decision is Decision.CLEAN and verify(wal).last_seq == 9
    image = damage.file_hashes(wal)
    assert repair(wal).row == "clean_end"
    assert damage.file_hashes(wal) == image  # a clean log is not touched
    assert repair(tmp_path / "none" / "wal").row == "empty_log"
    assert not (tmp_path / "none").exists()

    bad = build(tmp_path / "bad", count=10)
    middle = damage.locate_all(bad)[3]
    damage.flip_bit(middle.path, middle.payload_offset)
    before = damage.file_hashes(bad)
    with pytest.raises(JournalCorrupt):
        repair(bad)
    assert damage.file_hashes(bad) == before


def test_read_records_stops_at_a_torn_tail_and_raises_on_corruption(tmp_path):
    wal = build(tmp_path / "torn", count=10)
    last = damage.locate_all(wal)[-1]
    damage.zero_range(last.path, last.offset + 90, 10)
    assert [seq for seq, _ in commands(wal)] == list(range(1, 10))

    bad = build(tmp_path / "bad", count=10)
    middle = damage.locate_all(bad)[3]
    damage.flip_bit(middle.path, middle.payload_offset)
    with pytest.raises(JournalCorrupt):
        list(read_records(bad))
    assert [r.seq for r in read_records(bad, to_seq=3)] == [1, 2, 3]


def test_records_from_a_later_seq_skip_whole_segments(tmp_path):
    wal = build_segments(tmp_path, 3)
    every = list(read_records(wal))
    middle = every[len(every) // 2].seq
    assert [r.seq for r in read_records(wal, middle)] == [r.seq for r in every if r.seq >= middle]
    assert [r.seq for r in read_records(wal, 2, to_seq=4)] == [2, 3, 4]


def test_scan_sees_everything_after_the_header_even_in_a_short_file(tmp_path):
    wal = build(tmp_path, count=3)
    path = damage.segment_paths(wal)[0]
    damage.truncate(path, SEGMENT_HEADER_BYTES - 10)
    report = verify(wal)
    assert report.row == "bad_segment_header" and "short_header" in report.problem.detail
