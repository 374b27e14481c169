"""Snapshot files on disk: write protocol, mapped load, listing, deletion
(room: jex.snapshots).

Write protocol (crash-safe at every step; spec/journal.md "Snapshots"):

    encode the state -> write snap-<seq>.tmp (a NEW file; a live mapping is
    never modified) -> fdatasync -> rename to snap-<seq>.snap -> fsync dir

A crash before the rename leaves an orphan `.tmp`, which every reader
ignores and the node deletes on open. Kill points (JEX_KILLPOINT) mark each
step for the crash drills:

    snapshot_tmp_written   the temp file is written, not yet synced
    mid_snapshot           the temp file is synced, not yet renamed
    snapshot_renamed       renamed, directory not yet synced
    snapshot_durable       the directory is synced (pruning comes next)

Loading maps the file (mmap) and decodes from the mapping: the header
checksum, the size and the body checksum are verified before msgpack sees a
byte, then `restore_state` rebuilds the engine and its digest must equal the
header's. Decoding and restoring allocate millions of containers, so the
cyclic GC is paused meanwhile (it would otherwise rescan the growing heap
again and again; measured 2-3x slower).

File operations go through a `files` object with the primitives of
jex.journal.storage.Storage (open, pwrite_all, fdatasync, close, rename,
fsync_dir, unlink, listdir, mkdir, exists), so tests can pass the journal's
fault-injecting FaultStorage. This room does not import the journal: the
default is the small OsFiles below.
"""

from __future__ import annotations

import gc
import mmap
import os
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import msgspec
import xxhash

from jex import killpoints
from jex.core.state import STATE_VERSION, export_state, restore_state
from jex.snapshots import gcpolicy, legacy
from jex.snapshots.format import (
    HEADER_BYTES,
    TMP_SUFFIX,
    SnapshotError,
    SnapshotHeader,
    check_body,
    decode_header,
    file_name,
    make_header,
    seq_of_name,
    tmp_name,
)

SNAPSHOT_DIR_NAME = "snapshots"
SNAPSHOTS_KEPT = 2  # The newest valid snapshots kept; the WAL is kept from the older one on.
SNAPSHOT_FILES_MAX = 10_000  # More entries than this in the snapshot directory is refused.

WRITE_STEPS = ("snapshot_tmp_written", "mid_snapshot", "snapshot_renamed", "snapshot_durable")

_encoder = msgspec.msgpack.Encoder()
_decoder = msgspec.msgpack.Decoder()


class OsFiles:
    """The Storage primitives snapshots use, on the real OS (the default)."""

    def open(self, path: Path, *, write: bool = False, create: bool = False) -> int:
        flags = os.O_CLOEXEC | (os.O_RDWR | os.O_CREAT | os.O_TRUNC if create else os.O_RDWR if write else os.O_RDONLY)
        return os.open(path, flags, 0o644)

    def close(self, fd: int) -> None:
        os.close(fd)

    def pwrite_all(self, fd: int, data: bytes | memoryview, offset: int) -> None:
        view = memoryview(data)
        while view:
            written = os.pwrite(fd, view, offset)
            if written <= 0:
                raise OSError(5, "write made no progress")
            view, offset = view[written:], offset + written

    def fdatasync(self, fd: int) -> None:
        os.fdatasync(fd)

    def fsync_dir(self, path: Path) -> None:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    def rename(self, src: Path, dst: Path) -> None:
        os.rename(src, dst)

    def unlink(self, path: Path) -> None:
        os.unlink(path)

    def listdir(self, path: Path) -> list[str]:
        return sorted(os.listdir(path))

    def mkdir(self, path: Path) -> None:
        if Path(path).is_dir():
            return
        os.makedirs(path, exist_ok=True)
        self.fsync_dir(Path(path).parent)

    def exists(self, path: Path) -> bool:
        return os.path.exists(path)


OS_FILES = OsFiles()


def snapshot_dir(data_dir: Path | str) -> Path:
    return Path(data_dir) / SNAPSHOT_DIR_NAME


@dataclass(frozen=True)
class SnapshotFile:
    path: Path
    seq: int  # from the file name; the header must agree


@dataclass(frozen=True)
class Listing:
    snapshots: list[SnapshotFile]  # ascending seq
    tmp_files: list[Path]  # orphans of interrupted writes


def list_snapshots(directory: Path, files=OS_FILES) -> Listing:
    """Snapshot files of `directory` (ascending seq). Other names are ignored."""
    directory = Path(directory)
    if not files.exists(directory):
        return Listing([], [])
    names = files.listdir(directory)
    if len(names) > SNAPSHOT_FILES_MAX:
        raise OSError(f"{directory}: more than {SNAPSHOT_FILES_MAX} entries")
    snaps, tmps = [], []
    for name in names:
        seq = seq_of_name(name)
        if seq is not None:
            snaps.append(SnapshotFile(directory / name, seq))
        elif name.startswith("snap-") and name.endswith(TMP_SUFFIX):
            tmps.append(directory / name)
    snaps.sort(key=lambda s: s.seq)
    return Listing(snaps, tmps)


