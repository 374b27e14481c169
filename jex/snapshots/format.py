"""The snapshot file format and its decoder (room: jex.snapshots).

A snapshot is one file, `snap-<seq:016x>.snap`: a 128-byte little-endian
header, then the body, the msgpack encoding of `core.state.export_state`:

    off size field
      0   8  magic "JEXSNAP\\0"
      8   2  version              of this header format
     10   2  flags                none defined; must be 0
     12   4  state_version        core.state.STATE_VERSION of the body (1 is still read)
     16   8  seq                  WAL seq the state is at (every record <= seq applied)
     24   8  ts_ns                timestamp of record `seq`
     32  16  chain                WAL chain value at `seq` (record seq's header checksum)
     48  16  digest               Engine.digest() of the state, raw 16 bytes
     64   8  body_len             bytes of body after the header
     72  16  body_checksum        xxh3-128 of the body
     88  24  reserved             zeros
    112  16  header_checksum      xxh3-128 of bytes 0..111

Decoding trusts nothing before the header checksum passes, bounds body_len
before touching the body, checks the file size against it, and verifies the
body checksum before msgpack sees a byte. Every failure is a SnapshotError
with a stable reason code and a one-line message: a decoder fed random
bytes gives typed errors only.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path

import xxhash

from jex.core.state import STATE_VERSION

# The state versions a body may have: the current one (what every snapshot
# is written in), version 2 (core/state.py restores it: the same but for the
# registry) and version 1 (snapshots/legacy.py), so a node upgraded over a
# log pruned up to older snapshots still starts from them.
STATE_VERSIONS_READ = (1, 2, STATE_VERSION)

MAGIC = b"JEXSNAP\0"
VERSION = 1
HEADER_BYTES = 128
CHECKSUM_BYTES = 16
# 64 GiB: far above any state this engine can hold in memory, low enough that
# a damaged length can never make the loader map or hash something absurd.
BODY_BYTES_MAX = 64 << 30

_FIELDS = struct.Struct("<8sHHIQQ16s16sQ16s")
_CHECKSUM_AT = HEADER_BYTES - CHECKSUM_BYTES
assert _FIELDS.size <= _CHECKSUM_AT

SUFFIX = ".snap"
TMP_SUFFIX = ".tmp"
PREFIX = "snap-"

# Why a snapshot was refused. Stable codes: tests, notices and `jex snapshot
# list` use them. The first group is the file's own fault; the second is a
# mismatch with the log it claims to describe.
REASONS = frozenset(
    {
        "unreadable",  # the file could not be opened or mapped (OSError)
        "short_file",  # fewer bytes than a header
        "bad_magic",
        "header_checksum",
        "unknown_version",
        "unknown_flags",
        "bad_padding",  # reserved header bytes are not zero
        "name_mismatch",  # the file name's seq is not the header's
        "body_too_large",  # body_len above BODY_BYTES_MAX
        "size_mismatch",  # file size is not header + body_len
        "body_checksum",
        "unknown_state_version",  # the body's shape is not one this build restores
        "undecodable_body",  # msgpack refused the (checksummed) body
        "state_rejected",  # restore_state refused the decoded shape
        "digest_mismatch",  # the restored engine's digest is not the header's
        "seq_mismatch",  # the state's own seq is after the header's seq
        # Against the log:
        "not_in_log",  # the log does not hold record `seq` (pruned before it, or ends before it)
        "chain_mismatch",  # record `seq` exists but its chain value differs: another history
    }
)


class SnapshotError(Exception):
    """A snapshot that cannot be used, with a stable `reason` (see REASONS).

    str() is one line naming the file, the reason and the detail."""

    def __init__(self, reason: str, path: Path | str | None, detail: str = "") -> None:
        assert reason in REASONS, reason
        self.reason = reason
        self.path = None if path is None else Path(path)
        self.detail = detail
        where = f"snapshot {self.path.name}" if self.path is not None else "snapshot"
        text = f"{where}: {reason}" + (f" ({detail})" if detail else "")
        super().__init__(" ".join(text.split()))


@dataclass(frozen=True)
class SnapshotHeader:
    seq: int
    ts_ns: int
    chain: bytes
    digest: bytes
    body_len: int
    body_checksum: bytes
    state_version: int = STATE_VERSION

    @property
    def digest_hex(self) -> str:
        return self.digest.hex()

    def encode(self) -> bytes:
        """The 128-byte header image, checksum included."""
        assert len(self.chain) == CHECKSUM_BYTES and len(self.digest) == CHECKSUM_BYTES
        assert 0 <= self.body_len <= BODY_BYTES_MAX and self.seq >= 1
        head = _FIELDS.pack(
            MAGIC, VERSION, 0, self.state_version, self.seq, self.ts_ns,
            self.chain, self.digest, self.body_len, self.body_checksum,
        )  # fmt: skip
        body = head + bytes(_CHECKSUM_AT - len(head))
        return body + xxhash.xxh3_128_digest(body)


def file_name(seq: int) -> str:
    return f"{PREFIX}{seq:016x}{SUFFIX}"


def tmp_name(seq: int) -> str:
    return f"{PREFIX}{seq:016x}{TMP_SUFFIX}"


def seq_of_name(name: str) -> int | None:
    """The seq a snapshot file name carries, or None if it is not one."""
    if not (name.startswith(PREFIX) and name.endswith(SUFFIX)):
        return None
    digits = name[len(PREFIX) : -len(SUFFIX)]
    if len(digits) != 16 or any(c not in "0123456789abcdef" for c in digits):
        return None
    return int(digits, 16)


def make_header(seq: int, ts_ns: int, chain: bytes, digest_hex: str, body: bytes | memoryview) -> SnapshotHeader:
    return SnapshotHeader(
        seq, ts_ns, bytes(chain), bytes.fromhex(digest_hex), len(body), xxhash.xxh3_128_digest(body)
    )


def decode_header(data: bytes | memoryview, *, path: Path | str | None = None, file_bytes: int | None = None) -> SnapshotHeader:
    """Decode and verify a header. `file_bytes` (the file's size) is checked
    against body_len; the file name (from `path`) against seq. O(1)."""
    if len(data) < HEADER_BYTES:
        raise SnapshotError("short_file", path, f"{len(data)} bytes, header needs {HEADER_BYTES}")
    head = bytes(data[:HEADER_BYTES])
    magic, version, flags, state_version, seq, ts_ns, chain, digest, body_len, body_checksum = _FIELDS.unpack_from(head)
    if magic != MAGIC:
        raise SnapshotError("bad_magic", path, repr(magic))
    if xxhash.xxh3_128_digest(head[:_CHECKSUM_AT]) != head[_CHECKSUM_AT:]:
        raise SnapshotError("header_checksum", path)
    if version != VERSION:
        raise SnapshotError("unknown_version", path, f"version {version}")
    if flags:
        raise SnapshotError("unknown_flags", path, f"flags 0x{flags:04x}")
    if any(head[_FIELDS.size : _CHECKSUM_AT]):
        raise SnapshotError("bad_padding", path)
    if body_len > BODY_BYTES_MAX:
        raise SnapshotError("body_too_large", path, f"body_len {body_len}")
    if file_bytes is not None and file_bytes != HEADER_BYTES + body_len:
        raise SnapshotError("size_mismatch", path, f"file has {file_bytes} bytes, header says {HEADER_BYTES + body_len}")
    if path is not None:
        named = seq_of_name(Path(path).name)
        if named is not None and named != seq:
            raise SnapshotError("name_mismatch", path, f"header seq {seq}")
    return SnapshotHeader(seq, ts_ns, chain, digest, body_len, body_checksum, state_version)


def check_body(header: SnapshotHeader, body: bytes | memoryview, *, path: Path | str | None = None) -> None:
    """Verify the body against the header (length, checksum, state version). O(body)."""
    if len(body) != header.body_len:
        raise SnapshotError("size_mismatch", path, f"body has {len(body)} bytes, header says {header.body_len}")
    if xxhash.xxh3_128_digest(body) != header.body_checksum:
        raise SnapshotError("body_checksum", path)
    if header.state_version not in STATE_VERSIONS_READ:
        raise SnapshotError("unknown_state_version", path, f"state version {header.state_version}, this build restores "
                            f"{', '.join(map(str, STATE_VERSIONS_READ))}")
