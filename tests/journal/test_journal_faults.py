"""Durability under the fault-injecting storage: power loss (behaviours 4, 5),
EIO (18), ENOSPC and short writes (19), and the FaultStorage model itself."""

from __future__ import annotations

import errno
import random
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from jex.journal import damage
from jex.journal.errors import JournalIOError, JournalUnproven
from jex.journal.faultfs import FaultStorage, PowerCut
from jex.journal.record import RecordType
from jex.journal.scan import Decision, verify
from jex.journal.writer import QUARANTINE_DIR_NAME, Journal, repair

SEGMENT_BYTES = 16 * 1024


def open_journal(root: Path, storage, **kwargs) -> Journal:
    kwargs.setdefault("prepare_ahead", False)
    return Journal.open(root / "wal", backend="pwrite", storage=storage, segment_bytes=SEGMENT_BYTES, **kwargs)


def payload(seq: int, rng_seed: int) -> bytes:
    """Deterministic, variable-size payloads: garbage can never pass as one."""
    size = (seq * 7 + rng_seed) % 190
    return damage.payload_for(seq, size) + bytes([seq % 251])


# --- the model itself --------------------------------------------------------------------


def test_unsynced_writes_are_dropped_and_synced_ones_kept(tmp_path):
    storage = FaultStorage(tmp_path)
    fd = storage.open(tmp_path / "f", create=True)
    storage.pwrite_all(fd, b"durable!", 0)
    storage.fdatasync(fd)
    storage.fsync_dir(tmp_path)
    storage.pwrite_all(fd, b"lost", 8)
    assert storage.unsynced_bytes() == 4
    storage.power_loss("drop_unsynced", random.Random(0))
    assert (tmp_path / "f").read_bytes() == b"durable!"


def test_new_names_need_a_directory_fsync(tmp_path):
    storage = FaultStorage(tmp_path)
    for name, dir_sync in [("b", True), ("a", False)]:
        fd = storage.open(tmp_path / name, create=True)
        storage.pwrite_all(fd, b"data", 0)
        storage.fdatasync(fd)
        storage.close(fd)
        if dir_sync:
            storage.fsync_dir(tmp_path)
    storage.power_loss("drop_unsynced", random.Random(0))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b"]
    storage = FaultStorage(tmp_path)
    fd = storage.open(tmp_path / "c", create=True)  # entry synced, data never
    storage.pwrite_all(fd, b"data", 0)
    storage.fsync_dir(tmp_path)
    storage.power_loss("drop_unsynced", random.Random(0))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b", "c"]
    assert (tmp_path / "c").read_bytes() == b""


def test_renames_and_unlinks_need_a_directory_fsync(tmp_path):
    (tmp_path / "old").write_bytes(b"x")
    (tmp_path / "gone").write_bytes(b"y")
    storage = FaultStorage(tmp_path)
    storage.rename(tmp_path / "old", tmp_path / "new")
    storage.unlink(tmp_path / "gone")
    storage.power_loss("drop_unsynced", random.Random(0))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["gone", "old"]
    storage = FaultStorage(tmp_path)
    storage.rename(tmp_path / "old", tmp_path / "new")
    storage.fsync_dir(tmp_path)
    storage.power_loss("drop_unsynced", random.Random(0))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["gone", "new"]


def test_keep_random_keeps_durable_bytes_and_mixes_only_sectors_of_unsynced_ones(tmp_path):
    seen = set()
    for seed in range(20):
        rng = random.Random(seed)
        old = rng.randbytes(40_000)
        new = rng.randbytes(40_000)
        path = tmp_path / f"f{seed}"
        path.write_bytes(old)
        storage = FaultStorage(tmp_path)
        fd = storage.open(path, write=True)
        start, end = sorted(rng.sample(range(len(old)), 2))
        storage.pwrite_all(fd, new[start:end], start)
        storage.power_loss("keep_random", rng)
        after = path.read_bytes()
        assert after[:start] == old[:start] and after[end:] == old[end:]
        for lo in range(start - start % 512, end, 512):
            a, b = max(lo, start), min(lo + 512, end)
            fates = {"old": old[a:b], "new": new[a:b], "zero": bytes(b - a)}
            fate = next((name for name, image in fates.items() if after[a:b] == image), None)
            assert fate is not None, (seed, a, b)
            seen.add(fate)
    assert seen == {"old", "new", "zero"}


