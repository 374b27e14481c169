"""tracebook-conformance adapter: the tracebook NDJSON protocol over ``jex.core.Engine``.

The adapter TRANSLATES only. Every decision -- acceptance, rejection, matching,
self-trade prevention, queue order, trades -- is taken by ``Engine.apply``; the
adapter turns each tracebook event into one or more jex commands, and turns the
engine's events and queues back into a tracebook observation. See
docs/conformance.md for the mapping and for every documented difference.

Protocol (tracebook.conformance, version 1), one JSON object per line:

    host -> hello{config}        adapter -> ready{engine}
    host -> event{index, event}  adapter -> observation{index, outcome, trades,
                                                         state_hash, resting_order_count}
    host -> snapshot{index}      adapter -> snapshot{index, state}
    host -> finish{event_count}  adapter -> complete{event_count}; exit 0

Translation summary (tracebook event -> jex commands):

* a symbol's first ``new`` or ``clear`` -> ``Instrument(symbol, tick, lot)``
  (tick = ``config.tick_size``, lot = 10**-``quantity_decimal_places``,
  matching = ``config.matching_algorithm``);
* ``new`` -> ``NewOrder`` (LIMIT -> limit/GTC, IOC -> limit/IOC, FOK ->
  limit/FOK, MARKET -> market/IOC), account = the owner, STP mode = the
  run's policy (``NONE`` for the anonymous owner -1). The jex client id is
  ``symbol#id#generation``: a new generation per ``new`` unless the id's
  current generation is live, in which case that live (account, client id)
  is sent and the engine answers ``duplicate_client_id``;
* ``cancel`` -> ``Cancel`` of the id's current (account, client id);
* ``reduce`` -> ``Replace(qty = open - reduction)`` (same price, so the
  engine keeps priority), or ``Cancel`` when the reduction equals the open
  quantity;
* ``replace`` -> ``NewOrder`` (next generation, same account/side/STP, the new
  price and open quantity) and, if the engine accepted it, ``Cancel`` of the
  old generation. An id that is not live gets a ``Cancel`` so the engine
  answers ``unknown_order``;
* ``clear`` -> ``Cancel`` of every order the engine has resting in the symbol.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import traceback
from decimal import ROUND_HALF_EVEN, Decimal
from typing import TextIO

from jex.core import commands as C
from jex.core.decimal_grid import Grid
from jex.core.engine import Engine
from jex.core.events import Cancelled, Rejected, Trade

PROTOCOL_NAME = "tracebook.conformance"
PROTOCOL_VERSION = 1
ENGINE_METADATA = {"name": "jex", "version": "0.1.0", "language": "Python"}

# The ONE reason table: (tracebook op, jex reject reason) -> tracebook reason code.
# Tracebook's codes depend on the operation (an invalid replacement is
# INVALID_REPLACEMENT, an invalid new order or an over-reduction INVALID_ORDER),
# so the key carries the op. A jex reason missing here is an adapter error, not
# a silent guess.
REASON_CODES: dict[tuple[str, str], str] = {
    ("new", "duplicate_client_id"): "DUPLICATE_ORDER_ID",
    ("new", "invalid_order"): "INVALID_ORDER",
    ("cancel", "unknown_order"): "ORDER_NOT_ACTIVE",
    ("reduce", "unknown_order"): "ORDER_NOT_ACTIVE",
    ("reduce", "invalid_order"): "INVALID_ORDER",
    ("replace", "unknown_order"): "ORDER_NOT_ACTIVE",
    ("replace", "invalid_order"): "INVALID_REPLACEMENT",
}

# Tracebook configuration -> jex settings.
STP_MODES = {
    "NONE": C.STP_NONE,
    "CANCEL_RESTING": C.STP_EXPIRE_MAKER,
    "CANCEL_INCOMING": C.STP_EXPIRE_TAKER,
}
MATCHING = {"fifo": C.MATCH_FIFO, "pro_rata": C.MATCH_PRO_RATA}
# Tracebook order type -> (jex kind, jex time in force).
ORDER_TYPES = {
    "LIMIT": (C.LIMIT, C.GTC),
    "IOC": (C.LIMIT, C.IOC),
    "FOK": (C.LIMIT, C.FOK),
    "MARKET": (C.MARKET, C.IOC),
}
SIDES = {"BUY": C.BUY, "SELL": C.SELL}
ANONYMOUS_OWNER = -1


class AdapterError(Exception):
    """The engine answered something the translation does not expect."""


class ProtocolError(Exception):
    """The host sent something that is not tracebook protocol version 1."""


def _decimal_text(value) -> str:
    """A plain decimal string (no exponent) for a JSON number or string."""
    return format(Decimal(str(value)).normalize(), "f")


def _canonical(text: str) -> str:
    """Strip trailing fractional zeros: '100.00' -> '100', '0.50' -> '0.5'."""
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return text


class JexAdapter:
    """One tracebook run (one process, one config) over one ``Engine``."""

    def __init__(self, config: dict) -> None:
        if not isinstance(config, dict):
            raise ProtocolError("hello.config must be an object")
        algorithm = str(config.get("matching_algorithm", "fifo")).strip().lower()
        policy = str(config.get("self_trade_policy", "NONE")).strip().upper()
        decimals = config.get("quantity_decimal_places", 12)
        if algorithm not in MATCHING:
            raise ProtocolError(f"unknown matching_algorithm {algorithm!r}")
        if policy not in STP_MODES:
            raise ProtocolError(f"unknown self_trade_policy {policy!r}")
        if isinstance(decimals, bool) or not isinstance(decimals, int) or not 0 <= decimals <= 18:
            raise ProtocolError("quantity_decimal_places must be an int 0..18")
        self.tick_text = _decimal_text(config.get("tick_size", "0.01"))
        self.lot_text = "1" if decimals == 0 else "0." + "0" * (decimals - 1) + "1"
        self.tick = Grid(self.tick_text)
        self.lot = Grid(self.lot_text)
        self.tick_float = float(self.tick_text)
        self.decimals = decimals
        self.matching = MATCHING[algorithm]
        self.stp = STP_MODES[policy]

        self.engine = Engine()
        self.seq = 0
        self.last_index = 0
        # (symbol, tracebook id) -> [generation, account, client_id] of the latest generation.
        self.current: dict[tuple[str, int], list] = {}
        # jex client_id -> tracebook id; jex account -> tracebook owner.
        self.source_id: dict[str, int] = {}
        self.owner_of: dict[str, int] = {}

    # ------------------------------------------------------------ numbers

    def price_ticks(self, price: float) -> int:
        """Tracebook's tick grid: nearest tick of the binary64 quotient, ties to even."""
        return round(float(price) / self.tick_float)

    def qty_lots(self, quantity: float) -> int:
        """The quantity on the lot grid (10**-quantity_decimal_places), ties to even."""
        scaled = Decimal(str(float(quantity))).scaleb(self.decimals)
        return int(scaled.quantize(Decimal(1), rounding=ROUND_HALF_EVEN))

    def price_text(self, ticks: int) -> str:
        return _canonical(self.tick.format(ticks))

    def qty_text(self, lots: int) -> str:
        return _canonical(self.lot.format(lots))

    # ------------------------------------------------------------ engine

    def _apply(self, command) -> list:
        self.seq += 1
        return self.engine.apply(command, self.seq, self.seq)

    def _account(self, owner: int) -> str:
        account = f"owner:{owner}"
        self.owner_of[account] = owner
        return account

    def _ensure_instrument(self, symbol: str) -> list:
        if symbol in self.engine.instruments:
            return []
        events = self._apply(C.Instrument(symbol, self.tick_text, self.lot_text, self.matching))
        if any(isinstance(e, Rejected) for e in events):
            raise AdapterError(f"engine refused instrument {symbol}: {events}")
        return events

    def _live(self, entry: list | None):
        """The engine's live order for a generation entry, or None."""
        if entry is None:
            return None
        order_id = self.engine.registered(entry[1], entry[2])
        return None if order_id is None else self.engine.orders.get(order_id)

    def _target(self, symbol: str, source_id: int) -> tuple[str, str]:
        """(account, client_id) naming the id's current generation (generation 0 if never used)."""
        entry = self.current.get((symbol, source_id))
        if entry is None:
            return self._account(ANONYMOUS_OWNER), f"{symbol}#{source_id}#0"
        return entry[1], entry[2]

    def _next_generation(self, symbol: str, source_id: int, account: str) -> list:
        key = (symbol, source_id)
        previous = self.current.get(key)
        generation = 1 if previous is None else previous[0] + 1
        client_id = f"{symbol}#{source_id}#{generation}"
        self.source_id[client_id] = source_id
        return [generation, account, client_id]

    def _expect_cancelled(self, events: list, what: str) -> None:
        if not any(isinstance(e, Cancelled) for e in events):
            raise AdapterError(f"engine did not cancel {what}: {events}")

    # ------------------------------------------------------------ events

    def apply(self, event: dict) -> tuple[dict, list, list]:
        """Apply one tracebook event; returns (outcome, trades, engine events)."""
        op = event.get("op")
        symbol = event.get("symbol")
        if not isinstance(symbol, str) or not symbol:
            raise ProtocolError("event.symbol must be a non-empty string")
        handler = getattr(self, "_op_" + str(op), None)
        if handler is None:
            raise ProtocolError(f"unsupported op {op!r}")
        deciding, events = handler(event, symbol)
        outcome = {"status": "applied", "reason": None, "message": None}
        rejected = [e for e in deciding if isinstance(e, Rejected)]
        if rejected:
            reason = rejected[0].reason
            code = REASON_CODES.get((op, reason))
            if code is None:
                raise AdapterError(f"no tracebook reason code for jex {reason!r} on {op}: {rejected[0].message}")
            outcome = {"status": "rejected", "reason": code, "message": f"jex {reason}: {rejected[0].message}"}
        trades = [self._trade(e) for e in events if isinstance(e, Trade)]
        return outcome, trades, events

    def _trade(self, t: Trade) -> dict:
        maker = self.source_id[t.maker_client_id]
        taker = self.source_id[t.taker_client_id]
        buy, sell = (taker, maker) if t.aggressor == "buy" else (maker, taker)
        return {
            "symbol": t.symbol,
            "buy_order_id": buy,
            "sell_order_id": sell,
            "price": self.price_text(t.price),
            "quantity": self.qty_text(t.qty),
        }

    def _order_id(self, event: dict) -> int:
        source_id = event.get("order_id")
        if isinstance(source_id, bool) or not isinstance(source_id, int) or source_id <= 0:
            raise ProtocolError("event.order_id must be a positive integer")
        return source_id

    def _op_new(self, event: dict, symbol: str) -> tuple[list, list]:
        events = self._ensure_instrument(symbol)
        source_id = self._order_id(event)
        kind, tif = ORDER_TYPES[event["order_type"]]
        side = SIDES[event["side"]]
        owner = int(event.get("owner", ANONYMOUS_OWNER))
        qty = self.qty_lots(event["quantity"])
        price = None if kind == C.MARKET else self.price_ticks(event["price"])
        stp = self.stp if owner != ANONYMOUS_OWNER else C.STP_NONE
        key = (symbol, source_id)
        live_entry = self.current.get(key)
        if self._live(live_entry) is not None:
            # The id is live: name the live order's identity so the engine decides the duplicate.
            account, client_id = live_entry[1], live_entry[2]
        else:
            account = self._account(owner)
            entry = self._next_generation(symbol, source_id, account)
            self.current[key] = entry
            client_id = entry[2]
        deciding = self._apply(C.NewOrder(account, client_id, symbol, side, kind, qty, price, tif=tif, stp=stp))
        return deciding, events + deciding

    def _op_cancel(self, event: dict, symbol: str) -> tuple[list, list]:
        account, client_id = self._target(symbol, self._order_id(event))
        deciding = self._apply(C.Cancel(account, client_id=client_id))
        return deciding, deciding

    def _op_reduce(self, event: dict, symbol: str) -> tuple[list, list]:
        source_id = self._order_id(event)
        account, client_id = self._target(symbol, source_id)
        reduction = self.qty_lots(event["quantity"])
        order = self._live(self.current.get((symbol, source_id)))
        if order is not None and order.qty == reduction:
            # A full reduction removes the order: a jex cancel.
            deciding = self._apply(C.Cancel(account, client_id=client_id))
        else:
            # The new open quantity at the same price; the engine keeps priority
            # for a size-down and refuses a non-positive quantity (over-reduction).
            open_qty = order.qty if order is not None else 0
            deciding = self._apply(C.Replace(account, client_id=client_id, qty=open_qty - reduction))
        return deciding, deciding

    def _op_replace(self, event: dict, symbol: str) -> tuple[list, list]:
        source_id = self._order_id(event)
        key = (symbol, source_id)
        old_entry = self.current.get(key)
        order = self._live(old_entry)
        if order is None:
            account, client_id = self._target(symbol, source_id)
            deciding = self._apply(C.Cancel(account, client_id=client_id))
            return deciding, deciding
        price = order.price if event.get("price") is None else self.price_ticks(event["price"])
        qty = order.qty if event.get("quantity") is None else self.qty_lots(event["quantity"])
        entry = self._next_generation(symbol, source_id, order.account)
        # The replacement first: if the engine refuses it the original is untouched.
        deciding = self._apply(
            C.NewOrder(order.account, entry[2], symbol, order.side, C.LIMIT, qty, price, tif=C.GTC, stp=order.stp)
        )
        if any(isinstance(e, Rejected) for e in deciding):
            return deciding, deciding
        self.current[key] = entry
        # Then the original leaves the book; the replacement is already behind it,
        # so it ends up at the back of its level (tracebook: priority always lost).
        cancel = self._apply(C.Cancel(order.account, order_id=order.order_id))
        self._expect_cancelled(cancel, f"the replaced order {source_id}")
        return deciding, deciding + cancel

    def _op_clear(self, event: dict, symbol: str) -> tuple[list, list]:
        events = self._ensure_instrument(symbol)
        orders = self.engine.orders
        for side in (C.BUY, C.SELL):
            for level in self.engine.queue(symbol, side):
                for order_id, _qty in level:
                    cancel = self._apply(C.Cancel(orders[order_id].account, order_id=order_id))
                    self._expect_cancelled(cancel, f"order {order_id} for clear")
                    events += cancel
        return [], events

    # ------------------------------------------------------------ state

    def state(self) -> tuple[dict, int]:
        """Tracebook's canonical state (every resting order in priority order) and its size."""
        engine = self.engine
        orders = engine.orders
        books = []
        count = 0
        for symbol in sorted(engine.instruments):
            sides = []
            for side in (C.BUY, C.SELL):
                rows = []
                for level in engine.queue(symbol, side):
                    for order_id, qty in level:
                        order = orders[order_id]
                        rows.append(
                            {
                                "order_id": self.source_id[order.client_id],
                                "price": self.price_text(order.price),
                                "remaining_quantity": self.qty_text(qty),
                                "owner": self.owner_of[order.account],
                                "order_type": "LIMIT",
                            }
                        )
                count += len(rows)
                sides.append(rows)
            books.append({"symbol": symbol, "bids": sides[0], "asks": sides[1]})
        return {"books": books}, count


