"""FaultStorage: the fault-injecting twin of Storage (room: jex.journal).

It works over REAL files in a real directory, so the journal under test
runs its real code paths, but it also remembers, for every file, the image
a disk would hold after a power loss: the bytes made durable by fdatasync,
plus which byte ranges have been written since (unsynced). Directory
entries are modelled the same way: a created, renamed or unlinked name is
durable only after fsync_dir of its directory, so an un-fsynced new file
does not survive a power loss and an un-fsynced rename is undone.

Faults it can inject:
    power_loss(mode, rng)   rewrite the real files to a post-crash image:
        "drop_unsynced"     only synced data survives
        "keep_random"       each dirty 4 KiB block independently keeps its new
                            data, keeps the old, is torn at 512-byte sector
                            granularity, or has its unsynced bytes zeroed
    fail(op, ...)           EIO/ENOSPC/any errno on the Nth pwrite, fdatasync,
                            fsync_dir, rename, open, allocate or unlink; or a
                            short write (pwrite returns fewer bytes)
    cut_power_after(n)      after n more operations every operation raises
                            PowerCut (the machine died mid-protocol); call
                            power_loss() next
    cut_power_before(op, n) the same, just before the nth next `op` (aims the
                            crash at a moment with unsynced data)
    flip_bit(path, offset)  media fault: flips a bit in both the live and
                            the durable image

Simplifications, stated so nobody relies on more: directories themselves
(mkdir) are durable at once; after a failed fdatasync the written data stays
dirty (Linux may drop it, a later power loss here may drop it too); file
sizes follow the kept data. A power loss only ever replaces unsynced bytes,
sector by sector, with their old image, their new image or zeros: bytes that
were durable and not rewritten since stay as they were. (The journal never
rewrites acknowledged bytes; an O_DIRECT-style rewrite of a partial block
writes them back unchanged.)

All operations hold one lock, so the journal's background segment preparer
can use the same instance. Real fsyncs are skipped unless real_sync=True:
the model, not the device, decides what survives, and tests stay fast.
"""

from __future__ import annotations

import errno
import os
import random
import threading
from dataclasses import dataclass, field
from pathlib import Path

from jex.journal.limits import BLOCK_BYTES, SECTOR_BYTES
from jex.journal.storage import Storage

POWER_LOSS_MODES = ("drop_unsynced", "keep_random")
FAULT_OPS = frozenset({"open", "pwrite", "allocate", "fdatasync", "fsync_dir", "rename", "unlink"})


class PowerCut(BaseException):
    """The simulated machine lost power: every operation fails until power_loss().

    A BaseException so that no `except Exception` in the code under test can
    swallow it and carry on as if the machine were alive.
    """


@dataclass
class _File:
    durable: bytearray  # What survives a power loss.
    dirty: list[tuple[int, int]] = field(default_factory=list)  # Unsynced [start, end) ranges.


@dataclass
class _Rule:
    op: str
    error: int
    countdown: int  # Matching calls to let through before firing.
    times: int  # How many calls fire once triggered (-1: forever).
    short: bool
    path_contains: str | None


