"""Segment files of the write-ahead log (room: jex.journal).

A segment is `wal/<segid:016x>-<first_seq:016x>.wal`, preallocated and
zero-filled, starting with a 4096-byte header:

    off size field
      0   8  magic "JEXWAL\\0\\0"
      8   2  version
     10   2  flags (FLAG_PREV_UNSEALED)
     12   8  segid
     20   8  segment_nonce   random per file: the only randomness, outside the state machine
     28   8  first_seq       seq of the first record this segment will hold
     36  16  prev_chain      chain value of the previous segment's last record
     52   .  zero padding
   4080  16  xxh3-128 of bytes 0..4079

Creation protocol (crash-safe at every step): temp file -> preallocate +
zero-fill -> header -> fdatasync -> rename -> fsync directory. A crash
before the rename leaves an orphan `.tmp`, which readers ignore and
Journal.open deletes. The zero-fill (~0.1 s for 64 MiB here) is done ahead
of time by SegmentPreparer in a background thread, as etcd's WAL file
pipeline does, so a rollover does not stall commits.

The previous segment normally ends with a SEAL record and its successor's
header continues the chain from that SEAL. After a torn-tail repair the old
segment cannot be sealed (the SEAL would consume the seq the next command
must get), so the successor says so with FLAG_PREV_UNSEALED.
"""

from __future__ import annotations

import os
import re
import struct
import threading
from dataclasses import dataclass
from pathlib import Path

import xxhash

from jex.journal.errors import SegmentHeaderError
from jex.journal.limits import CHECKSUM_BYTES, SEGMENT_HEADER_BYTES, SEGMENTS_MAX
from jex.journal.record import ZERO_CHAIN
from jex.journal.storage import Storage

SEGMENT_MAGIC = b"JEXWAL\0\0"
SEGMENT_VERSION = 1
FLAG_PREV_UNSEALED = 0x0001  # The previous segment ends without a SEAL (closed by repair).
FLAGS_KNOWN = FLAG_PREV_UNSEALED

_FIELDS = struct.Struct("<8sHHQQQ16s")
_CHECKSUM_AT = SEGMENT_HEADER_BYTES - CHECKSUM_BYTES

SEGMENT_SUFFIX = ".wal"
TMP_SUFFIX = ".tmp"
_NAME = re.compile(r"^([0-9a-f]{16})-([0-9a-f]{16})\.wal$")


@dataclass(frozen=True)
class SegmentHeader:
    segid: int
    nonce: int
    first_seq: int
    prev_chain: bytes
    flags: int = 0

    def encode(self) -> bytes:
        """The 4096-byte header image, checksum included."""
        assert self.flags & ~FLAGS_KNOWN == 0
        assert self.first_seq >= 1 and len(self.prev_chain) == CHECKSUM_BYTES
        head = _FIELDS.pack(
            SEGMENT_MAGIC, SEGMENT_VERSION, self.flags, self.segid, self.nonce,
            self.first_seq, self.prev_chain,
        )  # fmt: skip
        body = head + bytes(_CHECKSUM_AT - len(head))
        return body + xxhash.xxh3_128_digest(body)

    @classmethod
    def decode(cls, data: bytes, *, name: str | None = None) -> SegmentHeader:
        """Decode and verify a header; `name` (the file name) must agree.

        Raises SegmentHeaderError with a stable reason. A first segment with
        first_seq 1 must start the chain from zero.
        """
        if len(data) < SEGMENT_HEADER_BYTES:
            raise SegmentHeaderError("short_header", f"{len(data)} bytes")
        data = data[:SEGMENT_HEADER_BYTES]
        if not any(data):
            raise SegmentHeaderError("blank_header")
        magic, version, flags, segid, nonce, first_seq, prev_chain = _FIELDS.unpack_from(data)
        if magic != SEGMENT_MAGIC:
            raise SegmentHeaderError("bad_magic", repr(magic))
        if xxhash.xxh3_128_digest(data[:_CHECKSUM_AT]) != data[_CHECKSUM_AT:]:
            raise SegmentHeaderError("header_checksum")
        if version != SEGMENT_VERSION:
            raise SegmentHeaderError("unknown_version", f"version {version}")
        if flags & ~FLAGS_KNOWN:
            raise SegmentHeaderError("unknown_flags", f"flags 0x{flags:04x}")
        if any(data[_FIELDS.size : _CHECKSUM_AT]):
            raise SegmentHeaderError("bad_padding")
        if first_seq < 1:
            raise SegmentHeaderError("bad_first_seq", f"first_seq {first_seq}")
        header = cls(segid, nonce, first_seq, prev_chain, flags)
        if name is not None and name != header.file_name:
            raise SegmentHeaderError("name_mismatch", f"header says {header.file_name}")
        if first_seq == 1 and prev_chain != ZERO_CHAIN:
            raise SegmentHeaderError("genesis_chain", "first_seq 1 with a non-zero prev_chain")
        return header

    @property
    def file_name(self) -> str:
        return segment_name(self.segid, self.first_seq)


