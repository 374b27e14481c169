"""Read commands: book, orders, trades, stats, replay (cli room).

They rebuild state from the log read-only (no writer lock), so they work
beside a running node and never change the data directory.
"""

from __future__ import annotations

from collections import deque
from typing import Optional

import typer

from jex.cli import output
from jex.cli.main import EXIT_INTEGRITY, EXIT_OK, EXIT_USAGE, app, state
from jex.core import Codec


def _rebuild(ctx: typer.Context, at: Optional[int] = None, on_events=None):
    from jex.replay.rebuild import rebuild

    st = state(ctx)
    if not (st.data_dir / "wal").is_dir():
        raise typer.BadParameter(f"{st.data_dir} holds no journal (nothing submitted yet?)", param_hint="--data-dir")
    engine, stats = rebuild(st.data_dir, to_seq=at, on_events=on_events)
    return st, engine, stats


def _unknown_symbol(symbol: str) -> int:
    output.diag(f"jex: bad input: unknown symbol {symbol}")
    return EXIT_USAGE


@app.command(help="Aggregated order book of SYMBOL (best first), now or at a past sequence number.")
def book(
    ctx: typer.Context,
    symbol: str = typer.Argument(...),
    depth: Optional[int] = typer.Option(None, "--depth", min=1, help="Levels per side."),
    at: Optional[int] = typer.Option(None, "--at", min=0, help="State after this seq (time travel)."),
) -> int:
    st, engine, _ = _rebuild(ctx, at)
    raw = engine.book(symbol, depth)
    if raw is None:
        return _unknown_symbol(symbol)
    view = Codec.for_engine(engine).book(raw)
    if st.json:
        output.emit_json(view)
    else:
        output.stdout.print(output.book_table(view, depth))
    return EXIT_OK


@app.command(help="Open orders, pending stops, group legs and conditionals.")
def orders(
    ctx: typer.Context,
    account: Optional[str] = typer.Option(None, "--account"),
    symbol: Optional[str] = typer.Option(None, "--symbol"),
    at: Optional[int] = typer.Option(None, "--at", min=0, help="State after this seq (time travel)."),
) -> int:
    from jex.node.exchange import order_dict

    st, engine, _ = _rebuild(ctx, at)
    codec = Codec.for_engine(engine)
    rows = [order_dict(codec, o) for o in engine.open_orders(account, symbol)]
    if st.json:
        for row in rows:
            output.emit_json(row)
    else:
        columns = ["order_id", "client_id", "account", "symbol", "side", "kind", "price", "trigger", "qty", "remaining", "status"]
        output.stdout.print(output.dict_table(f"open orders ({len(rows)})", rows, columns))
    return EXIT_OK


@app.command(help="Recent trades of SYMBOL, oldest first.")
def trades(
    ctx: typer.Context,
    symbol: str = typer.Argument(...),
    limit: int = typer.Option(50, "--limit", min=1, max=100_000),
) -> int:
    from jex.core.events import Trade

    recent: deque = deque(maxlen=limit)

    def keep(seq, events):
        for event in events:
            if type(event) is Trade and event.symbol == symbol:
                recent.append(event)

    st, engine, _ = _rebuild(ctx, on_events=keep)
    if symbol not in engine.instruments:
        return _unknown_symbol(symbol)
    codec = Codec.for_engine(engine)
    rows = [codec.event(t) for t in recent]
    if st.json:
        for row in rows:
            output.emit_json(row)
    else:
        columns = ["seq", "price", "qty", "buyer", "seller", "aggressor", "maker_client_id", "taker_client_id"]
        output.stdout.print(output.dict_table(f"{symbol} trades ({len(rows)})", rows, columns))
    return EXIT_OK


@app.command(help="Best bid/ask, mid, spread, imbalance, microprice, VPIN and toxicity of SYMBOL.")
def stats(
    ctx: typer.Context,
    symbol: str = typer.Argument(...),
    at: Optional[int] = typer.Option(None, "--at", min=0, help="State after this seq (time travel)."),
) -> int:
    st, engine, _ = _rebuild(ctx, at)
    raw = engine.stats(symbol)
    if raw is None:
        return _unknown_symbol(symbol)
    view = Codec.for_engine(engine).stats(raw)
    if st.json:
        output.emit_json(view)
    else:
        output.stdout.print(output.kv_table(f"{symbol} statistics", view))
    return EXIT_OK


@app.command(help="Rebuild state from the log; print the state digest, counts and speed.")
def replay(
    ctx: typer.Context,
    from_genesis: bool = typer.Option(True, "--from-genesis", help="Replay every record from the first."),
    to: Optional[int] = typer.Option(None, "--to", min=0, help="Stop after this seq."),
    verify: bool = typer.Option(False, "--verify", help="Replay twice and compare digests (exit 3 on mismatch)."),
) -> int:
    st, engine, stats = _rebuild(ctx, to)
    digest = engine.digest()
    report = {
        "seq": stats.last_seq,
        "records": stats.records,
        "commands": stats.commands,
        "events": stats.events,
        "digest": digest,
        "seconds": round(stats.seconds, 6),
        "commands_per_second": round(stats.commands_per_second),
        "commands_by_type": stats.kinds,
    }
    status = EXIT_OK
    if verify:
        from jex.replay.verify import verify_replay

        check = verify_replay(st.data_dir, to_seq=to)
        report["verify"] = check.as_dict()
        if not check.ok:
            status = EXIT_INTEGRITY
    if st.json:
        output.emit_json(report)
    else:
        shown = {k: v for k, v in report.items() if k not in ("commands_by_type", "verify")}
        output.stdout.print(output.kv_table("replay", shown))
        if verify:
            output.stdout.print(output.kv_table("verify", report["verify"]))
    if status != EXIT_OK:
        output.diag("jex: integrity failure: replays disagree")
    return status