def state_hash(state: dict) -> str:
    """SHA-256 of the canonical JSON text of a tracebook state."""
    text = json.dumps(state, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _write(stdout: TextIO, payload: dict) -> None:
    stdout.write(json.dumps(payload, separators=(",", ":"), ensure_ascii=False, allow_nan=False) + "\n")
    stdout.flush()


def serve(stdin: TextIO, stdout: TextIO) -> int:
    """Serve one tracebook run on text streams; returns the process exit code.

    Returns 0 right after ``complete`` (the host does not close stdin first),
    2 after a protocol or adapter error (an ``error`` frame is sent).
    """
    adapter: JexAdapter | None = None
    try:
        line = stdin.readline()
        if not line:
            raise ProtocolError("expected hello, got end of input")
        hello = json.loads(line)
        if not isinstance(hello, dict) or hello.get("type") != "hello":
            raise ProtocolError("the first message must be hello")
        if hello.get("protocol") != PROTOCOL_NAME or hello.get("protocol_version") != PROTOCOL_VERSION:
            raise ProtocolError(f"only {PROTOCOL_NAME} version {PROTOCOL_VERSION} is spoken")
        adapter = JexAdapter(hello.get("config") or {})
        _write(
            stdout,
            {
                "type": "ready",
                "protocol": PROTOCOL_NAME,
                "protocol_version": PROTOCOL_VERSION,
                "engine": dict(ENGINE_METADATA),
            },
        )
        for line in stdin:
            if not line.strip():
                continue
            message = json.loads(line)
            kind = message.get("type") if isinstance(message, dict) else None
            if kind == "event":
                index = message.get("index")
                if isinstance(index, bool) or not isinstance(index, int) or index != adapter.last_index + 1:
                    raise ProtocolError(f"event index {index!r} does not follow {adapter.last_index}")
                outcome, trades, _events = adapter.apply(message.get("event") or {})
                adapter.last_index = index
                state, count = adapter.state()
                _write(
                    stdout,
                    {
                        "type": "observation",
                        "index": index,
                        "outcome": outcome,
                        "trades": trades,
                        "state_hash": state_hash(state),
                        "resting_order_count": count,
                    },
                )
            elif kind == "snapshot":
                state, _count = adapter.state()
                _write(stdout, {"type": "snapshot", "index": adapter.last_index, "state": state})
            elif kind == "finish":
                # Echo the host's count: after a divergence it is the last index it accepted.
                _write(stdout, {"type": "complete", "event_count": message.get("event_count", adapter.last_index)})
                return 0
            else:
                raise ProtocolError(f"unsupported message type {kind!r}")
        raise ProtocolError("input ended before finish")
    except Exception as exc:  # every failure is reported to the host, then exit 2
        code = "PROTOCOL_ERROR" if isinstance(exc, (ProtocolError, ValueError)) else "ADAPTER_ERROR"
        # One line for people; the traceback only on request (an adapter bug).
        if code == "ADAPTER_ERROR" and os.environ.get("JEX_DEBUG"):
            traceback.print_exc(file=sys.stderr)
        print(f"jex conformance: {code}: {type(exc).__name__}: {exc}", file=sys.stderr)
        try:
            _write(stdout, {"type": "error", "code": code, "message": f"{type(exc).__name__}: {exc}"})
        except (BrokenPipeError, OSError):
            pass
        return 2
