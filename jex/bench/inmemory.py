"""In-memory runs: the engine alone, and the engine with the edge codec
(bench room).

``engine_run`` times ``Engine.apply`` over a workload's pre-built Structs
twice, on two fresh engines: a throughput pass (one clock read around the
whole loop) and a latency pass (``perf_counter_ns`` around every apply).
The passes are separate so the per-command clock reads (~100 ns of Python
each) do not lower the throughput figure. Both end in the same state: their
digests must equal the shadow engine's that built the workload, which is
the reproducibility check.

``other_core_run`` runs the throughput pass in a child process on the other
implementation of the core (pure Python when the compiled core runs here,
compiled when it is built but not in use): the two side by side, with the
digests compared.

``codec_run`` is the durable runs' in-memory baseline: what the node does
per command minus sequencing and the journal (decode the JSON dict with the
edge codec, apply, encode each event back to a contract dict).

GC: the collector stays on (the node runs with it on), but the workload's
inputs are moved to the permanent generation first (``gc.freeze``) so the
collector does not rescan hundreds of thousands of input dicts that no real
node would hold.
"""

from __future__ import annotations

import gc
import json
import os
import statistics
import subprocess
import sys
import time
from contextlib import contextmanager
from typing import Iterator

import msgspec

import jex.native as native
from jex.core import Codec, Engine
from jex.core.state import export_state, restore_state
from jex.snapshots import gcpolicy

from .hist import summarize, summarize_with_curve
from .workloads import Workload

OVERALL = "all"  # the per-kind latency key of all timed commands together


@contextmanager
def frozen_heap() -> Iterator[None]:
    """Collect, then keep everything allocated so far out of GC scans (a
    recovered node's frozen heap stays frozen: snapshots/gcpolicy.py)."""
    gc.collect()
    gc.freeze()
    try:
        yield
    finally:
        if not gcpolicy.long_lived():
            gc.unfreeze()


def _setup_engine(workload: Workload) -> Engine:
    engine = Engine()
    commands, stamps = workload.commands, workload.ts
    for i in range(workload.setup):
        engine.apply(commands[i], i + 1, stamps[i])
    return engine


def _throughput_pass(workload: Workload, restored: bool = False) -> tuple[float, float, str]:
    """Apply the timed commands to a fresh engine: (seconds for all of them,
    seconds for their second half, the digest). With ``restored``, the
    engine goes through a snapshot round trip (export, msgpack, restore)
    after the first half, untimed, and only the second half is timed (the
    first figure is then 0): what a node runs after a restart when its
    client-id registry is large (above state.HOT_REGISTRY_MAX entries, kept
    cold: core/registry.py; forced here), so every new order's duplicate
    check misses the dicts and asks it."""
    commands, stamps, first = workload.commands, workload.ts, workload.setup
    middle = first + (len(commands) - first) // 2
    engine = _setup_engine(workload)
    apply = engine.apply
    started = time.perf_counter()
    for i in range(first, middle):
        apply(commands[i], i + 1, stamps[i])
    if restored:
        body = msgspec.msgpack.decode(msgspec.msgpack.encode(export_state(engine)))
        engine = restore_state(body, hot_registry_max=0)  # cold, as a registry above HOT_REGISTRY_MAX is
        apply = engine.apply
    halfway = time.perf_counter()
    for i in range(middle, len(commands)):
        apply(commands[i], i + 1, stamps[i])
    done = time.perf_counter()
    return (0.0 if restored else done - started), done - halfway, engine.digest()


def engine_run(workload: Workload, rounds: int = 1) -> dict:
    """Throughput and per-kind latency of ``Engine.apply`` on ``workload``.

    Returns ``{"commands", "seconds", "throughput_cmd_s",
    "throughput_gc_off_cmd_s", "throughput_restored_cmd_s", "rounds_cmd_s",
    "rounds_gc_off_cmd_s", "rounds_restored_cmd_s", "latency_ns": {"all":
    summary, <label>: summary, ...}, "digest", "digest_matches"}``. The
    throughput pass runs ``rounds`` times, alternating with a pass with the
    collector disabled (what the cyclic GC costs the engine) and one whose
    engine is restored from its snapshot halfway (what a node runs after a
    restart: the cold registry's cost); ``throughput_restored_cmd_s`` is the
    second half's rate there, ``throughput_second_half_cmd_s`` the same
    commands' rate in the plain pass. The figures are medians.
    """
    commands, stamps, first = workload.commands, workload.ts, workload.setup
    timed = len(commands) - first
    halves = timed - timed // 2
    on: list[float] = []
    off: list[float] = []
    restored: list[float] = []
    second_half: list[float] = []
    digests = set()
    for _ in range(max(1, rounds)):
        with frozen_heap():
            seconds, seconds_half, digest = _throughput_pass(workload)
        on.append(seconds)
        second_half.append(seconds_half)
        digests.add(digest)
        with frozen_heap():
            gc.disable()
            try:
                seconds_gc_off, _, digest = _throughput_pass(workload)
            finally:
                gc.enable()
        off.append(seconds_gc_off)
        digests.add(digest)
        with frozen_heap():
            _, seconds_restored, digest = _throughput_pass(workload, restored=True)
        restored.append(seconds_restored)
        digests.add(digest)
    seconds, seconds_gc_off = statistics.median(on), statistics.median(off)
    with frozen_heap():
        engine = _setup_engine(workload)
        apply = engine.apply
        clock = time.perf_counter_ns
        latencies = [0] * (len(commands) - first)
        for i in range(first, len(commands)):
            t0 = clock()
            apply(commands[i], i + 1, stamps[i])
            latencies[i - first] = clock() - t0
        digest_latency = engine.digest()
        del engine, apply
    by_kind: dict[str, list[int]] = {}
    for label, value in zip(workload.labels[first:], latencies):
        by_kind.setdefault(label, []).append(value)
    return {
        "commands": timed,
        "seconds": round(seconds, 4),
        "throughput_cmd_s": _rate(timed, seconds),
        "throughput_gc_off_cmd_s": _rate(timed, seconds_gc_off),
        "throughput_restored_cmd_s": _rate(halves, statistics.median(restored)),
        "throughput_second_half_cmd_s": _rate(halves, statistics.median(second_half)),
        "rounds_cmd_s": [_rate(timed, s) for s in on],
        "rounds_gc_off_cmd_s": [_rate(timed, s) for s in off],
        "rounds_restored_cmd_s": [_rate(halves, s) for s in restored],
        "latency_ns": {OVERALL: summarize_with_curve(latencies), **{k: summarize(v) for k, v in by_kind.items()}},
        "digest": digest_latency,
        "digest_matches": digests == {digest_latency} == {workload.digest},
    }


