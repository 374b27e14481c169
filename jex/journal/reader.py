"""Reading segment files in bounded chunks (room: jex.journal).

A segment is preallocated (64 MiB by default) and mostly zeros; reading it
whole made every scan and every read cost O(preallocated bytes). Here the
records are walked chunk by chunk up to where they end, so walking costs
O(data), and the zeros after the tail are examined only as far as the
recovery rules need (scan.py decides how far):

    SegmentCursor   the verified records of one segment file, read in
                    chunks that grow from READ_CHUNK_MIN_BYTES to
                    READ_CHUNK_BYTES (a record cut by a chunk's end is re-read
                    at the start of the next chunk)
    read_tail       the bytes right after the last verified record: the
                    window the decision table judges
    scan_beyond     the rest of a file, a chunk at a time: where its last
                    non-zero byte is and whether a record header validates
                    with the segment's nonce there. An all-zero chunk is
                    recognised by one memcmp and never searched; only
                    non-zero chunks are searched (bytes.find on the nonce)
    last_nonzero    the end of the non-zero bytes of a buffer (memcmp per
                    block from the end, then one rstrip)
    find_anchor     where the record with a known seq and chain value
                    (an Anchor, e.g. a snapshot's) lies in a segment,
                    found by searching for its chain value instead of
                    walking the records before it

Reads go through Storage.pread and Storage.pread_into, so the fault-injecting
storage sees them.
Nothing here writes.
"""

from __future__ import annotations

import itertools
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple, NoReturn

from jex.journal.errors import RecordError
from jex.journal.limits import (
    CHECKSUM_BYTES,
    PAYLOAD_BYTES_MAX,
    READ_CHUNK_BYTES,
    READ_CHUNK_MIN_BYTES,
    RECORD_ALIGN_BYTES,
    RECORD_BYTES_MAX,
    RECORD_HEADER_BYTES,
    SEGMENT_HEADER_BYTES,
    TAIL_READ_BYTES,
)
from jex.journal.record import (
    OFFSET_PAYLOAD_LEN,
    Header,
    CommandSink,
    Record,
    RecordCursor,
    decode_header,
    find_validating_header,
    header_validates,
    record_bytes,
)
from jex.journal.storage import Storage

if TYPE_CHECKING:
    from jex.journal.segment import SegmentHeader

assert READ_CHUNK_BYTES >= RECORD_BYTES_MAX, "a chunk must hold a record cut at its end, re-read whole"
assert READ_CHUNK_MIN_BYTES % 8 == 0 and READ_CHUNK_BYTES % 8 == 0

_ZEROS = bytes(READ_CHUNK_BYTES)
_NONZERO_BLOCK_BYTES = 64 * 1024  # last_nonzero narrows down to a block this size before rstrip.


def is_zero(buffer: bytes | memoryview) -> bool:
    """True if every byte is zero. One memcmp: O(len), ~0.03 ms per MiB."""
    if len(buffer) <= len(_ZEROS):
        return _ZEROS.startswith(buffer)
    view = memoryview(buffer)
    return all(_ZEROS.startswith(view[i : i + len(_ZEROS)]) for i in range(0, len(view), len(_ZEROS)))


def last_nonzero(buffer: bytes, start: int = 0, end: int | None = None) -> int:
    """Offset just after the last non-zero byte of buffer[start:end], or
    `start` if there is none. O(end - start) memcmp from the end in blocks,
    then an rstrip of one block."""
    end = len(buffer) if end is None else end
    view = memoryview(buffer)
    if is_zero(view[start:end]):
        return start
    hi = end
    while hi > start:
        lo = max(start, hi - _NONZERO_BLOCK_BYTES)
        if not is_zero(view[lo:hi]):
            return lo + len(bytes(view[lo:hi]).rstrip(b"\0"))
        hi = lo
    raise AssertionError("a non-zero range has a non-zero block")


