"""``jex import lobster`` (cli room): replay real Nasdaq order flow.

The conversion lives in ``jex.ingest.lobster``; this is the thin edge: open
the node in simulation-clock mode, drive the import with a progress bar on
stderr, print the report (rich tables, or one JSON object with ``--json``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from jex.cli import output
from jex.cli.main import EXIT_OK, EXIT_USAGE, app, check_backend, check_segment_bytes, state

import_app = typer.Typer(help="Import external order flow and replay it through jex.", no_args_is_help=True)
app.add_typer(import_app, name="import")


@import_app.command(
    "lobster",
    short_help="Replay a LOBSTER (Nasdaq ITCH) message file through jex and report how it matched.",
    help=(
        "Replay a LOBSTER message file (Nasdaq ITCH as rebuilt by LOBSTER) through jex with simulation time "
        "(--clock input): new orders become GTC limits, partial cancels size-reducing replaces, deletions cancels, "
        "visible executions opposite-side IOC orders; hidden executions, crosses and halts are counted. Prints "
        "a report: commands by type, trades, how many executions hit the very order Nasdaq executed, the book."
    ),
)
def lobster(
    ctx: typer.Context,
    file: Path = typer.Argument(..., help="LOBSTER message file (CSV, no header, 6 or 7 columns)."),
    symbol: Optional[str] = typer.Option(None, "--symbol", help="Symbol (default: from the file name, else AMZN)."),
    date: Optional[str] = typer.Option(
        None, "--date", help="Trading date YYYY-MM-DD of the times (default: from the file name, else 2021-04-12)."
    ),
    limit: Optional[int] = typer.Option(None, "--limit", min=0, help="Read at most N rows."),
    strict: bool = typer.Option(False, "--strict", help="Stop at the first bad row (exit 2); default: skip and count."),
    reconcile: bool = typer.Option(
        False, "--reconcile", help="Cancel jex orders a message proves gone from Nasdaq's book (LOBSTER drops "
        "messages outside its 10 levels) before replaying it."
    ),
    skip_unknown: bool = typer.Option(
        False, "--skip-unknown", help="Count, but do not replay, executions of orders never added in the file."
    ),
    backend: str = typer.Option("auto", "--backend", callback=check_backend, help="WAL writer: auto, uring or pwrite."),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Progress bar on stderr."),
) -> int:
    from jex.ingest import lobster as L
    from jex.node.exchange import BULK_BATCH_WAIT_NS, Exchange

    st = state(ctx)
    if not file.is_file():
        raise typer.BadParameter(f"no such file {str(file)!r}", param_hint="FILE")
    guessed_symbol, guessed_date = L.guess_from_filename(file)
    symbol = symbol or guessed_symbol or L.DEFAULT_SYMBOL
    if not 1 <= len(symbol) <= 32 or not symbol.isprintable() or " " in symbol:
        raise typer.BadParameter("must be 1..32 printable characters without spaces", param_hint="--symbol")
    date = date or guessed_date or L.DEFAULT_DATE
    try:
        L.midnight_ns(date)
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--date") from None
    size = file.stat().st_size

    with Exchange.open(st.data_dir, backend=backend, clock="input", batch_wait_ns=BULK_BATCH_WAIT_NS) as node:
        bar = _progress_bar() if progress and size > 0 and limit != 0 else None
        # Progress in bytes of the file, or in rows when --limit caps them.
        task = bar.add_task(f"import {file.name}", total=limit or size, rows=0) if bar else None

        def advance(bytes_read: int, rows: int) -> None:
            bar.update(task, completed=rows if limit else bytes_read, rows=rows)

        if bar:
            bar.start()
        try:
            result = L.run_import(node, file, symbol, date=date, limit=limit, strict=strict, reconcile=reconcile,
                                  skip_unknown=skip_unknown, progress=advance if bar else None)
        except L.ImportRefused as exc:
            output.diag(f"jex: bad input: {exc}")
            return EXIT_USAGE
        finally:
            if bar:
                bar.stop()
    report = result.report
    if st.json:
        output.emit_json(report)
    else:
        _print_report(report)
    output.flush()
    bad = report["bad_rows"]
    if result.stopped_at is not None:
        output.diag(f"jex: bad input: {result.stopped_at} (--strict: stopped; the rows before it were submitted)")
        return EXIT_USAGE
    if bad["count"]:
        first = bad["first"][0]
        output.diag(f"jex: skipped {bad['count']} bad rows (first: line {first['line']}: {first['kind']}: "
                    f"{first['message']})")
    if result.refused:
        first = report["commands"]["refused_first"][0]
        output.diag(f"jex: bad input: {result.refused} commands refused by the edge (first: line {first['line']}: "
                    f"{first['message']})")
        return EXIT_USAGE
    return EXIT_OK


def _progress_bar() -> Progress:
    return Progress(
        TextColumn("[progress.description]{task.description}"),
        BarColumn(),
        TextColumn("{task.percentage:>3.0f}%  {task.fields[rows]:,} rows"),
        TimeRemainingColumn(),
        console=output.stderr,
        transient=True,
    )


def _rate(value) -> str:
    return "-" if value is None else f"{value:.2%}"


def _print_report(r: dict) -> None:
    ex = r["executions"]
    console = output.stdout
    summary = {
        "file": Path(r["file"]).name,
        "symbol / date": f"{r['symbol']} / {r['date']}",
        "rows read": r["rows_read"],
        "bad rows": r["bad_rows"]["count"],
        "commands submitted": r["commands"]["total"],
        "trades": r["events"]["trades"],
        "traded qty": r["events"]["traded_qty"],
        "same order executed": f"{ex['same_order']} of {ex['replayed']} ({_rate(ex['same_order_rate'])})",
        "  ... of orders added in file": f"{ex['same_order']} of {ex['of_known_orders']} "
                                                       f"({_rate(ex['same_order_rate_known'])})",
        "seq": f"{r['seq']['first']}..{r['seq']['last']}" if r["seq"]["first"] else f"{r['seq']['last']} (nothing new)",
        "state digest": r["digest"],
        "seconds": r["seconds"],
        "commands/s": r["commands_per_second"],
        "rows/s": r["rows_per_second"],
    }
    options = [k for k in ("strict", "reconcile", "skip_unknown") if r["options"][k]]
    if options:
        summary["options"] = ", ".join(o.replace("_", "-") for o in options)
    console.print(output.kv_table("LOBSTER import", summary))

    flow = Table(title="rows and commands")
    for name in ("LOBSTER rows", "count", "jex commands", "count "):
        flow.add_column(name, justify="right" if name.startswith("count") else "left")
    rows = list(r["rows_by_type"].items())
    commands = list(r["commands"]["by_type"].items())
    for i in range(max(len(rows), len(commands))):
        a = rows[i] if i < len(rows) else ("", "")
        b = commands[i] if i < len(commands) else ("", "")
        flow.add_row(a[0], str(a[1]), b[0], str(b[1]))
    console.print(flow)

    not_same = ex["not_same"]
    ahead = ex["order_ahead"]
    execs = {
        "replayed (IOC orders)": ex["replayed"],
        "qty Nasdaq executed / IOCs traded": f"{ex['nasdaq_qty']} / {ex['ioc_traded_qty']}",
        "same order, same qty": ex["same_order"],
        "unknown order (never added)": not_same["unknown_order"],
        "  ... traded with another order": ex["unknown_order_traded"],
        "order already gone in jex": not_same["order_gone"],
        "order ahead: better price": ahead["at_better_price"],
        "order ahead: same price, older id": ahead["same_price_older_nasdaq_id"],
        "order ahead: same price, other": ahead["same_price"],
        "partial (the order, then others)": not_same["partial"],
        "no trade": not_same["no_trade"],
        "new orders trading on entry": f"{r['new_orders_that_traded']['orders']} "
                                                              f"(qty {r['new_orders_that_traded']['qty']})",
    }
    console.print(output.kv_table("replayed executions", execs))

    never = r["never_added"]
    hidden = r["hidden"]
    crosses = r["crosses"]
    skipped = {
        "rows naming never-added orders": _pairs(never["rows"]),
        "  ... id below first added (pre-09:30)": _pairs(never["below_first_added_id"]),
        "  ... qty Nasdaq executed on them": never["executed_qty"],
        "new orders with an older id": r["new_orders_with_older_id"],
        "hidden executions (n / qty / vwap)": f"{hidden['count']} / {hidden['qty']} / {hidden['vwap'] or '-'}",
        "crosses (n / qty / price)": f"{crosses['count']} / {crosses['qty']} / {', '.join(crosses['prices']) or '-'}",
        "halts": _pairs(r["halts"]) or 0,
        "not sent: order gone in jex": _pairs(r["skipped_gone_in_jex"]) or 0,
        "orders live (file view) at end": r["live_in_file_at_end"],
    }
    if r["reconciled"] is not None:
        skipped["reconcile cancels / qty"] = (
            f"{_pairs(r['reconciled']['cancels']) or 0} / {r['reconciled']['qty']}"
        )
    events = r["events"]
    skipped["rejected events"] = _pairs(events["rejected"]) or 0
    skipped["cancelled events"] = _pairs(events["cancelled"]) or 0
    console.print(output.kv_table("not replayed / diagnostics", skipped))

    bad = r["bad_rows"]
    if bad["count"]:
        table = output.dict_table(f"bad rows ({bad['count']}: {_pairs(bad['by_kind'])}; first {len(bad['first'])})",
                                  bad["first"], ["line", "kind", "message"])
        console.print(table)
    if r["book"] is not None:
        console.print(output.book_table(r["book"], 5))


def _pairs(counts: dict) -> str:
    return ", ".join(f"{k} {v}" for k, v in counts.items())
