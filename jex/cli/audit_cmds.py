"""``jex audit order|account|trades|range|reindex|stat`` (cli room).

Every query first catches the audit index up with the log (or rebuilds it
when it no longer matches the log), then prints one page of events in
(seq, index) order, each with the command behind it: who (account,
client_id), when (ts, ISO and ns), which seq. `--json` prints JSON Lines,
one event per line, and, when there is more, a last line
`{"next_cursor": "SEQ:INDEX"}`; text output ends with the `--cursor` to pass
for the next page. `--since/--until` and `range FROM TO` take a seq or a
time (see `jex replay --help`).
"""

from __future__ import annotations

from typing import List, Optional

import typer

from jex.cli import output
from jex.cli.main import EXIT_OK, EXIT_USAGE, app, state

audit_app = typer.Typer(help="Query the audit index (an LMDB projection of the log, caught up on every query).",
                        no_args_is_help=True)
app.add_typer(audit_app, name="audit")

SINCE = typer.Option(None, "--since", help="From this seq or time (inclusive).")
UNTIL = typer.Option(None, "--until", help="Up to this seq or time (inclusive).")
TYPES = typer.Option(None, "--type", help="Only these event types (repeat or comma-separate).")
LIMIT = typer.Option(100, "--limit", help="Events per page (1..10000).")
CURSOR = typer.Option(None, "--cursor", help="Resume where the previous page ended (SEQ:INDEX).")


def _fail(message: str) -> typer.Exit:
    output.diag(f"jex: bad input: {message}")
    return typer.Exit(EXIT_USAGE)


def _run(ctx: typer.Context, selector_of, since: Optional[str], until: Optional[str], types: Optional[List[str]],
         limit: int, cursor: Optional[str]) -> int:
    from jex.replay.audit import AuditError, PageRequest, open_caught_up, parse_cursor, parse_types
    from jex.replay.timetravel import PointError, parse_point

    st = state(ctx)
    if not (st.data_dir / "wal").is_dir():
        raise _fail(f"{st.data_dir} holds no journal (nothing submitted yet?)")
    try:
        since_point = parse_point(since) if since is not None else None
        until_point = parse_point(until) if until is not None else None
        type_set = parse_types(types or [])
        cursor_at = parse_cursor(cursor) if cursor is not None else None
    except (PointError, AuditError) as exc:
        raise _fail(str(exc)) from None
    index, _ = open_caught_up(st.data_dir, notify=output.diag)
    try:
        try:
            selector = selector_of(index)
            request = PageRequest(index.resolve(since_point, after=True), index.resolve(until_point, after=False),
                                  type_set, cursor_at, limit)
            page = index.query(selector, request)
        except AuditError as exc:
            raise _fail(str(exc)) from None
        position = index.position()
    finally:
        index.close()
    if position is not None and position.first > 1 and (request.since_seq or 0) < position.first:
        output.diag(f"jex: the log (and so the index) starts at seq {position.first}: earlier history was pruned")
    _print(page, st.json)
    return EXIT_OK


def _nonempty(value: str, name: str) -> str:
    if not value:
        raise typer.BadParameter("must not be empty", param_hint=name)
    return value


def _print(page, as_json: bool) -> None:
    if as_json:
        for row in page.rows:
            output.emit_json(row)
        if page.next_cursor is not None:
            output.emit_json({"next_cursor": page.next_cursor})
        return
    for row in page.rows:
        command = row["command"]
        who = "/".join(str(x) for x in (command.get("account"), command.get("client_id")) if x is not None)
        print(f"{row['ts']} {output.event_text(row)}  [{command['type']} {who}]".rstrip())
    if page.next_cursor is not None:
        print(f"next page: --cursor {page.next_cursor}")


