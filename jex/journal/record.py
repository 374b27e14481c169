"""Record framing of the write-ahead log (room: jex.journal).

A record is an 80-byte little-endian header, the payload, then zero padding
to an 8-byte boundary (spec/journal.md):

    off size field
      0  16  header_checksum  xxh3-128 of bytes 16..79
     16  16  body_checksum    xxh3-128 of the payload
     32  16  parent           previous record's header_checksum (the chain)
     48   8  seq              previous + 1, gapless across segments
     56   8  segment_nonce    must equal the segment header's nonce
     64   8  timestamp_ns     stamped by the sequencer; replay never reads a clock
     72   4  payload_len      bounded by PAYLOAD_BYTES_MAX, checked before allocating
     76   1  type             bits 0-6: COMMAND, SEAL, CHECKPOINT (payload = state digest), PAD
                              bit 7: BATCH_END (version 2): the last record of its batch
     77   1  version          2 (written); 1 is still read
     78   2  magic            0xE7C5

Batch boundaries (version 2). The writer sets FLAG_BATCH_END on the last
record of every batch it writes (one write, one sync); a SEAL and a
CHECKPOINT are batches of one. Readers mask the type byte with
RECORD_TYPE_MASK. The flag is what lets recovery tell "the final batch was
in flight at a power cut and landed out of order" (unproven, see scan.py)
from "an earlier, synced batch rotted": the node writes batch k+1 only after
batch k's sync completed, so a valid record after a BATCH_END proves that
everything before it was synced. Version-1 records carry no flag and count
as ending a batch each, i.e. they give recovery no new information. Any
other bit pattern in the type byte is unknown_type.

Encoding a batch is the WAL hot path: `encode_records` (the node's columnar
form; `encode_batch` takes (seq, ts, payload) tuples) frames every record of
a batch with a precompiled Struct and two xxh3 digests and joins them into
ONE bytearray, so the writer issues one write per batch.

Decoding never trusts a field before the header checksum has verified it,
checks payload_len against its bound before touching the payload, and
raises RecordError with a stable reason code (errors.RECORD_REASONS).
"""

from __future__ import annotations

import struct
import sys
from collections.abc import Callable, Iterator, Sequence
from enum import IntEnum
from typing import Any, Final, NamedTuple, NoReturn

import xxhash

from jex.journal.errors import RecordError
from jex.journal.limits import (
    CHECKSUM_BYTES,
    PAYLOAD_BYTES_MAX,
    RECORD_ALIGN_BYTES,
    RECORD_HEADER_BYTES,
)

MAGIC: Final = 0xE7C5
VERSION: Final = 2  # Written. Version 2 added FLAG_BATCH_END to the type byte.
VERSIONS_READABLE: Final = frozenset({1, 2})
FLAG_BATCH_END: Final = 0x80  # In the type byte: this record is the last of its batch (version 2).
RECORD_TYPE_MASK = 0x7F  # The type byte's record-type bits.
ZERO_CHAIN = bytes(CHECKSUM_BYTES)  # The parent of the first record of the log.


class RecordType(IntEnum):
    COMMAND = 1  # payload: one msgpack-encoded command
    SEAL = 2  # empty payload: the segment is complete, the next one continues the chain
    CHECKPOINT = 3  # payload: a state digest at this point of the log
    PAD = 4  # filler readers skip; defined by the format, not written by this writer


RECORD_TYPES: Final = frozenset(int(t) for t in RecordType)


def type_byte(record_type: int, version: int, batch_end: bool) -> int:
    """The on-disk type byte: the record type, plus FLAG_BATCH_END (version 2 only)."""
    return record_type | (FLAG_BATCH_END if batch_end and version >= 2 else 0)


