"""The whole benchmark suite as a script: the same as ``jex bench`` (not a test).

    python benchmarks/suite.py [--quick] [--seed S] [--workload std,exchange-core,amzn] [--out DIR]
                               [--full-snapshot] [--json] ...   (every `jex bench --help` option)

Engine throughput and per-kind latency (HDR), durable throughput on io_uring
and pwrite beside the in-memory engine+codec, acknowledgement latency at
fixed offered loads, replay, recovery and snapshots at N resting orders; every
figure next to its same-run baseline as a ratio. Writes bench.json and
bench-latency.png into --out (default benchmarks/out, git-ignored).
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from jex.cli.main import run  # noqa: E402

if __name__ == "__main__":
    argv = sys.argv[1:]
    if not any(a == "--out" or a.startswith("--out=") for a in argv):
        argv += ["--out", str(ROOT / "benchmarks" / "out")]
    sys.exit(run(["bench", *argv]))
