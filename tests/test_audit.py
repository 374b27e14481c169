"""The audit index answers exactly what a full scan of the log answers.

Random flows (jex.workload.mixed_flow) go through a real node; a
brute-force replay of the whole log collects every event with the command
behind it, and each query's relation is written out again here, plainly,
over the contract JSON. Every index answer, read page by page through the
cursor, must equal the brute-force filter. The index must also catch up
incrementally, rebuild when the log is another history, and cover exactly
what a pruned log still holds.
"""

from __future__ import annotations

import json
import random
import shutil
from dataclasses import dataclass
from pathlib import Path

import pytest

from jex.cli.main import run
from jex.core import Codec, Engine, decode_command
from jex.journal import RecordType, read_records
from jex.node.exchange import Exchange
from jex.replay.audit import (
    EVENT_TYPES,
    AuditError,
    AuditIndex,
    PageRequest,
    Selector,
    open_caught_up,
    parse_types,
)
from jex.replay.recover import open_start, wal_view
from jex.snapshots import snapshot_dir
from jex.workload import mixed_flow

SEGMENT = 64 * 1024


def node(path: Path, **options) -> Exchange:
    options.setdefault("backend", "pwrite")
    options.setdefault("clock", "input")
    options.setdefault("segment_bytes", SEGMENT)
    options.setdefault("snapshot_mode", "inline")
    return Exchange.open(path, **options)


def submit(exchange: Exchange, commands) -> None:
    for result in exchange.submit_many(commands):
        assert result.error is None, result.error


def duplicates(commands: list[dict], count: int, ts: int) -> list[dict]:
    """Resubmits of earlier orders (duplicate_client_id rejections)."""
    orders = [c for c in commands if c["type"] == "order"][:count]
    return [{**c, "ts": ts} for c in orders]


@dataclass
class Row:
    seq: int
    index: int
    event: dict
    command: dict
    ts_ns: int


def brute_force(data_dir: Path) -> list[Row]:
    """Every event of the log (from its earliest start), with its command."""
    engine, start, tail, _ = open_start(wal_view(data_dir / "wal"), snapshot_dir(data_dir), earliest=True)
    codec = Codec.for_engine(engine)
    rows = []
    for record in tail:
        if record.type != RecordType.COMMAND:
            continue
        command = decode_command(record.payload)
        events = engine.apply(command, record.seq, record.ts_ns)
        info = {"type": _command_type(command), "account": getattr(command, "account", None),
                "client_id": getattr(command, "client_id", None), "order_id": getattr(command, "order_id", None)}
        for number, event in enumerate(events):
            rows.append(Row(record.seq, number, codec.event(event), info, record.ts_ns))
    return rows, engine, start


def _command_type(command) -> str:
    return {"Instrument": "instrument", "NewOrder": "order", "Cancel": "cancel", "Replace": "replace", "Oco": "oco",
            "Bracket": "bracket", "Conditional": "conditional", "Auction": "auction", "Clock": "clock"}[type(command).__name__]


def owners(rows: list[Row], engine_at_start: Engine | None = None) -> dict[int, tuple[str, str]]:
    out = {}
    if engine_at_start is not None:
        out.update({i: (a, c) for a, c, i in engine_at_start.registry()})
    for row in rows:
        if row.event["type"] == "accepted":
            out[row.event["order_id"]] = (row.event["account"], row.event["client_id"])
    return out


# The relations, written plainly over contract JSON.
def named_orders(row: Row) -> set[int]:
    e = row.event
    if e["type"] in ("accepted", "cancelled", "triggered", "amended"):
        return {e["order_id"]}
    if e["type"] in ("trade", "prevented"):
        return {e["maker_order_id"], e["taker_order_id"]}
    if e["type"] == "rejected" and row.command["type"] in ("cancel", "replace") and row.command["order_id"] is not None:
        return {row.command["order_id"]}
    return set()


def named_client(row: Row) -> tuple | None:
    e = row.event
    if e["type"] in ("accepted", "rejected") and e.get("account") is not None and e.get("client_id") is not None:
        return (e["account"], e["client_id"])
    return None


def named_accounts(row: Row, owner: dict) -> set[str]:
    e = row.event
    out = set()
    if e["type"] in ("accepted", "rejected") and e.get("account") is not None:
        out.add(e["account"])
    if e["type"] == "trade":
        out |= {e["buyer"], e["seller"]}
    if e["type"] != "rejected":
        out |= {owner[o][0] for o in named_orders(row) if o in owner}
    return out