# The cursor reads the type, version and magic fields as ONE little-endian
# u32 (type | version << 8 | magic << 16) and looks it up here: the record
# type for every valid combination (absent: bad magic, unknown version or
# type), and the set of those that end a batch (every version-1 record;
# version 2 with the flag). One lookup instead of three checks.
_KIND_BY_TYPE_VERSION_MAGIC = {
    type_byte(t, v, end) | v << 8 | MAGIC << 16: t
    for t in RECORD_TYPES for v in VERSIONS_READABLE for end in (False, True)
}  # fmt: skip
_BATCH_ENDS_BY_TYPE_VERSION_MAGIC = frozenset(
    tvm for tvm in _KIND_BY_TYPE_VERSION_MAGIC if (tvm >> 8) & 0xFF == 1 or tvm & FLAG_BATCH_END
)
# The walks' form of the same two lookups: one tuple indexed by tvm -
# _TVM_BASE (every readable combination lies in [_TVM_BASE, _TVM_BASE +
# len)), holding the record type, plus _CODE_BATCH_END if it ends a batch;
# 0 for every other combination. Compiled, indexing a tuple with a native
# int costs a few instructions where a dict or set lookup boxes the key and
# hashes it (~650 instructions a record for the two).
_TVM_BASE: Final = MAGIC << 16
_CODE_BATCH_END: Final = 0x100
_CODE_KIND_MASK: Final = 0xFF
_CODES_BY_TVM: Final = tuple(
    _KIND_BY_TYPE_VERSION_MAGIC.get(tvm, 0)
    | (_CODE_BATCH_END if tvm in _BATCH_ENDS_BY_TYPE_VERSION_MAGIC else 0)
    for tvm in range(_TVM_BASE, _TVM_BASE + ((max(VERSIONS_READABLE) + 1) << 8))
)
assert all(kind <= _CODE_KIND_MASK for kind in RECORD_TYPES)
assert all(_TVM_BASE <= tvm < _TVM_BASE + len(_CODES_BY_TVM) for tvm in _KIND_BY_TYPE_VERSION_MAGIC)

# The whole header, and the 64 bytes the header checksum covers (16..79).
HEADER = struct.Struct("<16s16s16sQQQIBBH")
HEADER_BODY = struct.Struct("<16s16sQQQIBBH")
_HEADER_TVM = struct.Struct("<16s16s16sQQQII")  # type, version and magic as one u32 (the cursor's view)
assert HEADER.size == _HEADER_TVM.size == RECORD_HEADER_BYTES
assert HEADER_BODY.size == RECORD_HEADER_BYTES - CHECKSUM_BYTES

_OFFSET_NONCE = 56
OFFSET_PAYLOAD_LEN = 72
_OFFSET_MAGIC = 78
MAGIC_BYTES = struct.pack("<H", MAGIC)

_digest = xxhash.xxh3_128_digest
_PAD_MASK: Final = RECORD_ALIGN_BYTES - 1

# The encoder's form of HEADER_BODY (the same 64 bytes). The nonce, and the
# type, version and magic fields (one type byte for the inner records, one
# for the last), are constant in a batch: they are packed once per batch and
# passed as bytes ('8s', '4s'), so a record packs five fields, not nine. On a
# little-endian platform with an 8-byte C long the u64 fields use the native
# 'L' code, which writes the same bytes (the layout needs no alignment
# padding) and raises the same struct.error, but converts a multi-digit int
# with a short loop where '<Q' goes through _PyLong_AsByteArray (~185
# instructions a field, measured with callgrind).
_NATIVE_U64: Final = sys.byteorder == "little" and struct.calcsize("@L") == 8
_HEADER_BODY_ENCODE: Final = struct.Struct("@16s16sL8sLI4s" if _NATIVE_U64 else "<16s16sQ8sQI4s")
_NONCE: Final = struct.Struct("<Q")
_TYPE_VERSION_MAGIC: Final = struct.Struct("<BBH")
assert _HEADER_BODY_ENCODE.size == HEADER_BODY.size
assert _HEADER_BODY_ENCODE.pack(
    b"b" * 16, b"p" * 16, 2**64 - 1, _NONCE.pack(2**63 + 3), 2**62 + 5, 2**32 - 1,
    _TYPE_VERSION_MAGIC.pack(0x81, 2, MAGIC),
) == HEADER_BODY.pack(b"b" * 16, b"p" * 16, 2**64 - 1, 2**63 + 3, 2**62 + 5, 2**32 - 1, 0x81, 2, MAGIC)  # fmt: skip