def test_injected_faults_fire_on_the_nth_call_and_bit_flips_are_durable(tmp_path):
    storage = FaultStorage(tmp_path)
    storage.fail("pwrite", error=errno.ENOSPC, nth=2)
    fd = storage.open(tmp_path / "f", create=True)
    storage.pwrite_all(fd, b"one", 0)
    with pytest.raises(OSError) as caught:
        storage.pwrite_all(fd, b"two", 3)
    assert caught.value.errno == errno.ENOSPC
    storage.pwrite_all(fd, b"three", 3)
    storage.fdatasync(fd)
    storage.fsync_dir(tmp_path)
    storage.flip_bit(tmp_path / "f", 0, 0)
    storage.power_loss("drop_unsynced", random.Random(0))
    assert (tmp_path / "f").read_bytes() == b"nnethree"


# --- power loss trials (behaviours 4 and 5) ----------------------------------------------------


@dataclass
class Trial:
    """Model of what was sent and acknowledged across crashes and restarts."""

    seed: int
    sent: dict[int, bytes] = field(default_factory=dict)
    acked: int = 0
    outcomes: dict[str, int] = field(default_factory=dict)

    def note(self, outcome: str) -> None:
        self.outcomes[outcome] = self.outcomes.get(outcome, 0) + 1

    def write(self, journal: Journal, rng: random.Random, batches: int) -> None:
        for _ in range(batches):
            seq = journal.next_seq
            entries = [(s, 10**9 + s, payload(s, self.seed)) for s in range(seq, seq + rng.randint(1, 12))]
            self.sent.update((s, p) for s, _, p in entries)
            journal.submit(entries)
            self.acked = journal.wait()

    def check_recovered(self, journal: Journal) -> None:
        """Every acknowledged command is there, byte for byte; nothing that
        was not sent is replayed; seqs are gapless."""
        records = list(journal.records())
        assert [r.seq for r in records] == list(range(1, journal.last_seq + 1))
        assert journal.last_seq >= self.acked, (journal.last_seq, self.acked)
        for record in records:
            if record.type == RecordType.COMMAND:
                assert self.sent.get(record.seq) == record.payload, record.seq
        present = {r.seq for r in records}
        assert all(s in present for s in self.sent if s <= self.acked)
        # Unacknowledged sends beyond what survived are forgotten: their seqs get reused.
        self.sent = {s: p for s, p in self.sent.items() if s <= journal.last_seq}
        self.acked = journal.last_seq


def run_trial(root: Path, seed: int, mode: str, *, prepare_ahead: bool = False, rounds: int = 4) -> Trial:
    rng = random.Random(seed)
    trial = Trial(seed)
    for _ in range(rounds):
        storage = FaultStorage(root)
        if rng.random() < 0.5:
            storage.cut_power_after(rng.randrange(0, 260))
        else:  # just before a sync: a batch (or SEAL, or repair) is unsynced
            storage.cut_power_before("fdatasync", rng.randint(1, 30))
        journal = None
        try:
            journal = open_journal(root, storage, prepare_ahead=prepare_ahead)
            trial.write(journal, rng, rng.randint(1, 25))
        except PowerCut:
            pass
        storage.power_loss(mode, rng)
        if journal is not None:
            journal.close()
        recover(root, trial, mode)
    return trial


def recover(root: Path, trial: Trial, mode: str) -> None:
    """Reopen after a crash and check the model. The journal may refuse to
    start in one case only (asserted here): then the operator's `repair
    --final-batch` makes it open with every acknowledged record."""
    try:
        with open_journal(root, FaultStorage(root)) as recovered:
            trial.note(recovered.report.row)
            trial.check_recovered(recovered)
            return
    except JournalUnproven as error:
        # Only keep_random: the in-flight batch landed out of order (a later
        # sector kept, an earlier one lost). With batch boundaries in the
        # format the scanner sees that all damage and every valid record
        # after it lie inside the final batch, which may or may not have been
        # acknowledged: unproven. Here it never was: it starts after the
        # last acknowledged seq.
        assert mode == "keep_random", str(error)
        assert error.reason == "unproven_final_batch" and error.exit_code == 3, str(error)
        assert trial.acked < error.first_seq <= error.seq <= error.last_seq <= max(trial.sent), str(error)
        assert "repair --final-batch" in str(error) and f"seq {error.first_seq}..{error.last_seq}" in str(error)
        trial.note("refused_unproven_final_batch")
        first_seq = error.first_seq
    report = repair(root / "wal", storage=FaultStorage(root), final_batch=True)
    assert report.row == "unproven_final_batch"
    assert any(p.name.endswith(".unproven") for p in (root / QUARANTINE_DIR_NAME).iterdir())
    with open_journal(root, FaultStorage(root)) as recovered:
        assert recovered.last_seq == first_seq - 1
        trial.check_recovered(recovered)


