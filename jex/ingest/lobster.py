"""LOBSTER message files -> jex commands (ingest room).

A LOBSTER message file (Nasdaq TotalView-ITCH as reconstructed by LOBSTER)
has one message per line, no header, comma-separated:

    time, type, order id, size, price, direction[, attribution]

``time`` is seconds after midnight with up to nanosecond precision; prices
are dollars x 10,000; direction 1 is a buy order, -1 a sell order. Types:
1 new limit order, 2 partial cancel, 3 deletion, 4 execution of a visible
order, 5 execution of a hidden order, 6 cross trade, 7 trading halt. The
seventh (attribution) column is optional: the first row fixes whether the
file has 6 or 7 columns and every row must have as many.

The mapping to the JSON command contract (DESIGN §4):

* 1 -> a GTC limit ``order``, client id ``n<order id>``, account = the
  attribution (MPID) when given, else ``nasdaq``;
* 2 -> a size-reducing ``replace`` whose ``qty`` is the NEW open quantity
  (open - cancelled), or a ``cancel`` when nothing would be left;
* 3 -> a ``cancel``;
* 4 -> an opposite-side IOC limit ``order`` at the executed price and size
  (an execution of a resting sell is a buyer-initiated trade), account
  ``taker``, client id ``x<line number>``;
* 5, 6, 7 are counted, never replayed: a hidden execution has no visible
  resting order to hit, a cross (the opening auction) matched orders the
  file never showed, and a halt has no jex counterpart.

Every command carries ``ts`` = the trading date's UTC midnight + the
message time, in integer ns, for ``clock="input"`` (simulation) mode; equal
times stay equal (the node accepts non-decreasing input time).

The open quantity a replace needs comes either from the file (what the
messages say is left: the default, so ``iter_commands`` needs no engine) or
from a ``View`` of the engine (``EngineView``): inside a node the engine's
size can differ from Nasdaq's, and a replace must name the engine's new open
size. The view also lets ``reconcile`` cancel engine orders that a message
proves gone from Nasdaq's book (see ``Converter``).

Everything streams: the file is read line by line and the converter keeps
state only for orders that are live according to the file.
"""

from __future__ import annotations

import calendar
import datetime as _dt
import re
import time
from collections import Counter, deque
from dataclasses import dataclass
from itertools import chain
from pathlib import Path
from typing import Callable, Iterator, NamedTuple, Protocol

# Message types.
NEW, PARTIAL_CANCEL, DELETE, EXECUTION, HIDDEN_EXECUTION, CROSS, HALT = 1, 2, 3, 4, 5, 6, 7
TYPE_NAMES = {
    NEW: "new_order",
    PARTIAL_CANCEL: "partial_cancel",
    DELETE: "deletion",
    EXECUTION: "execution",
    HIDDEN_EXECUTION: "hidden_execution",
    CROSS: "cross",
    HALT: "halt",
}

PRICE_SCALE = 10_000  # LOBSTER prices are dollars x 10,000
TICK = "0.01"  # the instrument the importer defines
LOT = "1"  # one share
TICK_UNITS = 100  # LOBSTER price units per tick (0.01 x 10,000)
DEFAULT_SYMBOL = "AMZN"
DEFAULT_DATE = "2021-04-12"  # the shipped file's trading day
DEFAULT_ACCOUNT = "nasdaq"  # resting orders without attribution
TAKER_ACCOUNT = "taker"  # the IOC orders standing in for Nasdaq's incoming orders
SECONDS_PER_DAY = 86_400
NS_PER_SECOND = 1_000_000_000
ORDER_ID_MAX = 2**63 - 1  # keeps client ids n<id> short
SIZE_MAX = 10**15  # the codec's QTY_LOTS_MAX
PRICE_MAX = 10**15 * TICK_UNITS  # the codec's PRICE_TICKS_MAX in LOBSTER units
BAD_ROWS_KEPT = 20  # bad rows reported individually (all are counted)

BAD_KINDS = ("columns", "type", "number", "value", "time_order", "duplicate_order_id")

_ATTRIBUTION_RE = re.compile(r"^[!-+\--~]{1,64}$")  # printable ASCII without space or comma
_FILENAME_RE = re.compile(r"^(?P<symbol>[A-Za-z0-9.\-]+)_(?P<date>\d{4}-\d{2}-\d{2})_\d+_\d+_message_\d+\.csv$")


class LobsterError(ValueError):
    """A malformed row. ``str()`` is one line: ``line N: <kind>: <reason>``."""

    def __init__(self, line: int, kind: str, message: str) -> None:
        super().__init__(f"line {line}: {kind}: {message}")
        self.line = line
        self.kind = kind
        self.message = message

    def as_dict(self) -> dict:
        return {"line": self.line, "kind": self.kind, "message": self.message}