class Record(NamedTuple):
    """One decoded record. `chain` is its header checksum: the chain value
    after this record, which the next record names as its parent."""

    seq: int
    ts_ns: int
    type: int
    payload: bytes
    chain: bytes


class Header(NamedTuple):
    """A verified header. `type` is masked (RECORD_TYPE_MASK); `batch_end`
    is the flag (always True for version 1)."""

    header_checksum: bytes
    body_checksum: bytes
    parent: bytes
    seq: int
    nonce: int
    ts_ns: int
    payload_len: int
    type: int
    version: int
    magic: int
    batch_end: bool = True


def padded_len(payload_len: int) -> int:
    """Payload length rounded up to the 8-byte record alignment."""
    return (payload_len + _PAD_MASK) & ~_PAD_MASK


def record_bytes(payload_len: int) -> int:
    """Framed size of one record with this payload length."""
    return RECORD_HEADER_BYTES + padded_len(payload_len)


def encode_batch(
    entries: Sequence[tuple[int, int, bytes]],
    *,
    parent: bytes,
    nonce: int,
    expect_seq: int,
    ts_floor: int,
    record_type: int = RecordType.COMMAND,
    version: int = VERSION,
) -> tuple[bytearray, bytes, int]:
    """Encode (seq, ts_ns, payload) entries into one joined buffer: ONE batch,
    its last record flagged FLAG_BATCH_END.

    Returns (buffer, chain after the last record, last ts_ns). Seqs must run
    gapless from `expect_seq` and timestamps must not decrease from
    `ts_floor`: the sequencer stamps both and replay relies on them, so a
    violation is a caller bug and raises ValueError before anything is
    written. `version` 1 exists only to rebuild a SEAL that a version-1 log
    is missing (scan.SegmentEnd.seal_record). The records are encoded by
    `encode_records`.
    """
    if not entries:
        raise ValueError("empty batch")
    seq_want = expect_seq
    for seq, _, _ in entries:
        if seq != seq_want:
            raise ValueError(f"seq {seq} is not the next seq {seq_want}")
        seq_want += 1
    return encode_records(
        expect_seq, [entry[1] for entry in entries], [entry[2] for entry in entries],
        parent=parent, nonce=nonce, ts_floor=ts_floor, record_type=record_type, version=version,
    )  # fmt: skip


def encode_records(
    first_seq: int,
    stamps: Sequence[int],
    payloads: Sequence[bytes],
    *,
    parent: bytes,
    nonce: int,
    ts_floor: int,
    record_type: int = RecordType.COMMAND,
    version: int = VERSION,
) -> tuple[bytearray, bytes, int]:
    """Encode one batch given as columns: records first_seq, first_seq + 1,
    ... with timestamps `stamps` and payloads `payloads` (the node's form: no
    tuple per record). Same result and checks as `encode_batch`.

    O(total bytes); per record one pack of five fields (what is constant in
    the batch is packed once), two digests and four list appends, then one
    join (measured ~0.3 us per 64-byte record, about twice as fast as packing
    into a preallocated buffer through memoryviews). Compiled, the
    timestamps stay the int objects the caller made (`ts_ns` is typed Any):
    a typed int would be unboxed and boxed again for the pack.
    """
    count = len(payloads)
    if not count:
        raise ValueError("empty batch")
    if len(stamps) != count:
        raise ValueError(f"{len(stamps)} timestamps for {count} payloads")
    assert version in VERSIONS_READABLE and record_type in RECORD_TYPES
    type_inner = type_byte(record_type, version, batch_end=False)
    type_last = type_byte(record_type, version, batch_end=True)
    try:
        nonce_bytes = _NONCE.pack(nonce)
        tvm_inner = _TYPE_VERSION_MAGIC.pack(type_inner, version, MAGIC)
        tvm_last = _TYPE_VERSION_MAGIC.pack(type_last, version, MAGIC)
    except struct.error:  # Outside its field: raise what packing the first record raised.
        _reject_first_record(first_seq, stamps[0], payloads[0], parent=parent, nonce=nonce, ts_floor=ts_floor,
                             kind_byte=type_last if count == 1 else type_inner, version=version)  # fmt: skip
    parts: list[bytes] = []
    pack = _HEADER_BODY_ENCODE.pack
    digest = _digest
    pads_after: tuple[bytes, ...] = _PADS_AFTER
    pad_mask: int = _PAD_MASK
    payload_max: int = PAYLOAD_BYTES_MAX
    seq: int = first_seq
    last_seq: int = first_seq + count - 1
    ts_last: Any = ts_floor
    stamp_objects: Sequence[Any] = stamps  # Compiled: the ints stay objects (no unbox, no box again).
    for ts_ns, payload in zip(stamp_objects, payloads):
        n: int = len(payload)
        if ts_ns < ts_last or n > payload_max:
            _reject_entry(seq, seq, ts_ns, ts_last, n)
        try:
            body = pack(digest(payload), parent, seq, nonce_bytes, ts_ns, n, tvm_last if seq == last_seq else tvm_inner)
        except struct.error as error:  # A seq or timestamp outside u64.
            raise ValueError(f"seq {seq}, timestamp {ts_ns}: {error}") from None
        parent = digest(body)
        parts.append(parent)  # Not an alias: compiled, a direct append is PyList_Append, not a method call.
        parts.append(body)
        parts.append(payload)
        parts.append(pads_after[n & pad_mask])
        seq += 1
        ts_last = ts_ns
    ts_end: int = ts_last
    return bytearray().join(parts), parent, ts_end