@audit_app.command("order", help="Every event of an order: by order id, or by --client-id with --account.")
def audit_order(
    ctx: typer.Context,
    order_id: Optional[int] = typer.Argument(None, min=1, max=2**63 - 1, help="Order (or group) id."),
    client_id: Optional[str] = typer.Option(None, "--client-id"),
    account: Optional[str] = typer.Option(None, "--account"),
    since: Optional[str] = SINCE, until: Optional[str] = UNTIL, types: Optional[List[str]] = TYPES,
    limit: int = LIMIT, cursor: Optional[str] = CURSOR,
) -> int:
    from jex.replay.audit import Selector

    if (order_id is None) == (client_id is None):
        raise _fail("give an order id, or --client-id with --account")
    if client_id is not None and account is None:
        raise _fail("--client-id needs --account (client ids are unique per account)")
    client = (account, client_id) if client_id is not None else None
    return _run(ctx, lambda index: Selector("order", order_id=order_id, client=client), since, until, types, limit, cursor)


@audit_app.command("account", help="Every event naming an account or one of its orders.")
def audit_account(
    ctx: typer.Context,
    account: str = typer.Argument(..., callback=lambda v: _nonempty(v, "ACCOUNT")),
    since: Optional[str] = SINCE, until: Optional[str] = UNTIL, types: Optional[List[str]] = TYPES,
    limit: int = LIMIT, cursor: Optional[str] = CURSOR,
) -> int:
    from jex.replay.audit import Selector

    return _run(ctx, lambda index: Selector("account", account=account), since, until, types, limit, cursor)


@audit_app.command("trades", help="Every trade of a symbol.")
def audit_trades(
    ctx: typer.Context,
    symbol: str = typer.Argument(..., callback=lambda v: _nonempty(v, "SYMBOL")),
    since: Optional[str] = SINCE, until: Optional[str] = UNTIL, types: Optional[List[str]] = TYPES,
    limit: int = LIMIT, cursor: Optional[str] = CURSOR,
) -> int:
    from jex.replay.audit import Selector

    return _run(ctx, lambda index: Selector("trades", symbol=symbol), since, until, types, limit, cursor)


@audit_app.command("range", help="Every event between two seqs or times (inclusive).")
def audit_range(
    ctx: typer.Context,
    start: str = typer.Argument(..., metavar="FROM"),
    end: str = typer.Argument(..., metavar="TO"),
    types: Optional[List[str]] = TYPES, limit: int = LIMIT, cursor: Optional[str] = CURSOR,
) -> int:
    from jex.replay.audit import Selector

    return _run(ctx, lambda index: Selector("range"), start, end, types, limit, cursor)


@audit_app.command("reindex", help="Rebuild the audit index from the log.")
def audit_reindex(ctx: typer.Context) -> int:
    from jex.replay.audit import open_caught_up

    st = state(ctx)
    if not (st.data_dir / "wal").is_dir():
        raise _fail(f"{st.data_dir} holds no journal (nothing submitted yet?)")
    index, result = open_caught_up(st.data_dir, rebuild=True, notify=output.diag)
    index.close()
    _report(st.json, "reindex", result)
    return EXIT_OK


@audit_app.command("stat", help="Catch the index up; print its position and what that took.")
def audit_stat(ctx: typer.Context) -> int:
    from jex.replay.audit import open_caught_up

    st = state(ctx)
    if not (st.data_dir / "wal").is_dir():
        raise _fail(f"{st.data_dir} holds no journal (nothing submitted yet?)")
    index, result = open_caught_up(st.data_dir, notify=output.diag)
    index.close()
    _report(st.json, "audit index", result)
    return EXIT_OK


def _report(as_json: bool, title: str, result) -> None:
    position = result.position
    view = {
        "seq": position.seq if position else 0,
        "chain": position.chain.hex() if position else None,
        "first": position.first if position else 1,
        "rebuilt": result.rebuilt,
        "reason": result.reason or None,
        "start": result.start or None,
        "commands_indexed": result.commands,
        "seconds": round(result.seconds, 6),
    }
    if as_json:
        output.emit_json(view)
    else:
        output.stdout.print(output.kv_table(title, view))
