"""Real SIGKILLs: a child journal kills itself at each kill point (and at
random moments); recovery keeps every acknowledged record and the log is a
prefix of what was sent."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from jex import killpoints
from jex.journal import damage
from jex.journal.backends import uring_unavailable_reason
from jex.journal.record import RecordType
from jex.journal.scan import Decision, verify
from jex.journal.writer import Journal

ROOT = Path(__file__).resolve().parents[2]
UNAVAILABLE = uring_unavailable_reason()
BACKENDS = [
    "pwrite",
    pytest.param("uring", marks=pytest.mark.skipif(UNAVAILABLE is not None, reason=f"io_uring: {UNAVAILABLE}")),
]
POINTS = ["before_write", "after_write_before_fsync", "mid_rollover"]

# Appends batches of drill commands, printing "ACK <seq>" after each durable
# wait; the payload of seq s is damage.payload_for(s, 40 + s % 50).
CHILD = """
    import sys
    from pathlib import Path
    from jex.journal.damage import payload_for
    from jex.journal.writer import Journal
    wal, backend, batches = Path(sys.argv[1]), sys.argv[2], int(sys.argv[3])
    journal = Journal.open(wal, backend=backend, segment_bytes=16384, prepare_ahead=True)
    print("OPEN", journal.last_seq, flush=True)
    for b in range(batches):
        seq = journal.next_seq
        size = 1 + b % 7
        journal.submit([(s, 10**9 + s, payload_for(s, 40 + s % 50)) for s in range(seq, seq + size)])
        print("ACK", journal.wait(), flush=True)
    journal.close()
    print("DONE", flush=True)
"""


def run_child(wal: Path, backend: str, batches: int, killpoint: str | None, *, kill_after_s: float | None = None):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop(killpoints.ENV_VAR, None)
    if killpoint:
        env[killpoints.ENV_VAR] = killpoint
    child = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(CHILD), str(wal), backend, str(batches)],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    if kill_after_s is not None:
        time.sleep(kill_after_s)
        child.send_signal(signal.SIGKILL)
    out, err = child.communicate(timeout=60)
    # Only complete lines count: a SIGKILL can cut the child's last line short.
    complete = out.split("\n")[:-1]
    acked = [int(parts[1]) for parts in (line.split() for line in complete)
             if len(parts) == 2 and parts[0] == "ACK" and parts[1].isdigit()]
    return child.returncode, acked, out, err


def check_recovered(wal: Path, acked: list[int]) -> tuple[int, str]:
    """Every acknowledged seq is present with its payload; every command is
    one that was sent (payload_for), gapless. Returns the recovered last seq
    and the decision-table row that opening used."""
    with Journal.open(wal, backend="pwrite", prepare_ahead=False) as journal:
        row = journal.report.row
        records = list(journal.records())
        last = journal.last_seq
        assert [r.seq for r in records] == list(range(1, last + 1))
        assert last >= max(acked, default=0)
        for record in records:
            if record.type == RecordType.COMMAND:
                assert record.payload == damage.payload_for(record.seq, 40 + record.seq % 50), record.seq
        seq = journal.next_seq
        journal.append([(seq, 10**9 + seq, damage.payload_for(seq, 40 + seq % 50))])
    assert verify(wal).decision is Decision.CLEAN
    return last, row


def test_parse_kill_point_specs():
    assert killpoints.parse("mid_rollover:3") == ("mid_rollover", 3)
    assert killpoints.parse("before_write") == ("before_write", 1)
    assert killpoints.parse("") == (None, 1)
    for bad in (":3", "x:0", "x:-1", "x:y"):
        with pytest.raises(ValueError):
            killpoints.parse(bad)


def test_unarmed_hit_is_a_no_op():
    assert killpoints.armed() is None  # the test process runs without JEX_KILLPOINT
    for name in POINTS:
        killpoints.hit(name)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("point", POINTS)
def test_sigkill_at_each_kill_point_recovers_every_acknowledged_record(tmp_path, backend, point):
    rng = random.Random(f"{backend}{point}")
    nth = 1 if point == "mid_rollover" else rng.randint(2, 12)
    wal = tmp_path / "wal"
    returncode, acked, out, err = run_child(wal, backend, 60, f"{point}:{nth}")
    assert returncode == -signal.SIGKILL, (returncode, out, err)
    assert "DONE" not in out
    _, row = check_recovered(wal, acked)
    # SIGKILL keeps the page cache: a killed write is whole or absent, so the
    # only repair ever needed is finishing an interrupted rollover.
    assert row == ("rollover_incomplete" if point == "mid_rollover" else "clean_end")


@pytest.mark.parametrize("backend", BACKENDS)
def test_sigkill_at_random_moments(tmp_path, backend):
    rng = random.Random(backend)
    wal = tmp_path / "wal"
    acked_all: list[int] = []
    for _ in range(3):
        returncode, acked, out, err = run_child(wal, backend, 10**6, None, kill_after_s=rng.uniform(0.3, 0.8))
        assert returncode == -signal.SIGKILL, (returncode, err)
        acked_all += acked
        check_recovered(wal, acked_all)
