"""Durable runs through the real node (bench room).

* ``throughput_run``: a workload's JSON dicts through
  ``Exchange.submit_many`` with bulk batching (``BULK_BATCH_WAIT_NS``) and
  overlap, every result consumed (each is released only after its batch is
  durable). The edge codec is included, as on every real edge.
* ``ack_latency_run``: a paced producer offers commands at a fixed rate to
  a ``Gateway`` (the node's thread-safe front, the path the network API
  uses; live group commit, no timer) and records, per command, the
  time from enqueue to the moment its future resolves in the writer thread,
  right after durability. A second histogram measures from the *scheduled*
  send time instead, which corrects for coordinated omission: if the
  producer itself is held up (by the GIL, say), the commands it could not
  send on time still count their full wait.
* ``device_commit_run``: the floor under an acknowledgement, measured on
  the same backend just before each ack run: the journal alone (no node,
  no engine, no codec, no threads) commits one small record at a time,
  back to back, and each submit -> durable is timed. What the ack adds on
  top of it is software and queueing.
* ``replay_run``: ``jex.replay.rebuild`` of a log written by a throughput run.
* ``recovery_run``: ``Exchange.open`` of that log (lock, scan, replay) until
  a first new command is durable.

Every run gets a fresh data directory from the caller.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

import jex.native as native
from jex.journal import bench as journal_bench
from jex.journal.backends import Backend, make_backend
from jex.journal.storage import OsStorage
from jex.node.exchange import BULK_BATCH_WAIT_NS, Exchange
from jex.node.gateway import Gateway, GatewayError
from jex.replay.rebuild import rebuild

from .hist import summarize, summarize_with_curve
from .inmemory import frozen_heap
from .workloads import Workload

PACING_SLEEP_NS_MIN = 50_000  # the producer sleeps when the next send is at least this far away
ACK_START_DELAY_NS = 5_000_000  # the paced schedule starts this long after the producer does
ACK_DRAIN_TIMEOUT_S = 120.0  # how long to wait for the last acknowledgements
SETTLE_S_MAX = 10.0  # longest wait for the journal's first segment preparation
SETTLE_POLL_S = 0.01
ACK_BACKLOG_S_MAX = 0.25  # stop offering once this many seconds of offered load wait unacknowledged
DEVICE_PAYLOAD_BYTES = 64  # device_commit_run's record: about the size of a logged order
_ACKED, _REFUSED, _FAILED = 1, 2, 3  # how a command's future resolved (ack_latency_run)


class BatchProbe:
    """Counts the journal's batches and times each commit (submit -> wait
    returned) by wrapping one journal instance's ``submit_records`` (which
    ``submit`` goes through too) and ``wait``. Observation only: the calls
    go through unchanged."""

    def __init__(self, journal) -> None:
        self.sizes: list[int] = []
        self.commit_ns: list[int] = []
        self._started = 0
        submit_records, wait = journal.submit_records, journal.wait
        clock = time.perf_counter_ns

        def counted_submit_records(first_seq, stamps, payloads):
            self.sizes.append(len(payloads))
            self._started = clock()
            return submit_records(first_seq, stamps, payloads)

        def timed_wait():
            pending = journal.in_flight
            result = wait()
            if pending:
                self.commit_ns.append(clock() - self._started)
            return result

        journal.submit_records = counted_submit_records
        journal.wait = timed_wait

    def report(self) -> dict:
        """``{"batches", "records_per_batch_mean", "records_per_batch_max", "commit_ns": summary}``."""
        count = len(self.sizes)
        return {
            "batches": count,
            "records_per_batch_mean": round(sum(self.sizes) / count, 1) if count else 0,
            "records_per_batch_max": max(self.sizes, default=0),
            "commit_ns": summarize(self.commit_ns),
        }


def settle(journal) -> None:
    """Wait (bounded) for the journal's background preparation of the next
    segment (64 MiB of zeros) to finish: it is a one-off at open that would
    otherwise compete with the first seconds of a run for the disk."""
    deadline = time.monotonic() + SETTLE_S_MAX
    while journal.preparing and time.monotonic() < deadline:
        time.sleep(SETTLE_POLL_S)


def _open(directory: Path, workload: Workload, backend: str, **options) -> Exchange:
    node = Exchange.open(directory, backend=backend, clock=workload.clock, snapshot_every=0, **options)
    settle(node.journal)
    return node


def _submit_setup(node: Exchange, workload: Workload) -> None:
    for result in node.submit_many(workload.dicts[: workload.setup]):
        if result.error is not None:
            raise RuntimeError(f"setup command {result.index} refused: {result.error}")


def throughput_run(workload: Workload, backend: str, directory: Path) -> dict:
    """Durable throughput of the workload's timed commands on ``backend``.

    Returns ``{"backend", "commands", "seconds", "throughput_cmd_s",
    "refused"}`` (``backend`` is the journal's resolved name, e.g.
    ``uring-direct``; ``refused`` counts edge refusals, expected 0).
    """
    dicts = workload.dicts
    with frozen_heap(), _open(directory, workload, backend, batch_wait_ns=BULK_BATCH_WAIT_NS) as node:
        _submit_setup(node, workload)
        probe = BatchProbe(node.journal)
        refused = 0
        count = 0
        started = time.perf_counter()
        for result in node.submit_many(dicts[workload.setup:]):
            count += 1
            if result.error is not None:
                refused += 1
        seconds = time.perf_counter() - started
        name = node.backend
    return {
        "backend": name,
        "commands": count,
        "seconds": round(seconds, 4),
        "throughput_cmd_s": round(count / seconds) if seconds > 0 else 0,
        "refused": refused,
        "journal": probe.report(),
    }


def ack_latency_run(workload: Workload, backend: str, directory: Path, rate_cmd_s: int, seconds: float) -> dict:
    """Durable acknowledgement latency at a fixed offered load.

    Offers ``min(rate_cmd_s * seconds, workload.timed)`` commands on a fixed
    schedule (one every 1/rate s; when the producer wakes late it sends all
    that are due). When the node cannot keep up (more than
    ``ACK_BACKLOG_S_MAX`` of offered load unacknowledged) offering stops
    early and ``saturated`` is set: the percentiles are then queueing
    delay, and ``achieved_cmd_s`` is the node's capacity on this path.
    Returns ``{"backend", "offered_cmd_s", "commands", "achieved_cmd_s",
    "saturated", "refused", "overloaded", "ack_ns": summary,
    "ack_from_schedule_ns": summary, "producer_lag_ns": summary}``.
    """
    count = min(int(rate_cmd_s * seconds), workload.timed)
    dicts = workload.dicts[workload.setup: workload.setup + count]
    interval_ns = 1_000_000_000 / rate_cmd_s
    clock = time.perf_counter_ns
    scheduled = [0] * count
    enqueued = [0] * count
    released = [0] * count
    outcome = bytearray(count)  # per command: _ACKED, _REFUSED or _FAILED once its future resolved
    sent = 0
    overloaded = 0
    acknowledged = [0]
    counting = threading.Lock()  # callbacks run in the writer thread, or here if already resolved
    backlog_max = max(1, int(rate_cmd_s * ACK_BACKLOG_S_MAX))
    saturated = False

    # The futures are not kept: a client keeps nothing of an acknowledged
    # request, and 10^4..10^5 retained futures and results would make the
    # collector's full passes (tens of ms each) part of the figures.
    def marker(i: int):
        def mark(future) -> None:
            released[i] = clock()
            if future.exception() is not None:
                outcome[i] = _FAILED
            else:
                outcome[i] = _REFUSED if future.result().error is not None else _ACKED
            with counting:
                acknowledged[0] += 1
        return mark

    with frozen_heap(), Gateway.open(directory, backend=backend, clock=workload.clock, snapshot_every=0) as gateway:
        for command in workload.dicts[: workload.setup]:
            gateway.submit(command).result()
        settle(gateway.exchange.journal)
        name = gateway.exchange.backend
        probe = BatchProbe(gateway.exchange.journal)
        start = clock() + ACK_START_DELAY_NS
        i = 0
        while i < count:
            if sent - acknowledged[0] > backlog_max:
                saturated = True
                break
            now = clock()
            due = start + int(i * interval_ns)
            if due - now >= PACING_SLEEP_NS_MIN:
                time.sleep((due - now) / 1e9)
                continue
            while i < count and start + int(i * interval_ns) <= now:
                scheduled[i] = start + int(i * interval_ns)
                enqueued[i] = clock()
                try:
                    future = gateway.submit(dicts[i])
                except GatewayError:
                    overloaded += 1
                    i += 1
                    continue
                sent += 1
                future.add_done_callback(marker(i))
                i += 1
        deadline = time.monotonic() + ACK_DRAIN_TIMEOUT_S
        while acknowledged[0] < sent and time.monotonic() < deadline:
            time.sleep(SETTLE_POLL_S / 10)
        elapsed_s = (clock() - start) / 1e9
        if acknowledged[0] < sent:
            raise RuntimeError(f"{sent - acknowledged[0]} commands not acknowledged within {ACK_DRAIN_TIMEOUT_S} s")
    if _FAILED in outcome:
        raise RuntimeError(f"{outcome.count(_FAILED)} commands failed: {gateway.failure}")
    done = [i for i in range(count) if released[i]]
    return {
        "backend": name,
        "offered_cmd_s": rate_cmd_s,
        "commands": len(done),
        "achieved_cmd_s": round(len(done) / elapsed_s) if elapsed_s > 0 else 0,
        "saturated": saturated,
        "refused": outcome.count(_REFUSED),
        "overloaded": overloaded,
        "ack_ns": summarize_with_curve(released[i] - enqueued[i] for i in done),
        "ack_from_schedule_ns": summarize(released[i] - scheduled[i] for i in done),
        "producer_lag_ns": summarize(enqueued[i] - scheduled[i] for i in done),
        "journal": probe.report(),
    }


def device_commit_run(backend: str, directory: Path, seconds: float) -> dict:
    """Back-to-back durable commits of one 64-byte record through the
    journal alone on ``backend`` for ``seconds`` (``jex.journal.bench``'s
    timed loop, batch 1, no work between submit and wait): ``{"backend",
    "commits", "commit_ns": summary}`` (each submit -> durable, the floor
    under any acknowledgement on this disk and backend at this moment)."""
    made: list[Backend] = []

    def make() -> Backend:
        made.append(make_backend(backend, OsStorage()))
        return made[-1]

    cell = journal_bench.Cell(backend, 1)
    journal_bench.run_one(cell, journal_bench.Variant(backend, make), DEVICE_PAYLOAD_BYTES, seconds, 0, directory)
    return {"backend": made[-1].name, "commits": len(cell.latencies_us),
            "commit_ns": summarize(round(us * 1000) for us in cell.latencies_us)}


def replay_run(directory: Path) -> dict:
    """``rebuild`` a data directory from genesis: ``{"records", "commands",
    "seconds", "throughput_cmd_s", "digest", "read_path"}`` (seconds: wall
    time of the whole rebuild, reading included; read_path: whether the
    journal's record framing ran compiled or pure, jex/native.py)."""
    with frozen_heap():
        started = time.perf_counter()
        engine, stats = rebuild(directory)
        seconds = time.perf_counter() - started
        digest = engine.digest()
        del engine
    return {
        "records": stats.records,
        "commands": stats.commands,
        "seconds": round(seconds, 4),
        "throughput_cmd_s": round(stats.commands / seconds) if seconds > 0 else 0,
        "digest": digest,
        "read_path": native.kind(native.JOURNAL),
    }


def recovery_run(directory: Path, workload: Workload, backend: str, client_id: str) -> dict:
    """Open a data directory (lock, journal scan, newest snapshot + tail or
    genesis replay) and submit one new command: ``{"open_s",
    "first_command_s", "to_first_command_s", "start", "replayed_records"}``."""
    probe = workload.probe(client_id)
    with frozen_heap():
        started = time.perf_counter()
        # Not _open: a recovering node serves at once, whatever the journal prepares meanwhile.
        node = Exchange.open(directory, backend=backend, clock=workload.clock, snapshot_every=0)
        try:
            opened = time.perf_counter()
            events = node.submit(probe)
            done = time.perf_counter()
            start = node.recovered_from.name
            replayed = node.recovery.records
        finally:
            node.close()
    if not events or events[0].get("type") != "accepted":
        raise RuntimeError(f"recovery probe was not accepted: {events}")
    return {
        "open_s": round(opened - started, 4),
        "first_command_s": round(done - opened, 5),
        "to_first_command_s": round(done - started, 4),
        "start": start,
        "replayed_records": replayed,
    }