_PADS: Final = tuple(bytes(n) for n in range(RECORD_ALIGN_BYTES))  # indexed by the padding's length
_PADS_AFTER: Final = tuple(_PADS[-n & _PAD_MASK] for n in range(RECORD_ALIGN_BYTES))  # by payload_len % 8


def _reject_first_record(
    seq: int, ts_ns: int, payload: bytes, *, parent: bytes, nonce: int, ts_floor: int, kind_byte: int, version: int
) -> NoReturn:
    """Raise what encoding the first record of a batch raises when the nonce,
    type or version is outside its field: encode_records packs those once a
    batch, before the loop, and the error must stay the one that packing the
    first record, field by field, raised."""
    n = len(payload)
    if ts_ns < ts_floor or n > PAYLOAD_BYTES_MAX:
        _reject_entry(seq, seq, ts_ns, ts_floor, n)
    try:
        HEADER_BODY.pack(_digest(payload), parent, seq, nonce, ts_ns, n, kind_byte, version, MAGIC)
    except struct.error as error:
        raise ValueError(f"seq {seq}, timestamp {ts_ns}: {error}") from None
    raise AssertionError(f"nonce {nonce}, type byte {kind_byte}, version {version} pack as one record but not alone")


def _reject_entry(seq: int, seq_want: int, ts_ns: int, ts_last: int, payload_len: int) -> None:
    """Raise the ValueError that explains why an entry cannot be encoded."""
    if seq != seq_want:
        raise ValueError(f"seq {seq} is not the next seq {seq_want}")
    if ts_ns < ts_last:
        raise ValueError(f"seq {seq}: timestamp {ts_ns} is before {ts_last}")
    raise ValueError(f"seq {seq}: payload of {payload_len} bytes exceeds {PAYLOAD_BYTES_MAX}")


def encode_one(
    seq: int, ts_ns: int, payload: bytes, *, parent: bytes, nonce: int, record_type: int, version: int = VERSION
) -> tuple[bytearray, bytes]:
    """Encode a batch of one record (SEAL, CHECKPOINT). Returns (bytes, chain)."""
    buffer, chain, _ = encode_batch(
        [(seq, ts_ns, payload)],
        parent=parent, nonce=nonce, expect_seq=seq, ts_floor=ts_ns, record_type=record_type, version=version,
    )  # fmt: skip
    return buffer, chain