def expected(rows: list[Row], owner: dict, selector: Selector, request: PageRequest) -> list[tuple]:
    order_id, client = selector.order_id, selector.client
    if order_id is None and client is not None:
        order_id = next((o for o, c in owner.items() if c == client), None)
    if client is None and order_id is not None:
        client = owner.get(order_id)

    def relates(row: Row) -> bool:
        if selector.kind == "range":
            return True
        if selector.kind == "trades":
            return row.event["type"] == "trade" and row.event["symbol"] == selector.symbol
        if selector.kind == "account":
            return selector.account in named_accounts(row, owner)
        return (order_id is not None and order_id in named_orders(row)) or (client is not None and named_client(row) == client)

    out = []
    for row in rows:
        if request.since_seq is not None and row.seq < request.since_seq:
            continue
        if request.until_seq is not None and row.seq > request.until_seq:
            continue
        if request.types is not None and row.event["type"] not in request.types:
            continue
        if relates(row):
            out.append((row.seq, row.index, row.event, row.command["type"], row.ts_ns))
    return out


def answered(index: AuditIndex, selector: Selector, request: PageRequest) -> list[tuple]:
    """All pages, following the cursor."""
    out, cursor, pages = [], None, 0
    while True:
        page = index.query(selector, PageRequest(request.since_seq, request.until_seq, request.types, cursor, request.limit))
        pages += 1
        assert len(page.rows) <= request.limit
        for row in page.rows:
            event = {k: v for k, v in row.items() if k not in ("index", "ts", "ts_ns", "command")}
            out.append((row["seq"], row["index"], event, row["command"]["type"], row["ts_ns"]))
        if page.next_cursor is None:
            return out
        assert len(page.rows) == request.limit
        cursor = tuple(int(x) for x in page.next_cursor.split(":"))
        assert pages < 10_000


def random_queries(rng: random.Random, rows: list[Row], owner: dict, count: int):
    seqs = [r.seq for r in rows] or [1]
    lo, hi = min(seqs), max(seqs)
    clients = sorted({c for r in rows if (c := named_client(r))} | set(owner.values()))
    accounts = sorted({a for r in rows for a in named_accounts(r, owner)}) + ["nobody"]
    for _ in range(count):
        kind = rng.choice(["order", "order", "client", "account", "trades", "range"])
        if kind == "order":
            selector = Selector("order", order_id=rng.randint(1, max(owner, default=1) + 3))
        elif kind == "client":
            selector = Selector("order", client=rng.choice(clients) if rng.random() < 0.9 else ("acct1", "never"))
        elif kind == "account":
            selector = Selector("account", account=rng.choice(accounts))
        elif kind == "trades":
            selector = Selector("trades", symbol=rng.choice(["JEX", "PRO", "NOPE"]))
        else:
            selector = Selector("range")
        since = rng.randint(lo, hi) if rng.random() < 0.5 else None
        until = rng.randint(since or lo, hi) if rng.random() < 0.5 else None
        types = frozenset(rng.sample(sorted(EVENT_TYPES), rng.randint(1, 3))) if rng.random() < 0.3 else None
        limit = rng.choice([1, 3, 7, 50, 10_000])
        if kind == "range" and limit == 1:
            limit = 50  # keep the page count of whole-log scans small
        yield selector, PageRequest(since, until, types, None, limit)


def check_against_brute_force(data_dir: Path, rng: random.Random, count: int) -> None:
    rows, engine, start = brute_force(data_dir)
    owner = owners(rows, engine if start.path is not None else None)
    with AuditIndex(data_dir) as index:
        for selector, request in random_queries(rng, rows, owner, count):
            assert answered(index, selector, request) == expected(rows, owner, selector, request), (selector, request)


# --- the tests ---------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", [1, 2])
def test_index_answers_equal_a_full_scan(tmp_path, seed):
    commands = list(mixed_flow(seed, 2000, with_ts=True))
    with node(tmp_path, snapshot_every=900, prune_wal=False) as exchange:
        submit(exchange, commands)
        submit(exchange, duplicates(commands, 20, commands[-1]["ts"]))
    index, result = open_caught_up(tmp_path)
    index.close()
    assert result.rebuilt and result.start == "genesis" and result.commands > 2000
    check_against_brute_force(tmp_path, random.Random(seed), 80)


def test_index_catches_up_incrementally_from_a_snapshot(tmp_path, monkeypatch):
    import jex.replay.audit as audit

    commands = list(mixed_flow(3, 3000, with_ts=True))
    with node(tmp_path, snapshot_every=700, prune_wal=False) as exchange:
        submit(exchange, commands[:1500])
        index, first = open_caught_up(tmp_path)
        index.close()
        submit(exchange, commands[1500:1800])
        # This catch-up leaves the indexer's own engine state behind.
        monkeypatch.setattr(audit, "STATE_SAVE_COMMANDS_MIN", 100)
        index, second = open_caught_up(tmp_path)
        index.close()
        submit(exchange, commands[1800:])  # the node's snapshots move past the index's position
        index, third = open_caught_up(tmp_path)
        index.close()
        index, fourth = open_caught_up(tmp_path)
        index.close()
    assert first.rebuilt and first.start == "genesis" and first.commands == 1500
    assert not second.rebuilt and second.start.startswith("snapshot") and second.commands == 300
    assert not third.rebuilt and third.start == f"snapshot {second.position.seq}"
    assert third.commands == len(commands) - 1800
    assert fourth.commands == 0 and fourth.position == third.position, "a caught-up index reads nothing"
    check_against_brute_force(tmp_path, random.Random(3), 60)