class SegmentCursor:
    """The verified records of one segment file, read chunk by chunk.

    Same contract as record.RecordCursor (iterate, then `offset`, `seq`,
    `parent`, `ts_ns`, `sealed`, `count`, the `batch_*` fields and
    `stop_error()`), with file offsets, over an open file descriptor.
    Iteration may be abandoned early (reading up to a seq): nothing past the
    chunk in hand has been read. O(bytes walked): chunks double from
    READ_CHUNK_MIN_BYTES up to `chunk_bytes`, so a short log reads little
    and a long one reads in large pieces.

    A walk that stops on a record the chunk's end cuts off (its header, or
    the payload its header claims, runs past the chunk) continues with the
    next chunk starting at that record, at least one maximal record long. So
    when the walk really stops, the chunk in hand holds the whole record at
    the stop (or the file ends first), and `stop_error()` judges real bytes,
    never a chunk boundary.
    """

    def __init__(
        self,
        storage: Storage,
        fd: int,
        size_bytes: int,
        *,
        nonce: int,
        seq: int,
        parent: bytes,
        ts_ns: int,
        offset: int = SEGMENT_HEADER_BYTES,
        chunk_bytes: int = READ_CHUNK_BYTES,
    ) -> None:
        assert chunk_bytes >= RECORD_BYTES_MAX
        self._storage, self._fd, self._chunk_bytes_max = storage, fd, chunk_bytes
        self.size_bytes = size_bytes
        self.nonce = nonce
        self.offset, self.seq, self.parent, self.ts_ns = offset, seq, parent, ts_ns
        self.batch_offset, self.batch_seq, self.batch_parent, self.batch_ts_ns = offset, seq, parent, ts_ns
        self.sealed = False
        self.count = 0
        self.chunk = b""  # The chunk in hand and where it starts in the file.
        self.chunk_offset = offset
        self._last: RecordCursor | None = None

    def __iter__(self) -> Iterator[Record]:
        # chain() hands each chunk's records straight from the RecordCursor
        # to the caller: no generator frame of ours per record (~10% faster).
        return itertools.chain.from_iterable(self._chunk_cursors())

    def apply_commands(self, sink: CommandSink, from_seq: int = 0, to_seq_walk: int = 1 << 64) -> None:
        """The same walk, handing each verified record to `sink` instead of
        yielding it (record.RecordCursor.apply_commands, chunk by chunk, with
        the same bounds). Leaves the same state behind as iterating does
        (to the end, or up to the first record past `to_seq_walk`)."""
        for cursor in self._chunk_cursors():
            # A stop at the bound is at a whole, verified record: the chunks end there.
            cursor.apply_commands(sink, from_seq, to_seq_walk)

    def verify(self) -> None:
        """Walk to the end (as iterating does: the same checks, the same stop,
        the same state left behind) keeping nothing: the fused walk with a
        sink that takes no record, so no Record is built per record (about a
        third fewer instructions than draining the iterator, compiled)."""
        self.apply_commands(keep_nothing())

    def _chunk_cursors(self) -> Iterator[RecordCursor]:
        """One RecordCursor per chunk; each is walked to its end (by chain)
        before the next chunk is read. The cursor's state is taken over
        after its walk, so it is complete once iteration ends (an abandoned
        iteration leaves it at the last finished chunk)."""
        want = READ_CHUNK_MIN_BYTES
        # A walk that ended at a SEAL is over: resumed (scan.SegmentRecords
        # walks up to a seq, then on), it reads nothing more.
        while self.offset < self.size_bytes and not self.sealed:
            base = self.offset
            chunk = self._storage.pread(self._fd, min(want, self.size_bytes - base), base)
            self.chunk, self.chunk_offset = chunk, base
            cursor = RecordCursor(
                chunk, 0, len(chunk), nonce=self.nonce, seq=self.seq, parent=self.parent, ts_ns=self.ts_ns
            )
            self._last = cursor
            yield cursor
            self._absorb(cursor, base)
            needed = _cut_off(chunk, cursor.offset)
            if cursor.sealed or base + len(chunk) >= self.size_bytes or not needed:
                return
            want = max(min(2 * want, self._chunk_bytes_max), needed)

    def _absorb(self, cursor: RecordCursor, base: int) -> None:
        """Take over where a chunk's walk stopped, in file offsets."""
        self.offset, self.seq, self.parent, self.ts_ns = base + cursor.offset, cursor.seq, cursor.parent, cursor.ts_ns
        self.sealed = cursor.sealed
        self.count += cursor.count
        if cursor.batch_offset > 0:  # A batch ended in this chunk.
            self.batch_offset = base + cursor.batch_offset
            self.batch_seq, self.batch_parent, self.batch_ts_ns = (
                cursor.batch_seq, cursor.batch_parent, cursor.batch_ts_ns,
            )  # fmt: skip

    def stop_error(self) -> RecordError | None:
        """Why the walk stopped (record.RecordCursor.stop_error), with a file offset."""
        if self._last is None:
            return None
        error = self._last.stop_error()
        if error is None:
            return None
        return RecordError(error.reason, error.offset + self.chunk_offset, error.detail)