def _summarise(trials: list[Trial]) -> dict[str, int]:
    total: dict[str, int] = {}
    for trial in trials:
        for outcome, count in trial.outcomes.items():
            total[outcome] = total.get(outcome, 0) + count
    return total


def test_power_loss_keeping_only_synced_data_loses_nothing_acknowledged(tmp_path):
    trials = [run_trial(tmp_path / f"t{seed}", seed, "drop_unsynced") for seed in range(60)]
    outcomes = _summarise(trials)
    assert outcomes.get("clean_end", 0) > 0 and outcomes.get("rollover_incomplete", 0) > 0, outcomes
    assert "refused_unproven_final_batch" not in outcomes


def test_power_loss_with_random_torn_and_zeroed_blocks_replays_no_garbage(tmp_path):
    trials = [run_trial(tmp_path / f"t{seed}", 1000 + seed, "keep_random") for seed in range(80)]
    outcomes = _summarise(trials)
    assert outcomes.get("torn_tail", 0) > 0 and outcomes.get("clean_end", 0) > 0, outcomes
    # Refusals happen (the colleague's trials saw 12 of ~300 reopens), every
    # one is an unproven final batch, and repair --final-batch recovers it.
    assert outcomes.get("refused_unproven_final_batch", 0) > 0, outcomes


@pytest.mark.parametrize("mode", ["drop_unsynced", "keep_random"])
def test_power_loss_with_the_background_preparer(tmp_path, mode):
    trials = [run_trial(tmp_path / f"t{seed}", 5000 + seed, mode, prepare_ahead=True) for seed in range(15)]
    assert max(trial.acked for trial in trials) > 150  # several rollovers used prepared segments


# --- EIO, ENOSPC, short writes (behaviours 18 and 19) ----------------------------------------------


def _setup(tmp_path, count: int = 10) -> tuple[FaultStorage, Journal, Trial]:
    storage = FaultStorage(tmp_path)
    journal = open_journal(tmp_path, storage)
    trial = Trial(seed=3)
    trial.write(journal, random.Random(3), 3)
    return storage, journal, trial


def _next_batch(journal: Journal, trial: Trial, n: int = 5):
    seq = journal.next_seq
    entries = [(s, 10**9 + s, payload(s, trial.seed)) for s in range(seq, seq + n)]
    trial.sent.update((s, p) for s, _, p in entries)
    return entries


def _assert_stopped(journal: Journal, trial: Trial) -> None:
    assert journal.failed and journal.last_seq == trial.acked
    for call in (lambda: journal.submit(_next_batch(journal, trial)), journal.wait):
        with pytest.raises(JournalIOError, match="earlier failure"):
            call()


@pytest.mark.parametrize("error", [errno.EIO, errno.ENOSPC])
def test_write_error_acknowledges_nothing_and_stops_the_journal(tmp_path, error):
    storage, journal, trial = _setup(tmp_path)
    storage.fail("pwrite", error=error, path_contains=".wal")
    with pytest.raises(JournalIOError) as caught:
        journal.submit(_next_batch(journal, trial))
    assert caught.value.errno == error and os_message(error) in str(caught.value)
    _assert_stopped(journal, trial)
    journal.close()
    with open_journal(tmp_path, FaultStorage(tmp_path)) as recovered:
        trial.check_recovered(recovered)
        recovered.append(_next_batch(recovered, trial))


def os_message(error: int) -> str:
    import os

    return os.strerror(error)