def test_index_of_another_history_is_rebuilt(tmp_path):
    for name, seed in (("a", 4), ("b", 5)):
        with node(tmp_path / name, snapshot_every=0) as exchange:
            submit(exchange, list(mixed_flow(seed, 1200, with_ts=True)))
    index, _ = open_caught_up(tmp_path / "a")
    index.close()
    shutil.copytree(tmp_path / "a" / "audit", tmp_path / "b" / "audit")
    notices: list[str] = []
    index, result = open_caught_up(tmp_path / "b", notify=notices.append)
    index.close()
    assert result.rebuilt and "another history" in result.reason
    assert len(notices) == 1 and "audit index rebuilt" in notices[0]
    check_against_brute_force(tmp_path / "b", random.Random(5), 40)


def test_unreadable_index_is_discarded_and_rebuilt(tmp_path):
    with node(tmp_path, snapshot_every=0) as exchange:
        submit(exchange, list(mixed_flow(9, 600, with_ts=True)))
    index, _ = open_caught_up(tmp_path)
    index.close()
    (tmp_path / "audit" / "index" / "data.mdb").write_bytes(b"\xff" * 8192)
    notices: list[str] = []
    index, result = open_caught_up(tmp_path, notify=notices.append)
    index.close()
    assert result.rebuilt and any("discarded" in n for n in notices)
    check_against_brute_force(tmp_path, random.Random(9), 20)


def test_index_of_a_pruned_log_covers_what_the_log_holds(tmp_path):
    commands = list(mixed_flow(6, 3000, with_ts=True))
    with node(tmp_path, snapshot_every=800) as exchange:
        submit(exchange, commands)
    assert wal_view(tmp_path / "wal").first_seq > 1
    index, result = open_caught_up(tmp_path)
    index.close()
    assert result.start.startswith("snapshot") and result.position.first == int(result.start.split()[1]) + 1
    check_against_brute_force(tmp_path, random.Random(6), 60)


def test_time_bounds_resolve_to_seqs(tmp_path):
    commands = list(mixed_flow(7, 800, with_ts=True))
    with node(tmp_path, snapshot_every=0) as exchange:
        submit(exchange, commands)
    records = [r for r in read_records(tmp_path / "wal") if r.type == RecordType.COMMAND]
    index, _ = open_caught_up(tmp_path)
    with index:
        for record in records[::97]:
            assert index.seq_at_time(record.ts_ns, after=True) == min(r.seq for r in records if r.ts_ns >= record.ts_ns)
            assert index.seq_at_time(record.ts_ns, after=False) == max(r.seq for r in records if r.ts_ns <= record.ts_ns)
        assert index.seq_at_time(records[-1].ts_ns + 1, after=True) is None
        assert index.seq_at_time(records[0].ts_ns - 1, after=False) is None


def test_bad_queries_are_typed_errors():
    with pytest.raises(AuditError, match="unknown event type"):
        parse_types(["trade,bogus"])
    assert parse_types(["trade", "cancelled,accepted"]) == {"trade", "cancelled", "accepted"}


def test_cli_pages_json_lines_with_the_command_behind_each_event(tmp_path, capsys):
    commands = list(mixed_flow(8, 600, with_ts=True))
    with node(tmp_path, snapshot_every=0) as exchange:
        submit(exchange, commands)
    base = ["--data-dir", str(tmp_path), "--json", "audit"]
    assert run(base + ["account", "acct1", "--limit", "5"]) == 0
    lines = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    assert len(lines) == 6 and set(lines[-1]) == {"next_cursor"}
    for row in lines[:5]:
        assert {"seq", "type", "ts", "ts_ns", "index", "command"} <= set(row)
        assert row["ts"].endswith("Z") and set(row["command"]) >= {"type", "account", "client_id"}
    assert run(base + ["account", "acct1", "--limit", "5", "--cursor", lines[-1]["next_cursor"]]) == 0
    page2 = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    assert (page2[0]["seq"], page2[0]["index"]) > (lines[4]["seq"], lines[4]["index"])
    since = lines[2]["ts"]
    assert run(base + ["trades", "JEX", "--since", since, "--limit", "10000"]) == 0
    trades = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    assert trades and all(t["type"] == "trade" and t["ts_ns"] >= lines[2]["ts_ns"] for t in trades)
    assert run(base + ["order", "--client-id", "c8-5", "--account", lines[0]["command"]["account"]]) == 0
    assert run(base + ["range", "10", "5"]) == 0 and capsys.readouterr().out == ""
    assert run(base + ["account", "acct1", "--type", "bogus"]) == 2
    assert run(base + ["account", "acct1", "--cursor", "nope"]) == 2
    assert run(base + ["order", "--client-id", "x"]) == 2
    assert run(base + ["reindex"]) == 0
    assert json.loads(capsys.readouterr().out.splitlines()[-1])["rebuilt"] is True
