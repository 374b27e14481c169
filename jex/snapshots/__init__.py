"""jex.snapshots: the engine's whole state at one WAL position, in a file
(room: jex.snapshots; may import core only).

A snapshot is an optimisation, never a second source of truth: recovery
uses it only if its checksums verify, its chain value is the WAL's chain
value at its seq, and the restored engine's digest equals the one in its
header; otherwise the previous snapshot, then genesis, is used.

    format.py  header layout, SnapshotError and its reason codes, decoder
    store.py   write protocol (tmp -> fdatasync -> rename -> dir fsync), mmap
               load, listing, deletion
    fork.py    background snapshots in a forked (copy-on-write) child
    heap.py    huge-page compaction of the heap so that fork pauses less
    gcpolicy.py  a recovered node's long-lived heap kept out of the cyclic
               GC's full collections (gc.freeze), and what that may keep
    legacy.py  bodies of earlier state versions (version 1), still read

Selection against the log, recovery, retention and WAL pruning live in
jex.replay.recover (they need the journal); the schedule lives in the node.
"""

from jex.snapshots.format import REASONS, SnapshotError, SnapshotHeader
from jex.snapshots.store import (
    SNAPSHOTS_KEPT,
    WRITE_STEPS,
    Loaded,
    SnapshotFile,
    list_snapshots,
    load,
    read_header,
    snapshot_dir,
    verify,
)

__all__ = [
    "REASONS",
    "SNAPSHOTS_KEPT",
    "WRITE_STEPS",
    "Loaded",
    "SnapshotError",
    "SnapshotFile",
    "SnapshotHeader",
    "list_snapshots",
    "load",
    "read_header",
    "snapshot_dir",
    "verify",
]