class Message(NamedTuple):
    line: int
    ts: int  # epoch ns
    type: int
    order_id: int
    size: int
    price: int  # dollars x 10,000
    direction: int  # 1 buy order, -1 sell order
    attribution: str | None


# ------------------------------------------------------------------ parsing


def midnight_ns(date: str) -> int:
    """UTC midnight of an ISO date (``2021-04-12``) in epoch nanoseconds."""
    try:
        day = _dt.date.fromisoformat(date)
    except (TypeError, ValueError):
        raise ValueError(f"date {date!r} is not YYYY-MM-DD") from None
    return calendar.timegm(day.timetuple()) * NS_PER_SECOND


def guess_from_filename(path: str | Path) -> tuple[str | None, str | None]:
    """(symbol, date) from LOBSTER's file name convention
    ``AMZN_2021-04-12_34200000_57600000_message_10.csv``, else (None, None)."""
    match = _FILENAME_RE.match(Path(path).name)
    if match is None:
        return None, None
    try:
        midnight_ns(match["date"])
    except ValueError:
        return match["symbol"], None
    return match["symbol"], match["date"]


def dollars(price: int) -> str:
    """A LOBSTER price (dollars x 10,000) as a decimal string, 2 decimals when on
    the cent grid, else 4: 33578400 -> '3357.84', 33578450 -> '3357.8450'."""
    sign = "-" if price < 0 else ""
    price = abs(price)
    if price % TICK_UNITS == 0:
        cents = price // TICK_UNITS
        return f"{sign}{cents // 100}.{cents % 100:02d}"
    return f"{sign}{price // PRICE_SCALE}.{price % PRICE_SCALE:04d}"


DIGITS_MAX = 30  # longest number accepted in a field


def _digits(text: str) -> bool:
    return len(text) <= DIGITS_MAX and text.isascii() and text.isdigit()


def _int(text: str, name: str, line: int) -> int:
    body = text[1:] if text.startswith("-") else text
    if not _digits(body):
        raise LobsterError(line, "number", f"{name} {text[:30]!r} is not an integer")
    return int(text)


def _time_ns(text: str, line: int) -> int:
    seconds, dot, fraction = text.partition(".")
    if not _digits(seconds) or (dot and not _digits(fraction)):
        raise LobsterError(line, "number", f"time {text[:30]!r} is not a decimal number of seconds")
    if len(fraction) > 9:
        raise LobsterError(line, "number", f"time {text[:30]!r} has more than 9 decimals (finer than 1 ns)")
    whole = int(seconds)
    if whole >= SECONDS_PER_DAY:
        raise LobsterError(line, "value", f"time {text} is not within a day (seconds after midnight)")
    return whole * NS_PER_SECOND + (int(fraction.ljust(9, "0")) if fraction else 0)


def parse_row(raw: bytes | str, line: int, midnight: int, columns: int = 7) -> Message:
    """One LOBSTER row -> Message; LobsterError (one line, with ``line``) if malformed.

    Checks the column count, that every field is a number, the type, and the
    values the replay needs: for types 1-4 a positive order id and size, a
    positive price on the 0.01 tick, direction 1 or -1.
    """
    text = raw.decode("ascii", "replace") if isinstance(raw, (bytes, bytearray)) else raw
    fields = text.rstrip("\r\n").split(",")
    if len(fields) != columns:
        raise LobsterError(line, "columns", f"expected {columns} comma-separated columns, got {len(fields)}")
    ts = midnight + _time_ns(fields[0].strip(), line)
    mtype = _int(fields[1].strip(), "type", line)
    order_id = _int(fields[2].strip(), "order id", line)
    size = _int(fields[3].strip(), "size", line)
    price = _int(fields[4].strip(), "price", line)
    direction = _int(fields[5].strip(), "direction", line)
    attribution = None
    if columns == 7:
        attribution = fields[6].strip()
        if attribution == "null":
            attribution = None
        elif not _ATTRIBUTION_RE.match(attribution):
            raise LobsterError(line, "value", f"attribution {attribution[:30]!r} is not null or a printable id")
    if mtype not in TYPE_NAMES:
        raise LobsterError(line, "type", f"unknown message type {mtype} (expected 1..7)")
    if mtype <= HIDDEN_EXECUTION:
        if direction not in (1, -1):
            raise LobsterError(line, "value", f"direction {direction} is not 1 (buy) or -1 (sell)")
        if not 0 < size <= SIZE_MAX:
            raise LobsterError(line, "value", f"size {size} is not a positive number of shares")
        if not 0 < price <= PRICE_MAX:
            raise LobsterError(line, "value", f"price {price} is not positive")
    if mtype <= EXECUTION:
        if not 0 < order_id <= ORDER_ID_MAX:
            raise LobsterError(line, "value", f"order id {order_id} is not in 1..{ORDER_ID_MAX}")
        if price % TICK_UNITS:
            raise LobsterError(line, "value", f"price {price} ({dollars(price)}) is off the {TICK} tick")
    return Message(line, ts, mtype, order_id, size, price, direction, attribution)


