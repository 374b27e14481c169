"""The Journal API: seqs and next_seq, rollover with SEAL across segments,
checkpoints, reading back, input validation, state errors, backend choice."""

from __future__ import annotations

from pathlib import Path

import pytest

from jex.journal import backends, damage
from jex.journal.backends import PwriteBackend, UringBackend, make_backend, uring_unavailable_reason
from jex.journal.errors import JournalStateError
from jex.journal.faultfs import FaultStorage
from jex.journal.limits import BATCH_RECORDS_MAX, SEGMENT_HEADER_BYTES
from jex.journal.lock import DirLock
from jex.journal.record import RecordType, record_bytes
from jex.journal.scan import Decision, verify
from jex.journal.storage import OsStorage
from jex.journal.writer import Journal, default_batch_bytes_max

SEGMENT_BYTES = 16 * 1024
UNAVAILABLE = uring_unavailable_reason()
BACKENDS = [
    "pwrite",
    pytest.param("uring", marks=pytest.mark.skipif(UNAVAILABLE is not None, reason=f"io_uring: {UNAVAILABLE}")),
]


def open_journal(root: Path, backend: str = "pwrite", **kwargs) -> Journal:
    kwargs.setdefault("segment_bytes", SEGMENT_BYTES)
    kwargs.setdefault("prepare_ahead", False)
    return Journal.open(root / "wal", backend=backend, **kwargs)


def batch(journal: Journal, n: int, ts: int = 1000) -> list[tuple[int, int, bytes]]:
    seq = journal.next_seq
    return [(seq + i, ts, damage.payload_for(seq + i)) for i in range(n)]


def test_empty_log_starts_at_seq_1_with_a_zero_chain(tmp_path):
    with open_journal(tmp_path) as journal:
        assert (journal.last_seq, journal.next_seq, journal.last_ts, journal.chain) == (0, 1, 0, bytes(16))
        assert journal.report.row == "empty_log" and journal.first_seq == 1
        assert list(journal.records()) == []
    assert [p.name for p in damage.segment_paths(tmp_path / "wal")] == [
        "0000000000000000-0000000000000001.wal"
    ]


@pytest.mark.parametrize("backend", BACKENDS)
def test_submit_then_wait_acknowledges_in_order(tmp_path, backend):
    with open_journal(tmp_path, backend) as journal:
        entries = batch(journal, 5, ts=77)
        journal.submit(entries)
        assert journal.in_flight and journal.last_seq == 0 and journal.next_seq == 6
        assert journal.wait() == 5
        assert journal.wait() == 5  # nothing in flight: returns the durable seq
        assert (journal.last_seq, journal.last_ts) == (5, 77)
        records = list(journal.records())
        assert [(r.seq, r.ts_ns, r.payload) for r in records] == entries
        assert journal.chain == records[-1].chain


@pytest.mark.parametrize("backend", BACKENDS)
def test_rollover_seals_each_segment_and_the_seal_takes_a_seq(tmp_path, backend):
    sent = {}
    with open_journal(tmp_path, backend) as journal:
        while len(damage.segment_paths(tmp_path / "wal")) < 4:
            entries = batch(journal, 6)
            sent.update((seq, payload) for seq, _, payload in entries)
            journal.submit(entries)
            predicted = journal.next_seq  # known while the batch is in flight
            journal.wait()
            assert journal.next_seq == predicted
        records = list(journal.records())
    seals = [r for r in records if r.type == RecordType.SEAL]
    assert len(seals) == 3 and all(r.payload == b"" for r in seals)
    assert [r.seq for r in records] == list(range(1, len(records) + 1))
    assert {r.seq: r.payload for r in records if r.type == RecordType.COMMAND} == sent
    paths = damage.segment_paths(tmp_path / "wal")
    for path, seal in zip(paths, seals):
        assert damage.locate_records(path)[-1].seq == seal.seq
    for path, following in zip(paths, paths[1:]):
        assert damage.read_header(following).first_seq == damage.locate_records(path)[-1].seq + 1
    assert verify(tmp_path / "wal").rows == ["sealed", "sealed", "sealed", "clean_end"]


