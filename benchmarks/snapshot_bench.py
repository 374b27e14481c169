"""Snapshot, recovery and audit benchmark (not a test).

    python benchmarks/snapshot_bench.py --data /tmp/jex-bench --resting 1000000 --commands 10000000

Phases (results are printed as one JSON object per phase and collected in
<data>/bench.json; an existing data directory is reused with --reuse, so a
long log is generated once):

  build     a real node (io_uring where available) takes `--resting` resting
            limit orders on a separate symbol DEEP (far from any trading),
            then `--commands` commands of jex.workload.mixed_flow on JEX and
            PRO, with automatic background snapshots every
            `--snapshot-every` seqs. The generator widens the group-commit
            window (BATCH_WAIT_NS_MAX) so batches fill up: it measures
            snapshots, not the sync rate of this disk.
  snapshot  with the resting book in memory: the pause the parent sees when
            a background snapshot starts (decision -> fork returned), with
            and without the heap collapsed into huge pages, what the child
            spends (export, encode, digest, write + fsync), the file size,
            matching throughput while the child lives vs. after, and the
            load time (mmap + verify + decode + restore + digest check).
  audit     in a fresh process: build the audit index over the whole log,
            then query latency (order, client, account page, trades page,
            range page) in-process and through the `jex audit` CLI.
  recover   in a fresh process: Exchange.open (journal scan + newest
            snapshot + tail replay) until the first new command is durable;
            on the unpruned log, and again after `jex snapshot` pruned it
            (so it runs last).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

GENERATOR_BATCH_WAIT_NS = 50_000_000  # 50 ms: batches fill to BATCH_RECORDS_MAX while generating
RESTING_LEVELS = 5_000  # price levels per side on DEEP
THROUGHPUT_PROBE_COMMANDS = 20_000


def emit(results: dict, phase: str, data: dict, out: Path) -> None:
    results[phase] = data
    print(json.dumps({phase: data}, indent=1), flush=True)
    out.write_text(json.dumps(results, indent=1))


def resting_orders(count: int):
    yield {"type": "instrument", "symbol": "DEEP", "tick": "0.01", "lot": "1"}
    for i in range(count):
        level = (i // 2) % RESTING_LEVELS
        if i % 2 == 0:
            price = 5_000 - level  # bids 0.01 .. 50.00
            side = "buy"
        else:
            price = 20_000 + level  # asks 200.00 ..
            side = "sell"
        yield {"type": "order", "account": f"deep{i % 97}", "client_id": f"d{i}", "symbol": "DEEP", "side": side,
               "kind": "limit", "qty": "10", "price": f"{price // 100}.{price % 100:02d}"}


def build(args, results: dict, out: Path) -> None:
    import jex.node.exchange as exchange_module
    from jex.node.exchange import Exchange
    from jex.workload import mixed_flow

    exchange_module.BATCH_WAIT_NS_MAX = GENERATOR_BATCH_WAIT_NS
    started = time.perf_counter()
    with Exchange.open(args.data, snapshot_every=0, prune_wal=False) as node:
        node.batch_wait_ns = GENERATOR_BATCH_WAIT_NS
        for result in node.submit_many(resting_orders(args.resting)):
            assert result.error is None, result.error
        resting_s = time.perf_counter() - started
        node.snapshot_every = args.snapshot_every
        t1 = time.perf_counter()
        count = 0
        for result in node.submit_many(mixed_flow(args.seed, args.commands)):
            count += 1
            if count % 1_000_000 == 0:
                print(f"  {count:,} commands, {count / (time.perf_counter() - t1):,.0f}/s, "
                      f"seq {node.journal.last_seq:,}", file=sys.stderr, flush=True)
        flow_s = time.perf_counter() - t1
        node.wait_snapshot()
        pauses = sorted(node.snapshot_pauses)
        emit(results, "build", {
            "backend": node.backend,
            "resting_orders": len(node.engine.orders),
            "resting_s": round(resting_s, 1),
            "flow_commands": count,
            "flow_s": round(flow_s, 1),
            "flow_commands_per_s": round(count / flow_s),
            "last_seq": node.journal.last_seq,
            "background_snapshots": len(node.snapshot_pauses),
            "background_failures": node.snapshot_failures,
            "fork_pause_ms_during_build": [round(p * 1000, 2) for p in pauses],
            "last_background_snapshot": node.last_snapshot,
        }, out)


def snapshot_phase(args, results: dict, out: Path) -> None:
    from jex.node.exchange import Exchange
    from jex.snapshots import store
    from jex.snapshots.heap import HugepageCompactor, resident_bytes
    from jex.workload import mixed_flow

    data: dict = {}
    t0 = time.perf_counter()
    node = Exchange.open(args.data, snapshot_every=0, prune_wal=False, hugepages=False)
    data["open_s"] = round(time.perf_counter() - t0, 2)
    data["resident_mib"] = resident_bytes() >> 20
    data["orders"] = len(node.engine.orders)
    probe = iter(mixed_flow(args.seed + 1, 10 * THROUGHPUT_PROBE_COMMANDS))
    for _ in range(2):
        next(probe)  # instruments exist already

    def throughput() -> float:
        t = time.perf_counter()
        n = 0
        for result in node.submit_many(next(probe) for _ in range(THROUGHPUT_PROBE_COMMANDS)):
            n += 1
        return n / (time.perf_counter() - t)

    try:
        data["matching_per_s_idle"] = round(throughput())
        for label, collapse in (("plain", False), ("hugepages", True)):
            row: dict = {}
            if collapse:
                compactor = HugepageCompactor(heap_bytes_min=0)
                t = time.perf_counter()
                compactor.start()
                compactor.wait()
                row["collapse_s"] = round(time.perf_counter() - t, 2)
                row["collapse_supported"] = compactor.supported
            pauses = []
            for attempt in range(3):
                started = node.snapshot(wait=False)
                pauses.append(started["pause_s"] * 1000)
                if attempt == 0:
                    row["matching_per_s_while_child_runs"] = round(throughput())
                report = node.wait_snapshot()
                if collapse and attempt < 2:
                    compactor.start()
                    compactor.wait()
            row["fork_pause_ms"] = [round(p, 2) for p in pauses]
            row["child"] = {k: report[k] for k in ("bytes", "seconds")}
            row["child"]["alive_s"] = round(report["alive_s"], 2)
            data[label] = row
        path = Path(report["path"])
        data["file_mib"] = round(path.stat().st_size / 2**20, 1)
        loads = []
        for _ in range(2):
            t = time.perf_counter()
            loaded = store.load(path)
            loads.append({"total_s": round(time.perf_counter() - t, 2),
                          **{k: round(v, 2) for k, v in loaded.seconds.items()}})
            del loaded
        data["load"] = loads
    finally:
        node.close()
    emit(results, "snapshot", data, out)


RECOVER_CHILD = """
import json, sys, time
t0 = time.perf_counter()
from jex.node.exchange import Exchange
t1 = time.perf_counter()
node = Exchange.open(sys.argv[1], snapshot_every=0)
t2 = time.perf_counter()
node.submit({"type": "order", "account": "bench", "client_id": f"first-{time.time_ns()}", "symbol": "JEX",
             "side": "buy", "kind": "limit", "qty": "1", "price": "1.00"})
