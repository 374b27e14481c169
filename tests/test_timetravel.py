"""Time travel: the state at a seq or a time, rebuilt from the nearest
snapshot at or before it plus replay, equals a replay from genesis; and the
CLI surface of it (`--at`, `jex replay`, `jex snapshot`)."""

from __future__ import annotations

import itertools
import json

import pytest

from jex.cli.main import run
from jex.core import Codec, Engine
from jex.journal import RecordType, read_records
from jex.node.exchange import Exchange, order_dict
from jex.replay.rebuild import replay_records
from jex.replay.timetravel import Point, PointError, format_ns, parse_iso_ns, parse_point, state_at
from jex.snapshots import list_snapshots, snapshot_dir
from jex.workload import mixed_flow

SEGMENT = 32 * 1024


def build(path, *, prune_wal: bool, count: int = 1500, every: int = 400) -> None:
    with Exchange.open(path, backend="pwrite", clock="input", segment_bytes=SEGMENT, snapshot_every=every,
                       snapshot_mode="inline", prune_wal=prune_wal) as node:
        for result in node.submit_many(mixed_flow(11, count, with_ts=True)):
            assert result.error is None


def genesis(path, *, seq=None, ts=None) -> Engine:
    engine = Engine()
    records = read_records(path / "wal")
    if ts is not None:
        records = itertools.takewhile(lambda r: r.ts_ns <= ts, records)
    replay_records(engine, records, to_seq=seq)
    return engine


def views(engine: Engine) -> tuple:
    codec = Codec.for_engine(engine)
    books = tuple(json.dumps(codec.book(engine.book(s))) for s in sorted(engine.instruments))
    stats = tuple(json.dumps(codec.stats(engine.stats(s))) for s in sorted(engine.instruments))
    orders = json.dumps([order_dict(codec, o) for o in engine.open_orders()])
    return engine.digest(), books, stats, orders


POINTS = [
    ("1200", Point(seq=1200)),
    ("seq:7", Point(seq=7)),
    ("ns:15", Point(ts_ns=15)),
    ("ts:15", Point(ts_ns=15)),
    ("1700000000000000000", Point(ts_ns=1_700_000_000_000_000_000)),
    ("2023-11-14T22:13:20Z", Point(ts_ns=1_700_000_000_000_000_000)),
    ("2023-11-14T22:13:20.000000001Z", Point(ts_ns=1_700_000_000_000_000_001)),
    ("2023-11-14T22:13:20.5", Point(ts_ns=1_700_000_000_500_000_000)),
    ("2023-11-14T23:13:20.25+01:00", Point(ts_ns=1_700_000_000_250_000_000)),
]


@pytest.mark.parametrize("text,point", POINTS, ids=[t for t, _ in POINTS])
def test_points_are_read_by_the_table(text, point):
    assert parse_point(text) == point


@pytest.mark.parametrize("text", ["", "-5", "seq:x", "ns:-1", "tomorrow", "2023-13-40T00:00:00Z", "9" * 80])
def test_bad_points_are_refused_in_one_line(text):
    with pytest.raises(PointError) as caught:
        parse_point(text)
    assert "\n" not in str(caught.value)


def test_iso_round_trip_keeps_nanoseconds():
    for ts in (0, 1, 999_999_999, 1_700_000_000_123_456_789):
        assert parse_iso_ns(format_ns(ts)) == ts


