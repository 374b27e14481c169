"""Pruning WAL segments that a snapshot has made unnecessary (room: jex.journal).

A segment may go when every record in it is older than `keep_from_seq`,
the lowest seq that must stay readable (the oldest retained snapshot's seq:
its own record is kept so that the snapshot's chain value can still be
checked against the log). Only a prefix of the segments ever qualifies, and
the active (last) segment never does.

Crash safety: segments are deleted oldest first, and the directory is
fsynced after each unlink, so whatever a crash (or a power loss) leaves is
a contiguous suffix of the log. The scanner accepts a log that starts after
seq 1 (its first header carries a non-zero prev_chain), so a half-finished
prune is simply a log with a few more old segments; the next prune finishes
it. A gap can never appear: that would need a newer segment to vanish
before an older one.

Kill point `mid_prune` fires after each unlink (JEX_KILLPOINT=mid_prune:N).
"""

from __future__ import annotations

from pathlib import Path

from jex import killpoints
from jex.journal.segment import SegmentFile, list_segments
from jex.journal.storage import OsStorage, Storage


def plan(segments: list[SegmentFile], keep_from_seq: int) -> list[SegmentFile]:
    """The segments (oldest first) whose records all have seq < keep_from_seq.

    `segments` in segid order, as list_segments gives them. A segment's
    records end where its successor's begin, so segment i qualifies iff
    segments[i + 1].first_seq <= keep_from_seq; the last never does. O(n).

    >>> from pathlib import Path
    >>> segs = [SegmentFile(Path(str(i)), i, first) for i, first in enumerate((1, 100, 200))]
    >>> [s.segid for s in plan(segs, 150)]
    [0]
    >>> [s.segid for s in plan(segs, 200)]
    [0, 1]
    >>> [s.segid for s in plan(segs, 10**9)]
    [0, 1]
    """
    out = []
    for current, successor in zip(segments, segments[1:]):
        if successor.first_seq > keep_from_seq or successor.segid != current.segid + 1:
            break
        out.append(current)
    return out


def prune(wal_dir: Path | str, keep_from_seq: int, *, storage: Storage | None = None) -> list[Path]:
    """Delete the planned segments oldest first, each unlink made durable
    before the next. Returns the deleted paths. Raises OSError."""
    storage = storage or OsStorage()
    wal_dir = Path(wal_dir)
    doomed = plan(list_segments(storage, wal_dir).segments, keep_from_seq)
    deleted = []
    for segment in doomed:
        storage.unlink(segment.path)
        storage.fsync_dir(wal_dir)
        deleted.append(segment.path)
        killpoints.hit("mid_prune")
    return deleted
