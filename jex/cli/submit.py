"""``jex submit`` and ``jex cancel`` (cli room)."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Iterator, Optional

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from jex.cli import output
from jex.cli.main import EXIT_OK, EXIT_USAGE, app, check_backend, check_segment_bytes, state
from jex.core import CommandError
from jex.core.codec import decode_wire

COMMAND_TYPES = ("instrument", "order", "cancel", "replace", "oco", "bracket", "conditional", "auction", "clock")
INT_FIELDS = {"expire_at", "order_id", "ts", "vpin_window", "vpin_bar_seconds"}
BOOL_FIELDS = {"post_only", "top_order", "stop_entry_check"}


def parse_field_args(args: list[str]) -> dict:
    """``--client-id a1 --qty 5 --post-only`` -> {"client_id": "a1", "qty": "5", "post_only": True}."""
    out: dict = {}
    i = 0
    while i < len(args):
        arg = args[i]
        if not arg.startswith("--") or len(arg) < 3:
            raise CommandError("$", f"expected --field value, got {arg!r}")
        name, eq, value = arg[2:].partition("=")
        key = name.replace("-", "_")
        if not eq:
            if i + 1 < len(args) and not args[i + 1].startswith("--"):
                value = args[i + 1]
                i += 1
            elif key in BOOL_FIELDS:
                value = "true"
            else:
                raise CommandError(f"$.{key}", "needs a value")
        out[key] = _field_value(key, value)
        i += 1
    return out


def _field_value(key: str, value: str):
    if key in BOOL_FIELDS:
        if value not in ("true", "false"):
            raise CommandError(f"$.{key}", "must be true or false")
        return value == "true"
    if key in INT_FIELDS:
        try:
            return int(value)
        except ValueError:
            raise CommandError(f"$.{key}", "must be an integer") from None
    if value[:1] in "[{":
        try:
            return json.loads(value)
        except json.JSONDecodeError as exc:
            raise CommandError(f"$.{key}", f"invalid JSON: {exc.msg}") from None
    return value


def read_lines(path: str) -> Iterator[tuple[int, bytes]]:
    """(line number, line) of a JSON Lines file (or stdin for '-'), skipping
    blank lines and # comments."""
    stream = sys.stdin.buffer if path == "-" else open(path, "rb")
    try:
        for number, line in enumerate(stream, 1):
            stripped = line.strip()
            if stripped and not stripped.startswith(b"#"):
                yield number, stripped
    finally:
        if stream is not sys.stdin.buffer:
            stream.close()


def precheck(path: str) -> tuple[int, list[str]]:
    """Decode every line of a file before anything is submitted, so that a
    file with a malformed line changes nothing. Returns (lines, errors)."""
    count = 0
    errors: list[str] = []
    for number, line in read_lines(path):
        count += 1
        try:
            decode_wire(line)
        except CommandError as exc:
            errors.append(f"line {number}: {exc}")
    return count, errors