def keep_nothing() -> CommandSink:
    """A sink that takes no record: its to_seq is below every seq."""
    return CommandSink(_refuse, _refuse, to_seq=0, after=None, decode_errors=(), undecodable=_refuse)


def _refuse(*args: object) -> NoReturn:
    raise AssertionError("a walk that keeps nothing hands no record over")


def segment_cursor(
    storage: Storage,
    fd: int,
    size_bytes: int,
    header: SegmentHeader,
    anchored: tuple[int, Header] | None = None,
    *,
    ts_ns: int = 0,
) -> SegmentCursor:
    """A SegmentCursor over one segment: from its first record (the chain
    continuing from the header's prev_chain), or from an anchor's record
    where find_anchor found it (the chain continuing from that record's own
    parent field, which its verified header checksum covers)."""
    if anchored is None:
        return SegmentCursor(storage, fd, size_bytes, nonce=header.nonce, seq=header.first_seq,
                             parent=header.prev_chain, ts_ns=ts_ns)  # fmt: skip
    offset, at = anchored
    return SegmentCursor(storage, fd, size_bytes, nonce=header.nonce, seq=at.seq, parent=at.parent,
                         ts_ns=at.ts_ns, offset=offset)  # fmt: skip


def _cut_off(chunk: bytes, offset: int) -> int:
    """The bytes a re-read from `offset` needs if the record there may
    continue past the chunk's end (its header does, or the bounded payload
    its header claims does), else 0. The header is not verified here; the
    re-read judges it on whole bytes."""
    if offset + RECORD_HEADER_BYTES > len(chunk):
        return RECORD_HEADER_BYTES
    at = offset + OFFSET_PAYLOAD_LEN
    payload_len = int.from_bytes(chunk[at : at + 4], "little")
    if payload_len <= PAYLOAD_BYTES_MAX and offset + record_bytes(payload_len) > len(chunk):
        return record_bytes(payload_len)
    return 0


def read_tail(storage: Storage, fd: int, size_bytes: int, cursor: SegmentCursor) -> bytes:
    """Bytes [E, E + TAIL_READ_BYTES) after the walk's stop E (fewer at the
    file's end): the window of the decision table plus one maximal record.
    Taken from the chunk in hand when it covers them."""
    start = cursor.offset
    stop = min(size_bytes, start + TAIL_READ_BYTES)
    lo = start - cursor.chunk_offset
    if 0 <= lo and cursor.chunk_offset + len(cursor.chunk) >= stop:
        return cursor.chunk[lo : lo + stop - start]
    return storage.pread(fd, stop - start, start)


@dataclass(frozen=True)
class Beyond:
    """What lies in [start, end) of a file (scan_beyond)."""

    nonzero_end: int  # just after the last non-zero byte, or `start` if all zero
    valid_header: int | None  # offset of the first record header that validates with the nonce


def scan_beyond(
    storage: Storage, fd: int, start: int, end: int, nonce: int, chunk_bytes: int = READ_CHUNK_BYTES
) -> Beyond:
    """Read [start, end) in chunks: the last non-zero byte, and the first
    8-aligned header in it that validates with `nonce` (record.header_validates).

    O(end - start) at memory speed: an all-zero chunk costs one memcmp and
    cannot hold the (non-zero) nonce, so only non-zero chunks are searched,
    by bytes.find on the nonce. Chunks overlap by one header so that a
    header cut by a chunk boundary is found too. Every chunk is read into
    one reused buffer (Storage.pread_into); only a non-zero one is copied
    out to be searched. Every byte is still read: free space is known to be
    free only by looking at it. Measured 12-15 ms for the zeros of an empty
    64 MiB segment from the page cache, ~3 ms less than with a new bytes
    object per chunk; the copy out of the page cache is most of it.
    """
    assert start % 8 == 0 and chunk_bytes > RECORD_HEADER_BYTES
    nonzero_end, found = start, None
    buffer = memoryview(bytearray(min(chunk_bytes, end - start) + RECORD_HEADER_BYTES))
    lo = start
    while lo < end:
        read_from = max(start, lo - RECORD_HEADER_BYTES)  # overlap: a header cut at `lo`
        n = storage.pread_into(fd, buffer[: min(chunk_bytes, end - lo) + (lo - read_from)], read_from)
        if not n:
            break
        if not is_zero(buffer[:n]):
            chunk = bytes(buffer[:n])
            nonzero_end = max(nonzero_end, read_from + last_nonzero(chunk))
            if found is None:
                at = find_validating_header(chunk, 0, len(chunk) - RECORD_HEADER_BYTES + 1, nonce)
                found = None if at is None else read_from + at
        lo = read_from + n
    return Beyond(nonzero_end, found)