@contextmanager
def gc_paused() -> Iterator[None]:
    """Pause the cyclic GC while building or tearing down millions of containers."""
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was:
            gc.enable()


def _keep_as_old() -> None:
    """Move every object the collector tracks into its oldest generation,
    without traversing any (gc.freeze() then gc.unfreeze()). Called by a
    load that succeeded, with the collector paused: the restored engine's
    millions of objects are long-lived by construction, and left in the
    youngest generation the first collections after the pause would
    traverse every one of them, generation by generation (measured ~0.9 s
    for the first alone at a million orders). Skipped where something else
    has frozen objects (a caller's gc.freeze(), e.g. a node whose snapshot
    child is running, or whose recovered heap gcpolicy.py keeps frozen):
    unfreeze would thaw those too. The oldest generation is not the end of
    it: the first full collection still traverses it, which a node avoids
    by freezing for good once recovered (gcpolicy.freeze_long_lived)."""
    if not gcpolicy.long_lived() and gc.get_freeze_count() == 0:  # the count walks the frozen list: ask first
        gc.freeze()
        gc.unfreeze()


# --------------------------------------------------------------------- write


@dataclass
class Encoded:
    """A snapshot image ready to write, with what making it cost."""

    header: SnapshotHeader
    body: bytes
    seconds: dict[str, float] = field(default_factory=dict)


def encode(engine, *, seq: int, chain: bytes, ts_ns: int) -> Encoded:
    """Export, encode and digest the engine's state at WAL position (seq, chain).

    The engine must hold exactly the records <= seq (the caller snapshots at
    a batch boundary where all of them are durable). O(state).
    """
    if engine.seq > seq:
        raise ValueError(f"engine is at seq {engine.seq}, after the snapshot seq {seq}")
    seconds: dict[str, float] = {}
    with gc_paused():
        t0 = time.perf_counter()
        state = export_state(engine)
        t1 = time.perf_counter()
        body = _encoder.encode(state)
        del state
        t2 = time.perf_counter()
        digest = xxhash.xxh3_128_hexdigest(body)  # Engine.digest() is this hash of this encoding
        t3 = time.perf_counter()
    seconds.update(export_s=t1 - t0, encode_s=t2 - t1, digest_s=t3 - t2)
    return Encoded(make_header(seq, ts_ns, chain, digest, body), body, seconds)


def write(directory: Path, image: Encoded, files=OS_FILES) -> Path:
    """Write an encoded snapshot durably (tmp -> fdatasync -> rename -> fsync
    dir). Returns the final path. Raises OSError; a failure leaves at most a
    `.tmp` orphan, never a partial `.snap`."""
    directory = Path(directory)
    files.mkdir(directory)
    seq = image.header.seq
    tmp, final = directory / tmp_name(seq), directory / file_name(seq)
    t0 = time.perf_counter()
    fd = files.open(tmp, create=True)
    try:
        files.pwrite_all(fd, image.header.encode(), 0)
        files.pwrite_all(fd, image.body, HEADER_BYTES)
        killpoints.hit("snapshot_tmp_written")
        t1 = time.perf_counter()
        files.fdatasync(fd)
    finally:
        files.close(fd)
    t2 = time.perf_counter()
    killpoints.hit("mid_snapshot")
    files.rename(tmp, final)
    killpoints.hit("snapshot_renamed")
    files.fsync_dir(directory)
    killpoints.hit("snapshot_durable")
    image.seconds.update(write_s=t1 - t0, sync_s=(t2 - t1) + (time.perf_counter() - t2))
    return final


def take(directory: Path, engine, *, seq: int, chain: bytes, ts_ns: int, files=OS_FILES) -> tuple[Path, Encoded]:
    """encode() + write(): a durable snapshot of `engine` at (seq, chain)."""
    image = encode(engine, seq=seq, chain=chain, ts_ns=ts_ns)
    return write(directory, image, files), image


def remove_orphans(directory: Path, files=OS_FILES) -> list[Path]:
    """Delete `.tmp` files of interrupted writes (only the lock holder may)."""
    orphans = list_snapshots(directory, files).tmp_files
    for path in orphans:
        files.unlink(path)
    if orphans:
        files.fsync_dir(Path(directory))
    return orphans


def delete(paths: list[Path], directory: Path, files=OS_FILES) -> None:
    """Delete snapshot files, oldest first, each made durable before the next."""
    for path in sorted(paths, key=lambda p: seq_of_name(p.name) or -1):
        files.unlink(path)
        files.fsync_dir(Path(directory))
        killpoints.hit("mid_prune")


# ---------------------------------------------------------------------- load


