"""Batch boundaries in the record format (version 2, FLAG_BATCH_END): the
unproven final batch, `repair --final-batch` (API and CLI), open batches,
and reading version-1 logs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from jex.journal import damage
from jex.journal.errors import JournalCorrupt, JournalTorn, JournalUnproven, RecordError
from jex.journal.limits import SEGMENT_HEADER_BYTES
from jex.journal.record import (
    FLAG_BATCH_END,
    VERSION,
    ZERO_CHAIN,
    RecordType,
    decode_header,
    decode_record,
    encode_batch,
    encode_one,
)
from jex.journal.scan import Decision, read_records, verify
from jex.journal.segment import SegmentHeader, new_nonce
from jex.journal.writer import QUARANTINE_DIR_NAME, Journal, repair

SEGMENT_BYTES = 16 * 1024
NONCE = 0x0123_4567_89AB_CDEF


def open_journal(root: Path, **kwargs) -> Journal:
    kwargs.setdefault("segment_bytes", SEGMENT_BYTES)
    return Journal.open(root / "wal", backend="pwrite", prepare_ahead=False, **kwargs)


def build(root: Path, count: int = 20, batch: int = 4) -> Path:
    with open_journal(root) as journal:
        damage.write_commands(journal, count, batch=batch)
    return root / "wal"


def unproven(root: Path) -> tuple[Path, list[damage.RecordLocation]]:
    """20 commands in batches of 4; seq 19 damaged while 20 is valid."""
    wal = build(root)
    records = damage.locate_all(wal)
    damage.flip_bit(records[-2].path, records[-2].payload_offset + 3)
    return wal, records


# --- the format --------------------------------------------------------------------------


def test_only_the_last_record_of_a_batch_carries_batch_end():
    buffer, _, _ = encode_batch(
        [(1, 5, b"a"), (2, 5, b"bb"), (3, 5, b"ccc")], parent=ZERO_CHAIN, nonce=NONCE, expect_seq=1, ts_floor=0
    )
    headers, offset, parent = [], 0, ZERO_CHAIN
    for seq in (1, 2, 3):
        header = decode_header(buffer, offset)
        record, offset = decode_record(bytes(buffer), offset, nonce=NONCE, seq=seq, parent=parent)
        parent = record.chain
        headers.append(header)
        assert record.type == RecordType.COMMAND  # readers see the masked type
    assert [h.batch_end for h in headers] == [False, False, True]
    assert [h.version for h in headers] == [VERSION] * 3 == [2] * 3
    raw_types = [buffer[offset + 76] for offset in (0, 88, 176)]
    assert raw_types == [RecordType.COMMAND, RecordType.COMMAND, RecordType.COMMAND | FLAG_BATCH_END]
    seal, _ = encode_one(9, 5, b"", parent=ZERO_CHAIN, nonce=NONCE, record_type=RecordType.SEAL)
    assert decode_header(seal, 0).batch_end and decode_header(seal, 0).type == RecordType.SEAL


@pytest.mark.parametrize(
    "version, raw_type",
    [(2, 0x40 | RecordType.COMMAND), (2, 0x7F), (2, 0x80), (1, FLAG_BATCH_END | RecordType.COMMAND)],
)
def test_unknown_type_bits_are_unknown_type(version, raw_type):
    data = damage.forge_record(1, 1, b"x", parent=ZERO_CHAIN, nonce=NONCE, version=version, raw_type=raw_type)
    with pytest.raises(RecordError) as caught:
        decode_record(data, 0, nonce=NONCE, seq=1, parent=ZERO_CHAIN)
    assert caught.value.reason == "unknown_type"


def test_writer_flags_each_batch_checkpoint_and_seal(tmp_path):
    with open_journal(tmp_path) as journal:
        damage.write_commands(journal, 7, batch=3)  # 1..3, 4..6, 7
        journal.append_checkpoint(1008, b"d" * 32)
        while len(damage.segment_paths(tmp_path / "wal")) < 2:
            damage.write_commands(journal, 5, batch=5)
    records = damage.locate_all(tmp_path / "wal")
    assert [r.batch_end for r in records[:8]] == [False, False, True, False, False, True, True, True]
    seal = next(r for r in records if r.type == RecordType.SEAL)
    assert seal.batch_end and records[records.index(seal) - 1].batch_end


# --- the unproven final batch ----------------------------------------------------------------


def test_unproven_final_batch_is_refused_naming_the_batch_and_the_way_out(tmp_path):
    wal, records = unproven(tmp_path)
    report = verify(wal)
    assert (report.decision, report.row, report.unproven) == (Decision.CORRUPT, "unproven_final_batch", True)
    batch = report.final_batch
    assert (batch.first_seq, batch.last_seq, batch.offset) == (17, 20, records[-4].offset)
    assert report.as_dict()["final_batch"]["first_seq"] == 17
    before = damage.file_hashes(wal)
    for attempt in (lambda: open_journal(tmp_path), lambda: repair(wal), lambda: list(read_records(wal))):
        with pytest.raises(JournalUnproven) as caught:
            attempt()
        error = caught.value
        assert isinstance(error, JournalCorrupt) and error.exit_code == 3
        assert (error.offset, error.seq, error.first_seq, error.last_seq) == (records[-2].offset, 19, 17, 20)
        message = str(error)
        assert "\n" not in message and records[-2].path.name in message
        assert "the last batch (seq 17..20) is incomplete: either a write interrupted by power loss" in message
        assert "if this machine lost power, run `jex journal repair --final-batch` to quarantine it" in message
    assert damage.file_hashes(wal) == before
    assert not (tmp_path / QUARANTINE_DIR_NAME).exists()


def test_repair_final_batch_quarantines_the_whole_batch_and_the_log_continues(tmp_path):
    wal, records = unproven(tmp_path)
    first = records[-4]  # seq 17: the batch's first record, which verified
    batch_bytes = damage.read_at(first.path, first.offset, records[-1].offset + records[-1].length - first.offset)
    report = repair(wal, final_batch=True)
    assert report.row == "unproven_final_batch" and report.final_batch.first_seq == 17
    (copy,) = (tmp_path / QUARANTINE_DIR_NAME).iterdir()
    assert copy.name == f"{first.path.name}@{first.offset:016x}.unproven"
    assert copy.read_bytes() == batch_bytes
    assert not any(damage.read_at(first.path, first.offset, len(batch_bytes)))
    after = verify(wal)
    assert after.decision is Decision.CLEAN and after.last_seq == 16
    assert after.rows == ["unsealed_by_repair", "clean_end"]
    with open_journal(tmp_path) as journal:
        assert journal.next_seq == 17
        journal.append([(17, 10**9, b"seventeen again")])
    assert [r.seq for r in read_records(wal)] == list(range(1, 18))
    assert repair(wal, final_batch=True).row == "clean_end"  # repeated: nothing to do, nothing changed


def test_repair_final_batch_refuses_anything_else_changing_nothing(tmp_path):
    bad = build(tmp_path / "corrupt")
    middle = damage.locate_all(bad)[5]
    damage.flip_bit(middle.path, middle.payload_offset)
    torn = build(tmp_path / "torn")
    last = damage.locate_all(torn)[-1]
    damage.zero_range(last.path, last.offset + 90, 8)
    for wal, error_type, row in [(bad, JournalCorrupt, "valid_record_after_damage"), (torn, JournalTorn, "torn_tail")]:
        before = damage.file_hashes(wal.parent)
        with pytest.raises(error_type) as caught:
            repair(wal, final_batch=True)
        assert caught.value.reason == row and not isinstance(caught.value, JournalUnproven)
        assert damage.file_hashes(wal.parent) == before
    assert "plain `jex journal repair`" in str(caught.value)


def test_damage_in_an_earlier_batch_stays_plain_corrupt_even_inside_the_window(tmp_path):
    wal = build(tmp_path, count=8, batch=4)  # 1..4, 5..8: damage in 1..4, then a whole later batch
    records = damage.locate_all(wal)
    damage.zero_range(records[2].path, records[2].offset, records[2].length)
    report = verify(wal)
    assert report.row == "valid_record_after_damage" and report.final_batch is None


def test_a_checkpoint_after_damage_proves_the_damage_was_synced(tmp_path):
    with open_journal(tmp_path) as journal:
        damage.write_commands(journal, 4, batch=4)
        journal.append_checkpoint(10**6, b"d" * 32)  # a batch of its own
    records = damage.locate_all(tmp_path / "wal")
    damage.flip_bit(records[1].path, records[1].offset + 50)  # seq 2: header gone; 3, 4 and the checkpoint valid
    assert verify(tmp_path / "wal").row == "valid_record_after_damage"


def test_an_open_final_batch_is_never_continued_in_place(tmp_path):
    """Power loss kept the first records of the final batch and zeroed the
    rest: a clean end, but the batch is open. Writing the next batch right
    after it would merge two batches, so the journal moves to a new segment."""
    wal = build(tmp_path, count=12, batch=4)
    records = damage.locate_all(wal)
    damage.zero_range(records[-1].path, records[-1].offset, records[-1].length)  # seq 12 lost: 9..11 open
    report = verify(wal)
    assert report.row == "clean_end" and report.end.batch_open and report.last_seq == 11
    with open_journal(tmp_path) as journal:
        assert journal.segment_path != records[-1].path
        journal.append([(12, 10**9, b"twelve")])
    assert verify(wal).rows == ["unsealed_by_repair", "clean_end"]
    assert [r.seq for r in read_records(wal)] == list(range(1, 13))


# --- version-1 logs -----------------------------------------------------------------------------


def write_v1_segment(wal: Path, batches: list[int], *, segid: int = 0) -> tuple[SegmentHeader, bytes, int, int]:
    """A segment as the version-1 writer left it. Returns (header, chain, last seq, last ts)."""
    wal.mkdir(parents=True, exist_ok=True)
    header = SegmentHeader(segid, new_nonce(), 1, ZERO_CHAIN)
    data = bytearray(header.encode())
    parent, seq, ts = ZERO_CHAIN, 1, 0
    for n in batches:
        entries = [(s, 1000 + s, damage.payload_for(s)) for s in range(seq, seq + n)]
        buffer, parent, ts = encode_batch(
            entries, parent=parent, nonce=header.nonce, expect_seq=seq, ts_floor=ts, version=1
        )
        data += buffer
        seq += n
    data += bytes(SEGMENT_BYTES - len(data))
    (wal / header.file_name).write_bytes(data)
    return header, parent, seq - 1, ts


def test_a_version_1_log_reads_opens_and_continues_in_version_2(tmp_path):
    wal = tmp_path / "wal"
    write_v1_segment(wal, [3, 4])
    report = verify(wal)
    assert report.row == "clean_end" and report.last_seq == 7 and not report.end.batch_open
    with open_journal(tmp_path) as journal:
        assert journal.segment_path.name == "0000000000000000-0000000000000001.wal"  # continued in place
        damage.write_commands(journal, 4, batch=2)
    records = damage.locate_all(wal)
    assert [decode_header(damage.read_at(r.path, r.offset, 80), 0).version for r in records] == [1] * 7 + [2] * 4
    assert [r.batch_end for r in records] == [True] * 7 + [False, True, False, True]
    assert [r.seq for r in read_records(wal)] == list(range(1, 12))


@pytest.mark.parametrize("victim", ["payload", "header"])
def test_version_1_gives_no_batch_information_so_damage_before_a_valid_record_is_corrupt(tmp_path, victim):
    wal = tmp_path / "wal"
    write_v1_segment(wal, [8])  # one batch, but version 1 cannot say so
    records = damage.locate_all(wal)
    offset = records[-2].payload_offset if victim == "payload" else records[-2].offset + 50
    damage.flip_bit(records[-2].path, offset)
    assert verify(wal).row == "valid_record_after_damage"


def test_an_interrupted_version_1_rollover_is_finished_with_a_version_1_seal(tmp_path):
    wal = tmp_path / "wal"
    header, chain, last_seq, last_ts = write_v1_segment(wal, [5])
    _, seal_chain = encode_one(
        last_seq + 1, last_ts, b"", parent=chain, nonce=header.nonce, record_type=RecordType.SEAL, version=1
    )
    successor = SegmentHeader(1, new_nonce(), last_seq + 2, seal_chain)
    (wal / successor.file_name).write_bytes(successor.encode() + bytes(SEGMENT_BYTES - SEGMENT_HEADER_BYTES))
    assert verify(wal).row == "rollover_incomplete"
    with open_journal(tmp_path) as journal:
        assert journal.last_seq == 6 and journal.chain == seal_chain
        journal.append([(7, 10**9, b"seven")])
    records = list(read_records(wal))
    assert [r.type for r in records] == [RecordType.COMMAND] * 5 + [RecordType.SEAL, RecordType.COMMAND]


# --- the CLI ------------------------------------------------------------------------------------


def jex(capsys, data_dir: Path, *args: str) -> tuple[int, str, str]:
    from jex.cli.main import run

    code = run(["--data-dir", str(data_dir), *args])
    out, err = capsys.readouterr()
    return code, out, err


def test_cli_repair_final_batch_and_plain_repair_refusing_it(tmp_path, capsys):
    wal, _ = unproven(tmp_path)
    before = damage.file_hashes(tmp_path)
    code, out, err = jex(capsys, tmp_path, "journal", "verify")
    assert code == 3 and "unproven_final_batch" in err and "repair --final-batch" in err
    assert "the last batch (seq 17..20) is incomplete" in out
    code, out, err = jex(capsys, tmp_path, "journal", "repair")
    assert code == 3 and "journal unproven" in err and "`jex journal repair --final-batch`" in err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert damage.file_hashes(tmp_path) == before  # refused: nothing changed (the lock file included)
    code, out, err = jex(capsys, tmp_path, "journal", "repair", "--final-batch")
    assert code == 0, err
    assert "quarantined the final batch (seq 17..20)" in out and "last seq now 16" in out
    code, out, _ = jex(capsys, tmp_path, "--json", "journal", "verify")
    assert code == 0 and json.loads(out)["decision"] == "clean" and json.loads(out)["last_seq"] == 16
    code, out, _ = jex(capsys, tmp_path, "--json", "journal", "repair", "--final-batch")
    assert code == 0 and json.loads(out)["decision_row"] == "clean_end"


def test_cli_repair_final_batch_refuses_a_torn_tail_and_corruption(tmp_path, capsys):
    torn = build(tmp_path / "torn")
    last = damage.locate_all(torn)[-1]
    damage.zero_range(last.path, last.offset + 90, 8)
    code, _, err = jex(capsys, tmp_path / "torn", "journal", "repair", "--final-batch")
    assert code == 1 and "not an unproven final batch" in err
    bad = build(tmp_path / "bad")
    middle = damage.locate_all(bad)[5]
    damage.flip_bit(middle.path, middle.payload_offset)
    code, _, err = jex(capsys, tmp_path / "bad", "journal", "repair", "--final-batch")
    assert code == 3 and "valid_record_after_damage" in err
    code, out, _ = jex(capsys, tmp_path / "torn", "journal", "repair")
    assert code == 0 and "torn_tail" in out
