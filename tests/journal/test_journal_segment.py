"""Segment headers, file naming, the crash-safe creation protocol and the
background preparer."""

from __future__ import annotations

import random

import pytest
import xxhash

from jex.journal.errors import SEGMENT_REASONS, SegmentHeaderError
from jex.journal.faultfs import FaultStorage, PowerCut
from jex.journal.limits import SEGMENT_HEADER_BYTES
from jex.journal.record import ZERO_CHAIN
from jex.journal.segment import (
    FLAG_PREV_UNSEALED,
    SegmentHeader,
    SegmentPreparer,
    create_segment,
    list_segments,
    new_nonce,
    segment_name,
    tmp_name,
)
from jex.journal.storage import OsStorage

CHAIN = bytes(range(16))


def test_header_round_trip_and_name():
    header = SegmentHeader(7, 0xDEAD_BEEF, 1234, CHAIN, FLAG_PREV_UNSEALED)
    data = header.encode()
    assert len(data) == SEGMENT_HEADER_BYTES
    assert data[:8] == b"JEXWAL\0\0"
    assert SegmentHeader.decode(data, name=header.file_name) == header
    assert header.file_name == "0000000000000007-00000000000004d2.wal" == segment_name(7, 1234)
    assert tmp_name(7) == "0000000000000007.tmp"


def _resealed(mutate):
    """A header image changed by `mutate`, with its checksum made valid again."""
    data = bytearray(SegmentHeader(1, 5, 10, CHAIN).encode())
    mutate(data)
    data[-16:] = xxhash.xxh3_128_digest(bytes(data[:-16]))
    return bytes(data)


def _flipped(offset):
    data = bytearray(SegmentHeader(1, 5, 10, CHAIN).encode())
    data[offset] ^= 1
    return bytes(data)


HEADER_CASES = {
    "short_header": (lambda: SegmentHeader(1, 5, 10, CHAIN).encode()[:100], None),
    "blank_header": (lambda: bytes(SEGMENT_HEADER_BYTES), None),
    "bad_magic": (lambda: _flipped(0), None),
    "header_checksum": (lambda: _flipped(30), None),
    "unknown_version": (lambda: _resealed(lambda d: d.__setitem__(8, 9)), None),
    "unknown_flags": (lambda: _resealed(lambda d: d.__setitem__(10, 0x80)), None),
    "bad_padding": (lambda: _resealed(lambda d: d.__setitem__(100, 1)), None),
    "name_mismatch": (lambda: SegmentHeader(1, 5, 10, CHAIN).encode(), segment_name(2, 10)),
    "genesis_chain": (lambda: SegmentHeader(0, 5, 1, CHAIN).encode(), None),
    "bad_first_seq": (lambda: _resealed(lambda d: d.__setitem__(slice(28, 36), bytes(8))), None),
}


def test_every_segment_reason_has_a_case():
    assert set(HEADER_CASES) == set(SEGMENT_REASONS)


@pytest.mark.parametrize("reason", sorted(HEADER_CASES))
def test_header_errors_are_typed(reason):
    make, name = HEADER_CASES[reason]
    with pytest.raises(SegmentHeaderError) as caught:
        SegmentHeader.decode(make(), name=name)
    assert caught.value.reason == reason


def test_nonce_is_random_and_non_zero():
    nonces = {new_nonce() for _ in range(100)}
    assert len(nonces) == 100 and 0 not in nonces


def test_listing_sorts_by_segid_ignores_strangers_and_flags_bad_names(tmp_path):
    for segid, first in [(2, 30), (0, 1), (1, 12)]:
        (tmp_path / segment_name(segid, first)).write_bytes(b"")
    (tmp_path / "README").write_text("hi")
    (tmp_path / tmp_name(3)).write_bytes(b"")
    (tmp_path / "junk.wal").write_bytes(b"")
    (tmp_path / segment_name(2, 31)).write_bytes(b"")  # duplicate segid
    listing = list_segments(OsStorage(), tmp_path)
    assert [s.segid for s in listing.segments] == [0, 1, 2, 2]
    assert [p.name for p in listing.tmp_files] == [tmp_name(3)]
    assert sorted(p.name for p in listing.bad_names) == sorted(["junk.wal", segment_name(2, 31)])


def test_create_segment_leaves_a_zeroed_file_with_header_and_no_temp(tmp_path):
    header = SegmentHeader(0, new_nonce(), 1, ZERO_CHAIN)
    path = create_segment(OsStorage(), tmp_path, header, 64 * 1024)
    data = path.read_bytes()
    assert path.name == header.file_name and len(data) == 64 * 1024
    assert SegmentHeader.decode(data[:SEGMENT_HEADER_BYTES], name=path.name) == header
    assert not any(data[SEGMENT_HEADER_BYTES:])
    assert sorted(p.name for p in tmp_path.iterdir()) == [header.file_name]


@pytest.mark.parametrize("mode", ["drop_unsynced", "keep_random"])
def test_creation_is_atomic_under_power_loss_at_every_step(tmp_path, mode):
    """Cut power after every possible number of storage operations: the
    final name either does not exist or holds the complete, synced header."""
    header = SegmentHeader(4, new_nonce(), 77, CHAIN)
    outcomes = set()
    for cut in range(0, 40):
        root = tmp_path / f"cut{cut}"
        root.mkdir()
        storage = FaultStorage(root)
        storage.cut_power_after(cut)
        try:
            create_segment(storage, root, header, 16 * 1024)
            completed = True
        except PowerCut:
            completed = False
        storage.power_loss(mode, random.Random(cut))
        final = root / header.file_name
        if final.exists():
            data = final.read_bytes()
            assert SegmentHeader.decode(data[:SEGMENT_HEADER_BYTES], name=final.name) == header
            assert len(data) == 16 * 1024 and not any(data[SEGMENT_HEADER_BYTES:])
            outcomes.add("present")
        else:
            assert not completed, "a completed creation must survive power loss"
            outcomes.add("absent")
    assert outcomes == {"present", "absent"}


def test_preparer_zero_fills_ahead_and_create_uses_it(tmp_path):
    storage = OsStorage()
    preparer = SegmentPreparer(storage, tmp_path, 32 * 1024)
    preparer.start(5)
    header = SegmentHeader(5, new_nonce(), 9, CHAIN)
    path = create_segment(storage, tmp_path, header, 32 * 1024, preparer)
    assert path.read_bytes()[:SEGMENT_HEADER_BYTES] == header.encode()
    assert not (tmp_path / tmp_name(5)).exists()


def test_preparer_for_another_segid_is_not_used(tmp_path):
    preparer = SegmentPreparer(OsStorage(), tmp_path, 32 * 1024)
    preparer.start(5)
    assert preparer.take(6) is False
    assert (tmp_path / tmp_name(5)).exists()  # an orphan: Journal.open deletes it
    assert preparer.take(5) is False  # nothing running any more
