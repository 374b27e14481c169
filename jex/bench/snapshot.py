"""Snapshot write, fork pause, load, and recovery with and without a
snapshot, at N resting orders (bench room).

The resting book comes from ``benchmarks/snapshot_bench.py``
(``resting_orders``: limit orders on a separate symbol ``DEEP``, far from
any trading), loaded from the source checkout so both benchmarks measure
the same book; where the checkout is not there (an installed wheel) this
section is skipped with a notice. ``snapshot_bench.py`` remains the place
for the long runs (10 M-command logs, huge-page collapse, audit queries).

One run, in order, on one fresh data directory:

1. build: the resting orders through the durable node (bulk batching);
2. replay: ``rebuild`` from genesis (the baseline of everything below);
3. recovery from genesis: ``Exchange.open`` + one new command durable;
4. on a node opened again, a background snapshot: the parent's pause
   (decision to fork returned) and the child's time (export, encode,
   write, fsync);
5. load: ``snapshots.store.load`` of the written file (map, verify,
   decode, restore, digest check), and the same as recovery loads it
   (``check_digest=False``: no second digest; ``load_recovery``);
6. recovery from the snapshot: ``Exchange.open`` + one new command.

Both recoveries (3 and 6) run in a fresh child process (same interpreter,
same ``JEX_CORE``), as a node restarting after a crash does: measured in
this process they also paid for its million-object heap and its
fragmentation (about 2x at 1 M resting orders). Before each, the machine
settles (``_settle``): this process collects its garbage and waits
``SETTLE_S``, so that the kernel has finished tearing down the processes
and freeing the memory of the steps before it (a snapshot child that
shared a million-order heap, engines just dropped). Started at once, the
same recovery measured 1.5-2.0 s instead of 0.72 s at 1 M orders, the
other core busy freeing pages: what a node restarted the instant its
crashed predecessor dies may pay too, but not what recovery costs.
"""

from __future__ import annotations

import gc
import importlib.util
import json
import subprocess
import sys
import time
from pathlib import Path
from types import ModuleType

from jex.node.exchange import BULK_BATCH_WAIT_NS, Exchange

from .durable import replay_run
from .inmemory import frozen_heap

SNAPSHOT_BENCH_MODULE = "jex_benchmarks_snapshot_bench"
PROBE_SYMBOL = "DEEP"  # the symbol resting_orders defines
CHILD_TIMEOUT_S = 600.0  # a recovery child (minutes at 10 M orders)
SETTLE_S = 2.0  # quiet time before a timed recovery child (see the module docstring)


def snapshot_bench_module() -> ModuleType | None:
    """``benchmarks/snapshot_bench.py`` of the source checkout, or None."""
    if SNAPSHOT_BENCH_MODULE in sys.modules:
        return sys.modules[SNAPSHOT_BENCH_MODULE]
    import jex

    path = Path(jex.__file__).resolve().parents[1] / "benchmarks" / "snapshot_bench.py"
    if not path.is_file():
        return None
    spec = importlib.util.spec_from_file_location(SNAPSHOT_BENCH_MODULE, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    if not hasattr(module, "resting_orders"):
        return None
    sys.modules[SNAPSHOT_BENCH_MODULE] = module
    return module


def _probe(n: int) -> dict:
    return {"type": "order", "account": "bench", "client_id": f"probe-{n}", "symbol": PROBE_SYMBOL,
            "side": "buy", "kind": "limit", "qty": "1", "price": "1.00"}


def _open_and_probe(directory: Path, backend: str, n: int) -> tuple[Exchange, dict]:
    """Open (recover) and make one new command durable; the node stays open."""
    started = time.perf_counter()
    node = Exchange.open(directory, backend=backend, snapshot_every=0, hugepages=False)
    opened = time.perf_counter()
    events = node.submit(_probe(n))
    done = time.perf_counter()
    if not events or events[0].get("type") != "accepted":
        node.close()
        raise RuntimeError(f"recovery probe was not accepted: {events}")
    return node, {
        "open_s": round(opened - started, 4),
        "first_command_s": round(done - opened, 5),
        "to_first_command_s": round(done - started, 4),
        "start": node.recovered_from.name,
        "replayed_records": node.recovery.records,
    }


def recover_and_report(directory: str, backend: str, n: int) -> None:
    """The child's side of ``_recover_in_child``: recover, probe, close,
    print the figures as one JSON line."""
    node, figures = _open_and_probe(Path(directory), backend, n)
    node.close()
    print(json.dumps(figures))


def _settle() -> None:
    """Collect this process's garbage, then wait for the kernel to finish
    freeing what earlier steps let go (see the module docstring)."""
    gc.collect()
    time.sleep(SETTLE_S)


def _recover_in_child(directory: Path, backend: str, n: int) -> dict:
    """``_open_and_probe`` in a fresh Python process (the child inherits
    the environment, so the same core runs), on a settled machine."""
    _settle()
    code = "import sys; from jex.bench.snapshot import recover_and_report; " \
           "recover_and_report(sys.argv[1], sys.argv[2], int(sys.argv[3]))"
    done = subprocess.run([sys.executable, "-c", code, str(directory), backend, str(n)],
                          capture_output=True, text=True, timeout=CHILD_TIMEOUT_S)
    if done.returncode != 0:
        raise RuntimeError(f"recovery child failed ({done.returncode}): {done.stderr.strip()[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def snapshot_run(directory: Path, resting: int, backend: str) -> dict | None:
    """The snapshot section at ``resting`` orders; None without snapshot_bench."""
    module = snapshot_bench_module()
    if module is None:
        return None
    from jex.snapshots import store

    out: dict = {"resting_orders": resting}
    with frozen_heap():
        started = time.perf_counter()
        with Exchange.open(directory, backend=backend, snapshot_every=0, batch_wait_ns=BULK_BATCH_WAIT_NS) as node:
            for result in node.submit_many(module.resting_orders(resting)):
                if result.error is not None:
                    raise RuntimeError(f"resting order {result.index} refused: {result.error}")
            out["resting_live"] = len(node.engine.orders)
        build_s = time.perf_counter() - started
        out["build"] = {"seconds": round(build_s, 3), "throughput_cmd_s": round((resting + 1) / build_s)}
        out["replay"] = replay_run(directory)
        out["recovery_genesis"] = _recover_in_child(directory, backend, 1)
        node = Exchange.open(directory, backend=backend, snapshot_every=0, hugepages=False)
        try:
            started_info = node.snapshot(wait=False)
            report = node.wait_snapshot()
        finally:
            node.close()
        if report is None:
            raise RuntimeError("the background snapshot failed (see the notice above)")
        out["fork_pause_s"] = round(started_info["pause_s"] or 0.0, 6)
        out["child"] = {"alive_s": round(report["alive_s"], 4), "bytes": report["bytes"],
                        "seconds": report["seconds"]}
        for key, check_digest in (("load", True), ("load_recovery", False)):
            started = time.perf_counter()
            loaded = store.load(Path(report["path"]), check_digest=check_digest)
            load_s = time.perf_counter() - started
            out[key] = {"seconds": round(load_s, 4), **{k: round(v, 4) for k, v in loaded.seconds.items()}}
            del loaded
        out["recovery_snapshot"] = _recover_in_child(directory, backend, 2)
    return out
