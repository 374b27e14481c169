"""Read-path benchmark of the journal (room: jex.journal).

    python -m jex.journal.read_bench [--counts 5000,100000,1000000] [--payload-bytes 64]
                                     [--rounds 3] [--dir DIR] [--keep]

Builds, per count, a log of that many COMMAND records in 64 MiB segments
(batches of BATCH_RECORDS_MAX records; 1 M records of 64-byte payloads
take three segments, since a record is at least its 80-byte header), then
times (best of --rounds, page cache warm):

    read_records   verify the log (scan) and read every record back
    scan           verify and decide only (what `jex journal verify` does)
    Journal.open   lock, fsync, scan, resume (what the node does at start
                   without a snapshot)
    open@anchor    the same from an anchor at the log's last record (what
                   the node does with a snapshot taken there:
                   verify_from=its seq and chain value)
    records()      read every record back through an open journal (replay)

and prints records/s for each. Not a test: numbers depend on the machine
and its load. Output on stdout.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path

from jex.journal.limits import BATCH_RECORDS_MAX, MIB
from jex.journal.reader import Anchor
from jex.journal.scan import read_records, scan
from jex.journal.writer import Journal

SEGMENT_BYTES = 64 * MIB


def build(wal: Path, count: int, payload_bytes: int) -> None:
    """A log of `count` commands in SEGMENT_BYTES segments."""
    payload = (bytes(range(256)) * (payload_bytes // 256 + 1))[:payload_bytes]
    with Journal.open(wal, backend="pwrite", segment_bytes=SEGMENT_BYTES, prepare_ahead=False) as journal:
        written = 0
        while written < count:
            n = min(BATCH_RECORDS_MAX, count - written)
            seq = journal.next_seq
            journal.append([(seq + i, 1_000 + seq + i, payload) for i in range(n)])
            written += n


def best_s(fn: Callable[[], object], rounds: int) -> float:
    times = []
    for _ in range(rounds):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def measure(wal: Path, count: int, rounds: int) -> dict[str, float]:
    def open_close() -> None:
        Journal.open(wal, backend="pwrite", prepare_ahead=False).close()

    report = scan(wal)
    anchor = Anchor(report.last_seq, report.chain)

    def open_anchored() -> None:
        journal = Journal.open(wal, backend="pwrite", prepare_ahead=False, verify_from=anchor)
        assert journal.report.verified_from_seq == anchor.seq
        journal.close()

    def replay() -> None:
        deque(journal.records(), maxlen=0)

    timings = {
        "read_records": best_s(lambda: deque(read_records(wal), maxlen=0), rounds),
        "scan": best_s(lambda: scan(wal), rounds),
        "Journal.open": best_s(open_close, rounds),
        "open@anchor": best_s(open_anchored, rounds),
    }
    with Journal.open(wal, backend="pwrite", prepare_ahead=False) as journal:
        assert journal.last_seq >= count
        timings["records()"] = best_s(replay, rounds)
    return timings


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m jex.journal.read_bench", description=__doc__.split("\n")[0])
    parser.add_argument("--counts", default="5000,100000,1000000", help="records per log")
    parser.add_argument("--payload-bytes", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=3, help="timings are the best of this many")
    parser.add_argument("--dir", type=Path, default=None, help="where to build (default: a temp dir)")
    parser.add_argument("--keep", action="store_true", help="keep the logs (and reuse them next time)")
    args = parser.parse_args(argv)
    root = Path(tempfile.mkdtemp(prefix="jex-read-bench-", dir=args.dir)) if args.dir is None else args.dir
    try:
        print(f"{'records':>9} {'segs':>4}  " + "  ".join(f"{name:>26}" for name in
              ("read_records", "scan", "Journal.open", "open@anchor", "records()")))  # fmt: skip
        for count in (int(c) for c in args.counts.split(",")):
            wal = root / f"n{count}-p{args.payload_bytes}" / "wal"
            if not wal.is_dir():
                build(wal, count, args.payload_bytes)
            segments = len(list(wal.glob("*.wal")))
            cells = [
                f"{seconds * 1e3:9.1f} ms {count / seconds / 1e3:7.0f} k/s"
                for seconds in measure(wal, count, args.rounds).values()
            ]
            print(f"{count:>9} {segments:>4}  " + "  ".join(f"{cell:>26}" for cell in cells), flush=True)
    finally:
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
