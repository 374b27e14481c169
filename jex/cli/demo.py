"""``jex demo``: submit sample flow, kill -9 the node mid-stream, recover,
finish, replay, and show the book (cli room)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path
from typing import Optional

import typer

from jex.cli import output
from jex.cli.main import EXIT_INTEGRITY, EXIT_OK, EXIT_USAGE, app, state

MARKER = "JEX_DEMO"
REPO_DATA = Path(__file__).resolve().parents[2] / "data"


def sample_file() -> Path:
    """The shipped sample flow: real Nasdaq AMZN order flow (data/), or, when
    jex runs from an installed wheel, one generated from the seeded workload."""
    for name in ("amzn-2021-04-12-open.jsonl", "sample.jsonl"):
        shipped = REPO_DATA / name
        if shipped.is_file():
            return shipped
    from jex.workload import mixed_flow

    path = Path(os.environ.get("TMPDIR", "/tmp")) / "jex-sample.jsonl"
    with open(path, "w") as f:
        for cmd in mixed_flow(7, 5000):
            f.write(json.dumps(cmd) + "\n")
    return path


def _fresh(directory: Path) -> None:
    if directory.exists():
        if not (directory / MARKER).exists():
            output.diag(f"jex: bad input: {directory} exists and is not a demo directory; pass --dir")
            raise typer.Exit(EXIT_USAGE)
        shutil.rmtree(directory)
    directory.mkdir(parents=True)
    (directory / MARKER).write_text("created by `jex demo`; safe to delete\n")


@app.command(help="Demo: submit sample flow, SIGKILL the node mid-stream, recover, finish, replay, print the book.")
def demo(
    ctx: typer.Context,
    directory: Path = typer.Option(Path(".jex-demo"), "--dir", help="Demo data directory (recreated)."),
    flow: Optional[Path] = typer.Option(None, "--flow", help="JSON Lines command file (default: data/sample.jsonl)."),
    kill_after: float = typer.Option(0.6, "--kill-after", min=0.05, max=0.95, help="Kill when this share is acknowledged."),
    symbol: str = typer.Option("", "--symbol", help="Book to print (default: the first instrument)."),
) -> int:
    from jex.node.exchange import Exchange
    from jex.replay.rebuild import rebuild

    st = state(ctx)
    flow = flow or sample_file()
    numbered = [(n, line) for n, line in enumerate(flow.read_text().splitlines(), 1)
                if line.strip() and not line.lstrip().startswith("#")]
    lines = [line for _, line in numbered]
    clock = "input" if lines and "ts" in json.loads(lines[0]) else "live"
    _fresh(directory)
    output.diag(f"demo: {len(lines)} commands from {flow} into {directory} (clock {clock})")

    # 1. A real child node, killed with SIGKILL once enough is acknowledged.
    acked_seqs, acked_numbers = _run_and_kill(directory, flow, int(len(lines) * kill_after), clock)
    acked_lines = {i for i, (n, _) in enumerate(numbered, 1) if n in acked_numbers}
    output.diag(f"demo: SIGKILL after {len(acked_seqs)} acknowledged commands (last acked seq {max(acked_seqs, default=0)})")

    # 2. Recover: every acknowledged seq must be in the log.
    with Exchange.open(directory, clock=clock) as node:
        recovered = node.recovery.commands
        lost = sum(1 for s in acked_seqs if s > node.journal.last_seq)
        output.diag(f"demo: recovered {recovered} commands in {node.recovery.seconds * 1000:.1f} ms "
                    f"({node.backend} backend); lost {lost}")
        # Idempotent retry: resubmitting an acknowledged order is refused as a duplicate.
        retry = _first_order(lines, acked_lines)
        duplicate = None
        if retry is not None:
            if clock == "input":
                retry = {**retry, "ts": node.ts}  # simulation time must not go back
            events = node.submit(retry)
            duplicate = events[0]["reason"] if events and events[0]["type"] == "rejected" else events
        # 3. Finish the flow from where the log ends.
        rest = lines[recovered:]
        for _ in node.submit_many(rest):
            pass
        live_digest = node.digest()
        book_view = node.book(symbol or next(iter(node.engine.instruments), ""))
        stats_view = node.stats(book_view["symbol"]) if book_view else None
        total = node.journal.last_seq

    # 4. Replay from genesis (read-only) and compare digests.
    engine, replay_stats = rebuild(directory)
    replay_digest = engine.digest()
    same = replay_digest == live_digest
    summary = {
        "commands": len(lines),
        "acknowledged": len(acked_seqs),
        "recovered": recovered,
        "lost": lost,
        "duplicate_retry": duplicate,
        "log_seq": total,
        "replayed_commands": replay_stats.commands,
        "replay_commands_per_second": round(replay_stats.commands_per_second),
        "live_digest": live_digest,
        "replay_digest": replay_digest,
        "deterministic": same,
    }
    if st.json:
        output.emit_json({"summary": summary, "book": book_view, "stats": stats_view})
    else:
        if book_view:
            output.stdout.print(output.book_table(book_view, 10))
        if stats_view:
            output.stdout.print(output.kv_table(f"{book_view['symbol']} statistics", stats_view))
        output.stdout.print(output.kv_table("crash-recovery demo", summary))
        output.stdout.print(
            f"acknowledged {len(acked_seqs)}, recovered {recovered}, lost {lost}; "
            f"replay digest {'matches' if same else 'DIFFERS FROM'} the live digest"
        )
        output.stdout.print(f"explore: jex --data-dir {directory} book {book_view['symbol'] if book_view else 'SYMBOL'}"
                            f" | orders | stats | replay --verify | journal verify")
    return EXIT_OK if lost == 0 and same else EXIT_INTEGRITY


def _run_and_kill(directory: Path, flow: Path, kill_at: int, clock: str) -> tuple[list[int], set[int]]:
    """Run `jex submit --results` in a child; SIGKILL it after ``kill_at`` acks."""
    cmd = [sys.executable, "-m", "jex", "--data-dir", str(directory), "submit", str(flow), "--results",
           "--no-progress", "--batch", "64", "--clock", clock]
    child = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    seqs: list[int] = []
    lines: set[int] = set()
    try:
        for raw in child.stdout:
            result = json.loads(raw)
            if result.get("seq") is not None:
                seqs.append(result["seq"])
                lines.add(result["line"])
            if len(seqs) >= kill_at:
                os.kill(child.pid, signal.SIGKILL)
                break
    finally:
        child.wait()
        child.stdout.close()
    return seqs, lines


def _first_order(lines: list[str], acked_lines: set[int]) -> dict | None:
    for number, line in enumerate(lines, 1):
        if number in acked_lines:
            obj = json.loads(line)
            if obj.get("type") == "order":
                return obj
    return None
