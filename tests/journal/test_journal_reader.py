"""Chunked reading (reader.py): the same records and the same stop as a
whole-file walk wherever chunk boundaries fall, records hidden far past the
tail still found, and reading that costs O(data), not O(segment size)."""

from __future__ import annotations

import random
import shutil
from pathlib import Path

import pytest

from jex.journal import damage
from jex.journal.errors import JournalCorrupt
from jex.journal.limits import MIB, READ_CHUNK_MIN_BYTES, SEGMENT_HEADER_BYTES, TAIL_READ_BYTES
from jex.journal.faultfs import FaultStorage, PowerCut
from jex.journal.reader import Beyond, SegmentCursor, last_nonzero, scan_beyond
from jex.journal.record import RecordCursor, header_validates
from jex.journal.scan import Decision, read_records, verify
from jex.journal.storage import OsStorage
from jex.journal.writer import Journal

SEGMENT_BYTES = 8 * MIB
DATA_BYTES = 5 * MIB


def open_journal(root: Path, **kwargs) -> Journal:
    kwargs.setdefault("segment_bytes", SEGMENT_BYTES)
    return Journal.open(root / "wal", backend="pwrite", prepare_ahead=False, **kwargs)


@pytest.fixture(scope="module")
def template(tmp_path_factory) -> Path:
    """One 8 MiB segment holding ~5 MiB of records of 0..160 KB, in batches of 1..4."""
    root = tmp_path_factory.mktemp("template")
    rng = random.Random(7)
    written = 0
    with open_journal(root) as journal:
        while written < DATA_BYTES:
            seq = journal.next_seq
            sizes = [rng.choice([0, 1, 13, 64, 999, 4096, 65_536, 160_000]) for _ in range(rng.randint(1, 4))]
            journal.append([(seq + i, 10**9 + seq, rng.randbytes(size)) for i, size in enumerate(sizes)])
            written += sum(sizes) + 80 * len(sizes)
    assert len(damage.segment_paths(root / "wal")) == 1
    return root


@pytest.fixture
def log(template, tmp_path) -> Path:
    shutil.copytree(template, tmp_path / "log")
    return tmp_path / "log"


def whole_file_walk(path: Path) -> tuple[list, RecordCursor]:
    data = path.read_bytes()
    header = damage.read_header(path)
    cursor = RecordCursor(
        data, SEGMENT_HEADER_BYTES, len(data),
        nonce=header.nonce, seq=header.first_seq, parent=header.prev_chain, ts_ns=0,
    )  # fmt: skip
    return list(cursor), cursor


def chunked_walk(path: Path, *, verify_only: bool = False) -> tuple[list, SegmentCursor]:
    """The chunked walk's records and where it stopped; with verify_only,
    SegmentCursor.verify() (the scanner's walk: no records kept)."""
    storage = OsStorage()
    header = damage.read_header(path)
    fd = storage.open(path)
    try:
        cursor = SegmentCursor(
            storage, fd, storage.size(fd), nonce=header.nonce, seq=header.first_seq, parent=header.prev_chain, ts_ns=0
        )
        if verify_only:
            cursor.verify()
            return [], cursor
        return list(cursor), cursor
    finally:
        storage.close(fd)


def stop_state(cursor) -> tuple:
    error = cursor.stop_error()
    return (
        cursor.offset, cursor.seq, cursor.parent, cursor.ts_ns, cursor.sealed, cursor.count, cursor.batch_offset,
        cursor.batch_seq, cursor.batch_parent, cursor.batch_ts_ns, error and (error.reason, error.offset),
    )  # fmt: skip


def test_chunked_walk_equals_the_whole_file_walk(log):
    (path,) = damage.segment_paths(log / "wal")
    expected, whole = whole_file_walk(path)
    got, chunked = chunked_walk(path)
    assert got == expected and len(got) > 50
    assert (chunked.offset, chunked.seq, chunked.parent, chunked.count) == (
        whole.offset, whole.seq, whole.parent, whole.count,
    )  # fmt: skip
    assert (chunked.batch_offset, chunked.batch_seq, chunked.batch_parent) == (
        whole.batch_offset, whole.batch_seq, whole.batch_parent,
    )  # fmt: skip
    assert chunked.stop_error() is None and list(read_records(log / "wal")) == expected


def test_chunked_walk_stops_where_and_why_the_whole_file_walk_does(log):
    (path,) = damage.segment_paths(log / "wal")
    records = damage.locate_records(path)
    pristine = path.read_bytes()
    rng = random.Random(3)
    # Records that straddle the first chunk boundaries, and random others.
    straddling = [r for r in records if any(r.offset < SEGMENT_HEADER_BYTES + b < r.offset + r.length
                                            for b in (READ_CHUNK_MIN_BYTES, 3 * READ_CHUNK_MIN_BYTES))]  # fmt: skip
    victims = straddling + rng.sample(records, 6)
    for victim in victims:
        for where in (victim.offset + 20, victim.offset + victim.length - 1):
            path.write_bytes(pristine)
            damage.flip_bit(path, where)
            expected, whole = whole_file_walk(path)
            got, chunked = chunked_walk(path)
            assert got == expected
            error, expected_error = chunked.stop_error(), whole.stop_error()
            assert chunked.offset == whole.offset
            assert (error.reason, error.offset) == (expected_error.reason, expected_error.offset)
            assert stop_state(chunked_walk(path, verify_only=True)[1]) == stop_state(chunked)


