"""The durable node through real data directories and real writer backends."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time

import pytest

from jex.core import CommandError, Engine, decode_command
from jex.core.codec import Codec
from jex.journal import DirLocked, read_records
from jex.journal.backends import uring_unavailable_reason
from jex.node.exchange import Exchange
from jex.replay.rebuild import rebuild
from jex.workload import mixed_flow

BACKENDS = [
    pytest.param("pwrite", id="pwrite"),
    pytest.param(
        "uring",
        id="uring",
        marks=pytest.mark.skipif(uring_unavailable_reason() is not None, reason=f"io_uring: {uring_unavailable_reason()}"),
    ),
]
SEGMENT = 256 * 1024  # small segments so that rollovers happen in tests

INSTRUMENT = {"type": "instrument", "symbol": "X", "tick": "0.01", "lot": "1"}


def order(cid, side="buy", price="100.00", qty="5", account="A", **extra):
    return {"type": "order", "account": account, "client_id": cid, "symbol": "X", "side": side,
            "kind": "limit", "qty": qty, "price": price, **extra}


@pytest.mark.parametrize("backend", BACKENDS)
def test_submit_recover_same_state(tmp_path, backend):
    flow = list(mixed_flow(3, 3000))
    with Exchange.open(tmp_path, backend=backend, segment_bytes=SEGMENT) as node:
        results = list(node.submit_many(flow))
        assert all(r.error is None for r in results)
        live = node.digest()
        last = node.journal.last_seq
        assert node.backend.startswith(backend)
    with Exchange.open(tmp_path, backend=backend) as node:
        assert node.digest() == live
        assert node.journal.last_seq == last
        assert node.recovery.commands == len(flow)
    engine, stats = rebuild(tmp_path)
    assert engine.digest() == live and stats.commands == len(flow)


@pytest.mark.parametrize("backend", BACKENDS)
def test_events_released_are_the_logged_history(tmp_path, backend):
    """Replaying the log gives byte-identical events to the live ones."""
    flow = list(mixed_flow(5, 1500))
    live: list[list[dict]] = []
    with Exchange.open(tmp_path, backend=backend, segment_bytes=SEGMENT) as node:
        for result in node.submit_many(flow):
            live.append(result.events)
    replayed: list[list[dict]] = []
    engine = Engine()
    codec = Codec.for_engine(engine)

    def keep(seq, events):
        replayed.append([codec.event(e) for e in events])

    from jex.replay.rebuild import replay_records

    replay_records(engine, read_records(tmp_path / "wal"), on_events=keep)
    assert replayed == live


def test_edge_refusal_changes_nothing(tmp_path):
    with Exchange.open(tmp_path, backend="pwrite") as node:
        node.submit(INSTRUMENT)
        before = (node.journal.last_seq, node.digest())
        for bad in (
            order("a", price="100.001"),
            {**order("a"), "colour": "red"},
            {"type": "order", "account": "A"},
            "not json",
            b"\xff\xfe",
            order("a", symbol="NOPE"),
            {"type": "cancel", "account": "A"},
        ):
            with pytest.raises(CommandError):
                node.submit(bad)
        assert (node.journal.last_seq, node.digest()) == before
    assert [r.seq for r in read_records(tmp_path / "wal")] == [1]


def test_business_rejection_is_logged_history(tmp_path):
    with Exchange.open(tmp_path, backend="pwrite") as node:
        node.submit(INSTRUMENT)
        node.submit(order("a"))
        events = node.submit(order("a"))
        assert events[0]["type"] == "rejected" and events[0]["reason"] == "duplicate_client_id"
        assert node.journal.last_seq == 3


def test_submit_many_stop_on_error_commits_the_prefix_only(tmp_path):
    flow = [INSTRUMENT, order("a"), order("b", price="1.001"), order("c")]
    with Exchange.open(tmp_path, backend="pwrite") as node:
        results = list(node.submit_many(flow, stop_on_error=True))
        assert [r.seq for r in results] == [1, 2, None]
        assert node.journal.last_seq == 2


def test_input_clock_must_not_decrease_and_drives_gtd(tmp_path):
    with Exchange.open(tmp_path, backend="pwrite", clock="input") as node:
        node.submit({**INSTRUMENT, "ts": 1_000})
        with pytest.raises(CommandError, match="ts"):
            node.submit(order("a"))  # no ts
        node.submit(order("g", tif="GTD", expire_at=5_000, ts=2_000))
        with pytest.raises(CommandError, match="must not decrease"):
            node.submit(order("b", ts=1_999))
        assert node.submit({"type": "clock", "ts": 4_999}) == []
        events = node.submit({"type": "clock", "ts": 5_000})
        assert [(e["type"], e["reason"]) for e in events] == [("cancelled", "expired")]
    records = list(read_records(tmp_path / "wal"))
    assert [r.ts_ns for r in records] == [1_000, 2_000, 4_999, 5_000]


def test_live_tick_journals_a_clock_when_gtd_is_due(tmp_path):
    with Exchange.open(tmp_path, backend="pwrite") as node:
        node.submit(INSTRUMENT)
        assert node.tick() == []  # nothing due: nothing journaled
        node.submit(order("g", tif="GTD", expire_at=time.time_ns() + 50_000_000))
        seq = node.journal.last_seq
        time.sleep(0.06)
        events = node.tick()
        assert [e["reason"] for e in events] == ["expired"]
        assert node.journal.last_seq == seq + 1
        assert isinstance(decode_command(list(read_records(tmp_path / "wal"))[-1].payload).__class__, type)


def test_second_writer_is_refused_naming_the_holder(tmp_path):
    with Exchange.open(tmp_path, backend="pwrite") as node:
        node.submit(INSTRUMENT)
        probe = subprocess.run(
            [sys.executable, "-m", "jex", "--data-dir", str(tmp_path), "submit", "clock"],
            capture_output=True, text=True, timeout=60,
        )
        assert probe.returncode == 1
        assert str(os.getpid()) in probe.stderr and "lock" in probe.stderr.lower()
        with pytest.raises(DirLocked):
            Exchange.open(tmp_path, backend="pwrite")


def _write_flow(path, seed, count):
    lines = [json.dumps(c) for c in mixed_flow(seed, count)]
    path.write_text("\n".join(lines) + "\n")
    return lines


@pytest.mark.parametrize("backend", BACKENDS)
def test_sigkill_child_at_random_moments_loses_nothing_acknowledged(tmp_path, backend):
    """A real `jex submit` child is SIGKILLed at random moments; every
    acknowledgement it printed survives recovery, the log is a prefix of what
    was sent, and resubmitting an acknowledged order is a duplicate."""
    rng = random.Random(20261126)
    flow_path = tmp_path / "flow.jsonl"
    lines = _write_flow(flow_path, 11, 1500)
    for trial in range(4):
        data = tmp_path / f"d{trial}"
        cmd = [sys.executable, "-m", "jex", "--data-dir", str(data), "submit", str(flow_path), "--results",
               "--no-progress", "--batch", str(rng.choice((1, 8, 64))), "--backend", backend,
               "--segment-bytes", str(SEGMENT)]
        child = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        acked: dict[int, int] = {}  # line -> seq
        accepted_lines: list[int] = []
        kill_after = rng.randint(1, len(lines) - 50)
        for raw in child.stdout:
            result = json.loads(raw)
            acked[result["line"]] = result["seq"]
            if any(e["type"] == "accepted" for e in result["events"]):
                accepted_lines.append(result["line"])
            if len(acked) >= kill_after:
                child.send_signal(signal.SIGKILL)
                break
        child.wait()
        child.stdout.close()
        assert child.returncode == -signal.SIGKILL
        with Exchange.open(data, backend=backend) as node:
            last = node.journal.last_seq
            assert max(acked.values()) <= last, "an acknowledged command was lost"
            # The log is a prefix of what was sent: record i holds line i's command.
            reference = Engine()
            codec = Codec.for_engine(reference)
            for i, record in enumerate(read_records(data / "wal", to_seq=last), 1):
                sent, _ = codec.command(lines[i - 1])
                assert decode_command(record.payload) == sent
                reference.apply(sent, record.seq, record.ts_ns)
            assert reference.digest() == node.digest()
            # Idempotent retry of acknowledged (accepted) orders.
            for line_no in accepted_lines[:50]:
                obj = json.loads(lines[line_no - 1])
                if obj["type"] == "order":
                    events = node.submit(obj)
                    assert events[0]["type"] == "rejected" and events[0]["reason"] == "duplicate_client_id"


def _replayed_events(data_dir) -> list[list[dict]]:
    from jex.replay.rebuild import replay_records

    engine = Engine()
    codec = Codec.for_engine(engine)
    replayed: list[list[dict]] = []
    replay_records(engine, read_records(data_dir / "wal"),
                   on_events=lambda seq, events: replayed.append([codec.event(e) for e in events]))
    return replayed


@pytest.mark.parametrize("backend", BACKENDS)
def test_pipelined_batches_with_refusals_carries_and_instruments(tmp_path, backend):
    """Small batches (records and bytes) so that every pipeline path runs:
    refusals between logged commands, commands carried into the next batch
    by the byte bound, instruments defined while earlier commands (staged
    and in flight) still await their hand-out. Results come in input order
    with gapless seqs, and the events handed out are the replayed history."""
    flow: list = []
    for n, cmd in enumerate(mixed_flow(7, 400)):
        flow.append(cmd)
        if n % 37 == 5:
            flow.append(order(f"bad{n}", price="1.001"))  # refused at the edge
        if n % 101 == 50:
            flow.append({"type": "instrument", "symbol": f"N{n}", "tick": "0.5", "lot": "10"})
            flow.append(order(f"n{n}", symbol=f"N{n}", price="2.5", qty="30"))
    with Exchange.open(tmp_path, backend=backend, segment_bytes=SEGMENT, batch_records_max=7,
                       batch_bytes_max=600) as node:
        results = list(node.submit_many(flow))
        assert [r.index for r in results] == list(range(len(flow)))
        logged = [r for r in results if r.error is None]
        assert all(r.error is not None and r.seq is None for r in results if r.seq is None)
        assert len(logged) == len(flow) - sum(1 for c in flow if c.get("client_id", "").startswith("bad"))
        assert node.acknowledged == len(logged)
        live_digest = node.digest()
    commands = [r.seq for r in read_records(tmp_path / "wal") if r.type == 1]
    assert [r.seq for r in logged] == commands  # gapless but for SEALs, in order
    assert [r.events for r in logged] == _replayed_events(tmp_path)
    engine, _ = rebuild(tmp_path)
    assert engine.digest() == live_digest


@pytest.mark.parametrize("backend", BACKENDS)
def test_an_abandoned_iteration_leaves_log_and_state_in_step(tmp_path, backend):
    """A caller that stops iterating early: every command already applied is
    in the log (never acknowledged, like a crash after the write), and the
    node goes on."""
    flow = list(mixed_flow(9, 300))
    with Exchange.open(tmp_path, backend=backend, batch_records_max=16) as node:
        results = node.submit_many(flow)
        first = [next(results) for _ in range(20)]
        results.close()
        assert not node.journal.in_flight and node.engine.seq == node.journal.last_seq
        assert node.acknowledged == len(first)
        more = node.submit(order("after", symbol="JEX"))
        assert more[0]["type"] == "accepted"
        live = node.digest()
    engine, _ = rebuild(tmp_path)
    assert engine.digest() == live


def test_results_are_released_only_after_their_batch_is_durable(tmp_path):
    """With overlap, batch k+1 is matched and written before batch k's
    results are handed out; no result is ever handed out before the batch
    holding it is durable."""
    flow = list(mixed_flow(4, 200))
    with Exchange.open(tmp_path, backend="pwrite", batch_records_max=10) as node:
        for result in node.submit_many(flow):
            assert result.seq <= node.journal.last_seq
