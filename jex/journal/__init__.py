"""jex.journal: the write-ahead log room.

Record framing (record.py), segment files (segment.py), storage and its
fault-injecting twin (storage.py, faultfs.py), writer backends (backends.py:
io_uring via liburing, pwrite fallback), the scanner and recovery decision
table (scan.py), chunked reading of segment files (reader.py), the
single-writer lock (lock.py) and the Journal the node uses (writer.py).
Format and protocol: /work/shared/spec/journal.md.
"""

from jex.journal.errors import (
    DirLocked,
    JournalCorrupt,
    JournalError,
    JournalIOError,
    JournalStateError,
    JournalTorn,
    JournalUnproven,
    RecordError,
    SegmentHeaderError,
)
from jex.journal.lock import DirLock
from jex.journal.record import Record, RecordType
from jex.journal.scan import DECISION_TABLE, Decision, Report, read_records, stat, verify
from jex.journal.writer import Journal, repair

__all__ = [
    "DECISION_TABLE",
    "Decision",
    "DirLock",
    "DirLocked",
    "Journal",
    "JournalCorrupt",
    "JournalError",
    "JournalIOError",
    "JournalStateError",
    "JournalTorn",
    "JournalUnproven",
    "Record",
    "RecordError",
    "RecordType",
    "Report",
    "SegmentHeaderError",
    "read_records",
    "repair",
    "stat",
    "verify",
]