def test_state_at_seqs_and_times_equals_a_genesis_replay(tmp_path):
    build(tmp_path, prune_wal=False)
    snaps = [s.seq for s in list_snapshots(snapshot_dir(tmp_path)).snapshots]
    assert len(snaps) == 2
    records = [r for r in read_records(tmp_path / "wal")]
    last = records[-1].seq
    seqs = sorted({2, snaps[0] - 1, snaps[0], snaps[1] + 1, last + 50})
    for seq in seqs:
        recovered = state_at(tmp_path, Point(seq=seq))
        assert views(recovered.engine) == views(genesis(tmp_path, seq=seq)), seq
        assert recovered.start.seq == max([0] + [s for s in snaps if s <= seq])
    for record in records[len(records) // 3 :: len(records) // 3]:
        for ts in (record.ts_ns - 1, record.ts_ns):
            recovered = state_at(tmp_path, Point(ts_ns=ts))
            assert views(recovered.engine) == views(genesis(tmp_path, ts=ts)), ts


def test_cli_at_seq_and_time(tmp_path, capsys):
    build(tmp_path, prune_wal=False)
    records = [r for r in read_records(tmp_path / "wal") if r.type == RecordType.COMMAND]
    target = records[len(records) * 3 // 4]
    engine = genesis(tmp_path, ts=target.ts_ns)
    codec = Codec.for_engine(engine)
    base = ["--data-dir", str(tmp_path), "--json"]
    assert run(base + ["book", "JEX", "--at", format_ns(target.ts_ns)]) == 0
    assert json.loads(capsys.readouterr().out) == codec.book(engine.book("JEX"))
    assert run(base + ["stats", "PRO", "--at", f"seq:{target.seq}"]) == 0
    assert json.loads(capsys.readouterr().out) == codec.stats(genesis(tmp_path, seq=target.seq).stats("PRO"))
    assert run(base + ["orders", "--account", "acct3", "--at", str(target.seq)]) == 0
    at_seq = genesis(tmp_path, seq=target.seq)
    rows = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    assert rows == [order_dict(Codec.for_engine(at_seq), o) for o in at_seq.open_orders("acct3")]
    assert run(base + ["book", "JEX", "--at", "yesterday"]) == 2


def test_pruned_history_and_replay_starts(tmp_path, capsys):
    build(tmp_path, prune_wal=True)
    first = min(r.seq for r in read_records(tmp_path / "wal"))
    assert first > 1
    base = ["--data-dir", str(tmp_path), "--json"]
    assert run(base + ["book", "JEX", "--at", "5"]) == 2
    assert "pruned" in capsys.readouterr().err
    assert run(base + ["replay", "--from-genesis"]) == 2
    capsys.readouterr()
    assert run(base + ["replay"]) == 0
    earliest = json.loads(capsys.readouterr().out)
    assert run(base + ["replay", "--from-snapshot", "--verify"]) == 0
    newest = json.loads(capsys.readouterr().out)
    assert earliest["digest"] == newest["digest"] and newest["verify"]["ok"]
    assert earliest["start"] != newest["start"] and newest["commands"] < earliest["commands"]
    assert run(base + ["snapshot", "list"]) == 0
    listed = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    assert len(listed) == 2 and all(row["ok"] and row["chain_ok"] for row in listed)
    # A snapshot whose body no longer matches its checksum: listed as bad, verify fails (exit 3).
    newest_path = snapshot_dir(tmp_path) / listed[0]["file"]
    data = bytearray(newest_path.read_bytes())
    data[-3] ^= 0xFF
    newest_path.write_bytes(bytes(data))
    assert run(base + ["snapshot", "list"]) == 3
    assert run(base + ["replay", "--verify"]) == 3
    capsys.readouterr()
    # `jex snapshot` writes a new one (durable), keeps two, and prunes behind them.
    assert run(base + ["snapshot"]) == 0
    taken = json.loads(capsys.readouterr().out)
    assert taken["seq"] == newest["seq"] and len(taken["kept"]) == 2
    assert run(base + ["replay", "--verify"]) == 0


def test_read_only_rebuild_of_a_dir_killed_mid_rollover_equals_recovery(tmp_path):
    """A reader finds the end of a log whose writer died between creating the
    next segment and sealing the old one (the journal's scanner judges it),
    and sees exactly what the node recovers when it reopens and repairs."""
    import os
    import signal
    import subprocess
    import sys
    import textwrap

    script = textwrap.dedent("""
        import sys
        from jex.node.exchange import Exchange
        from jex.workload import mixed_flow
        with Exchange.open(sys.argv[1], backend="pwrite", clock="input", segment_bytes=16384,
                           snapshot_every=0) as node:
            for result in node.submit_many(mixed_flow(12, 400, with_ts=True)):
                pass
    """)
    env = {**os.environ, "JEX_KILLPOINT": "mid_rollover:2"}
    child = subprocess.run([sys.executable, "-c", script, str(tmp_path)], env=env, capture_output=True, timeout=120)
    assert child.returncode == -signal.SIGKILL, child.stderr
    read_only = state_at(tmp_path)
    with Exchange.open(tmp_path, backend="pwrite", snapshot_every=0) as node:
        assert node.journal.report.row.startswith("rollover_incomplete")
        assert views(read_only.engine) == views(node.engine)
        assert read_only.seq <= node.journal.last_seq