def decode_header(buffer: bytes | memoryview, offset: int) -> Header:
    """Decode and verify the 80-byte header at `offset`.

    Checks, in order: enough bytes, magic, header checksum, version, type,
    payload_len bound. Nothing after the checksum is trusted before it
    passes, and payload_len is bounded before anyone allocates for it.
    """
    if len(buffer) - offset < RECORD_HEADER_BYTES:
        raise RecordError("short_record", offset, "header cut off")
    fields = HEADER.unpack_from(buffer, offset)
    magic, version, raw_type = fields[9], fields[8], fields[7]
    if magic != MAGIC:
        raise RecordError("bad_magic", offset, f"magic 0x{magic:04x}")
    body = memoryview(buffer)[offset + CHECKSUM_BYTES : offset + RECORD_HEADER_BYTES]
    if _digest(body) != fields[0]:
        raise RecordError("header_checksum", offset)
    if version not in VERSIONS_READABLE:
        raise RecordError("unknown_version", offset, f"version {version}")
    tvm = raw_type | version << 8 | magic << 16
    kind = _KIND_BY_TYPE_VERSION_MAGIC.get(tvm)
    if kind is None:
        raise RecordError("unknown_type", offset, f"type byte 0x{raw_type:02x} (version {version})")
    if fields[6] > PAYLOAD_BYTES_MAX:
        raise RecordError("payload_len_too_large", offset, f"payload_len {fields[6]}")
    batch_end = tvm in _BATCH_ENDS_BY_TYPE_VERSION_MAGIC
    hc, bc, parent, seq, nonce, ts_ns, payload_len = fields[:7]
    return Header(hc, bc, parent, seq, nonce, ts_ns, payload_len, kind, version, magic, batch_end)


def check_identity(header: Header, offset: int, *, nonce: int, seq: int, parent: bytes) -> None:
    """Check that a verified header is the record expected here: this
    segment's nonce, the next seq, and the chain's parent."""
    if header.nonce != nonce:
        raise RecordError("foreign_nonce", offset, f"nonce {header.nonce:016x}")
    if header.seq != seq:
        raise RecordError("seq_gap", offset, f"seq {header.seq}, expected {seq}")
    if header.parent != parent:
        raise RecordError("chain_break", offset, f"seq {seq}")
    if header.type == RecordType.SEAL and header.payload_len != 0:
        raise RecordError("seal_with_payload", offset, f"payload_len {header.payload_len}")


def check_body(buffer: bytes | memoryview, offset: int, header: Header) -> int:
    """Verify the payload and its zero padding; return the next record's offset."""
    body_at = offset + RECORD_HEADER_BYTES
    n = header.payload_len
    end = body_at + padded_len(n)
    if end > len(buffer):
        raise RecordError("short_record", offset, f"payload of {n} bytes runs past the end")
    view = memoryview(buffer)
    if _digest(view[body_at : body_at + n]) != header.body_checksum:
        raise RecordError("body_checksum", offset, f"seq {header.seq}")
    if any(view[body_at + n : end]):
        raise RecordError("bad_padding", offset, f"seq {header.seq}")
    return end


def decode_record(
    buffer: bytes | memoryview, offset: int, *, nonce: int, seq: int, parent: bytes
) -> tuple[Record, int]:
    """Decode and fully verify the record expected at `offset`.

    Returns (record, next offset). Raises RecordError naming the first check
    that failed. O(payload_len).
    """
    header = decode_header(buffer, offset)
    check_identity(header, offset, nonce=nonce, seq=seq, parent=parent)
    end = check_body(buffer, offset, header)
    body_at = offset + RECORD_HEADER_BYTES
    payload = bytes(memoryview(buffer)[body_at : body_at + header.payload_len])
    record = Record(header.seq, header.ts_ns, header.type, payload, header.header_checksum)
    return record, end


_SEQ_NO_LIMIT: Final = 1 << 64  # above every u64 seq
_SEAL: Final = int(RecordType.SEAL)
_COMMAND: Final = int(RecordType.COMMAND)