@contextmanager
def mapped(path: Path) -> Iterator[tuple[memoryview, SnapshotHeader]]:
    """Map a snapshot read-only and verify its header and size. Yields
    (view of the whole file, header); the view dies when the block ends."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError as error:
        raise SnapshotError("unreadable", path, error.strerror or str(error)) from None
    try:
        size = os.fstat(fd).st_size
        if size < HEADER_BYTES:
            raise SnapshotError("short_file", path, f"{size} bytes, header needs {HEADER_BYTES}")
        try:
            mapping = mmap.mmap(fd, size, access=mmap.ACCESS_READ)
        except (OSError, ValueError) as error:
            raise SnapshotError("unreadable", path, str(error)) from None
    finally:
        os.close(fd)
    view = memoryview(mapping)
    try:
        header = decode_header(view, path=path, file_bytes=size)
        yield view, header
    finally:
        view.release()
        mapping.close()


def read_header(path: Path) -> SnapshotHeader:
    """The verified header (and size) of a snapshot file. O(1)."""
    with mapped(path) as (_, header):
        return header


def verify(path: Path) -> SnapshotHeader:
    """Header, size and body checksum. O(file bytes), no decoding."""
    with mapped(path) as (view, header):
        with view[HEADER_BYTES:] as body:
            check_body(header, body, path=path)
        return header


@dataclass
class Loaded:
    engine: object
    header: SnapshotHeader
    seconds: dict[str, float]


def load(path: Path, *, check_digest: bool = True) -> Loaded:
    """Map, verify, decode and restore a snapshot; check the restored
    engine's digest against the header. Raises SnapshotError only: a body
    whose checksums are right but whose content restore cannot make sense
    of (wrong shapes, wrong types, found by the fuzzers) is `state_rejected`,
    whether restore, the seq check or the digest trips over it.

    `check_digest=False` (recovery's fast path) does not recompute the
    restored engine's digest (`Engine.digest()` exports and hashes the whole
    state again: seconds at a million orders). The digest is by definition
    the xxh3-128 of the exported state's encoding, which is the body, so the
    header's digest must equal its body checksum, which the mapping's check
    has just proven to be the body's hash: that O(1) comparison stands in
    for it (`digest_mismatch`, before decoding). What it does not re-prove
    is that restore_state rebuilds exactly the state that was exported; the
    default (`check_digest=True`, what `jex replay --verify` and the tests
    use) does."""
    seconds: dict[str, float] = {}
    with gc_paused():
        t0 = time.perf_counter()
        with mapped(path) as (view, header):
            with view[HEADER_BYTES:] as body:
                check_body(header, body, path=path)
                if not check_digest and header.digest != header.body_checksum:
                    raise SnapshotError("digest_mismatch", path, f"header digest {header.digest_hex} is not the "
                                        f"hash of its body {header.body_checksum.hex()}")
                t1 = time.perf_counter()
                try:
                    data = _decoder.decode(body)
                except (msgspec.MsgspecError, ValueError, RecursionError) as error:  # ValueError: bad UTF-8
                    raise SnapshotError("undecodable_body", path, str(error).splitlines()[0] if str(error) else "") from None
        t2 = time.perf_counter()
        try:
            engine = legacy.restore_v1(data) if header.state_version == legacy.STATE_VERSION_1 else restore_state(data)
            del data
            t3 = time.perf_counter()
            seconds.update(map_verify_s=t1 - t0, decode_s=t2 - t1, restore_s=t3 - t2)
            _check_restored(engine, header, path, check_digest, seconds)
            _keep_as_old()
        except SnapshotError:
            raise
        except Exception as error:  # noqa: BLE001 - any failure of a checksummed body is one typed refusal
            raise SnapshotError("state_rejected", path, f"{type(error).__name__}: {error}") from None
    return Loaded(engine, header, seconds)


def _check_restored(engine, header: SnapshotHeader, path: Path, check_digest: bool, seconds: dict) -> None:
    """The state's own seq must not be after the header's, and its digest
    must be the header's. May raise anything a malformed state provokes."""
    if not isinstance(engine.seq, int) or engine.seq > header.seq:
        raise SnapshotError("seq_mismatch", path, f"state is at seq {engine.seq!r}, header says {header.seq}")
    if check_digest:
        started = time.perf_counter()
        cold = getattr(engine, "cold_registry", None)
        if cold is not None:
            cold.check()  # kept as stored, so the re-export below would not prove it
        digest = state_digest(engine, header.state_version)
        seconds["digest_s"] = time.perf_counter() - started
        if digest != header.digest_hex:
            raise SnapshotError("digest_mismatch", path, f"restored {digest}, header {header.digest_hex}")


def state_digest(engine, state_version: int = STATE_VERSION) -> str:
    """The engine's digest as a snapshot of ``state_version`` states it in its
    header: ``Engine.digest()`` for the current version, the hash of the
    version 2 export for version 2 (its registry as columns of strings), the
    version 1 hash (snapshots/legacy.py) for version 1. Compare a header's
    digest with this, not with ``Engine.digest()``, where older files may
    still be around."""
    if state_version == STATE_VERSION:
        return engine.digest()
    if state_version == 2:
        return xxhash.xxh3_128_hexdigest(msgspec.msgpack.encode(export_state(engine, 2)))
    if state_version == legacy.STATE_VERSION_1:
        return legacy.digest_v1(engine)
    raise ValueError(f"unknown state version {state_version}")