@app.command(
    context_settings={"allow_extra_args": True, "ignore_unknown_options": True},
    help=(
        "Submit commands: a JSON Lines FILE ('-' for stdin), or one command given as a type followed by "
        "--field value pairs, e.g. `jex submit order --account A --client-id a1 --symbol X --side buy "
        "--kind limit --qty 5 --price 100`. Events are printed once durable."
    ),
)
def submit(
    ctx: typer.Context,
    target: str = typer.Argument(..., help="FILE.jsonl, '-', or a command type: " + ", ".join(COMMAND_TYPES)),
    clock: str = typer.Option("live", "--clock", help="live: the sequencer stamps wall time; input: each command's own ts."),
    backend: str = typer.Option("auto", "--backend", callback=check_backend, help="WAL writer: auto, uring or pwrite."),
    keep_going: bool = typer.Option(False, "--keep-going", help="Skip commands the edge refuses instead of stopping."),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Progress bar on stderr for files."),
    results: bool = typer.Option(False, "--results", help="Print one JSON line per command (index, seq, events)."),
    batch: int = typer.Option(4096, "--batch", min=1, max=4096, help="Commands per group commit (at most)."),
    segment_bytes: Optional[int] = typer.Option(None, "--segment-bytes", hidden=True, callback=check_segment_bytes),
    check_invariants: bool = typer.Option(False, "--check-invariants", hidden=True),
) -> int:
    from jex.node.exchange import BATCH_WAIT_NS_MAX, BULK_BATCH_WAIT_NS, Exchange

    st = state(ctx)
    if clock not in ("live", "input"):
        raise typer.BadParameter("must be live or input", param_hint="--clock")
    if target in COMMAND_TYPES:
        obj = {"type": target, **parse_field_args(ctx.args)}
        source = iter([(0, obj)])
        total = 1
    else:
        if ctx.args:
            raise typer.BadParameter(f"unexpected arguments {' '.join(ctx.args)}", param_hint="FILE")
        if target != "-" and not Path(target).is_file():
            raise typer.BadParameter(f"no such file {target!r}", param_hint="FILE")
        total = None
        if target != "-":
            total, errors = precheck(target)
            if errors:
                for line in errors[:20]:
                    output.diag(f"jex: bad input: {line}")
                if len(errors) > 20:
                    output.diag(f"jex: ... and {len(errors) - 20} more")
                output.diag(f"jex: nothing submitted ({len(errors)} malformed of {total} commands)")
                return EXIT_USAGE
        source = read_lines(target)
    interactive = target == "-" and sys.stdin.isatty()
    with Exchange.open(st.data_dir, backend=backend, clock=clock, segment_bytes=segment_bytes,
                       batch_records_max=1 if interactive else batch, check_invariants=check_invariants,
                       batch_wait_ns=BATCH_WAIT_NS_MAX if interactive else BULK_BATCH_WAIT_NS) as node:
        line_numbers: list[int] = []

        def commands():
            for number, raw in source:
                line_numbers.append(number)
                yield raw

        refused = 0
        shown = progress and total is not None and total > 1 and not results
        bar = _progress_bar() if shown else None
        task = bar.add_task("submit", total=total) if bar else None
        if bar:
            bar.start()
        try:
            for result in node.submit_many(commands(), overlap=not interactive, stop_on_error=not keep_going):
                number = line_numbers[result.index]
                if result.error is not None:
                    refused += 1
                    where = f"line {number}: " if target not in COMMAND_TYPES else ""
                    output.diag(f"jex: bad input: {where}{result.error}")
                elif results:
                    output.emit_json({"line": number, "seq": result.seq, "events": result.events})
                    output.flush()
                else:
                    _print_events(result.events, st.json)
                if bar:
                    bar.advance(task)
        finally:
            if bar:
                bar.stop()
        output.flush()
        if refused and not keep_going and target not in COMMAND_TYPES:
            output.diag(f"jex: stopped at the first refused command; {node.acknowledged} acknowledged before it")
        return EXIT_USAGE if refused else EXIT_OK


def _progress_bar() -> Progress:
    return Progress(
        TextColumn("[progress.description]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        console=output.stderr,
        transient=True,
    )


def _print_events(events: list[dict], as_json: bool) -> None:
    if as_json:
        for event in events:
            output.emit_json(event)
    else:
        for event in events:
            print(output.event_text(event))


@app.command(help="Cancel an order or a group by client id or order id (durable before it is printed).")
def cancel(
    ctx: typer.Context,
    account: str = typer.Option(..., "--account", help="The account that owns the order."),
    client_id: Optional[str] = typer.Option(None, "--client-id"),
    order_id: Optional[int] = typer.Option(None, "--order-id"),
    backend: str = typer.Option("auto", "--backend", callback=check_backend),
) -> int:
    from jex.node.exchange import Exchange

    st = state(ctx)
    command = {"type": "cancel", "account": account}
    if client_id is not None:
        command["client_id"] = client_id
    if order_id is not None:
        command["order_id"] = order_id
    with Exchange.open(st.data_dir, backend=backend) as node:
        _print_events(node.submit(command), st.json)
    output.flush()
    return EXIT_OK