class CommandSink:
    """Where a fused walk (RecordCursor.apply_commands) puts the records it
    verifies: the COMMAND payloads of seq <= `to_seq` are decoded with
    `decode` and applied with `apply(command, seq, ts_ns)`, then
    `after(seq, events)` runs if given; records past `to_seq` are verified
    and not applied (`done` turns True at the first). A payload that
    `decode` refuses with one of `decode_errors` is handed to
    `undecodable(seq, error)`, which raises.

    The counts are the replay's statistics (replay.rebuild.Replayer): per
    command class, commands, other records (SEAL, CHECKPOINT, PAD), events,
    and the seq and timestamp of the last record at or before `to_seq`.
    The journal room knows nothing of what a command is: it calls what it
    is given.
    """

    def __init__(
        self,
        decode: Callable[[bytes], Any],
        apply: Callable[[Any, int, int], Any],
        *,
        to_seq: int,
        after: Callable[[int, Any], object] | None,
        decode_errors: tuple[type[BaseException], ...],
        undecodable: Callable[[int, BaseException], object],
    ) -> None:
        self.decode = decode
        self.apply = apply
        self.to_seq = to_seq
        self.after = after
        self.decode_errors = decode_errors
        self.undecodable = undecodable
        self.done = False
        self.counts: dict[type, int] = {}
        self.commands = 0
        self.others = 0
        self.events = 0
        self.last_seq = 0
        self.last_ts = 0


