"""In-memory engine benchmark on the "std" mix (not a test).

One symbol; 60% passive limit adds within ±20 ticks of a drifting mid, 25%
cancels of live orders, 10% aggressive limits, 5% market orders. Commands
are pre-built internal Structs so only ``Engine.apply`` is timed.

    python benchmarks/engine_std.py [--commands N] [--seed S] [--stops K]

Prints throughput (a timed loop without per-command clocks), the same with
the GC disabled, and per-command latency percentiles from an HDR histogram
(a second loop timing each apply with perf_counter_ns), overall and per
kind. The workload and the passes are jex.bench's (`jex bench --section
engine --workload std` runs the same with the full report); ``--stops``
adds K pending stop orders far from the market to the setup.
"""

from __future__ import annotations

import argparse
import json

from jex.bench.inmemory import OVERALL, engine_run
from jex.bench.workloads import std


def run(count: int, seed: int, stops: int) -> dict:
    workload = std(seed, count, stops)
    result = engine_run(workload)
    for summary in result["latency_ns"].values():
        summary.pop("curve", None)
    return {
        "commands": result["commands"],
        "stops": stops,
        "throughput_cmd_s": result["throughput_cmd_s"],
        "throughput_gc_off_cmd_s": result["throughput_gc_off_cmd_s"],
        "latency_ns": result["latency_ns"][OVERALL],
        "latency_ns_by_kind": {k: v for k, v in result["latency_ns"].items() if k != OVERALL},
        "digest": result["digest"],
        "digest_matches": result["digest_matches"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--commands", type=int, default=300_000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--stops", type=int, default=0)
    args = parser.parse_args()
    print(json.dumps(run(args.commands, args.seed, args.stops), indent=1))


if __name__ == "__main__":
    main()