class FaultStorage(Storage):
    """Storage over real files under `root` with a durable-image model."""

    def __init__(self, root: Path, *, real_sync: bool = False) -> None:
        self.root = _abs(root)
        self.real_sync = real_sync  # The model decides durability; real fsyncs only cost time.
        self.op_counts: dict[str, int] = {}
        self._mutex = threading.RLock()
        self._files: dict[int, _File] = {}
        self._names: dict[Path, int] = {}  # Current directory entries.
        self._durable_names: dict[Path, int] = {}  # Entries that survive a power loss.
        self._fds: dict[int, int] = {}  # Real fd -> file id.
        self._fd_paths: dict[int, Path] = {}
        self._dead_fds: set[int] = set()
        self._next_id = 1
        self._rules: list[_Rule] = []
        self._ops_until_cut: int | None = None
        self._cut_before: list | None = None  # [op, countdown]
        self.op_count = 0
        self.faults_fired = 0
        for dirpath, _, filenames in os.walk(self.root):
            for name in filenames:
                self._adopt(_abs(Path(dirpath) / name))

    # --- fault configuration -----------------------------------------------

    def fail(
        self,
        op: str,
        *,
        error: int = errno.EIO,
        nth: int = 1,
        times: int = 1,
        short: bool = False,
        path_contains: str | None = None,
    ) -> None:
        """Make the `nth` next matching `op` fail with `error` (or, for
        pwrite with short=True, write only part and return the count);
        `times` calls fire in a row, -1 for every call from then on."""
        assert op in FAULT_OPS, op
        assert not short or op == "pwrite"
        with self._mutex:
            self._rules.append(_Rule(op, error, nth - 1, times, short, path_contains))

    def cut_power_after(self, ops: int) -> None:
        """After `ops` more operations, every operation raises PowerCut."""
        with self._mutex:
            self._ops_until_cut = ops

    def cut_power_before(self, op: str, nth: int = 1) -> None:
        """Cut power just before the `nth` next `op` (e.g. the fdatasync that
        would have made a batch durable): aims crashes where data is unsynced."""
        assert op in FAULT_OPS and nth >= 1
        with self._mutex:
            self._cut_before = [op, nth]

    def flip_bit(self, path: Path, offset: int, bit: int = 0) -> None:
        """Flip one bit on the 'medium': in the live file and the durable image."""
        path = _abs(path)
        with self._mutex:
            with open(path, "r+b") as f:
                f.seek(offset)
                byte = f.read(1)[0]
                f.seek(offset)
                f.write(bytes([byte ^ (1 << bit)]))
            state = self._files[self._names[path]]
            if offset < len(state.durable):
                state.durable[offset] ^= 1 << bit

    def unsynced_bytes(self) -> int:
        """Total unsynced bytes across files (tests use it to aim crashes)."""
        with self._mutex:
            return sum(end - start for f in self._files.values() for start, end in f.dirty)

    # --- power loss ---------------------------------------------------------

    def power_loss(self, mode: str, rng: random.Random) -> None:
        """Rewrite the real files under root to what a disk might hold after
        losing power now; every open handle becomes dead."""
        assert mode in POWER_LOSS_MODES, mode
        with self._mutex:
            for fd in list(self._fds):
                os.close(fd)
                self._dead_fds.add(fd)
            self._fds.clear()
            self._fd_paths.clear()
            images = {fid: self._image(fid, mode, rng) for fid in set(self._durable_names.values())}
            for path in list(self._names):
                if path not in self._durable_names and os.path.exists(path):
                    os.unlink(path)
            for path, fid in self._durable_names.items():
                with open(path, "wb") as f:
                    f.write(images[fid])
            self._files = {fid: _File(bytearray(image)) for fid, image in images.items()}
            self._names = dict(self._durable_names)
            self._ops_until_cut = None
            self._cut_before = None
            self._rules.clear()

    def _image(self, fid: int, mode: str, rng: random.Random) -> bytes:
        state = self._files[fid]
        if mode == "drop_unsynced" or not state.dirty:
            return bytes(state.durable)
        current = self._current_content(fid)
        if current is None:
            return bytes(state.durable)
        image = bytearray(state.durable)
        image.extend(bytes(max(0, len(current) - len(image))))
        kept_end = len(state.durable)
        for block in sorted({b for s, e in state.dirty for b in range(s // BLOCK_BYTES, _ceil(e, BLOCK_BYTES))}):
            fate = rng.choices(("new", "old", "torn", "zero"), weights=(35, 25, 25, 15))[0]
            lo, hi = block * BLOCK_BYTES, min((block + 1) * BLOCK_BYTES, len(current))
            for start, end in state.dirty:
                a, b = max(start, lo), min(end, hi)
                if a >= b:
                    continue
                if fate == "zero":
                    image[a:b] = bytes(b - a)
                    continue
                for sector_lo in range(a - a % SECTOR_BYTES, b, SECTOR_BYTES):
                    take = fate == "new" or (fate == "torn" and rng.random() < 0.5)
                    s, e = max(a, sector_lo), min(b, sector_lo + SECTOR_BYTES)
                    if take:
                        image[s:e] = current[s:e]
                        kept_end = max(kept_end, e)
        return bytes(image[: max(kept_end, len(state.durable))])

    def _current_content(self, fid: int) -> bytes | None:
        for path, other in self._names.items():
            if other == fid and os.path.exists(path):
                with open(path, "rb") as f:
                    return f.read()
        return None

    # --- Storage primitives ---------------------------------------------------

    def open(self, path: Path, *, write: bool = False, create: bool = False) -> int:
        path = _abs(path)
        with self._mutex:
            self._enter("open", path)
            fd = super().open(path, write=write, create=create)
            if create:
                fid = self._new_file(bytearray())
                self._names[path] = fid
            else:
                fid = self._names.get(path) or self._adopt(path)
            self._fds[fd] = fid
            self._fd_paths[fd] = path
            return fd

    def close(self, fd: int) -> None:
        with self._mutex:
            if fd in self._dead_fds:
                self._dead_fds.discard(fd)
                return
            self._fds.pop(fd, None)
            self._fd_paths.pop(fd, None)
            super().close(fd)

    def size(self, fd: int) -> int:
        with self._mutex:
            self._enter("size", self._path_of(fd))
            return super().size(fd)

    def pread(self, fd: int, length: int, offset: int) -> bytes:
        with self._mutex:
            self._enter("pread", self._path_of(fd))
            return super().pread(fd, length, offset)

    def pread_into(self, fd: int, buffer: bytearray | memoryview, offset: int) -> int:
        with self._mutex:
            self._enter("pread", self._path_of(fd))
            return super().pread_into(fd, buffer, offset)

    def pwrite(self, fd: int, data: bytes | bytearray | memoryview, offset: int) -> int:
        with self._mutex:
            rule = self._enter("pwrite", self._path_of(fd))
            if rule is not None:
                data = memoryview(data)[: max(1, len(data) // 2)]
            written = super().pwrite(fd, data, offset)
            self._files[self._fds[fd]].dirty.append((offset, offset + written))
            return written

    def allocate(self, fd: int, length: int) -> None:
        with self._mutex:
            self._enter("allocate", self._path_of(fd))
            before = super().size(fd)
            super().allocate(fd, length)
            if length > before:
                self._files[self._fds[fd]].dirty.append((before, length))

    def fdatasync(self, fd: int) -> None:
        with self._mutex:
            self._enter("fdatasync", self._path_of(fd))
            if self.real_sync:
                super().fdatasync(fd)
            state = self._files[self._fds[fd]]
            state.durable = bytearray(super().pread(fd, super().size(fd), 0))
            state.dirty.clear()

    def fsync_dir(self, path: Path) -> None:
        path = _abs(path)
        with self._mutex:
            self._enter("fsync_dir", path)
            if self.real_sync:
                super().fsync_dir(path)
            for name in [n for n in self._durable_names if n.parent == path]:
                if self._names.get(name) != self._durable_names[name]:
                    del self._durable_names[name]
            for name, fid in self._names.items():
                if name.parent == path:
                    self._durable_names[name] = fid

    def rename(self, src: Path, dst: Path) -> None:
        src, dst = _abs(src), _abs(dst)
        with self._mutex:
            self._enter("rename", src)
            super().rename(src, dst)
            fid = self._names.pop(src, None) or self._new_file(bytearray())
            self._names[dst] = fid

    def unlink(self, path: Path) -> None:
        path = _abs(path)
        with self._mutex:
            self._enter("unlink", path)
            super().unlink(path)
            self._names.pop(path, None)

    def listdir(self, path: Path) -> list[str]:
        with self._mutex:
            self._enter("listdir", _abs(path))
            return super().listdir(path)

    def mkdir(self, path: Path) -> None:
        with self._mutex:
            self._enter("mkdir", _abs(path))
            super().mkdir(path)

    def exists(self, path: Path) -> bool:
        with self._mutex:
            self._enter("exists", _abs(path))
            return super().exists(path)

    # --- internals ---------------------------------------------------------------

    def _enter(self, op: str, path: Path | None) -> _Rule | None:
        """Count the operation, apply a power cut, fire a matching rule.
        Returns the rule for a short write; raises OSError for an error."""
        self.op_count += 1
        self.op_counts[op] = self.op_counts.get(op, 0) + 1
        if self._cut_before is not None and self._cut_before[0] == op:
            self._cut_before[1] -= 1
            if self._cut_before[1] == 0:
                self._ops_until_cut = 0
        if self._ops_until_cut is not None:
            if self._ops_until_cut <= 0:
                raise PowerCut(f"power cut before {op} {path}")
            self._ops_until_cut -= 1
        for rule in self._rules:
            if rule.op != op or (rule.path_contains and rule.path_contains not in str(path)):
                continue
            if rule.countdown > 0:
                rule.countdown -= 1
                continue
            if rule.times == 0:
                continue
            rule.times -= 1 if rule.times > 0 else 0
            self.faults_fired += 1
            if rule.short:
                return rule
            raise OSError(rule.error, f"injected {os.strerror(rule.error)}", str(path))
        return None

    def _path_of(self, fd: int) -> Path | None:
        if fd in self._dead_fds:
            raise OSError(errno.EBADF, "handle died in a power loss")
        return self._fd_paths.get(fd)

    def _new_file(self, durable: bytearray) -> int:
        fid, self._next_id = self._next_id, self._next_id + 1
        self._files[fid] = _File(durable)
        return fid

    def _adopt(self, path: Path) -> int:
        """Track a file that existed before: all of it is durable."""
        with open(path, "rb") as f:
            fid = self._new_file(bytearray(f.read()))
        self._names[path] = fid
        self._durable_names[path] = fid
        return fid


def _abs(path: Path | str) -> Path:
    return Path(os.path.abspath(path))


def _ceil(n: int, unit: int) -> int:
    return -(-n // unit)