# --------------------------------------------------------------- conversion


class Step:
    """One jex command produced from one LOBSTER row, with what the report needs.

    ``action``: ``instrument``, ``order_gtc`` (new order), ``replace``
    (partial cancel), ``cancel`` (deletion), ``cancel_partial`` (a partial
    cancel that leaves nothing), ``order_ioc`` (execution) or
    ``cancel_reconcile`` (see ``Converter``). ``known``: the order was added
    in the file and is live in the file's view. ``in_jex``: the engine had it
    live when the command was made (None without an engine view).
    """

    __slots__ = ("command", "line", "action", "order_id", "client_id", "size", "price", "known", "in_jex")

    def __init__(self, command: dict, line: int, action: str, order_id: int = 0, client_id: str | None = None,
                 size: int = 0, price: int = 0, known: bool = True, in_jex: bool | None = None) -> None:
        self.command = command
        self.line = line
        self.action = action
        self.order_id = order_id
        self.client_id = client_id
        self.size = size
        self.price = price
        self.known = known
        self.in_jex = in_jex


class _Live:
    """Per-order state, kept only while the file says the order is live."""

    __slots__ = ("account", "client_id", "side", "price", "open")

    def __init__(self, account: str, client_id: str, side: str, price: int, open: int) -> None:
        self.account = account
        self.client_id = client_id
        self.side = side
        self.price = price
        self.open = open


class EngineView:
    """The engine's view the converter may consult (read-only), for one symbol.

    Inside a node ``submit_many`` applies each command before it pulls the
    next one, so when the converter is asked for its next command this view
    already reflects every command before it.
    """

    def __init__(self, engine, symbol: str) -> None:
        self.engine = engine
        self.symbol = symbol

    def open_qty(self, account: str, client_id: str) -> int | None:
        """The open lots of ``(account, client_id)`` if it rests on a book, else None."""
        engine = self.engine
        order_id = engine.registered(account, client_id)
        order = engine.orders.get(order_id) if order_id is not None else None
        if order is None or order.level is None:
            return None
        return order.qty

    def better_than(self, side: str, price: int, inclusive: bool) -> list[tuple[str, str, int]]:
        """Resting ``side`` orders priced better than ``price`` (LOBSTER units;
        also equal when ``inclusive``), best first, as (account, client_id, open)."""
        inst = self.engine.instruments.get(self.symbol)
        if inst is None:
            return []
        ticks = price // TICK_UNITS
        book_side = inst.book.asks if side == "sell" else inst.book.bids
        out = []
        for level in book_side.iter_levels():  # best first
            better = level.price < ticks if side == "sell" else level.price > ticks
            if not (better or (inclusive and level.price == ticks)):
                break
            out.extend((o.account, o.client_id, o.qty) for o in level.orders())
        return out


class View(Protocol):
    """What the converter may ask of the engine (see ``EngineView``)."""

    def open_qty(self, account: str, client_id: str) -> int | None: ...

    def better_than(self, side: str, price: int, inclusive: bool) -> list[tuple[str, str, int]]: ...


