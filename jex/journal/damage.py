"""Damage tools for crash drills and tests (room: jex.journal).

Deliberately break a WAL on disk the ways the spec's failure behaviours
describe (bit flips, truncation, zeroed or garbage sectors, duplicated,
swapped and foreign records, edited segment headers, missing segments),
and locate records so the damage lands where intended. `jex drill` and
tests/journal use these; the journal itself never imports this module.

Also: deterministic payloads (`payload_for`) and `write_commands`, so a
drill can tell a replayed record from garbage byte for byte.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, replace
from pathlib import Path

from jex.journal.limits import RECORD_HEADER_BYTES, SEGMENT_HEADER_BYTES
from jex.journal.record import (
    HEADER_BODY,
    MAGIC,
    VERSION,
    RecordCursor,
    RecordType,
    _digest,
    decode_header,
    padded_len,
    type_byte,
)
from jex.journal.segment import SegmentHeader, list_segments
from jex.journal.storage import OsStorage


@dataclass(frozen=True)
class RecordLocation:
    path: Path
    offset: int
    length: int  # framed bytes (header + padded payload)
    seq: int
    type: int
    payload_len: int
    batch_end: bool = True  # The record is the last of its batch (always, for version 1).

    @property
    def payload_offset(self) -> int:
        return self.offset + RECORD_HEADER_BYTES


def segment_paths(wal_dir: Path) -> list[Path]:
    return [s.path for s in list_segments(OsStorage(), Path(wal_dir)).segments]


def read_header(path: Path) -> SegmentHeader:
    with open(path, "rb") as f:
        return SegmentHeader.decode(f.read(SEGMENT_HEADER_BYTES), name=path.name)


def locate_records(path: Path, ts_ns: int = 0) -> list[RecordLocation]:
    """The verified records of one segment file, with their offsets."""
    data = Path(path).read_bytes()
    header = SegmentHeader.decode(data[:SEGMENT_HEADER_BYTES], name=Path(path).name)
    cursor = RecordCursor(
        data, SEGMENT_HEADER_BYTES, len(data),
        nonce=header.nonce, seq=header.first_seq, parent=header.prev_chain, ts_ns=ts_ns,
    )  # fmt: skip
    out, offset = [], SEGMENT_HEADER_BYTES
    for record in cursor:
        length = RECORD_HEADER_BYTES + padded_len(len(record.payload))
        batch_end = decode_header(data, offset).batch_end
        out.append(RecordLocation(Path(path), offset, length, record.seq, record.type, len(record.payload), batch_end))
        offset += length
    return out


def locate_all(wal_dir: Path) -> list[RecordLocation]:
    """Verified records of every segment, in log order."""
    return [loc for path in segment_paths(wal_dir) for loc in locate_records(path)]


def flip_bit(path: Path, offset: int, bit: int = 0) -> None:
    with open(path, "r+b") as f:
        f.seek(offset)
        byte = f.read(1)[0]
        f.seek(offset)
        f.write(bytes([byte ^ (1 << bit)]))


def write_at(path: Path, offset: int, data: bytes) -> None:
    with open(path, "r+b") as f:
        f.seek(offset)
        f.write(data)


def read_at(path: Path, offset: int, length: int) -> bytes:
    with open(path, "rb") as f:
        f.seek(offset)
        return f.read(length)


def zero_range(path: Path, offset: int, length: int) -> None:
    write_at(path, offset, bytes(length))


def truncate(path: Path, length: int) -> None:
    os.truncate(path, length)


def forge_record(
    seq: int,
    ts_ns: int,
    payload: bytes,
    *,
    parent: bytes,
    nonce: int,
    record_type: int = RecordType.COMMAND,
    version: int = VERSION,
    payload_len: int | None = None,
    magic: int = MAGIC,
    batch_end: bool = True,
    raw_type: int | None = None,
) -> bytes:
    """A record whose header checksum is correct for whatever fields are
    given (even impossible ones), for tests of every decoder check.
    `raw_type` sets the whole type byte (flag bits included) as given."""
    n = len(payload) if payload_len is None else payload_len
    kind = type_byte(record_type, version, batch_end) if raw_type is None else raw_type
    body = HEADER_BODY.pack(_digest(payload), parent, seq, nonce, ts_ns, n, kind, version, magic)
    return _digest(body) + body + payload + bytes(padded_len(len(payload)) - len(payload))


def rewrite_segment_header(path: Path, **changes: object) -> Path:
    """Re-encode a segment header with changed fields (valid checksum) and
    rename the file to match. Returns the new path."""
    header = replace(read_header(path), **changes)
    write_at(path, 0, header.encode())
    new_path = path.with_name(header.file_name)
    os.rename(path, new_path)
    return new_path


def file_hashes(root: Path) -> dict[str, str]:
    """sha256 of every file under root (to prove 'changed nothing')."""
    out = {}
    for dirpath, _, names in os.walk(root):
        for name in names:
            path = Path(dirpath) / name
            out[str(path.relative_to(root))] = hashlib.sha256(path.read_bytes()).hexdigest()
    return out


def payload_for(seq: int, size: int = 64) -> bytes:
    """Deterministic payload of a drill command: recognisable byte for byte."""
    stem = f"cmd-{seq:012d}-".encode()
    return (stem * (size // len(stem) + 1))[:size]


def write_commands(journal, count: int, *, batch: int = 4, size: int = 64, ts_ns: int = 1_000) -> int:  # noqa: ANN001
    """Append `count` drill commands in batches; returns the last durable seq."""
    last = journal.last_seq
    written = 0
    while written < count:
        n = min(batch, count - written)
        seq = journal.next_seq
        last = journal.append([(seq + i, ts_ns + seq + i, payload_for(seq + i, size)) for i in range(n)])
        written += n
    return last


