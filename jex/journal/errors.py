"""Typed errors of the write-ahead log room (jex.journal).

Every failure the journal can report is one of these classes, and str() of
each is ONE line that names what an operator needs (file, offset, seq,
reason, holder). The CLI maps them to exit codes:

    JournalCorrupt  -> 3   integrity failure: refuse to start, change nothing
      JournalUnproven -> 3 (a JournalCorrupt) the final batch is incomplete and
                           may or may not have been acknowledged; an operator
                           who knows the machine lost power may quarantine it
    JournalTorn     -> 1   torn tail found while opening with repair=False
    JournalIOError  -> 1   a write or sync failed: nothing was acknowledged
    DirLocked       -> 1   another process holds the data directory
    JournalStateError -> 1 the journal was used out of order (a bug)

RecordError and SegmentHeaderError are decoder errors: the scanner turns
them into a recovery decision and callers normally never see them raw.
Reason codes are stable snake_case strings; tests and tools match on them.
"""

from __future__ import annotations

import os
from pathlib import Path


class JournalError(Exception):
    """Base class of every error raised by jex.journal."""

    exit_code = 1


class RecordError(JournalError):
    """A record failed to decode at a given offset.

    `reason` is one of RECORD_REASONS. The decoder raises it before any
    allocation that depends on an unverified length.
    """

    def __init__(self, reason: str, offset: int, detail: str = "") -> None:
        assert reason in RECORD_REASONS, reason
        self.reason = reason
        self.offset = offset
        self.detail = detail
        super().__init__(_one_line(f"record at offset {offset}: {reason}", detail))


RECORD_REASONS = frozenset(
    {
        "short_record",  # fewer bytes than a header, or payload runs past the end
        "bad_magic",
        "header_checksum",
        "unknown_version",
        "unknown_type",
        "payload_len_too_large",
        "body_checksum",
        "bad_padding",
        "foreign_nonce",
        "seq_gap",  # seq is not previous + 1
        "chain_break",  # parent is not the previous record's header checksum
        "seal_with_payload",
    }
)


class SegmentHeaderError(JournalError):
    """A segment header failed to decode. `reason` is one of SEGMENT_REASONS."""

    def __init__(self, reason: str, detail: str = "") -> None:
        assert reason in SEGMENT_REASONS, reason
        self.reason = reason
        self.detail = detail
        super().__init__(_one_line(f"segment header: {reason}", detail))


SEGMENT_REASONS = frozenset(
    {
        "short_header",
        "blank_header",
        "bad_magic",
        "header_checksum",
        "unknown_version",
        "unknown_flags",
        "bad_first_seq",
        "bad_padding",
        "name_mismatch",
        "genesis_chain",
    }
)


class JournalCorrupt(JournalError):
    """The log holds damage that a torn write cannot explain: refuse to start.

    Raised having changed nothing on disk. `reason` is the name of the
    decision-table row that matched (see scan.DECISION_TABLE); `detail` is
    the decoder's specific reason (e.g. body_checksum, missing_segment).
    """

    exit_code = 3

    def __init__(self, path: Path | str, offset: int, seq: int, reason: str, detail: str = "") -> None:
        self.path = Path(path)
        self.offset = offset
        self.seq = seq
        self.reason = reason
        self.detail = detail
        super().__init__(
            _one_line(f"journal corrupt: {self.path} offset {offset} seq {seq}: {reason}", detail)
        )


class JournalUnproven(JournalCorrupt):
    """The log's final batch (seq first_seq..last_seq) is damaged, and every
    valid record after the damage lies inside it (row unproven_final_batch).

    Either a batch in flight at a power cut landed partly and out of order
    (never acknowledged: nothing is lost by dropping it), or an acknowledged,
    synced batch rotted. The two look the same on disk, so the node refuses
    to start (exit 3, changing nothing) and says what to do: an operator who
    knows the machine lost power runs `jex journal repair --final-batch`,
    which quarantines the batch. `offset` and `seq` name the first damage.
    """

    def __init__(
        self, path: Path | str, offset: int, seq: int, reason: str, detail: str, *, first_seq: int, last_seq: int
    ) -> None:
        super().__init__(path, offset, seq, reason, detail)
        self.first_seq = first_seq
        self.last_seq = last_seq
        self.args = (
            _one_line(f"journal unproven: {self.path} offset {offset} seq {seq}: {reason}", detail),
        )


class JournalTorn(JournalError):
    """A torn tail was found and the caller asked not to repair it."""

    def __init__(self, path: Path | str, offset: int, seq: int, reason: str, detail: str = "") -> None:
        self.path = Path(path)
        self.offset = offset
        self.seq = seq
        self.reason = reason
        self.detail = detail
        super().__init__(
            _one_line(
                f"journal torn (repair needed): {self.path} offset {offset} seq {seq}: {reason}",
                detail,
            )
        )


class JournalIOError(JournalError):
    """A write or sync failed. Nothing in the failed batch was acknowledged,
    the journal refuses every later submit, and the process should exit:
    restart recovers from what is on disk. An fsync is never retried, because
    after a failed fsync the kernel may have dropped the dirty pages.
    """

    def __init__(self, operation: str, path: Path | str | None, error: BaseException | str) -> None:
        self.operation = operation
        self.path = None if path is None else Path(path)
        self.errno = getattr(error, "errno", None)
        where = "" if path is None else f" {self.path}"
        if isinstance(error, OSError) and error.errno is not None:
            why = f"{os.strerror(error.errno)}, errno {error.errno}"
        else:
            why = str(error)
        super().__init__(_one_line(f"journal I/O error during {operation}{where}", why))


class JournalStateError(JournalError):
    """The journal was used out of order (closed, or a second batch submitted
    while one is in flight). This is a bug in the caller."""


class DirLocked(JournalError):
    """Another process holds the single-writer lock of the data directory."""

    def __init__(self, path: Path | str, holder: str) -> None:
        self.path = Path(path)
        self.holder = holder
        super().__init__(_one_line(f"data directory {self.path.parent} is locked by {holder}", ""))


def _one_line(head: str, detail: str) -> str:
    """Join a message and its detail into one line: operators grep logs."""
    text = f"{head} ({detail})" if detail else head
    return " ".join(text.split())
