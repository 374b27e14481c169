"""The `jex` command line: exit codes, one-line errors, JSON output."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from jex.cli.main import run


def jex(capsys, data_dir, *args):
    code = run(["--data-dir", str(data_dir), *args])
    out, err = capsys.readouterr()
    return code, out, err


def lines(text: str) -> list[dict]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]


@pytest.fixture
def market(tmp_path, capsys):
    code, _, _ = jex(capsys, tmp_path, "submit", "instrument", "--symbol", "X", "--tick", "0.01", "--lot", "1")
    assert code == 0
    return tmp_path


def test_submit_fields_then_reads(market, capsys):
    code, out, _ = jex(capsys, market, "--json", "submit", "order", "--account", "A", "--client-id", "a1",
                       "--symbol", "X", "--side", "buy", "--kind", "limit", "--qty", "5", "--price", "100.00")
    assert code == 0
    assert lines(out) == [{"type": "accepted", "seq": 2, "order_id": 1, "client_id": "a1", "account": "A", "symbol": "X"}]
    code, out, _ = jex(capsys, market, "--json", "book", "X")
    assert code == 0
    assert json.loads(out) == {"symbol": "X", "seq": 2, "last": None,
                               "bids": [{"price": "100.00", "qty": "5", "orders": 1}], "asks": []}
    code, out, _ = jex(capsys, market, "--json", "orders", "--account", "A")
    (row,) = lines(out)
    assert row["client_id"] == "a1" and row["remaining"] == "5" and row["status"] == "open"
    code, out, _ = jex(capsys, market, "--json", "stats", "X")
    assert json.loads(out)["best_bid"] == "100.00"
    code, out, _ = jex(capsys, market, "--json", "cancel", "--account", "A", "--client-id", "a1")
    assert lines(out)[0]["reason"] == "user"


def test_file_with_a_malformed_line_changes_nothing(market, capsys, tmp_path):
    flow = tmp_path / "flow.jsonl"
    good = {"type": "order", "account": "A", "client_id": "a1", "symbol": "X", "side": "buy", "kind": "limit",
            "qty": "5", "price": "100.00"}
    flow.write_text(json.dumps(good) + "\n" + '{"type": "order", "oops": 1}\n')
    code, out, err = jex(capsys, market, "submit", str(flow))
    assert code == 2
    assert "line 2" in err and "nothing submitted" in err
    assert "Traceback" not in err
    code, out, _ = jex(capsys, market, "--json", "replay")
    assert json.loads(out)["commands"] == 1  # only the instrument


def test_state_dependent_refusal_stops_with_prefix_committed(market, capsys, tmp_path):
    flow = tmp_path / "flow.jsonl"
    rows = [
        {"type": "order", "account": "A", "client_id": "a1", "symbol": "X", "side": "buy", "kind": "limit", "qty": "5", "price": "100.00"},
        {"type": "order", "account": "A", "client_id": "a2", "symbol": "X", "side": "buy", "kind": "limit", "qty": "5", "price": "100.001"},
        {"type": "order", "account": "A", "client_id": "a3", "symbol": "X", "side": "buy", "kind": "limit", "qty": "5", "price": "99.00"},
    ]
    flow.write_text("".join(json.dumps(r) + "\n" for r in rows))
    code, out, err = jex(capsys, market, "--json", "submit", str(flow))
    assert code == 2 and "line 2" in err and "$.price" in err
    assert [e["client_id"] for e in lines(out)] == ["a1"]
    code, out, err = jex(capsys, market, "--json", "submit", str(flow), "--keep-going")
    assert code == 2
    events = lines(out)
    assert [e.get("reason") for e in events if e["type"] == "rejected"] == ["duplicate_client_id"]
    assert any(e["type"] == "accepted" and e["client_id"] == "a3" for e in events)


@pytest.mark.parametrize(
    "args, code, needle",
    [
        (["frobnicate"], 2, "No such command"),
        (["book"], 2, "Missing argument"),
        (["submit", "no-such-file.jsonl"], 2, "no such file"),
        (["submit", "order", "--account"], 2, "needs a value"),
        (["submit", "order", "--account", "A", "--client-id", "x", "--symbol", "NOPE", "--side", "buy",
          "--kind", "limit", "--qty", "1", "--price", "1"], 2, "unknown symbol"),
        (["book", "NOPE"], 2, "unknown symbol"),
        (["submit", "--clock", "sometimes", "clock"], 2, "--clock"),
    ],
)
def test_usage_and_input_errors_are_one_line_exit_2(market, capsys, args, code, needle):
    got, out, err = jex(capsys, market, *args)
    assert got == code
    assert needle in err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_reads_on_an_empty_data_dir(tmp_path, capsys):
    code, _, err = jex(capsys, tmp_path / "empty", "book", "X")
    assert code == 2 and "no journal" in err


def test_corrupt_journal_exits_3_naming_file_and_offset(market, capsys):
    for i in range(5):
        jex(capsys, market, "submit", "order", "--account", "A", "--client-id", f"a{i}", "--symbol", "X",
            "--side", "buy", "--kind", "limit", "--qty", "1", "--price", "100.00")
    (segment,) = sorted((market / "wal").glob("*.wal"))
    data = bytearray(segment.read_bytes())
    offset = 4096 + 80 + 3  # inside the first record's payload
    data[offset] ^= 0x40
    segment.write_bytes(bytes(data))
    code, out, err = jex(capsys, market, "journal", "verify")
    assert code == 3 and str(segment.name) in err and "offset" in err
    code, out, err = jex(capsys, market, "book", "X")
    assert code == 3 and "integrity" in err
    code, out, err = jex(capsys, market, "submit", "clock")
    assert code == 3
    assert segment.read_bytes() == bytes(data)  # refused: nothing changed


def test_console_script_runs_as_a_real_process(market):
    probe = subprocess.run([sys.executable, "-m", "jex", "--data-dir", str(market), "--json", "book", "X"],
                           capture_output=True, text=True, timeout=60)
    assert probe.returncode == 0 and json.loads(probe.stdout)["symbol"] == "X"