def test_next_seq_skips_the_pending_seal_while_a_batch_is_in_flight(tmp_path):
    with open_journal(tmp_path) as journal:
        while True:
            entries = batch(journal, 4)
            journal.submit(entries)
            if journal.next_seq == entries[-1][0] + 2:
                break  # this batch filled the segment: seq +1 is reserved for the SEAL
            assert journal.next_seq == entries[-1][0] + 1
            journal.wait()
        journal.wait()
        seal_seq = entries[-1][0] + 1
        journal.append(batch(journal, 1))
        kinds = {r.seq: r.type for r in journal.records()}
    assert kinds[seal_seq] == RecordType.SEAL and kinds[seal_seq + 1] == RecordType.COMMAND


def test_checkpoint_record_carries_the_digest(tmp_path):
    with open_journal(tmp_path) as journal:
        journal.append(batch(journal, 2))
        seq = journal.append_checkpoint(2000, b"\x01" * 16)
        record = list(journal.records(seq))[0]
    assert (record.seq, record.type, record.payload, record.ts_ns) == (3, RecordType.CHECKPOINT, b"\x01" * 16, 2000)


def test_records_range_reads(tmp_path):
    with open_journal(tmp_path) as journal:
        damage.write_commands(journal, 200, batch=10)
        assert [r.seq for r in journal.records(150, 155)] == list(range(150, 156))
        assert [r.seq for r in journal.records(journal.last_seq)] == [journal.last_seq]
        assert list(journal.records(journal.last_seq + 1)) == []


def test_invalid_batches_are_rejected_before_anything_is_written(tmp_path):
    with open_journal(tmp_path) as journal:
        journal.append(batch(journal, 2, ts=500))
        image = damage.file_hashes(tmp_path / "wal")
        bad = {
            "seq gap": [(3, 600, b"a"), (5, 600, b"b")],
            "wrong start": [(4, 600, b"a")],
            "time goes back": [(3, 499, b"a")],
            "empty": [],
            "too many": [(3 + i, 600, b"") for i in range(BATCH_RECORDS_MAX + 1)],
            "too big": [(3, 600, bytes(default_batch_bytes_max(SEGMENT_BYTES)))],
        }
        for name, entries in bad.items():
            with pytest.raises(ValueError):
                journal.submit(entries)
            assert not journal.in_flight, name
        assert damage.file_hashes(tmp_path / "wal") == image
        assert journal.append([(3, 600, b"fine")]) == 3


def test_a_batch_of_exactly_batch_bytes_max_fits(tmp_path):
    limit = default_batch_bytes_max(SEGMENT_BYTES)
    with open_journal(tmp_path) as journal:
        assert journal.batch_bytes_max == limit
        for _ in range(5):
            seq = journal.next_seq
            journal.append([(seq, 1, bytes(limit - record_bytes(0)))])
    assert verify(tmp_path / "wal").decision is Decision.CLEAN


def test_misuse_raises_state_errors(tmp_path):
    journal = open_journal(tmp_path)
    journal.submit(batch(journal, 1))
    with pytest.raises(JournalStateError, match="in flight"):
        journal.submit([(journal.next_seq, 1000, b"x")])
    journal.wait()
    journal.close()
    with pytest.raises(JournalStateError, match="closed"):
        journal.submit([(2, 1000, b"x")])
    journal.close()  # idempotent


@pytest.mark.parametrize(
    "kwargs",
    [{"segment_bytes": 1000}, {"segment_bytes": 20000}, {"segment_bytes": SEGMENT_BYTES, "batch_bytes_max": 10**9}],
)
def test_bad_sizes_are_refused(tmp_path, kwargs):
    with pytest.raises(ValueError):
        Journal.open(tmp_path / "wal", backend="pwrite", **kwargs)


def test_segment_size_defaults_to_the_existing_segments(tmp_path):
    with open_journal(tmp_path) as journal:
        damage.write_commands(journal, 10)
    with Journal.open(tmp_path / "wal", backend="pwrite", prepare_ahead=False) as journal:
        while len(damage.segment_paths(tmp_path / "wal")) < 2:
            damage.write_commands(journal, 10)
    assert {p.stat().st_size for p in damage.segment_paths(tmp_path / "wal")} == {SEGMENT_BYTES}


def test_the_journal_takes_the_data_dir_lock_or_uses_the_callers(tmp_path):
    with open_journal(tmp_path):
        assert (tmp_path / "LOCK").read_text().startswith("{")
    lock = DirLock.acquire(tmp_path)
    try:
        with open_journal(tmp_path, lock=lock) as journal:
            journal.append(batch(journal, 1))
        assert lock.held  # the caller's lock is the caller's to release
    finally:
        lock.release()


