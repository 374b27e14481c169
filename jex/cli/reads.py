"""Read commands: book, orders, trades, stats, replay (cli room).

They rebuild state from the log read-only (no writer lock), so they work
beside a running node and never change the data directory. A rebuild
starts at the nearest usable snapshot at or before the point asked for
(jex.replay.timetravel) and replays the rest; without one it replays from
genesis. `trades` starts as early as it can (it wants the longest history).
"""

from __future__ import annotations

from collections import deque
from typing import Optional

import typer

from jex.cli import output
from jex.cli.main import EXIT_INTEGRITY, EXIT_OK, EXIT_USAGE, app, state
from jex.core import Codec


AT_HELP = "State after this seq, or at this time (ISO-8601, or ns since the epoch); see `jex replay --help`."


def _rebuild(ctx: typer.Context, at: Optional[str] = None, on_events=None, *, earliest: bool = False):
    """The state now or at a past point, from the nearest usable snapshot at
    or before it plus replay (genesis when there is none)."""
    from jex.replay.recover import RecoveryError
    from jex.replay.timetravel import PointError, parse_point, state_at

    st = state(ctx)
    if not (st.data_dir / "wal").is_dir():
        raise typer.BadParameter(f"{st.data_dir} holds no journal (nothing submitted yet?)", param_hint="--data-dir")
    try:
        point = parse_point(at) if at is not None else None
    except PointError as exc:
        raise typer.BadParameter(str(exc), param_hint="--at") from None
    try:
        recovered = state_at(st.data_dir, point, earliest=earliest, on_events=on_events, notify=output.diag)
    except RecoveryError as exc:
        if point is None:
            raise  # the present state cannot be rebuilt: an integrity failure (exit 3)
        output.diag(f"jex: bad input: --at {at}: {exc}")
        raise typer.Exit(EXIT_USAGE) from None
    return st, recovered.engine, recovered.stats


def _unknown_symbol(symbol: str) -> int:
    output.diag(f"jex: bad input: unknown symbol {symbol}")
    return EXIT_USAGE


@app.command(help="Aggregated order book of SYMBOL (best first), now or at a past sequence number.")
def book(
    ctx: typer.Context,
    symbol: str = typer.Argument(...),
    depth: Optional[int] = typer.Option(None, "--depth", min=1, help="Levels per side."),
    at: Optional[str] = typer.Option(None, "--at", help=AT_HELP),
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
    at: Optional[str] = typer.Option(None, "--at", help=AT_HELP),
) -> int:
    from jex.node.exchange import order_dict

    st, engine, _ = _rebuild(ctx, at)
    codec = Codec.for_engine(engine)
    rows = [order_dict(codec, o) for o in engine.open_orders(account, symbol)]
    columns = ["order_id", "client_id", "account", "symbol", "side", "kind", "price", "trigger", "qty", "remaining", "status"]
    output.rows(rows, st.json, f"open orders ({len(rows)})", columns)
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

    st, engine, _ = _rebuild(ctx, on_events=keep, earliest=True)
    if symbol not in engine.instruments:
        return _unknown_symbol(symbol)
    codec = Codec.for_engine(engine)
    rows = [codec.event(t) for t in recent]
    columns = ["seq", "price", "qty", "buyer", "seller", "aggressor", "maker_client_id", "taker_client_id"]
    output.rows(rows, st.json, f"{symbol} trades ({len(rows)})", columns)
    return EXIT_OK


@app.command(help="Best bid/ask, mid, spread, imbalance, microprice, VPIN and toxicity of SYMBOL.")
def stats(
    ctx: typer.Context,
    symbol: str = typer.Argument(...),
    at: Optional[str] = typer.Option(None, "--at", help=AT_HELP),
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


@app.command(help=(
    "Rebuild state from the log; print the state digest, counts and speed. Starts at genesis while the log "
    "still starts at seq 1, else at the nearest snapshot (--from-snapshot forces that). --verify proves genesis "
    "replay == every retained snapshot + tail == recovery, by digest (exit 3 on any mismatch). "
    "--to and --at take a seq (1200, seq:1200) or a time (ISO-8601, ns:N; a bare N >= 10^15 is ns)."
))
def replay(
    ctx: typer.Context,
    from_genesis: Optional[bool] = typer.Option(
        None, "--from-genesis/--from-snapshot", help="Replay every record from the first, or start at the nearest snapshot."
    ),
    to: Optional[str] = typer.Option(None, "--to", help="Stop after this seq (or at this time)."),
    verify: bool = typer.Option(False, "--verify", help="Genesis replay == each snapshot + tail == recovery (exit 3 on mismatch)."),
) -> int:
    from jex.replay.recover import RecoveryError, wal_view
    from jex.replay.timetravel import PointError, parse_point, state_at

    st = state(ctx)
    if not (st.data_dir / "wal").is_dir():
        raise typer.BadParameter(f"{st.data_dir} holds no journal (nothing submitted yet?)", param_hint="--data-dir")
    try:
        point = parse_point(to) if to is not None else None
    except PointError as exc:
        raise typer.BadParameter(str(exc), param_hint="--to") from None
    first = wal_view(st.data_dir / "wal").first_seq
    if from_genesis and first > 1:
        output.diag(f"jex: bad input: the log starts at seq {first} (pruned after a snapshot): use --from-snapshot")
        return EXIT_USAGE
    try:
        recovered = state_at(st.data_dir, point, use_snapshots=from_genesis is not True, earliest=from_genesis is None,
                             notify=output.diag)
    except RecoveryError as exc:
        output.diag(f"jex: integrity failure: {exc}")
        return EXIT_INTEGRITY
    engine, stats = recovered.engine, recovered.stats
    report = {
        "seq": recovered.seq,
        "start": recovered.start.name,
        "records": stats.records,
        "commands": stats.commands,
        "events": stats.events,
        "digest": engine.digest(),
        "seconds": round(recovered.seconds, 6),
        "replay_seconds": round(stats.seconds, 6),
        "commands_per_second": round(stats.commands_per_second),
        "commands_by_type": stats.kinds,
    }
    status = EXIT_OK
    if verify:
        from jex.replay.verify import verify_replay

        try:
            check = verify_replay(st.data_dir, to_seq=recovered.seq)
        except RecoveryError as exc:
            output.diag(f"jex: integrity failure: {exc}")
            return EXIT_INTEGRITY
        report["verify"] = check.as_dict()
        if not check.ok:
            status = EXIT_INTEGRITY
    if st.json:
        output.emit_json(report)
    else:
        shown = {k: v for k, v in report.items() if k not in ("commands_by_type", "verify")}
        output.stdout.print(output.kv_table("replay", shown))
        if verify:
            check_view = report["verify"]
            output.stdout.print(output.kv_table("verify", {k: v for k, v in check_view.items() if k != "snapshots"}))
            if check_view["snapshots"]:
                output.stdout.print(output.dict_table("snapshots", check_view["snapshots"]))
    if status != EXIT_OK:
        problems = report["verify"]["problems"]
        output.diag("jex: integrity failure: replays disagree" + (f" ({problems[0]})" if problems else ""))
    return status
