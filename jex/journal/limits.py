"""Limits of the write-ahead log room (jex.journal), each a named constant with its unit.

Every queue, buffer and size the journal touches is bounded here, so that a
damaged length field can never make the reader allocate or loop without end,
and so that the recovery rule ("torn only within one maximum batch of the
tail") has a number to stand on. Names put the unit and qualifier last
(`batch_bytes_max`), as in TigerBeetle.
"""

from __future__ import annotations

KIB = 1024
MIB = 1024 * KIB

# On-disk framing (spec/journal.md). Changing any of these changes the format.
# (The record format's version and its type-byte flag, FLAG_BATCH_END, live
# in record.py with the rest of the header layout.)
SEGMENT_HEADER_BYTES = 4096
RECORD_HEADER_BYTES = 80
RECORD_ALIGN_BYTES = 8  # Every record (header + payload + zero padding) is 8-byte aligned.
CHECKSUM_BYTES = 16  # xxh3-128 digests: header checksum, body checksum, chain value.

# Disk geometry the writer aligns to. Power loss may tear a write at any
# sector; the fault model keeps or drops whole sectors of this size.
SECTOR_BYTES = 512
BLOCK_BYTES = 4096  # O_DIRECT writes start and end on this boundary.

# Batches (group commit). One batch is one joined buffer, one write, one sync.
BATCH_RECORDS_MAX = 4096
BATCH_BYTES_MAX = 1 * MIB  # Framed bytes of one batch buffer.

# One maximal record fills one maximal batch: a command that could never be
# written in one batch is rejected at submit, and the reader bounds
# payload_len by the same number before it allocates anything.
PAYLOAD_BYTES_MAX = BATCH_BYTES_MAX - RECORD_HEADER_BYTES

# A maximal record (header + padded maximal payload) is exactly one maximal batch.
RECORD_BYTES_MAX = BATCH_BYTES_MAX

# A SEAL record carries no payload: it is exactly one record header.
SEAL_RECORD_BYTES = RECORD_HEADER_BYTES

# Recovery: a write in flight at a crash can only touch the one batch it
# carried, which starts where the final batch starts (just after the last
# record flagged BATCH_END; for version-1 logs, after the last valid record)
# and spans at most one maximum batch. Damage further out cannot be a torn
# write and is corruption.
TORN_WINDOW_BYTES = BATCH_BYTES_MAX

# Reading. Segments are read in chunks of at most this size, never whole:
# walking records costs O(data), not O(preallocated bytes). A chunk holds at
# least one maximal record, so a record cut by a chunk's end is re-read whole.
# 1 MiB measured twice as fast as 4 MiB for reading zeros (~9 vs ~19 ms per
# 64 MiB): the allocator reuses 1 MiB buffers, larger ones are fresh mappings
# that page-fault.
READ_CHUNK_BYTES = 1 * MIB
READ_CHUNK_MIN_BYTES = 64 * KIB  # The first chunk of a walk; each next one doubles, up to READ_CHUNK_BYTES.
# After the last verified record the scanner reads this much in one piece:
# the torn window plus one maximal record starting at its edge. Further out
# it only looks for non-zero bytes and validating headers, and only in the
# last segment or after damage (scan.py).
TAIL_READ_BYTES = TORN_WINDOW_BYTES + RECORD_BYTES_MAX

# Segments. 64 MiB preallocated and zero-filled; tests use small sizes to
# force rollovers. A segment must hold at least a few maximal batches.
SEGMENT_BYTES_DEFAULT = 64 * MIB
SEGMENT_BYTES_MIN = 16 * KIB
SEGMENT_BYTES_MAX = 1024 * MIB
SEGMENT_BATCHES_MIN = 3  # A segment holds at least this many maximal batches.
SEGMENTS_MAX = 1_000_000  # More segment files than this in one directory is refused.

# Zero-fill is written in chunks so no single write is unbounded.
ZERO_FILL_CHUNK_BYTES = 1 * MIB

# Writers: a short write is continued from where it stopped; each attempt must
# make progress and there is a bound on attempts, so a device that keeps
# returning short writes fails the journal instead of spinning.
SHORT_WRITE_ATTEMPTS_MAX = 16

# io_uring: two SQEs per batch (write + linked fdatasync) with room to spare.
URING_ENTRIES = 8
# Closing a ring with a write in flight waits this long for its completion
# before the buffer is released.
URING_DRAIN_TIMEOUT_S = 10.0

# Lock file holder description.
LOCK_INFO_BYTES_MAX = 4 * KIB