def zero_after(storage: Storage, path: Path, start: int) -> bool:
    """True if every byte of the file from `start` on is zero. O(file) at memcmp speed."""
    fd = storage.open(path)
    try:
        size = storage.size(fd)
        offset = start
        buffer = memoryview(bytearray(min(READ_CHUNK_BYTES, max(0, size - start))))
        while offset < size:
            n = storage.pread_into(fd, buffer[: min(READ_CHUNK_BYTES, size - offset)], offset)
            if not n:
                return True
            if not is_zero(buffer[:n]):
                return False
            offset += n
        return True
    finally:
        storage.close(fd)


class Anchor(NamedTuple):
    """A record the caller knows by its seq and chain value (its header
    checksum), e.g. the record a snapshot was taken at. Readers that start
    at an anchor find it with find_anchor instead of walking the records
    before it, then verify from it on."""

    seq: int
    chain: bytes


def find_anchor(storage: Storage, fd: int, size_bytes: int, nonce: int, anchor: Anchor) -> tuple[int, Header] | None:
    """Where `anchor`'s record lies in this segment file: (offset, its
    verified header), or None.

    Searches for the chain value (bytes.find, memchr speed) chunk by chunk
    from the first record on, and takes the first 8-aligned hit whose header
    validates with this segment's nonce (magic, header checksum) and carries
    anchor.seq: a header checksum names one header, so nothing else in the
    file can pass. Stops at the first all-zero chunk (the records end before
    it). Only the header is verified here; the caller walks (and verifies)
    from the offset on. O(bytes up to the record), no per-record work:
    ~25 ms for a full 64 MiB segment from the page cache.
    """
    chain = anchor.chain
    if len(chain) != CHECKSUM_BYTES or is_zero(chain):
        return None  # Not a header checksum (and zeros would match every stretch of free space).
    lo = SEGMENT_HEADER_BYTES
    while lo < size_bytes:
        chunk = storage.pread(fd, min(READ_CHUNK_BYTES, size_bytes - lo), lo)
        if not chunk or is_zero(chunk):
            return None
        at = chunk.find(chain)
        while at >= 0:
            if (lo + at) % RECORD_ALIGN_BYTES == 0 and header_validates(chunk, at, nonce):
                try:
                    header = decode_header(chunk, at)
                except RecordError:  # Validates, yet no writer of this format wrote it: not the anchor.
                    header = None
                if header is not None and header.seq == anchor.seq and header.header_checksum == chain:
                    return lo + at, header
            at = chunk.find(chain, at + 1)
        # The next chunk starts one header back: a header cut at the edge is searched whole.
        lo += max(len(chunk) - RECORD_HEADER_BYTES, RECORD_ALIGN_BYTES)
    return None


def _warm_up_the_fused_walk() -> None:
    """Run the fused walk a few times over nothing, at import.

    CPython 3.11 specializes ("quickens") a function's bytecode only after
    it has been entered 8 times; a backward jump does not count. The fused
    walk (RecordCursor.apply_commands, in pure Python) is entered once per
    chunk, so a walk of a few MiB ran entirely unspecialized: generic
    integer adds and compares, ~15% more instructions than iterating the
    records (measured with callgrind on 29k records: 15.9k instructions a
    record cold, 12.7k warmed, 14.9k iterating). Compiled, or from 3.12 on,
    this changes nothing. O(1)."""
    if sys.version_info >= (3, 12):
        return
    for _ in range(_QUICKENING_ENTRIES):
        RecordCursor(b"", 0, 0, nonce=0, seq=1, parent=bytes(CHECKSUM_BYTES), ts_ns=0).apply_commands(keep_nothing())


_QUICKENING_ENTRIES = 8  # CPython 3.11's QUICKENING_WARMUP_DELAY
_warm_up_the_fused_walk()