OTHER_CORE_TIMEOUT_S = 1800

_OTHER_CORE_CHILD = """
import json, sys
from jex.bench import inmemory, workloads
import jex.native as native
name, seed, count, amzn_rows, rounds = json.loads(sys.argv[1])
w = workloads.build(name, seed, count, amzn_rows=amzn_rows)
print(json.dumps({"core": native.kind(), **inmemory.throughput_only(w, rounds)}))
"""


def throughput_only(workload: Workload, rounds: int = 1) -> dict:
    """The throughput pass alone, ``rounds`` times: ``{"throughput_cmd_s"
    (median), "rounds_cmd_s", "digest"}``."""
    timed = len(workload.commands) - workload.setup
    seconds: list[float] = []
    digests = set()
    for _ in range(max(1, rounds)):
        with frozen_heap():
            s, _, digest = _throughput_pass(workload)
        seconds.append(s)
        digests.add(digest)
    return {"throughput_cmd_s": _rate(timed, statistics.median(seconds)),
            "rounds_cmd_s": [_rate(timed, s) for s in seconds],
            "digest": digests.pop() if len(digests) == 1 else None}


def other_core() -> str | None:
    """The core to compare against in a child process, or None when only
    one is available: pure when compiled runs here, compiled when it is
    built and fresh but this process runs pure."""
    if native.kind() == "compiled":
        return "pure"
    built = native.built_modules()
    return "compiled" if built and not native.stale_modules(built) else None


def other_core_run(core: str, name: str, seed: int, count: int, amzn_rows: int | None, rounds: int) -> dict:
    """Throughput of the same workload on ``core`` (``"pure"`` or
    ``"compiled"``, see ``other_core``), in a child process. Raises
    RuntimeError when the child fails."""
    env = dict(os.environ, JEX_CORE=core)
    done = subprocess.run(
        [sys.executable, "-c", _OTHER_CORE_CHILD, json.dumps([name, seed, count, amzn_rows, rounds])],
        env=env, capture_output=True, text=True, timeout=OTHER_CORE_TIMEOUT_S,
    )
    if done.returncode != 0:
        raise RuntimeError(f"{core} core run failed: {done.stderr.strip().splitlines()[-1:] or done.returncode}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def _rate(count: int, seconds: float) -> int:
    return round(count / seconds) if seconds > 0 else 0


def codec_run(workload: Workload) -> dict:
    """Throughput of edge codec + ``Engine.apply`` + event encoding on the
    workload's JSON dicts (the in-memory twin of a durable run).

    Returns ``{"commands", "seconds", "throughput_cmd_s", "events"}``.
    """
    dicts, stamps, first = workload.dicts, workload.ts, workload.setup
    with frozen_heap():
        engine = Engine()
        codec = Codec.for_engine(engine)
        for i in range(first):
            command, _ = codec.command(dicts[i])
            engine.apply(command, i + 1, stamps[i])
        decode, apply, encode_events = codec.command, engine.apply, codec.events
        produced = 0
        started = time.perf_counter()
        for i in range(first, len(dicts)):
            command, input_ts = decode(dicts[i])
            events = apply(command, i + 1, i + 1 if input_ts is None else input_ts)
            produced += len(encode_events(events))
        seconds = time.perf_counter() - started
        del engine, codec, decode, apply, encode_events
    timed = len(dicts) - first
    return {
        "commands": timed,
        "seconds": round(seconds, 4),
        "throughput_cmd_s": round(timed / seconds) if seconds > 0 else 0,
        "events": produced,
    }