class RecordCursor:
    """Walk the verified records of one buffer (a segment image or a chunk of one), fast.

    Iterating yields every record that passes all checks, starting at
    `offset` with the expected `seq` and `parent`; it stops before the
    first record that does not (or at a SEAL, after yielding it) and leaves
    `offset`, `seq`, `parent`, `ts_ns` and `sealed` describing where it
    stopped. Call `stop_error()` to learn why it stopped.
    `apply_commands(sink)` is the same walk, handing the records to a
    CommandSink instead of yielding them (the replay's loop).

    Batches: `batch_offset`, `batch_seq`, `batch_parent` and `batch_ts_ns`
    describe where the batch that `offset` belongs to began: just after the
    last record walked that ends a batch (FLAG_BATCH_END, or any version-1
    record), else where the walk started. `batch_offset < offset` means the
    last record walked did not end its batch (an open batch).

    O(bytes walked); ~0.9 us per 64-byte record pure, ~0.35 us compiled
    (jex/native.py): one unpack, two digests, one lookup, no memoryviews,
    constants bound as locals, every local typed so that mypyc keeps the
    integers native. Both walks check exactly the same things, in the
    same order (tests/journal/test_journal_record.py holds them together on
    damaged buffers).
    """

    __slots__ = (
        "data", "offset", "end", "nonce", "seq", "parent", "ts_ns", "sealed", "count",
        "batch_offset", "batch_seq", "batch_parent", "batch_ts_ns",
    )  # fmt: skip

    def __init__(
        self, data: bytes, offset: int, end: int, *, nonce: int, seq: int, parent: bytes, ts_ns: int
    ) -> None:
        assert offset % RECORD_ALIGN_BYTES == 0
        self.data = data
        self.offset = offset
        self.end = min(end, len(data))
        self.nonce = nonce
        self.seq = seq
        self.parent = parent
        self.ts_ns = ts_ns
        self.sealed = False
        self.count = 0
        self.batch_offset = offset
        self.batch_seq = seq
        self.batch_parent = parent
        self.batch_ts_ns = ts_ns

    def __iter__(self) -> Iterator[Record]:
        data, end, nonce = self.data, self.end, self.nonce
        offset, seq, parent, ts_last = self.offset, self.seq, self.parent, self.ts_ns
        first_seq = seq
        batch_offset, batch_seq = self.batch_offset, self.batch_seq
        batch_parent, batch_ts = self.batch_parent, self.batch_ts_ns
        unpack, digest, new, make = _HEADER_TVM.unpack_from, _digest, tuple.__new__, Record
        codes, pads = _CODES_BY_TVM, _PADS
        codes_len: int = len(codes)
        tvm_base: int = _TVM_BASE
        kind_mask: int = _CODE_KIND_MASK
        batch_end: int = _CODE_BATCH_END
        payload_max: int = PAYLOAD_BYTES_MAX
        seal: int = _SEAL
        header_bytes: int = RECORD_HEADER_BYTES
        try:
            while offset + header_bytes <= end:
                fields = unpack(data, offset)
                hc: bytes = fields[0]
                bc: bytes = fields[1]
                par: bytes = fields[2]
                s: int = fields[3]
                nn: int = fields[4]
                ts: int = fields[5]
                n: int = fields[6]
                tvm: int = fields[7]
                body_at = offset + header_bytes
                pad = -n & 7
                stop = body_at + n + pad
                at: int = tvm - tvm_base
                code: int = codes[at] if 0 <= at < codes_len else 0
                kind = code & kind_mask  # 0: bad magic, unknown version or type
                if (
                    kind == 0 or nn != nonce or s != seq or par != parent
                    or n > payload_max or stop > end or (kind == seal and n != 0)
                    or digest(data[offset + 16 : body_at]) != hc
                ):  # fmt: skip
                    break
                payload = data[body_at : body_at + n]
                if digest(payload) != bc or (pad != 0 and data[body_at + n : stop] != pads[pad]):
                    break
                yield new(make, (s, ts, kind, payload, hc))
                offset = stop
                seq += 1
                parent = hc
                ts_last = ts
                if code & batch_end:
                    batch_offset, batch_seq, batch_parent, batch_ts = stop, seq, hc, ts
                if kind == seal:
                    self.sealed = True
                    break
        finally:
            self.offset, self.seq, self.parent, self.ts_ns = offset, seq, parent, ts_last
            self.batch_offset, self.batch_seq, self.batch_parent, self.batch_ts_ns = (
                batch_offset, batch_seq, batch_parent, batch_ts,
            )  # fmt: skip
            self.count += seq - first_seq

    def apply_commands(self, sink: CommandSink, from_seq: int = 0, to_seq_walk: int = _SEQ_NO_LIMIT) -> None:
        """Walk as iterating does (the same checks, the same stop, the same
        state left behind) and hand each verified record to `sink` instead
        of yielding it: no Record, no generator step per record. This is
        the replay's hot loop (replay.rebuild), fused with the verifying
        walk so that the two compile together. O(bytes walked + apply).

        A reader's bounds: records before `from_seq` are verified and not
        handed over; the walk stops before the first record past
        `to_seq_walk` (verified, not handed over, the cursor left at it, as a
        caller that stops iterating there leaves it: then `seq` >
        `to_seq_walk`). The sink's own `to_seq` only stops the applying."""
        data, end, nonce = self.data, self.end, self.nonce
        offset, seq, parent, ts_last = self.offset, self.seq, self.parent, self.ts_ns
        first_seq = seq
        batch_offset, batch_seq = self.batch_offset, self.batch_seq
        batch_parent, batch_ts = self.batch_parent, self.batch_ts_ns
        unpack, digest = _HEADER_TVM.unpack_from, _digest
        codes, pads = _CODES_BY_TVM, _PADS
        codes_len: int = len(codes)
        tvm_base: int = _TVM_BASE
        kind_mask: int = _CODE_KIND_MASK
        batch_end: int = _CODE_BATCH_END
        payload_max: int = PAYLOAD_BYTES_MAX
        seal: int = _SEAL
        command_kind: int = _COMMAND
        header_bytes: int = RECORD_HEADER_BYTES
        decode, apply, after, counts = sink.decode, sink.apply, sink.after, sink.counts
        decode_errors = sink.decode_errors
        # The bounds are tested only where they bound anything: the
        # "no limit" value lies above every u64, so it is a boxed int, and
        # comparing with it costs ~250 instructions a record compiled.
        to_seq: int = sink.to_seq
        to_seq_bounded: bool = to_seq < _SEQ_NO_LIMIT
        walk_from: int = from_seq
        walk_to: int = to_seq_walk
        walk_bounded: bool = to_seq_walk < _SEQ_NO_LIMIT
        done = sink.done
        commands = others = events = 0
        last_seq, last_ts = sink.last_seq, sink.last_ts
        try:
            while offset + header_bytes <= end:
                fields = unpack(data, offset)
                hc: bytes = fields[0]
                bc: bytes = fields[1]
                par: bytes = fields[2]
                s: int = fields[3]
                nn: int = fields[4]
                ts: int = fields[5]
                n: int = fields[6]
                tvm: int = fields[7]
                body_at = offset + header_bytes
                pad = -n & 7
                stop = body_at + n + pad
                at: int = tvm - tvm_base
                code: int = codes[at] if 0 <= at < codes_len else 0
                kind = code & kind_mask  # 0: bad magic, unknown version or type
                if (
                    kind == 0 or nn != nonce or s != seq or par != parent
                    or n > payload_max or stop > end or (kind == seal and n != 0)
                    or digest(data[offset + 16 : body_at]) != hc
                ):  # fmt: skip
                    break
                payload = data[body_at : body_at + n]
                if digest(payload) != bc or (pad != 0 and data[body_at + n : stop] != pads[pad]):
                    break
                if walk_bounded and s > walk_to:
                    break
                if not done and s >= walk_from:
                    if to_seq_bounded and s > to_seq:
                        done = True
                    elif kind != command_kind:
                        last_seq, last_ts = s, ts
                        others += 1
                    else:
                        last_seq, last_ts = s, ts
                        try:
                            command = decode(payload)
                        except decode_errors as error:
                            sink.undecodable(s, error)
                            raise
                        produced = apply(command, s, ts)
                        commands += 1
                        events += len(produced)
                        cls = type(command)
                        counts[cls] = counts.get(cls, 0) + 1
                        if after is not None:
                            after(s, produced)
                offset = stop
                seq += 1
                parent = hc
                ts_last = ts
                if code & batch_end:
                    batch_offset, batch_seq, batch_parent, batch_ts = stop, seq, hc, ts
                if kind == seal:
                    self.sealed = True
                    break
        finally:
            self.offset, self.seq, self.parent, self.ts_ns = offset, seq, parent, ts_last
            self.batch_offset, self.batch_seq, self.batch_parent, self.batch_ts_ns = (
                batch_offset, batch_seq, batch_parent, batch_ts,
            )  # fmt: skip
            self.count += seq - first_seq
            sink.done = done
            sink.commands += commands
            sink.others += others
            sink.events += events
            sink.last_seq, sink.last_ts = last_seq, last_ts

    def stop_error(self) -> RecordError | None:
        """Why the walk stopped at `offset`: None for an all-zero header or
        the end of the data (a clean end of records, or after a SEAL),
        otherwise the RecordError of the first failed check."""
        if self.sealed:
            return None
        data, offset = self.data, self.offset
        if offset + RECORD_HEADER_BYTES > self.end:
            if any(data[offset : self.end]):
                return RecordError("short_record", offset, "header cut off")
            return None
        if not any(data[offset : offset + RECORD_HEADER_BYTES]):
            return None
        view = data if self.end == len(data) else memoryview(data)[: self.end]
        try:
            header = decode_header(view, offset)
            check_identity(header, offset, nonce=self.nonce, seq=self.seq, parent=self.parent)
            check_body(view, offset, header)
        except RecordError as error:
            return error
        raise AssertionError(f"record at {offset} verifies but the walk stopped there")