def test_background_preparer_makes_rollover_use_a_ready_file(tmp_path):
    with open_journal(tmp_path, prepare_ahead=True) as journal:
        while len(damage.segment_paths(tmp_path / "wal")) < 3:
            damage.write_commands(journal, 8)
    wal = tmp_path / "wal"
    assert verify(wal).rows == ["sealed", "sealed", "clean_end"]
    leftovers = sorted(p.name for p in wal.iterdir() if p.suffix == ".tmp")
    assert leftovers == ["0000000000000003.tmp"]  # prepared for the next rollover
    with open_journal(tmp_path) as journal:
        assert journal.report.decision is Decision.CLEAN
    assert not any(p.suffix == ".tmp" for p in wal.iterdir())


# --- backend selection ---------------------------------------------------------------------


def test_auto_uses_pwrite_with_one_line_notice_when_io_uring_is_unavailable(monkeypatch, capsys):
    monkeypatch.setattr(backends, "uring_unavailable_reason", lambda: "io_uring is disabled (test)")
    backend = make_backend("auto", OsStorage())
    assert isinstance(backend, PwriteBackend)
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "io_uring is disabled (test)" in err and "pwrite" in err


@pytest.mark.skipif(UNAVAILABLE is not None, reason=f"io_uring: {UNAVAILABLE}")
def test_auto_uses_io_uring_where_it_works(tmp_path, capsys):
    backend = make_backend("auto", OsStorage())
    try:
        assert isinstance(backend, UringBackend) and backend.name == "uring-direct"
    finally:
        backend.close()
    assert capsys.readouterr().err == ""


def test_fault_storage_is_only_observable_through_pwrite(tmp_path):
    storage = FaultStorage(tmp_path)
    assert isinstance(make_backend("auto", storage), PwriteBackend)
    with pytest.raises(ValueError, match="OsStorage"):
        make_backend("uring", storage)
    with pytest.raises(ValueError, match="unknown journal backend"):
        make_backend("mmap", storage)


def test_header_and_records_start_where_the_format_says(tmp_path):
    with open_journal(tmp_path) as journal:
        journal.append(batch(journal, 1))
    (first,) = damage.locate_all(tmp_path / "wal")
    assert first.offset == SEGMENT_HEADER_BYTES and first.length == record_bytes(64)


@pytest.mark.parametrize("backend", BACKENDS)
def test_submit_records_is_submit_in_columns(tmp_path, backend):
    """The node's columnar submit writes the same log as submit(entries)."""
    sizes = (1, 5, 20) * 4
    with open_journal(tmp_path / "a", backend) as journal:
        for i, n in enumerate(sizes):
            journal.append(batch(journal, n, ts=1000 + i))
    with open_journal(tmp_path / "b", backend) as journal:
        for i, n in enumerate(sizes):
            entries = batch(journal, n, ts=1000 + i)
            journal.submit_records(entries[0][0], [e[1] for e in entries], [e[2] for e in entries])
            assert journal.wait() == entries[-1][0]
    a = [(r.seq, r.ts_ns, r.type, r.payload) for r in Journal.open(tmp_path / "a" / "wal").records()]
    b = [(r.seq, r.ts_ns, r.type, r.payload) for r in Journal.open(tmp_path / "b" / "wal").records()]
    assert a == b and len(a) > sum(sizes)  # rollovers (SEALs) included


def test_submit_records_rejects_before_anything_is_written(tmp_path):
    with open_journal(tmp_path) as journal:
        journal.append(batch(journal, 2, ts=500))
        image = damage.file_hashes(tmp_path / "wal")
        bad = {
            "wrong start": (4, [600], [b"a"]),
            "time goes back": (3, [499], [b"a"]),
            "empty": (3, [], []),
            "columns differ": (3, [600, 600], [b"a"]),
            "too many": (3, [600] * (BATCH_RECORDS_MAX + 1), [b""] * (BATCH_RECORDS_MAX + 1)),
            "too big": (3, [600], [bytes(default_batch_bytes_max(SEGMENT_BYTES))]),
        }
        for name, (first_seq, stamps, payloads) in bad.items():
            with pytest.raises(ValueError):
                journal.submit_records(first_seq, stamps, payloads)
            assert not journal.in_flight, name
        assert damage.file_hashes(tmp_path / "wal") == image
        journal.submit_records(3, [600], [b"fine"])
        assert journal.wait() == 3