def test_a_verifying_walk_stops_where_iterating_stops_at_every_cut(log):
    """SegmentCursor.verify (what the scanner and log_end walk with) leaves
    the cursor exactly as draining its records does: the log cut at every
    byte of its last records, and a SEAL-free clean end."""
    (path,) = damage.segment_paths(log / "wal")
    records = damage.locate_records(path)
    pristine = path.read_bytes()
    assert stop_state(chunked_walk(path, verify_only=True)[1]) == stop_state(chunked_walk(path)[1])
    records_end = records[-1].offset + records[-1].length  # zeros after it
    for victim in records[-2:]:
        for cut in range(0, min(victim.length, 200)):
            damage.write_at(path, victim.offset, pristine[victim.offset : records_end])
            damage.zero_range(path, victim.offset + cut, records_end - victim.offset - cut)
            assert stop_state(chunked_walk(path, verify_only=True)[1]) == stop_state(chunked_walk(path)[1]), cut


def test_records_hidden_beyond_the_tail_window_are_found(log):
    """A stretch of acknowledged records zeroed (a lost write, a misdirected
    one) longer than the tail window, with records after it: never a clean
    end, however far the next valid record is."""
    (path,) = damage.segment_paths(log / "wal")
    records = damage.locate_records(path)
    start = next(r for r in records if r.offset > 1 * MIB)
    stop = next(r for r in records if r.offset > start.offset + TAIL_READ_BYTES + 64 * 1024)
    damage.zero_range(path, start.offset, stop.offset - start.offset)
    report = verify(log / "wal")
    assert report.decision is Decision.CORRUPT and report.row == "valid_record_after_damage"
    assert report.problem.offset == start.offset
    with pytest.raises(JournalCorrupt):
        open_journal(log)


def test_garbage_far_beyond_the_tail_of_the_last_segment_is_corrupt(log):
    (path,) = damage.segment_paths(log / "wal")
    end = damage.locate_records(path)[-1]
    damage.write_at(path, SEGMENT_BYTES - 3, b"\x01")
    assert SEGMENT_BYTES - 3 > end.offset + end.length + TAIL_READ_BYTES
    assert verify(log / "wal").row == "damage_beyond_window"


class CountingStorage(OsStorage):
    def __init__(self) -> None:
        self.read_bytes = 0

    def pread(self, fd: int, length: int, offset: int) -> bytes:
        data = super().pread(fd, length, offset)
        self.read_bytes += len(data)
        return data

    def pread_into(self, fd: int, buffer: bytearray | memoryview, offset: int) -> int:
        n = super().pread_into(fd, buffer, offset)
        self.read_bytes += n
        return n


def test_reading_records_costs_their_bytes_not_the_segment_size(tmp_path):
    with open_journal(tmp_path, segment_bytes=32 * MIB) as journal:
        damage.write_commands(journal, 200, batch=50)  # ~29 KB of records in a 32 MiB segment
    storage = CountingStorage()
    with Journal.open(tmp_path / "wal", backend="pwrite", prepare_ahead=False, storage=storage) as journal:
        opened = storage.read_bytes
        storage.read_bytes = 0
        assert len(list(journal.records())) == 200
        assert storage.read_bytes < 2 * READ_CHUNK_MIN_BYTES  # header + one small chunk
    storage.read_bytes = 0
    assert len(list(read_records(tmp_path / "wal", to_seq=200, storage=storage))) == 200
    assert storage.read_bytes < 2 * READ_CHUNK_MIN_BYTES
    # Opening judges the last segment's zeros once (nothing acknowledged may hide there).
    assert 32 * MIB <= opened < 32 * MIB + TAIL_READ_BYTES + 2 * READ_CHUNK_MIN_BYTES


def test_zeros_of_a_closed_segment_beyond_the_window_are_not_read(tmp_path):
    with open_journal(tmp_path, segment_bytes=16 * MIB) as journal:
        damage.write_commands(journal, 20, batch=4)
    last = damage.locate_all(tmp_path / "wal")[-1]
    damage.zero_range(last.path, last.offset + 40, last.length - 40)  # torn: repair closes this segment unsealed
    with open_journal(tmp_path, segment_bytes=16 * MIB) as journal:
        damage.write_commands(journal, 4)
    storage = CountingStorage()
    report = verify(tmp_path / "wal", storage=storage)
    assert report.rows == ["unsealed_by_repair", "clean_end"]
    closed = TAIL_READ_BYTES + 2 * READ_CHUNK_MIN_BYTES  # at most, for the closed segment
    assert storage.read_bytes < closed + 16 * MIB + TAIL_READ_BYTES + 2 * READ_CHUNK_MIN_BYTES