def header_validates(buffer: bytes | memoryview, offset: int, nonce: int) -> bool:
    """True if a record header at `offset` carries the right magic, a correct
    header checksum and this segment's nonce. The scanner uses it to tell a
    torn tail (no later record validates) from corruption (one does)."""
    if offset < 0 or len(buffer) - offset < RECORD_HEADER_BYTES:
        return False
    if buffer[offset + _OFFSET_MAGIC : offset + _OFFSET_MAGIC + 2] != MAGIC_BYTES:
        return False
    if int.from_bytes(buffer[offset + _OFFSET_NONCE : offset + _OFFSET_NONCE + 8], "little") != nonce:
        return False
    view = memoryview(buffer)
    return _digest(view[offset + CHECKSUM_BYTES : offset + RECORD_HEADER_BYTES]) == bytes(
        view[offset : offset + CHECKSUM_BYTES]
    )


def find_validating_header(buffer: bytes, start: int, end: int, nonce: int) -> int | None:
    """Offset of the first 8-aligned record header in [start, end) that
    validates with `nonce`, or None. O(end - start): it jumps between
    occurrences of the nonce's bytes instead of trying every offset."""
    needle = nonce.to_bytes(8, "little")
    search_from = start + _OFFSET_NONCE
    while True:
        at = buffer.find(needle, search_from, end + _OFFSET_NONCE + 8)
        if at < 0:
            return None
        candidate = at - _OFFSET_NONCE
        if candidate >= end:
            return None
        if candidate % RECORD_ALIGN_BYTES == 0 and header_validates(buffer, candidate, nonce):
            return candidate
        search_from = at + 1
