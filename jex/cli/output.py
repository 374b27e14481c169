"""Printing for the CLI (cli room): JSON lines or human text on stdout,
diagnostics on stderr."""

from __future__ import annotations

import sys

import msgspec
from rich.console import Console
from rich.table import Table

_json = msgspec.json.Encoder()
stdout = Console(soft_wrap=True, highlight=False)
stderr = Console(stderr=True, soft_wrap=True, highlight=False)


def emit_json(obj) -> None:
    """One JSON object on one line of stdout."""
    sys.stdout.buffer.write(_json.encode(obj) + b"\n")


def flush() -> None:
    sys.stdout.flush()


def diag(message: str) -> None:
    """A one-line diagnostic on stderr (control characters escaped)."""
    from jex.core.codec import one_line

    print(one_line(message), file=sys.stderr, flush=True)


def event_text(event: dict) -> str:
    """A compact human line for one contract event."""
    kind = event["type"]
    seq = event.get("seq")
    head = f"{seq:>8} {kind:<10}"
    if kind == "trade":
        aggressor = event["aggressor"] or "auction"
        return (
            f"{head} {event['symbol']} {event['qty']} @ {event['price']}  buyer {event['buyer']} "
            f"seller {event['seller']}  maker {event['maker_client_id']} taker {event['taker_client_id']} ({aggressor})"
        )
    if kind == "accepted":
        return f"{head} {event['symbol']} order {event['order_id']} {event['account']}/{event['client_id']}"
    if kind == "rejected":
        who = f"{event.get('account')}/{event.get('client_id')}" if event.get("client_id") else ""
        return f"{head} {who} {event['reason']}: {event['message']}"
    if kind == "cancelled":
        return f"{head} order {event['order_id']} {event['client_id']} {event['reason']} remaining {event['remaining_qty']}"
    if kind == "amended":
        return f"{head} order {event['order_id']} {event['client_id']} qty {event['qty']} price {event['price']}"
    if kind == "prevented":
        return f"{head} taker {event['taker_order_id']} maker {event['maker_order_id']} qty {event['qty']} {event['mode']}"
    if kind == "triggered":
        return f"{head} order {event['order_id']} {event['client_id']}"
    if kind == "auction":
        return f"{head} {event['symbol']} price {event['price']} volume {event['volume']} surplus {event['surplus']}"
    rest = " ".join(f"{k}={v}" for k, v in event.items() if k not in ("type", "seq"))
    return f"{head} {rest}"


def book_table(book: dict, depth: int | None = None) -> Table:
    """Bids and asks side by side, best first."""
    table = Table(title=f"{book['symbol']} @ seq {book['seq']}  last {book['last'] or '-'}", show_lines=False)
    for name in ("orders", "bid qty", "bid", "ask", "ask qty", "orders "):
        table.add_column(name, justify="right")
    bids, asks = book["bids"], book["asks"]
    rows = max(len(bids), len(asks))
    if depth is not None:
        rows = min(rows, depth)
    for i in range(rows):
        b = bids[i] if i < len(bids) else None
        a = asks[i] if i < len(asks) else None
        table.add_row(
            str(b["orders"]) if b else "",
            b["qty"] if b else "",
            b["price"] if b else "",
            a["price"] if a else "",
            a["qty"] if a else "",
            str(a["orders"]) if a else "",
        )
    return table


def dict_table(title: str, rows: list[dict], columns: list[str] | None = None) -> Table:
    table = Table(title=title)
    columns = columns or (list(rows[0]) if rows else [])
    for column in columns:
        table.add_column(column)
    for row in rows:
        table.add_row(*["" if row.get(c) is None else str(row.get(c)) for c in columns])
    return table


def rows(records: list[dict], as_json: bool, title: str, columns: list[str]) -> None:
    """A stream of records: JSON Lines with --json, else one table."""
    if as_json:
        for record in records:
            emit_json(record)
    else:
        stdout.print(dict_table(title, records, columns))


def kv_table(title: str, values: dict) -> Table:
    table = Table(title=title, show_header=False)
    table.add_column("field")
    table.add_column("value", justify="right")
    for key, value in values.items():
        table.add_row(key, "-" if value is None else str(value))
    return table