def test_scan_beyond_finds_a_header_cut_by_a_chunk_boundary(tmp_path):
    path = tmp_path / "f"
    nonce = 0x1111_2222_3333_4444
    record = damage.forge_record(5, 1, b"abc", parent=bytes(16), nonce=nonce)
    chunk = 1 * MIB
    for at in (chunk - 40, chunk - 80, chunk, 2 * chunk - 8):
        path.write_bytes(bytes(at) + record + bytes(3 * chunk))
        storage = OsStorage()
        fd = storage.open(path)
        try:
            found = scan_beyond(storage, fd, 0, storage.size(fd), nonce, chunk_bytes=chunk)
        finally:
            storage.close(fd)
        assert found.valid_header == at and found.nonzero_end == at + len(record.rstrip(b"\0")), at


def naive_beyond(data: bytes, start: int, end: int, nonce: int) -> Beyond:
    """scan_beyond's answer, the slow way: every byte, every 8-aligned offset."""
    nonzero_end = start + len(data[start:end].rstrip(b"\0"))
    valid = [at for at in range(start, end, 8) if header_validates(data[:end], at, nonce)]
    return Beyond(nonzero_end, valid[0] if valid else None)


@pytest.mark.parametrize("seed", range(12))
def test_scan_beyond_agrees_with_reading_every_byte(tmp_path, seed):
    """One buffer is reused for every chunk (Storage.pread_into): nothing of
    an earlier chunk may leak into a later, shorter one, and a header or a
    non-zero byte is found wherever the chunk boundaries fall."""
    rng = random.Random(seed)
    nonce = 0x1111_2222_3333_4444
    chunk = rng.choice([128, 256, 4096])
    data = bytearray(rng.randint(2, 12) * chunk + rng.choice([0, 8, 40, 96]))
    for _ in range(rng.randint(0, 3)):  # garbage
        at = rng.randrange(len(data))
        length = min(rng.randint(1, 50), len(data) - at)
        data[at : at + length] = rng.randbytes(length)
    if rng.random() < 0.7:  # a record that validates, anywhere aligned
        record = damage.forge_record(5, 1, b"abc", parent=bytes(16), nonce=nonce)
        at = rng.randrange(0, len(data) - len(record), 8)
        data[at : at + len(record)] = record
    path = tmp_path / "f"
    path.write_bytes(bytes(data))
    storage = OsStorage()
    fd = storage.open(path)
    try:
        for _ in range(10):
            start = rng.randrange(0, len(data), 8)
            end = rng.randint(start, len(data))
            got = scan_beyond(storage, fd, start, end, nonce, chunk_bytes=chunk)
            assert got == naive_beyond(bytes(data), start, end, nonce), (start, end, chunk)
    finally:
        storage.close(fd)


@pytest.mark.parametrize("make_storage", [lambda root: OsStorage(), lambda root: FaultStorage(root)])
def test_pread_into_reads_what_pread_reads(tmp_path, make_storage):
    path = tmp_path / "f"
    data = random.Random(3).randbytes(10_000)
    path.write_bytes(data)
    storage = make_storage(tmp_path)
    fd = storage.open(path)
    try:
        for offset, length in ((0, 10_000), (1, 100), (9_990, 100), (10_000, 8), (20_000, 8), (0, 0)):
            buffer = bytearray(b"\xee" * length)
            n = storage.pread_into(fd, buffer, offset)
            assert bytes(buffer[:n]) == storage.pread(fd, length, offset) == data[offset : offset + length]
            assert buffer[n:] == b"\xee" * (length - n)  # fewer bytes only at the end of the file
    finally:
        storage.close(fd)


def test_pread_into_goes_through_the_fault_model(tmp_path):
    path = tmp_path / "f"
    path.write_bytes(bytes(100))
    storage = FaultStorage(tmp_path)
    fd = storage.open(path)
    storage.cut_power_after(0)
    with pytest.raises(PowerCut):
        storage.pread_into(fd, bytearray(10), 0)


@pytest.mark.parametrize("length", [0, 1, 8, 65_535, 65_536, 65_537, 3 * 65_536 + 5])
def test_last_nonzero(length):
    rng = random.Random(length)
    for _ in range(20):
        data = bytearray(length + 100)
        marks = rng.sample(range(length), min(length, rng.randint(0, 3))) if length else []
        for mark in marks:
            data[mark] = rng.randint(1, 255)
        expected = max(marks) + 1 if marks else 0
        assert last_nonzero(bytes(data), 0, length) == expected
        assert last_nonzero(bytes(data), min(expected, 7), length) == max(expected, min(expected, 7))
