"""In-memory engine benchmark on the "std" mix (not a test).

One symbol; 60% passive limit adds within ±20 ticks of a drifting mid, 25%
cancels of live orders, 10% aggressive limits, 5% market orders. Commands
are pre-built internal Structs so only ``Engine.apply`` is timed.

    python benchmarks/engine_std.py [--commands N] [--seed S] [--stops K]

Prints throughput (a timed loop without per-command clocks) and per-command
latency percentiles (a second loop timing each apply with perf_counter_ns).
"""

from __future__ import annotations

import argparse
import gc
import random
import time

from jex.core import Engine
from jex.core import commands as C


def std_commands(seed: int, count: int, stops: int = 0) -> list:
    rng = random.Random(seed)
    out: list = [C.Instrument("STD", "0.01", "1")]
    mid = 10_000
    live: list[tuple[str, str]] = []
    n = 0
    for i in range(stops):
        side = C.SELL if i % 2 else C.BUY
        trigger = mid - 500 - rng.randint(0, 400) if side == C.SELL else mid + 500 + rng.randint(0, 400)
        out.append(C.NewOrder(f"s{i % 7}", f"stop{i}", "STD", side, C.STOP, rng.randint(1, 10), None, trigger))
    while n < count:
        n += 1
        mid += rng.choice((-1, 0, 0, 1))
        roll = rng.random()
        account = f"a{rng.randrange(16)}"
        cid = f"o{n}"
        side = rng.randrange(2)
        qty = rng.randint(1, 100)
        if roll < 0.60:
            price = mid - rng.randint(1, 20) if side == C.BUY else mid + rng.randint(1, 20)
            out.append(C.NewOrder(account, cid, "STD", side, C.LIMIT, qty, price))
            live.append((account, cid))
        elif roll < 0.85:
            if live:
                acct, target = live.pop(rng.randrange(len(live)))
                out.append(C.Cancel(acct, target))
            else:
                out.append(C.Cancel(account, "none"))
        elif roll < 0.95:
            price = mid + rng.randint(0, 10) if side == C.BUY else mid - rng.randint(0, 10)
            out.append(C.NewOrder(account, cid, "STD", side, C.LIMIT, qty, price))
            live.append((account, cid))
        else:
            out.append(C.NewOrder(account, cid, "STD", side, C.MARKET, qty, None, tif=C.IOC))
    return out


def percentile(sorted_values: list[int], q: float) -> int:
    return sorted_values[min(len(sorted_values) - 1, int(q * len(sorted_values)))]


def run(count: int, seed: int, stops: int) -> dict:
    commands = std_commands(seed, count, stops)
    gc.collect()
    gc.disable()
    try:
        engine = Engine()
        apply = engine.apply
        started = time.perf_counter()
        for seq, command in enumerate(commands, 1):
            apply(command, seq, seq)
        elapsed = time.perf_counter() - started
        engine2 = Engine()
        apply2 = engine2.apply
        clock = time.perf_counter_ns
        latencies = []
        for seq, command in enumerate(commands, 1):
            t0 = clock()
            apply2(command, seq, seq)
            latencies.append(clock() - t0)
    finally:
        gc.enable()
    latencies.sort()
    assert engine.digest() == engine2.digest()
    return {
        "commands": len(commands),
        "throughput_cmd_s": round(len(commands) / elapsed),
        "p50_ns": percentile(latencies, 0.50),
        "p99_ns": percentile(latencies, 0.99),
        "p999_ns": percentile(latencies, 0.999),
        "max_ns": latencies[-1],
        "resting": sum(lv.count for side in (engine.instruments["STD"].book.bids, engine.instruments["STD"].book.asks)
                       for lv in side.levels.values()),
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--commands", type=int, default=300_000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--stops", type=int, default=0)
    args = parser.parse_args()
    print(run(args.commands, args.seed, args.stops))


if __name__ == "__main__":
    main()