@pytest.mark.parametrize("after", ["restart", "power_loss"])
def test_fdatasync_error_acknowledges_nothing_and_is_never_retried(tmp_path, after):
    storage, journal, trial = _setup(tmp_path)
    storage.fail("fdatasync", path_contains=".wal")
    journal.submit(_next_batch(journal, trial))
    syncs = storage.op_counts["fdatasync"]
    with pytest.raises(JournalIOError, match="commit"):
        journal.wait()
    _assert_stopped(journal, trial)
    assert storage.op_counts["fdatasync"] == syncs + 1  # the one failed call, never retried
    if after == "power_loss":
        storage.power_loss("drop_unsynced", random.Random(1))
    journal.close()
    acked = trial.acked
    with open_journal(tmp_path, FaultStorage(tmp_path)) as recovered:
        trial.check_recovered(recovered)
        # After a plain restart the page cache still held the batch: open's
        # fsync makes it durable and it survives, complete and valid, though
        # never acknowledged. After a power loss it is gone.
        assert recovered.last_seq == (acked + 5 if after == "restart" else acked)


def test_short_write_is_continued_and_acknowledged_whole(tmp_path):
    storage, journal, trial = _setup(tmp_path)
    storage.fail("pwrite", short=True, path_contains=".wal")
    entries = _next_batch(journal, trial, 8)
    journal.submit(entries)
    trial.acked = journal.wait()
    assert storage.faults_fired == 1 and trial.acked == entries[-1][0]
    journal.close()
    with open_journal(tmp_path, FaultStorage(tmp_path)) as recovered:
        trial.check_recovered(recovered)


@pytest.mark.parametrize("mode", ["drop_unsynced", "keep_random"])
def test_short_write_that_cannot_finish_is_never_acknowledged_nor_replayed_as_garbage(tmp_path, mode):
    for seed in range(8):
        root = tmp_path / f"s{seed}"
        storage, journal, trial = _setup(root)
        storage.fail("pwrite", short=True, path_contains=".wal")
        storage.fail("pwrite", error=errno.ENOSPC, path_contains=".wal")
        with pytest.raises(JournalIOError):
            journal.submit(_next_batch(journal, trial, 12))
        assert journal.last_seq == trial.acked
        storage.power_loss(mode, random.Random(seed))
        journal.close()
        recover(root, trial, mode)
        assert set(trial.outcomes) <= {"clean_end", "torn_tail", "refused_unproven_final_batch"}, trial.outcomes


@pytest.mark.parametrize(
    "op, path_contains",
    [("fdatasync", ".tmp"), ("rename", ".tmp"), ("fsync_dir", "wal"), ("allocate", ".tmp"), ("pwrite", ".tmp")],
)
def test_failure_during_rollover_stops_the_journal_and_recovers(tmp_path, op, path_contains):
    storage = FaultStorage(tmp_path)
    journal = open_journal(tmp_path, storage)
    trial = Trial(seed=9)
    rng = random.Random(9)
    while not journal.next_seq > journal.last_seq + 1:  # until a rollover is pending
        trial.write(journal, rng, 1)
    storage.fail(op, path_contains=path_contains)
    with pytest.raises(JournalIOError, match="segment creation"):
        journal.submit(_next_batch(journal, trial))
    _assert_stopped(journal, trial)
    storage.power_loss("drop_unsynced", rng)
    journal.close()
    with open_journal(tmp_path, FaultStorage(tmp_path)) as recovered:
        trial.check_recovered(recovered)
        recovered.append(_next_batch(recovered, trial))
    assert verify(tmp_path / "wal").decision is Decision.CLEAN


def test_failure_syncing_the_seal_stops_the_journal_and_recovers(tmp_path):
    storage = FaultStorage(tmp_path)
    journal = open_journal(tmp_path, storage)
    trial = Trial(seed=11)
    rng = random.Random(11)
    while not journal.next_seq > journal.last_seq + 1:
        trial.write(journal, rng, 1)
    old_segment = journal.segment_path
    storage.fail("fdatasync", path_contains=old_segment.name)
    with pytest.raises(JournalIOError, match="SEAL"):
        journal.submit(_next_batch(journal, trial))
    storage.power_loss("drop_unsynced", rng)
    journal.close()
    with open_journal(tmp_path, FaultStorage(tmp_path)) as recovered:
        assert recovered.report.row == "rollover_incomplete"
        trial.check_recovered(recovered)


def test_open_reports_io_errors_as_journal_io_errors(tmp_path):
    with open_journal(tmp_path, FaultStorage(tmp_path)) as journal:
        journal.append([(1, 1, b"x")])
    storage = FaultStorage(tmp_path)
    storage.fail("fdatasync")
    with pytest.raises(JournalIOError, match="open"):
        open_journal(tmp_path, storage)
    with open_journal(tmp_path, FaultStorage(tmp_path)) as journal:  # the lock was released
        assert journal.last_seq == 1