class Converter:
    """Pure LOBSTER message -> jex command conversion (no I/O, no engine).

    Without ``view`` sizes are tracked from the file alone. With a ``view``
    (the engine's state), a replace names the engine's open size minus the
    cancelled shares, and cancels and replaces of orders the engine no longer
    holds are not emitted (counted instead: the engine would only answer
    ``unknown_order``).

    Options (both off by default, i.e. the plain mapping):

    * ``reconcile`` (needs ``view``): a message proves some engine orders
      are no longer on Nasdaq's book: an execution at P of a resting sell
      means no sell below P is displayed (buys mirrored), and a new buy at
      P (always non-marketable at Nasdaq) means no sell at or below P. Those
      orders (left behind because LOBSTER drops messages outside the 10
      levels it keeps) are cancelled first, as ``reconcile`` steps.
    * ``skip_unknown``: executions of orders never added in the file are
      counted but not replayed (their IOC can only hit some other order).
    """

    def __init__(self, symbol: str, view: View | None = None, *, reconcile: bool = False,
                 skip_unknown: bool = False, account: str = DEFAULT_ACCOUNT,
                 taker_account: str = TAKER_ACCOUNT) -> None:
        if reconcile and view is None:
            raise ValueError("reconcile needs the engine's view")
        self.symbol = symbol
        self.view = view
        self.reconcile = reconcile
        self.skip_unknown = skip_unknown
        self.account = account
        self.taker_account = taker_account
        self.live: dict[int, _Live] = {}
        self.first_added_id: int | None = None
        self.max_added_id = 0
        self.older_adds = 0  # adds whose id is below an id added earlier (may hold earlier Nasdaq priority)
        # Counters (all bounded).
        self.rows_by_type: Counter = Counter()
        self.never_added: Counter = Counter()  # by type name: rows naming an id never added in the file
        self.never_added_before_first: Counter = Counter()  # ... whose id is below the file's first added id
        self.never_added_qty = 0  # shares Nasdaq executed on never-added orders
        self.gone_in_jex: Counter = Counter()  # cancels/replaces not emitted: the engine no longer had the order
        self.reconciled: Counter = Counter()  # reconcile cancels, by the message type that proved them stale
        self.reconciled_qty = 0
        self.mismatched = 0  # rows whose price or side differs from the order's add
        self.hidden = {"count": 0, "qty": 0, "notional": 0}
        self.crosses = {"count": 0, "qty": 0, "prices": []}
        self.halts: Counter = Counter()  # by price code: -1 halt, 0 quote, 1 resume

    def instrument(self, ts: int) -> dict:
        return {"type": "instrument", "symbol": self.symbol, "tick": TICK, "lot": LOT, "ts": ts}

    def check_new(self, msg: Message) -> None:
        """LobsterError if a new order reuses the id of a live order."""
        if msg.type == NEW and msg.order_id in self.live:
            raise LobsterError(msg.line, "duplicate_order_id", f"order id {msg.order_id} is already live")

    def convert(self, msg: Message) -> list[Step]:
        """The commands for one well-formed message (often one, maybe none).

        Call ``check_new`` first: a duplicate add is a bad row, not a command.
        With a view, call this only once every earlier command is applied.
        """
        mtype = msg.type
        self.rows_by_type[mtype] += 1
        if mtype == NEW:
            return self._new(msg)
        if mtype <= EXECUTION:
            live = self.live.get(msg.order_id)
            if live is None:
                return self._never_added(msg)
            if live.price != msg.price or live.side != ("buy" if msg.direction == 1 else "sell"):
                self.mismatched += 1
            if mtype == PARTIAL_CANCEL:
                return self._partial_cancel(msg, live)
            if mtype == DELETE:
                return self._delete(msg, live)
            return self._execution(msg, live)
        if mtype == HIDDEN_EXECUTION:
            self.hidden["count"] += 1
            self.hidden["qty"] += msg.size
            self.hidden["notional"] += msg.size * msg.price
        elif mtype == CROSS:
            self.crosses["count"] += 1
            self.crosses["qty"] += msg.size
            if len(self.crosses["prices"]) < BAD_ROWS_KEPT:
                self.crosses["prices"].append(dollars(msg.price))
        else:
            self.halts[msg.price] += 1
        return []

    # -- per type

    def _new(self, msg: Message) -> list[Step]:
        if self.first_added_id is None:
            self.first_added_id = msg.order_id
        if msg.order_id < self.max_added_id:
            self.older_adds += 1
        else:
            self.max_added_id = msg.order_id
        account = msg.attribution or self.account
        client_id = f"n{msg.order_id}"
        side = "buy" if msg.direction == 1 else "sell"
        steps = self._stale("sell" if side == "buy" else "buy", msg, True) if self.reconcile else []
        self.live[msg.order_id] = _Live(account, client_id, side, msg.price, msg.size)
        command = {
            "type": "order", "account": account, "client_id": client_id, "symbol": self.symbol, "side": side,
            "kind": "limit", "qty": str(msg.size), "price": dollars(msg.price), "tif": "GTC", "ts": msg.ts,
        }
        steps.append(Step(command, msg.line, "order_gtc", msg.order_id, client_id, msg.size, msg.price))
        return steps

    def _partial_cancel(self, msg: Message, live: _Live) -> list[Step]:
        current = live.open if self.view is None else self.view.open_qty(live.account, live.client_id)
        live.open -= msg.size
        if live.open <= 0:
            del self.live[msg.order_id]
        if current is None:
            self.gone_in_jex["partial_cancel"] += 1
            return []
        remaining = current - msg.size
        target = {"account": live.account, "client_id": live.client_id, "ts": msg.ts}
        in_jex = None if self.view is None else True
        if remaining <= 0:
            return [Step({"type": "cancel", **target}, msg.line, "cancel_partial", msg.order_id, live.client_id,
                         msg.size, msg.price, True, in_jex)]
        command = {"type": "replace", **target, "qty": str(remaining)}
        return [Step(command, msg.line, "replace", msg.order_id, live.client_id, msg.size, msg.price, True, in_jex)]

    def _delete(self, msg: Message, live: _Live) -> list[Step]:
        del self.live[msg.order_id]
        in_jex = None
        if self.view is not None:
            if self.view.open_qty(live.account, live.client_id) is None:
                self.gone_in_jex["deletion"] += 1
                return []
            in_jex = True
        command = {"type": "cancel", "account": live.account, "client_id": live.client_id, "ts": msg.ts}
        return [Step(command, msg.line, "cancel", msg.order_id, live.client_id, msg.size, msg.price, True, in_jex)]

    def _execution(self, msg: Message, live: _Live) -> list[Step]:
        in_jex = None if self.view is None else self.view.open_qty(live.account, live.client_id) is not None
        live.open -= msg.size
        if live.open <= 0:
            del self.live[msg.order_id]
        steps = self._stale(live.side, msg, False) if self.reconcile else []
        steps.append(Step(self._ioc(msg), msg.line, "order_ioc", msg.order_id, live.client_id, msg.size, msg.price,
                          True, in_jex))
        return steps

    def _never_added(self, msg: Message) -> list[Step]:
        name = TYPE_NAMES[msg.type]
        self.never_added[name] += 1
        if self.first_added_id is None or msg.order_id < self.first_added_id:
            self.never_added_before_first[name] += 1
        if msg.type != EXECUTION:
            return []  # nothing in jex to cancel or reduce
        self.never_added_qty += msg.size
        if self.skip_unknown:
            return []
        steps = self._stale("buy" if msg.direction == 1 else "sell", msg, False) if self.reconcile else []
        steps.append(Step(self._ioc(msg), msg.line, "order_ioc", msg.order_id, f"n{msg.order_id}", msg.size,
                          msg.price, False, None if self.view is None else False))
        return steps

    def _stale(self, side: str, msg: Message, inclusive: bool) -> list[Step]:
        """Cancels for the engine's ``side`` orders that ``msg`` proves gone."""
        stale = self.view.better_than(side, msg.price, inclusive)
        if not stale:
            return []
        self.reconciled[TYPE_NAMES[msg.type]] += len(stale)
        steps = []
        for account, client_id, open_qty in stale:
            self.reconciled_qty += open_qty
            command = {"type": "cancel", "account": account, "client_id": client_id, "ts": msg.ts}
            steps.append(Step(command, msg.line, "cancel_reconcile", 0, client_id, open_qty, msg.price, True, True))
        return steps

    def _ioc(self, msg: Message) -> dict:
        return {
            "type": "order", "account": self.taker_account, "client_id": f"x{msg.line}", "symbol": self.symbol,
            "side": "sell" if msg.direction == 1 else "buy", "kind": "limit", "qty": str(msg.size),
            "price": dollars(msg.price), "tif": "IOC", "ts": msg.ts,
        }

    def stats(self) -> dict:
        hidden = self.hidden
        return {
            "rows_by_type": {TYPE_NAMES[t]: self.rows_by_type[t] for t in sorted(self.rows_by_type)},
            "first_added_id": self.first_added_id,
            "new_orders_with_older_id": self.older_adds,
            "never_added": {
                "rows": dict(sorted(self.never_added.items())),
                "below_first_added_id": dict(sorted(self.never_added_before_first.items())),
                "executed_qty": self.never_added_qty,
                "executions_replayed": not self.skip_unknown,
            },
            "skipped_gone_in_jex": dict(sorted(self.gone_in_jex.items())),
            "reconciled": {"cancels": dict(sorted(self.reconciled.items())), "qty": self.reconciled_qty}
            if self.reconcile else None,
            "mismatched_rows": self.mismatched,
            "live_in_file_at_end": len(self.live),
            "hidden": {"count": hidden["count"], "qty": hidden["qty"],
                       "vwap": dollars(hidden["notional"] // hidden["qty"]) if hidden["qty"] else None},
            "crosses": {"count": self.crosses["count"], "qty": self.crosses["qty"],
                        "prices": list(self.crosses["prices"])},
            "halts": {("halt" if k == -1 else "quote" if k == 0 else "resume" if k == 1 else str(k)): v
                      for k, v in sorted(self.halts.items())},
        }


# ------------------------------------------------------------------ source


class LobsterSource:
    """Streams a LOBSTER file as Steps: read, validate, convert.

    Bad rows are counted (the first ``BAD_ROWS_KEPT`` kept with their line
    numbers) and skipped; with ``strict`` the stream ends at the first one
    (``stopped_at``) and nothing after it is produced. ``limit`` caps the
    number of rows read. The instrument command comes first, stamped with
    the first message's ts, when ``define_instrument``. ``view``,
    ``reconcile`` and ``skip_unknown`` are the ``Converter``'s.
    """

    def __init__(self, path: str | Path, symbol: str = DEFAULT_SYMBOL, *, date: str | None = None,
                 limit: int | None = None, strict: bool = False, view: View | None = None,
                 reconcile: bool = False, skip_unknown: bool = False, define_instrument: bool = True,
                 account: str = DEFAULT_ACCOUNT, taker_account: str = TAKER_ACCOUNT) -> None:
        if limit is not None and limit < 0:
            raise ValueError("limit must not be negative")
        self.path = Path(path)
        self.symbol = symbol
        self.date = date or guess_from_filename(path)[1] or DEFAULT_DATE
        self.midnight = midnight_ns(self.date)
        self.limit = limit
        self.strict = strict
        self.define_instrument = define_instrument
        self.converter = Converter(symbol, view, reconcile=reconcile, skip_unknown=skip_unknown, account=account,
                                   taker_account=taker_account)
        self.rows = 0
        self.bytes_read = 0
        self.columns: int | None = None
        self.bad_count = 0
        self.bad_by_kind: Counter = Counter()
        self.bad_rows: list[LobsterError] = []
        self.stopped_at: LobsterError | None = None
        self.last_ts: int | None = None

    def _bad(self, error: LobsterError) -> bool:
        """Record a bad row; True when the stream must stop (strict)."""
        self.bad_count += 1
        self.bad_by_kind[error.kind] += 1
        if len(self.bad_rows) < BAD_ROWS_KEPT:
            self.bad_rows.append(error)
        if self.strict:
            self.stopped_at = error
            return True
        return False

    def messages(self) -> Iterator[Message]:
        """Well-formed messages with non-decreasing time, in file order."""
        midnight = self.midnight
        limit = self.limit
        check_new = self.converter.check_new
        with open(self.path, "rb") as stream:
            for number, raw in enumerate(stream, 1):
                if limit is not None and self.rows >= limit:
                    return
                self.rows += 1
                self.bytes_read += len(raw)
                if self.columns is None:
                    count = raw.count(b",") + 1
                    self.columns = count if count in (6, 7) else 7
                try:
                    msg = parse_row(raw, number, midnight, self.columns)
                    if self.last_ts is not None and msg.ts < self.last_ts:
                        raise LobsterError(number, "time_order", f"time {_seconds(msg.ts - midnight)} is before "
                                           f"the previous row's {_seconds(self.last_ts - midnight)}")
                    check_new(msg)
                except LobsterError as error:
                    if self._bad(error):
                        return
                    continue
                self.last_ts = msg.ts
                yield msg

    def steps(self) -> Iterator[Step]:
        convert = self.converter.convert
        first = self.define_instrument
        for msg in self.messages():
            if first:
                first = False
                yield Step(self.converter.instrument(msg.ts), msg.line, "instrument")
            yield from convert(msg)

    def __iter__(self) -> Iterator[dict]:
        for step in self.steps():
            yield step.command

    def stats(self) -> dict:
        return {
            "rows_read": self.rows,
            "columns": self.columns,
            **self.converter.stats(),
            "bad_rows": {
                "count": self.bad_count,
                "by_kind": dict(sorted(self.bad_by_kind.items())),
                "first": [e.as_dict() for e in self.bad_rows],
                "stopped_at": None if self.stopped_at is None else self.stopped_at.as_dict(),
            },
        }


def _seconds(ns: int) -> str:
    return f"{ns // NS_PER_SECOND}.{ns % NS_PER_SECOND:09d}"


def iter_commands(path: str | Path, symbol: str = DEFAULT_SYMBOL, limit: int | None = None, *,
                  date: str | None = None, define_instrument: bool = True, strict: bool = False,
                  skip_unknown: bool = False, view: View | None = None) -> Iterator[dict]:
    """The JSON command dicts for a LOBSTER file, streamed, without a node.

    ``limit`` caps the rows read. Replace sizes are tracked from the file
    unless ``view`` gives the engine's (see ``EngineView``; then each command
    must be applied before the next is pulled). Bad rows are skipped, or
    with ``strict`` raised as ``LobsterError`` after the commands before them.
    """
    source = LobsterSource(path, symbol, date=date, limit=limit, strict=strict, view=view,
                           skip_unknown=skip_unknown, define_instrument=define_instrument)
    yield from source
    if source.stopped_at is not None:
        raise source.stopped_at


# ------------------------------------------------------------------ report


EXECUTION_REASONS = ("unknown_order", "order_gone", "order_ahead", "partial", "no_trade")


def _nasdaq_id(client_id: str | None) -> int | None:
    if client_id and client_id[0] == "n" and client_id[1:].isdigit():
        return int(client_id[1:])
    return None


class ReplayReport:
    """What happened to each submitted Step, from its events (bounded state).

    An execution is replayed *exactly* when its IOC made one trade, with the
    order Nasdaq executed as maker, for the executed size. Otherwise the
    reason is the first that applies: ``unknown_order`` (never added in the
    file), ``order_gone`` (the engine no longer had it), ``order_ahead`` (the
    first trade hit another order: at a better price, or ahead in the queue
    at the same price), ``partial`` (it hit the order for less than the size,
    then others), ``no_trade``.
    """

    def __init__(self) -> None:
        self.commands: Counter = Counter()
        self.accepted = 0
        self.rejected: Counter = Counter()
        self.cancelled: Counter = Counter()
        self.trades = 0
        self.traded_qty = 0
        self.refused = 0
        self.refused_first: list[dict] = []
        self.executions = 0
        self.known_executions = 0
        self.same_order = 0
        self.not_same: Counter = Counter()
        self.ahead: Counter = Counter()
        self.unknown_traded = 0
        self.exec_qty = 0
        self.ioc_traded_qty = 0
        self.new_traded: Counter = Counter()
        self.first_not_same: list[dict] = []

    def observe(self, step: Step, events: list[dict], error: Exception | None = None) -> None:
        if error is not None:
            self.refused += 1
            if len(self.refused_first) < BAD_ROWS_KEPT:
                self.refused_first.append({"line": step.line, "message": str(error)})
            return
        self.commands[step.action] += 1
        trades = []
        for event in events:
            kind = event["type"]
            if kind == "trade":
                trades.append(event)
            elif kind == "accepted":
                self.accepted += 1
            elif kind == "rejected":
                self.rejected[event["reason"]] += 1
            elif kind == "cancelled":
                self.cancelled[event["reason"]] += 1
        if not trades:
            if step.action == "order_ioc":
                self._execution(step, trades, 0)
            return
        traded = 0
        for trade in trades:
            traded += int(trade["qty"])
        self.trades += len(trades)
        self.traded_qty += traded
        if step.action == "order_gtc":
            self.new_traded["orders"] += 1
            self.new_traded["qty"] += traded
        elif step.action == "order_ioc":
            self._execution(step, trades, traded)

    def _execution(self, step: Step, trades: list[dict], traded: int) -> None:
        self.executions += 1
        self.exec_qty += step.size
        self.ioc_traded_qty += traded
        if step.known:
            self.known_executions += 1
            if len(trades) == 1:
                trade = trades[0]
                if trade["maker_client_id"] == step.client_id and int(trade["qty"]) == step.size:
                    self.same_order += 1
                    return
        if not step.known:
            reason = "unknown_order"
            if trades:
                self.unknown_traded += 1
        elif step.in_jex is False:
            reason = "order_gone"
        elif trades and trades[0]["maker_client_id"] != step.client_id:
            reason = "order_ahead"
            if trades[0]["price"] != dollars(step.price):
                self.ahead["at_better_price"] += 1
            else:
                mine, theirs = _nasdaq_id(step.client_id), _nasdaq_id(trades[0]["maker_client_id"])
                older = mine is not None and theirs is not None and mine < theirs
                self.ahead["same_price_older_nasdaq_id" if older else "same_price"] += 1
        elif trades:
            reason = "partial"
        else:
            reason = "no_trade"
        self.not_same[reason] += 1
        if step.known and len(self.first_not_same) < BAD_ROWS_KEPT:
            self.first_not_same.append({
                "line": step.line, "reason": reason, "order": step.client_id, "size": step.size,
                "price": dollars(step.price),
                "trades": [{"maker": t["maker_client_id"], "qty": t["qty"], "price": t["price"]} for t in trades],
            })

    def as_dict(self) -> dict:
        rate = self.same_order / self.executions if self.executions else None
        known_rate = self.same_order / self.known_executions if self.known_executions else None
        return {
            "commands": {"total": sum(self.commands.values()), "by_type": dict(sorted(self.commands.items())),
                         "refused": self.refused, "refused_first": self.refused_first},
            "events": {"accepted": self.accepted, "rejected": dict(sorted(self.rejected.items())),
                       "cancelled": dict(sorted(self.cancelled.items())), "trades": self.trades,
                       "traded_qty": self.traded_qty},
            "executions": {
                "replayed": self.executions,
                "nasdaq_qty": self.exec_qty,
                "ioc_traded_qty": self.ioc_traded_qty,
                "same_order": self.same_order,
                "same_order_rate": None if rate is None else round(rate, 4),
                "of_known_orders": self.known_executions,
                "same_order_rate_known": None if known_rate is None else round(known_rate, 4),
                "not_same": {r: self.not_same[r] for r in EXECUTION_REASONS},
                "order_ahead": {k: self.ahead[k] for k in ("at_better_price", "same_price_older_nasdaq_id",
                                                           "same_price")},
                "unknown_order_traded": self.unknown_traded,
                "first_not_same_known": self.first_not_same,
            },
            "new_orders_that_traded": {"orders": self.new_traded["orders"], "qty": self.new_traded["qty"]},
        }


# ------------------------------------------------------------------ driver


class ImportRefused(ValueError):
    """The data directory cannot take this file (one line; exit 2)."""


def check_instrument(engine, symbol: str) -> bool:
    """True if ``symbol`` must be defined; ImportRefused if it exists on another grid."""
    from decimal import Decimal, InvalidOperation

    inst = engine.instruments.get(symbol)
    if inst is None:
        return True
    config = inst.config
    try:
        same = Decimal(config.tick) == Decimal(TICK) and Decimal(config.lot) == Decimal(LOT) and config.matching == 0
    except InvalidOperation:
        same = False
    if not same:
        raise ImportRefused(f"instrument {symbol} exists with tick {config.tick} lot {config.lot}; "
                            f"a LOBSTER replay needs a FIFO instrument with tick {TICK} lot {LOT}")
    return False


@dataclass
class ImportResult:
    report: dict
    stopped_at: LobsterError | None  # the bad row a strict import stopped at
    refused: int  # commands the edge refused (a converter/data-dir mismatch)


PROGRESS_EVERY = 4096  # steps between progress callbacks


def run_import(node, path: str | Path, symbol: str = DEFAULT_SYMBOL, *, date: str | None = None,
               limit: int | None = None, strict: bool = False, reconcile: bool = False,
               skip_unknown: bool = False, progress: Callable[[int, int], None] | None = None) -> ImportResult:
    """Replay a LOBSTER file through an opened node in ``clock="input"`` mode.

    ``node`` is an ``Exchange`` (anything with ``clock``, ``engine``,
    ``submit_many``, ``book``, ``digest``, ``seq``, ``ts``). Replace sizes
    come from the engine's view: ``submit_many`` applies each command before
    it pulls the next, so the view is current whenever the converter runs.
    ``progress`` gets (bytes read, rows read) now and then. Raises
    ImportRefused, with nothing submitted, when the node is not in input-clock
    mode, the instrument exists on another grid, or the node's time is past
    the file's first timestamp.
    """
    if getattr(node, "clock", None) != "input":
        raise ImportRefused("the node must be opened with clock='input' (simulation time from the file)")
    define = check_instrument(node.engine, symbol)
    source = LobsterSource(path, symbol, date=date, limit=limit, strict=strict,
                           view=EngineView(node.engine, symbol), reconcile=reconcile, skip_unknown=skip_unknown,
                           define_instrument=define)
    report = ReplayReport()
    started = time.perf_counter()
    steps = source.steps()
    first = next(steps, None)
    if first is not None and first.command["ts"] < node.ts:
        raise ImportRefused(f"the data directory's clock ({node.ts} ns) is past the file's first time "
                            f"({first.command['ts']} ns on {source.date}); import into a fresh data directory")
    pending: deque[Step] = deque()

    def commands() -> Iterator[dict]:
        count = 0
        for step in chain(() if first is None else (first,), steps):
            pending.append(step)
            yield step.command
            count += 1
            if progress is not None and count % PROGRESS_EVERY == 0:
                progress(source.bytes_read, source.rows)

    seq_before = node.seq
    for result in node.submit_many(commands(), stop_on_error=strict):
        report.observe(pending.popleft(), result.events, result.error)
    seconds = time.perf_counter() - started
    if progress is not None:
        progress(source.bytes_read, source.rows)
    out: dict = {"file": str(path), "symbol": symbol, "date": source.date,
                 "options": {"limit": limit, "strict": strict, "reconcile": reconcile, "skip_unknown": skip_unknown}}
    out.update(source.stats())
    out.update(report.as_dict())
    out["book"] = node.book(symbol, 5)
    out["seq"] = {"first": seq_before + 1 if node.seq > seq_before else None, "last": node.seq}
    out["digest"] = node.digest()
    submitted = out["commands"]["total"]
    out["seconds"] = round(seconds, 3)
    out["commands_per_second"] = round(submitted / seconds) if seconds > 0 else None
    out["rows_per_second"] = round(source.rows / seconds) if seconds > 0 else None
    return ImportResult(out, source.stopped_at, report.refused)