t3 = time.perf_counter()
source = node.recovered_from
print(json.dumps({
    "import_s": round(t1 - t0, 2), "open_s": round(t2 - t1, 2), "first_command_s": round(t3 - t2, 4),
    "to_first_command_s": round(t3 - t1, 2), "start": source.name,
    "snapshot_load": {k: round(v, 2) for k, v in source.seconds.items()},
    "tail_records": node.recovery.records, "tail_replay_s": round(node.recovery.seconds, 2),
    "log_first_seq": node.journal.first_seq, "log_last_seq": node.journal.last_seq,
}))
node.close()
"""


def recover_phase(args, results: dict, out: Path) -> None:
    data = {}
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    run = lambda: json.loads(subprocess.run([sys.executable, "-c", RECOVER_CHILD, str(args.data)], env=env,
                                            capture_output=True, text=True, check=True).stdout)
    data["unpruned"] = run()
    t = time.perf_counter()
    taken = subprocess.run([sys.executable, "-m", "jex", "--data-dir", str(args.data), "--json", "snapshot"],
                           env=env, capture_output=True, text=True, check=True)
    data["jex_snapshot_s"] = round(time.perf_counter() - t, 2)
    data["jex_snapshot"] = json.loads(taken.stdout)
    data["pruned"] = run()
    emit(results, "recover", data, out)


AUDIT_CHILD = """
import json, random, statistics, sys, time
from jex.replay.audit import PageRequest, Selector, open_caught_up
data = sys.argv[1]
t = time.perf_counter()
index, built = open_caught_up(data)
build_s = time.perf_counter() - t
rng = random.Random(1)
top = built.position.seq
def timed(fn, n=200):
    samples = []
    for _ in range(n):
        t = time.perf_counter(); rows = fn(); samples.append((time.perf_counter() - t) * 1000)
    samples.sort()
    return {"p50_ms": round(samples[len(samples) // 2], 2), "p99_ms": round(samples[int(len(samples) * 0.99) - 1], 2),
            "max_ms": round(samples[-1], 2)}
def q(selector, **kw):
    return lambda: index.query(selector, PageRequest(**{"limit": 100, **kw})).rows
max_order = int(sys.argv[2])
out = {"build_s": round(build_s, 1), "indexed_commands": built.commands, "position": built.position.seq}
out["order_by_id"] = timed(lambda: q(Selector("order", order_id=rng.randint(1, max_order)))())
out["order_by_client"] = timed(lambda: q(Selector("order", client=(f"deep{(i := rng.randrange(max_order)) % 97}", f"d{i}")))())
out["account_page"] = timed(lambda: q(Selector("account", account=f"acct{rng.randrange(8)}"), since_seq=rng.randint(1, top))())
out["trades_page"] = timed(lambda: q(Selector("trades", symbol="JEX"), since_seq=rng.randint(1, top))())
out["range_page"] = timed(lambda: q(Selector("range"), since_seq=rng.randint(1, top))())
t = time.perf_counter()
again = index.catch_up()
out["caught_up_check_ms"] = round((time.perf_counter() - t) * 1000, 2)
index.close()
print(json.dumps(out))
"""


def audit_phase(args, results: dict, out: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, "-c", AUDIT_CHILD, str(args.data), str(max(args.resting, 1000))], env=env,
                          capture_output=True, text=True, check=True)
    data = json.loads(done.stdout)
    cli = []
    for argv in (["audit", "order", "123456"], ["audit", "account", "acct3", "--limit", "100"],
                 ["audit", "trades", "JEX", "--limit", "100"]):
        t = time.perf_counter()
        subprocess.run([sys.executable, "-m", "jex", "--data-dir", str(args.data), "--json", *argv], env=env,
                       capture_output=True, check=True)
        cli.append({"argv": " ".join(argv), "wall_s": round(time.perf_counter() - t, 3)})
    t = time.perf_counter()
    subprocess.run([sys.executable, "-c", "import jex.cli.main"], env=env, check=True)
    data["python_import_s"] = round(time.perf_counter() - t, 3)
    data["cli"] = cli
    emit(results, "audit", data, out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--resting", type=int, default=1_000_000)
    parser.add_argument("--commands", type=int, default=1_000_000)
    parser.add_argument("--snapshot-every", type=int, default=1_000_000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--reuse", action="store_true", help="Keep an existing data directory (skip build).")
    # audit runs before recover: recover ends with `jex snapshot`, which prunes the log the index should cover.
    parser.add_argument("--phases", default="build,snapshot,audit,recover")
    args = parser.parse_args()
    out = args.data.with_suffix(".bench.json")
    results = json.loads(out.read_text()) if out.exists() else {}
    phases = args.phases.split(",")
    if "build" in phases and not (args.reuse and (args.data / "wal").is_dir()):
        build(args, results, out)
        rest = [p for p in phases if p != "build"]
        if rest:
            # A fresh process: the generator's heap (and the garbage of its
            # engine) would otherwise distort every later measurement.
            argv = [sys.executable, __file__, "--data", str(args.data), "--resting", str(args.resting),
                    "--seed", str(args.seed), "--reuse", "--phases", ",".join(rest)]
            sys.exit(subprocess.run(argv).returncode)
    for name, fn in (("snapshot", snapshot_phase), ("audit", audit_phase), ("recover", recover_phase)):
        if name in phases:
            fn(args, results, out)
    print(f"results in {out}", file=sys.stderr)


if __name__ == "__main__":
    main()
