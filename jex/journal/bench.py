"""Durable group-commit benchmark of the journal backends (room: jex.journal).

    python -m jex.journal.bench [--seconds 1.0] [--rounds 3] [--batches 1,16,256]
                                [--payload-bytes 64] [--work-us 200] [--only NAMES] [--dir DIR]

Runs every backend variant side by side through the real Journal API
(encode + join + write + sync into 64 MiB pre-zeroed segments, with the
background segment preparer) and prints, per batch size, commits/s and
records/s (median over rounds; cells of a round are interleaved so that
load from other processes hits every variant alike), p50/p99 commit latency
(submit -> durable, all rounds pooled) and the process CPU share.

The second table adds `--work-us` of simulated matching per batch between
submit() and wait(), as the node's pipeline does: a backend whose submit
returns before the data is durable (io_uring) overlaps that work with the
device; pwrite+fdatasync cannot.

Not a test: numbers depend on the machine and its load. Output on stdout.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from jex.journal.backends import Backend, PwriteBackend, UringBackend, uring_unavailable_reason
from jex.journal.storage import OsStorage
from jex.journal.writer import Journal

PREPARE_WAIT_S_MAX = 10.0  # Wait at most this long for the first segment preparation.


@dataclass(frozen=True)
class Variant:
    name: str
    make: Callable[[], Backend]


def variants() -> list[Variant]:
    out = [Variant("pwrite+fdatasync", lambda: PwriteBackend(OsStorage()))]
    if uring_unavailable_reason() is not None:
        return out
    import liburing as L

    fast = L.IORING_SETUP_SINGLE_ISSUER | L.IORING_SETUP_DEFER_TASKRUN
    out += [
        Variant("uring write+link+fdatasync", lambda: UringBackend("link")),
        Variant("uring link, CQE_SKIP_SUCCESS", lambda: UringBackend("link", skip_success=True)),
        Variant("uring link, SINGLE_ISSUER|DEFER", lambda: UringBackend("link", setup_flags=fast)),
        Variant("uring O_DSYNC write", lambda: UringBackend("dsync")),
        Variant("uring O_DSYNC, SINGLE_ISSUER|DEFER", lambda: UringBackend("dsync", setup_flags=fast)),
        Variant("uring O_DIRECT|O_DSYNC", lambda: UringBackend("direct")),
        Variant("uring O_DIRECT|O_DSYNC, SI|DEFER", lambda: UringBackend("direct", setup_flags=fast)),
    ]
    return out


@dataclass
class Cell:
    variant: str
    batch: int
    rates: list[float] = field(default_factory=list)  # commits/s per round
    latencies_us: list[float] = field(default_factory=list)
    cpu_shares: list[float] = field(default_factory=list)

    def percentile(self, q: float) -> float:
        ordered = sorted(self.latencies_us)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def busy_us(us: float) -> None:
    """Hold the CPU (and the GIL) like matching would."""
    end = time.perf_counter_ns() + int(us * 1000)
    while time.perf_counter_ns() < end:
        pass


def run_one(cell: Cell, variant: Variant, payload_bytes: int, seconds: float, work_us: float, root: Path) -> None:
    """One timed run of one cell; appends its results to `cell`."""
    shutil.rmtree(root / "data", ignore_errors=True)
    journal = Journal.open(root / "data" / "wal", backend=variant.make())
    payload = (bytes(range(256)) * (payload_bytes // 256 + 1))[:payload_bytes]
    ts = time.time_ns()
    latencies: list[float] = []
    try:
        waited = time.monotonic()
        while journal.preparing and time.monotonic() - waited < PREPARE_WAIT_S_MAX:
            time.sleep(0.01)  # Steady state: the first preparation is a one-off.
        batch = cell.batch
        start, cpu0 = time.perf_counter(), time.process_time()
        deadline = start + seconds
        while time.perf_counter() < deadline:
            seq = journal.next_seq
            entries = [(seq + i, ts, payload) for i in range(batch)]
            t0 = time.perf_counter_ns()
            journal.submit(entries)
            if work_us:
                busy_us(work_us)
            journal.wait()
            latencies.append((time.perf_counter_ns() - t0) / 1000)
        elapsed = time.perf_counter() - start
        cpu = time.process_time() - cpu0
    finally:
        journal.close()
    cell.rates.append(len(latencies) / elapsed)
    cell.latencies_us += latencies
    cell.cpu_shares.append(cpu / elapsed)


def run_table(chosen, batches, args, work_us: float, root: Path) -> list[Cell]:  # noqa: ANN001
    cells = {(v.name, b): Cell(v.name, b) for b in batches for v in chosen}
    for _ in range(args.rounds):
        for b in batches:
            for v in chosen:
                run_one(cells[(v.name, b)], v, args.payload_bytes, args.seconds, work_us, root)
    return list(cells.values())


def print_table(title: str, cells: list[Cell]) -> None:
    print(f"\n{title}")
    print(f"{'variant':36} {'batch':>5} {'commits/s':>10} {'records/s':>11} {'p50 us':>8} {'p99 us':>9} {'cpu':>5}")
    for c in cells:
        rate = statistics.median(c.rates)
        print(
            f"{c.variant:36} {c.batch:5d} {rate:10.0f} {rate * c.batch:11.0f} "
            f"{c.percentile(0.50):8.0f} {c.percentile(0.99):9.0f} {statistics.median(c.cpu_shares):5.0%}"
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m jex.journal.bench", description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=1.0, help="measured time per cell and round")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds; rates are medians")
    parser.add_argument("--batches", default="1,16,256", help="batch sizes (records per commit)")
    parser.add_argument("--payload-bytes", type=int, default=64)
    parser.add_argument("--work-us", type=float, default=200.0, help="simulated matching per batch (0: skip table)")
    parser.add_argument("--only", default="", help="comma-separated substrings of variant names to run")
    parser.add_argument("--dir", type=Path, default=None, help="where to write (default: a temp dir)")
    args = parser.parse_args(argv)
    batches = [int(b) for b in args.batches.split(",")]
    chosen = [v for v in variants() if not args.only or any(s in v.name for s in args.only.split(","))]
    reason = uring_unavailable_reason()
    if reason:
        print(f"io_uring unavailable: {reason}; only pwrite is measured")
    root = Path(tempfile.mkdtemp(prefix="jex-bench-", dir=args.dir))
    try:
        print(
            f"jex.journal bench: Linux {os.uname().release}, {os.cpu_count()} cpus, load {os.getloadavg()[0]:.1f}, "
            f"{args.payload_bytes}-byte payloads, {args.seconds:.1f} s x {args.rounds} rounds per cell"
        )
        print_table("durable commits, nothing between submit and wait", run_table(chosen, batches, args, 0.0, root))
        if args.work_us:
            title = f"with {args.work_us:.0f} us of simulated matching per batch between submit and wait"
            print_table(title, run_table(chosen, batches, args, args.work_us, root))
    finally:
        shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