def segment_name(segid: int, first_seq: int) -> str:
    return f"{segid:016x}-{first_seq:016x}{SEGMENT_SUFFIX}"


def tmp_name(segid: int) -> str:
    return f"{segid:016x}{TMP_SUFFIX}"


@dataclass(frozen=True)
class SegmentFile:
    """A segment file found in the WAL directory (name parsed, not yet read)."""

    path: Path
    segid: int
    first_seq: int


@dataclass(frozen=True)
class Listing:
    segments: list[SegmentFile]  # sorted by segid
    tmp_files: list[Path]  # orphans of an interrupted creation
    bad_names: list[Path]  # *.wal files whose name does not parse, or duplicate segids


def list_segments(storage: Storage, wal_dir: Path) -> Listing:
    """Segment files of `wal_dir` in segid order. Other files are ignored."""
    segments, tmp_files, bad_names = [], [], []
    names = storage.listdir(wal_dir) if storage.exists(wal_dir) else []
    if len(names) > SEGMENTS_MAX:
        raise ValueError(f"{wal_dir}: more than {SEGMENTS_MAX} files")
    for name in names:
        if name.endswith(TMP_SUFFIX):
            tmp_files.append(wal_dir / name)
        elif name.endswith(SEGMENT_SUFFIX):
            match = _NAME.match(name)
            if match is None:
                bad_names.append(wal_dir / name)
                continue
            segid, first_seq = int(match[1], 16), int(match[2], 16)
            segments.append(SegmentFile(wal_dir / name, segid, first_seq))
    segments.sort(key=lambda s: s.segid)
    for previous, current in zip(segments, segments[1:]):
        if previous.segid == current.segid:
            bad_names.append(current.path)
    return Listing(segments, tmp_files, bad_names)


def new_nonce() -> int:
    """A random non-zero 64-bit segment nonce (os.urandom: the only randomness)."""
    while True:
        nonce = int.from_bytes(os.urandom(8), "little")
        if nonce:
            return nonce


def make_zeroed_file(storage: Storage, path: Path, size_bytes: int, *, sync: bool) -> None:
    """Create `path` preallocated and zero-filled to `size_bytes`."""
    fd = storage.open(path, create=True)
    try:
        storage.allocate(fd, size_bytes)
        storage.zero_fill(fd, 0, size_bytes)
        if sync:
            storage.fdatasync(fd)
    finally:
        storage.close(fd)


def create_segment(
    storage: Storage,
    wal_dir: Path,
    header: SegmentHeader,
    size_bytes: int,
    preparer: SegmentPreparer | None = None,
) -> Path:
    """Create a segment durably: tmp -> zero-fill -> header -> fdatasync ->
    rename -> fsync dir. Uses the preparer's zero-filled tmp file when it has
    one ready for this segid. Returns the final path."""
    assert size_bytes > SEGMENT_HEADER_BYTES
    tmp = wal_dir / tmp_name(header.segid)
    if preparer is None or not preparer.take(header.segid):
        make_zeroed_file(storage, tmp, size_bytes, sync=False)
    fd = storage.open(tmp, write=True)
    try:
        storage.pwrite_all(fd, header.encode(), 0)
        storage.fdatasync(fd)
    finally:
        storage.close(fd)
    final = wal_dir / header.file_name
    storage.rename(tmp, final)
    storage.fsync_dir(wal_dir)
    return final


class SegmentPreparer:
    """Zero-fills the next segment's temp file in a background thread.

    Zero-filling 64 MiB and syncing it takes ~0.1 s; doing it inside a
    rollover would stall every commit behind it. The thread only creates
    `<segid>.tmp` (an orphan to every reader), so a crash at any point
    leaves nothing to recover. `take()` joins the thread and reports
    whether a fully synced file for that segid is ready. At most one
    preparation runs at a time.
    """

    def __init__(self, storage: Storage, wal_dir: Path, size_bytes: int) -> None:
        self._storage = storage
        self._wal_dir = wal_dir
        self._size_bytes = size_bytes
        self._thread: threading.Thread | None = None
        self._segid: int | None = None
        self._ready = False

    def start(self, segid: int) -> None:
        if self._thread is not None:
            return
        self._segid, self._ready = segid, False
        self._thread = threading.Thread(
            target=self._run, args=(segid,), name=f"jex-wal-prepare-{segid:x}", daemon=True
        )
        self._thread.start()

    def _run(self, segid: int) -> None:
        path = self._wal_dir / tmp_name(segid)
        try:
            make_zeroed_file(self._storage, path, self._size_bytes, sync=True)
        except BaseException:  # noqa: BLE001 - the rollover redoes the work and reports errors itself.
            return
        self._ready = True

    @property
    def busy(self) -> bool:
        """True while a preparation is running."""
        return self._thread is not None and self._thread.is_alive()

    def take(self, segid: int) -> bool:
        """Wait for the preparation; True if `<segid>.tmp` is ready to use."""
        thread, self._thread = self._thread, None
        if thread is None:
            return False
        thread.join()
        return self._ready and self._segid == segid

    def close(self) -> None:
        """Wait for a running preparation; its temp file stays an orphan."""
        self.take(-1)
