"""The JSON edge codec: contract JSON <-> internal commands and events.

This module is pure (no I/O) and lives in core so that every edge (CLI, HTTP,
the Python API, the conformance adapter) shares one implementation, but the
engine itself never calls it. It:

* decodes a JSON line (bytes/str) or a Python dict into a wire Struct with
  msgspec (unknown fields, missing fields and wrong types are refused with
  the JSON path of the field);
* converts decimal strings to integer ticks/lots on the instrument's grid
  (off-grid, non-positive or malformed values are refused naming the field);
* checks the shape of each order (a limit needs a price, GTD needs
  expire_at, ...), so that only well-formed commands ever reach the log;
* converts events back to the JSON contract with decimal strings.

Every refusal is a ``CommandError`` whose ``str()`` is one line,
``<field>: <reason>``.
"""

from __future__ import annotations

from typing import Any, Final, Literal, Optional, Union, cast, get_args, get_origin, get_type_hints

import msgspec

from . import commands as C
from .commands import FOK, GTC, GTD, IOC, LIMIT, MARKET, STOP, STOP_LIMIT, TRAILING_STOP
from . import events as E
from .decimal_grid import Grid, GridError, format_ratio
from .wire import (  # re-exported: the edges import them from here
    CONDITION_DEPTH_MAX,
    CONDITION_LEAVES_MAX,
    ID_CHARS_MAX,
    LINE_BYTES_MAX,
    PRICE_TICKS_MAX,
    QTY_LOTS_MAX,
    RATIO_DECIMALS,
    SYMBOL_CHARS_MAX,
    TRAIL_PERCENT_DECIMALS_MAX,
    TS_NS_MAX,
    CommandError,
    Num,
    WAuction,
    WBracket,
    WCancel,
    WClock,
    WConditional,
    WInstrument,
    WireCommand,
    WLeg,
    WOco,
    WOrder,
    WReplace,
    decode_wire,
    one_line,
)

# One C call reads every field of an event (a compiled core pays a generic
# attribute lookup per field read on a msgspec Struct).
astuple: Final = msgspec.structs.astuple


class Catalog:
    """Symbol -> (tick grid, lot grid), read from the engine's instruments.

    The engine's ``instruments`` dict is passed in (a live view), so grids of
    instruments defined earlier in the same batch are visible.
    """

    def __init__(self, instruments: dict) -> None:
        self._instruments = instruments
        self._grids: dict[str, tuple[Grid, Grid]] = {}

    def grids(self, symbol: str) -> tuple[Grid, Grid] | None:
        grids = self._grids.get(symbol)
        if grids is None:
            inst = self._instruments.get(symbol)
            if inst is None:
                return None
            config = inst.config
            grids = (Grid(config.tick), Grid(config.lot))
            self._grids[symbol] = grids
        return grids

    def known(self, symbol: str) -> tuple[Grid, Grid]:
        """The grids of a symbol the caller knows is defined (KeyError if not)."""
        grids = self.grids(symbol)
        if grids is None:
            raise KeyError(symbol)
        return grids


# Bounds the hot checks read, as C statics in the compiled codec (no
# module-dict lookup per use: wire.py is not compiled).
_ID_MAX: Final = ID_CHARS_MAX
_TS_MAX: Final = TS_NS_MAX
_SYMBOL_MAX: Final = SYMBOL_CHARS_MAX
_QTY_MAX: Final = QTY_LOTS_MAX
_PRICE_MAX: Final = PRICE_TICKS_MAX


def _check_id(value: str | None, field: str, required: bool = True) -> None:
    if value is None:
        if required:
            raise CommandError(field, "is required")
        return
    if not value or len(value) > _ID_MAX:
        raise CommandError(field, f"must be 1..{ID_CHARS_MAX} characters")
    if not value.isprintable():
        raise CommandError(field, "must be printable")


def _check_ts(value: int | None, field: str) -> None:
    if value is not None and not 0 <= value <= _TS_MAX:
        raise CommandError(field, "must be a non-negative int64 of nanoseconds")


def _units(grid: Grid, value: Num, field: str, maximum: int, positive: bool = True) -> int:
    try:
        units = grid.to_units(value)
    except GridError as exc:
        raise CommandError(field, str(exc)) from None
    if positive and units <= 0:
        raise CommandError(field, "must be positive")
    if abs(units) > maximum:
        raise CommandError(field, f"is larger than {maximum} steps")
    return units


def _num(value: object) -> bool:
    """A ``Num`` (str | int) as msgspec.convert takes it unchanged (a bool is no int)."""
    kind = type(value)
    return kind is str or kind is int


def _optional_num(value: object) -> bool:
    return value is None or _num(value)


def _optional_int(value: object) -> bool:
    return value is None or type(value) is int


_OptNum = Union[str, int, None]
_OptStr = Optional[str]
_OptInt = Optional[int]


# Codec._order unpacks ``astuple(WOrder)`` in this order.
WORDER_FIELDS: Final = (
    "account", "client_id", "symbol", "side", "kind", "qty", "price", "trigger", "trail_amount", "trail_percent",
    "activation_price", "tif", "expire_at", "post_only", "stp", "ts",
)  # fmt: skip
assert WOrder.__struct_fields__ == WORDER_FIELDS, "update Codec._order with WOrder's fields"

# C statics in the compiled codec (no module-dict lookup per use).
_decode_wire: Final = decode_wire
_WORDER: Final = WOrder
_WCANCEL: Final = WCancel
_WREPLACE: Final = WReplace
_NEW_ORDER: Final = C.NewOrder
_PERCENT_E6_GRID: Final = Grid("0.000001")


def _percent_e6(value: Num, field: str) -> int:
    units = _units(_PERCENT_E6_GRID, value, field, 100_000_000)
    if units >= 100_000_000:
        raise CommandError(field, "must be below 100 percent")
    return units


class Codec:
    """Converts contract JSON to internal commands, and events back to JSON."""

    def __init__(self, instruments: dict, order_symbol=None) -> None:
        """``instruments`` is a live symbol -> state mapping (with ``.config``);
        ``order_symbol(account, client_id, order_id) -> symbol | None`` lets a
        replace find the grid of the order it names."""
        self.catalog = Catalog(instruments)
        self._order_symbol = order_symbol

    @classmethod
    def for_engine(cls, engine) -> Codec:
        """A codec reading instruments and live orders from ``engine``."""

        def order_symbol(account: str, client_id: str | None, order_id: int | None) -> str | None:
            if order_id is None:
                order_id = None if client_id is None else engine.registered(account, client_id)
            order = engine.orders.get(order_id) if order_id is not None else None
            return None if order is None else order.symbol

        return cls(engine.instruments, order_symbol)

    # ---------------------------------------------------------- commands

    def command(self, data: Any) -> tuple[C.Command, int | None]:
        """Decode and validate one command (a JSON line as bytes or str, or a
        parsed dict); returns (command, input ts or None). Anything else is
        a CommandError like any bad input: ``data`` is typed Any so that a
        compiled codec leaves the check to decode_wire instead of raising
        its own TypeError at the call."""
        if type(data) is dict:  # the Python API's and the HTTP edge's form
            fast = self._from_dict(data)
            if fast is not None:
                return fast
        return self._via_wire(data)

    def _via_wire(self, data: Any) -> tuple[C.Command, int | None]:
        """``command`` through msgspec's wire Structs (every input form)."""
        wire = _decode_wire(data)
        ts = wire.ts  # every wire command has an optional ts
        _check_ts(ts, "$.ts")
        # The order flow first, by exact type (a native call when compiled).
        kind = type(wire)
        if kind is _WORDER:
            return self._order(wire), ts
        if kind is _WCANCEL:
            return self._cancel(wire), ts
        if kind is _WREPLACE:
            return self._replace(wire), ts
        convert = getattr(self, "_" + kind.__name__[1:].lower())
        return convert(wire), ts

    def _from_dict(self, d: dict) -> tuple[C.Command, int | None] | None:
        """The order flow (order, cancel, replace) from a parsed dict without
        building a wire Struct: msgspec.convert alone costs about as much as
        the rest of decoding. One pass over the dict's items puts each value
        in its field's slot; the fields then go to the same checks as on the
        msgspec path, so the command is the same. Only a dict that msgspec
        would accept unchanged is taken: known keys, every required key,
        exact types (str; int, never bool; bool; None where optional), names
        in their Literal sets. Anything else returns None and goes the
        msgspec way, which also words the error."""
        tag = d.get("type")
        if tag == "order":
            slots, fields = _ORDER_SLOTS, list(_ORDER_DEFAULTS)
        elif tag == "cancel":
            slots, fields = _CANCEL_SLOTS, list(_CANCEL_DEFAULTS)
        elif tag == "replace":
            slots, fields = _REPLACE_SLOTS, list(_REPLACE_DEFAULTS)
        else:
            return None
        for key, value in d.items():
            slot = slots.get(key, -1)
            if slot < 0:
                return None  # an unknown key (msgspec refuses it)
            fields[slot] = value
        account, ts = fields[0], fields[-2]  # the last slot is the tag's
        if type(account) is not str or not _optional_int(ts):
            return None
        # Every type is checked before any value (_check_ts first), as on the msgspec path.
        if tag == "order":
            (_, client_id, symbol, side, kind, qty, price, trigger, trail_amount, trail_percent, activation, tif,
             expire_at, post_only, stp, _, _) = fields
            if not (type(client_id) is str and type(symbol) is str and type(post_only) is bool
                    and type(side) is str and side in _SIDE_CODES and type(kind) is str and kind in _KIND_CODES
                    and type(stp) is str and stp in _STP_CODES
                    and (tif is None or (type(tif) is str and tif in _TIF_CODES))
                    and _num(qty) and _optional_num(price) and _optional_num(trigger)
                    and _optional_num(trail_amount) and _optional_num(trail_percent) and _optional_num(activation)
                    and _optional_int(expire_at)):
                return None
            _check_ts(ts, "$.ts")
            return self._order_fields(account, client_id, symbol, side, kind, cast(Num, qty), cast(_OptNum, price),
                                      cast(_OptNum, trigger), cast(_OptNum, trail_amount),
                                      cast(_OptNum, trail_percent), cast(_OptNum, activation), cast(_OptStr, tif),
                                      cast(_OptInt, expire_at), post_only, stp, "$", _TOP_PATHS), ts
        client_id, order_id = fields[1], fields[2]
        if not ((client_id is None or type(client_id) is str) and _optional_int(order_id)):
            return None
        if tag == "cancel":
            _check_ts(ts, "$.ts")
            return self._cancel_fields(account, cast(_OptStr, client_id), cast(_OptInt, order_id)), ts
        qty, price = fields[3], fields[4]
        if not (_optional_num(qty) and _optional_num(price)):
            return None
        _check_ts(ts, "$.ts")
        return self._replace_fields(account, cast(_OptStr, client_id), cast(_OptInt, order_id), cast(_OptNum, qty),
                                    cast(_OptNum, price)), ts

    def _grids(self, symbol: str, field: str) -> tuple[Grid, Grid]:
        if not symbol or len(symbol) > _SYMBOL_MAX:
            raise CommandError(field, f"must be 1..{SYMBOL_CHARS_MAX} characters")
        grids = self.catalog.grids(symbol)
        if grids is None:
            raise CommandError(field, f"unknown symbol {symbol}")
        return grids

    def _instrument(self, w: WInstrument) -> C.Instrument:
        if not w.symbol or len(w.symbol) > SYMBOL_CHARS_MAX or not w.symbol.isprintable():
            raise CommandError("$.symbol", f"must be 1..{SYMBOL_CHARS_MAX} printable characters")
        grids = []
        for field, text in (("$.tick", w.tick), ("$.lot", w.lot)):
            try:
                grids.append(Grid(text))
            except GridError as exc:
                raise CommandError(field, str(exc)) from None
        lot = grids[1]
        min_alloc = 0 if w.min_alloc is None else _units(lot, w.min_alloc, "$.min_alloc", QTY_LOTS_MAX, False)
        if min_alloc < 0:
            raise CommandError("$.min_alloc", "must not be negative")
        bucket = 0 if w.vpin_bucket is None else _units(lot, w.vpin_bucket, "$.vpin_bucket", QTY_LOTS_MAX)
        if not 1 <= w.vpin_window <= 10_000:
            raise CommandError("$.vpin_window", "must be 1..10000")
        sigma = 0 if w.vpin_sigma is None else _units(grids[0], w.vpin_sigma, "$.vpin_sigma", PRICE_TICKS_MAX, False)
        if sigma < 0:
            raise CommandError("$.vpin_sigma", "must not be negative")
        if not 1 <= w.vpin_bar_seconds <= 86_400:
            raise CommandError("$.vpin_bar_seconds", "must be 1..86400")
        return C.Instrument(
            w.symbol,
            w.tick,
            w.lot,
            C.MATCHING_NAMES.index(w.matching),
            min_alloc,
            w.top_order,
            bucket,
            w.vpin_window,
            C.OCO_MODE_NAMES.index(w.oco_mode),
            C.POST_ONLY_MODE_NAMES.index(w.post_only_mode),
            C.RESIDUAL_NAMES.index(w.residual),
            w.stop_entry_check,
            C.VPIN_CLASSIFY_NAMES.index(w.vpin_classify),
            sigma,
            w.vpin_bar_seconds * 1_000_000_000,
        )

    def _order(self, w: WOrder) -> C.NewOrder:
        # One C call reads every field (WORDER_FIELDS is their order; a
        # compiled codec pays a generic attribute lookup per field read).
        (account, client_id, symbol, side, kind, qty, price, trigger, trail_amount, trail_percent, activation_price,
         tif, expire_at, post_only, stp, _) = astuple(w)
        return self._order_fields(account, client_id, symbol, side, kind, qty, price, trigger, trail_amount,
                                  trail_percent, activation_price, tif, expire_at, post_only, stp, "$", _TOP_PATHS)

    def _order_body(self, w: WLeg, account: str, client_id: str, symbol: str, at: str) -> C.NewOrder:
        """Validate one group leg's order body."""
        return self._order_fields(account, client_id, symbol, w.side, w.kind, w.qty, w.price, w.trigger,
                                  w.trail_amount, w.trail_percent, w.activation_price, w.tif, w.expire_at,
                                  w.post_only, w.stp, at, _paths(at))

    def _order_fields(self, account: str, client_id: str, symbol: str, side_name: str, kind_name: str, qty_value: Num,
                      price_value: Num | None, trigger_value: Num | None, trail_amount_value: Num | None,
                      trail_percent_value: Num | None, activation_value: Num | None, tif_name: str | None,
                      expire_at: int | None, post_only: bool, stp_name: str, at: str,
                      path: tuple[str, ...]) -> C.NewOrder:
        """Validate one order body (top-level order or a group's leg), given
        its fields; ``path`` is ``_paths(at)``: its fields' JSON paths."""
        _check_id(account, path[_AT_ACCOUNT])
        _check_id(client_id, path[_AT_CLIENT_ID])
        tick, lot = self._grids(symbol, path[_AT_SYMBOL])
        # msgspec already refused any name outside these Literal sets.
        side = _SIDE_CODES[side_name]
        kind = _KIND_CODES[kind_name]
        qty = _units(lot, qty_value, path[_AT_QTY], _QTY_MAX)
        price = None if price_value is None else _units(tick, price_value, path[_AT_PRICE], _PRICE_MAX)
        trigger = None if trigger_value is None else _units(tick, trigger_value, path[_AT_TRIGGER], _PRICE_MAX)
        trail_amount = (None if trail_amount_value is None
                        else _units(tick, trail_amount_value, path[_AT_TRAIL_AMOUNT], _PRICE_MAX))
        activation = (None if activation_value is None
                      else _units(tick, activation_value, path[_AT_ACTIVATION], _PRICE_MAX))
        trail_pct = (None if trail_percent_value is None
                     else _percent_e6(trail_percent_value, path[_AT_TRAIL_PERCENT]))
        tif = (IOC if kind == MARKET else GTC) if tif_name is None else _TIF_CODES[tif_name]
        _check_ts(expire_at, path[_AT_EXPIRE_AT])
        _check_order_shape(kind, tif, price, trigger, trail_amount, trail_pct, activation, expire_at, post_only, at)
        return _NEW_ORDER(
            account, client_id, symbol, side, kind, qty, price, trigger, trail_amount, trail_pct, activation, tif,
            expire_at, post_only, _STP_CODES[stp_name],
        )  # fmt: skip

    def _leg(self, leg: WLeg, account: str, symbol: str, default_cid: str, at: str) -> C.NewOrder:
        if leg.account is not None and leg.account != account:
            raise CommandError(f"{at}.account", "must equal the group's account")
        if leg.symbol is not None and leg.symbol != symbol:
            raise CommandError(f"{at}.symbol", "must equal the group's symbol")
        return self._order_body(leg, account, leg.client_id or default_cid, symbol, at)

    def _cancel(self, w: WCancel) -> C.Cancel:
        return self._cancel_fields(w.account, w.client_id, w.order_id)

    def _cancel_fields(self, account: str, client_id: str | None, order_id: int | None) -> C.Cancel:
        _check_id(account, "$.account")
        _check_target(client_id, order_id)
        return C.Cancel(account, client_id, order_id)

    def _replace(self, w: WReplace) -> C.Replace:
        return self._replace_fields(w.account, w.client_id, w.order_id, w.qty, w.price)

    def _replace_fields(self, account: str, client_id: str | None, order_id: int | None, qty_value: Num | None,
                        price_value: Num | None) -> C.Replace:
        _check_id(account, "$.account")
        _check_target(client_id, order_id)
        if qty_value is None and price_value is None:
            raise CommandError("$", "replace needs qty or price")
        symbol = self._order_symbol(account, client_id, order_id) if self._order_symbol else None
        if symbol is None:
            # The engine will answer unknown_order; there is no grid to convert on.
            return C.Replace(account, client_id, order_id, None, None)
        tick, lot = self._grids(symbol, "$.symbol")
        qty = None if qty_value is None else _units(lot, qty_value, "$.qty", QTY_LOTS_MAX)
        price = None if price_value is None else _units(tick, price_value, "$.price", PRICE_TICKS_MAX)
        return C.Replace(account, client_id, order_id, qty, price)

    def _oco(self, w: WOco) -> C.Oco:
        _check_id(w.account, "$.account")
        _check_id(w.client_id, "$.client_id")
        self._grids(w.symbol, "$.symbol")
        if len(w.legs) != 2:
            raise CommandError("$.legs", "an OCO has exactly two legs")
        legs = (
            self._leg(w.legs[0], w.account, w.symbol, f"{w.client_id}/1", "$.legs[0]"),
            self._leg(w.legs[1], w.account, w.symbol, f"{w.client_id}/2", "$.legs[1]"),
        )
        if legs[0].client_id == legs[1].client_id or w.client_id in (legs[0].client_id, legs[1].client_id):
            raise CommandError("$.legs", "leg client ids must differ from each other and from the group's")
        mode = None if w.mode is None else C.OCO_MODE_NAMES.index(w.mode)
        return C.Oco(w.account, w.client_id, w.symbol, legs, mode)

    def _bracket(self, w: WBracket) -> C.Bracket:
        _check_id(w.account, "$.account")
        _check_id(w.client_id, "$.client_id")
        tick, _ = self._grids(w.symbol, "$.symbol")
        entry = self._leg(w.entry, w.account, w.symbol, f"{w.client_id}/entry", "$.entry")
        if entry.client_id == w.client_id:
            raise CommandError("$.entry.client_id", "must differ from the group's client id")
        tp = _units(tick, w.take_profit.price, "$.take_profit.price", PRICE_TICKS_MAX)
        sl_trigger = _units(tick, w.stop_loss.trigger, "$.stop_loss.trigger", PRICE_TICKS_MAX)
        sl_price = None if w.stop_loss.price is None else _units(tick, w.stop_loss.price, "$.stop_loss.price", PRICE_TICKS_MAX)
        return C.Bracket(
            w.account, w.client_id, w.symbol, entry, tp, sl_trigger, sl_price, C.ACTIVATION_NAMES.index(w.activation)
        )

    def _conditional(self, w: WConditional) -> C.Conditional:
        _check_id(w.account, "$.account")
        _check_id(w.client_id, "$.client_id")
        leaves = [0]
        when = self._condition(w.when, "$.when", 1, leaves)
        symbol = w.order.symbol
        if symbol is None:
            raise CommandError("$.order.symbol", "is required for a conditional's order")
        order = self._leg(w.order, w.account, symbol, f"{w.client_id}/order", "$.order")
        if order.client_id == w.client_id:
            raise CommandError("$.order.client_id", "must differ from the group's client id")
        return C.Conditional(w.account, w.client_id, when, order)

    def _condition(self, node: Any, at: str, depth: int, leaves: list[int]) -> C.Condition:
        if depth > CONDITION_DEPTH_MAX:
            raise CommandError(at, f"conditions nest at most {CONDITION_DEPTH_MAX} deep")
        if not isinstance(node, dict):
            raise CommandError(at, "expected an object")
        keys = set(node)
        for combinator, cls in (("all", C.All), ("any", C.Any_)):
            if combinator in keys:
                if keys != {combinator}:
                    raise CommandError(at, f"'{combinator}' must be the only field of its object")
                terms = node[combinator]
                if not isinstance(terms, list) or not terms:
                    raise CommandError(f"{at}.{combinator}", "expected a non-empty list")
                return cls(
                    tuple(self._condition(t, f"{at}.{combinator}[{i}]", depth + 1, leaves) for i, t in enumerate(terms))
                )
        if keys != {"symbol", "field", "op", "value"}:
            raise CommandError(at, "expected {all:[..]}, {any:[..]} or {symbol, field, op, value}")
        leaves[0] += 1
        if leaves[0] > CONDITION_LEAVES_MAX:
            raise CommandError(at, f"at most {CONDITION_LEAVES_MAX} conditions per tree")
        symbol, field, op, value = node["symbol"], node["field"], node["op"], node["value"]
        if not isinstance(symbol, str):
            raise CommandError(f"{at}.symbol", "expected a string")
        tick, lot = self._grids(symbol, f"{at}.symbol")
        if field not in C.FIELD_NAMES:
            raise CommandError(f"{at}.field", "expected 'last' or 'volume'")
        if op not in C.OP_NAMES:
            raise CommandError(f"{at}.op", "expected one of > >= < <= ==")
        if not isinstance(value, (str, int)) or isinstance(value, bool):
            raise CommandError(f"{at}.value", "expected a decimal string")
        field_code = C.FIELD_NAMES.index(field)
        grid = tick if field_code == C.FIELD_LAST else lot
        units = _units(grid, value, f"{at}.value", PRICE_TICKS_MAX, positive=False)
        if units < 0:
            raise CommandError(f"{at}.value", "must not be negative")
        return C.Leaf(symbol, field_code, C.OP_NAMES.index(op), units)

    def _auction(self, w: WAuction) -> C.Auction:
        tick, _ = self._grids(w.symbol, "$.symbol")
        ref = None if w.reference_price is None else _units(tick, w.reference_price, "$.reference_price", PRICE_TICKS_MAX)
        if ref is not None and w.action != "uncross":
            raise CommandError("$.reference_price", "only an uncross takes a reference price")
        return C.Auction(w.symbol, C.AUCTION_ACTION_NAMES.index(w.action), ref)

    def _clock(self, w: WClock) -> C.Clock:
        return C.Clock()

    # ------------------------------------------------------------ events

    def event(self, event: E.Event) -> dict:
        """One event as a JSON-contract dict (decimal strings for prices and
        quantities): ``"type"`` first, then the event's fields in order.

        The edge's hot path (the node encodes every event it hands out): one
        dispatch on the class to a function that reads every field with one
        ``astuple`` and builds the dict in one go. ``event_generic`` is the
        table-driven reference every class must agree with (tested)."""
        encode = _EVENT_ENCODERS.get(type(event))
        if encode is None:
            return self.event_generic(event)
        return encode(self.catalog, astuple(event))

    def events(self, events: list) -> list[dict]:
        """``event`` of each of one command's events, in order: the node's
        hand-out calls this once per command (a native loop when compiled,
        where a comprehension would build a function and a frame)."""
        return [self.event(e) for e in events]

    def event_generic(self, event: E.Event) -> dict:
        """``event`` through the generic path: ``asdict``, then the price
        and quantity fields of ``_PRICE_FIELDS``/``_QTY_FIELDS`` formatted."""
        out = msgspec.structs.asdict(event)
        out = {"type": type(event).__struct_config__.tag, **out}
        symbol = out.get("symbol")
        if symbol is None:
            return out
        grids = self.catalog.grids(symbol)
        if grids is None:
            return out
        tick, lot = grids
        for name in _PRICE_FIELDS.get(type(event), ()):
            if out[name] is not None:
                out[name] = tick.format(out[name])
        for name in _QTY_FIELDS.get(type(event), ()):
            out[name] = lot.format(out[name])
        return out

    def book(self, book: dict) -> dict:
        """``Engine.book()`` output with decimal strings (DESIGN §4 book JSON)."""
        tick, lot = self.catalog.known(book["symbol"])

        def levels(rows: list[dict]) -> list[dict]:
            return [{"price": tick.format(r["price"]), "qty": lot.format(r["qty"]), "orders": r["orders"]} for r in rows]

        return {
            "symbol": book["symbol"],
            "seq": book["seq"],
            "last": None if book["last"] is None else tick.format(book["last"]),
            "bids": levels(book["bids"]),
            "asks": levels(book["asks"]),
        }

    def stats(self, stats: dict) -> dict:
        """``Engine.stats()`` output with decimal strings (DESIGN §4 stats JSON).

        Prices keep the tick's decimals (mid one more); ratios print with 10
        decimals (at least 8 significant digits for any value >= 0.01);
        ``signed_imbalance`` (2I - 1) is added beside ``imbalance``.
        """
        tick, lot = self.catalog.known(stats["symbol"])

        def price(v):
            return None if v is None else tick.format(v)

        def ratio(v):
            return None if v is None else format_ratio(v.numerator, v.denominator, RATIO_DECIMALS)

        mid = stats["mid"]
        imbalance = stats["imbalance"]
        return {
            "symbol": stats["symbol"],
            "seq": stats["seq"],
            "best_bid": price(stats["best_bid"]),
            "best_ask": price(stats["best_ask"]),
            "mid": None if mid is None else (tick.format(mid.numerator) if mid.denominator == 1 else tick.format_fraction(mid, max(0, -tick.exponent) + 1)),
            "spread": price(stats["spread"]),
            "imbalance": ratio(imbalance),
            "signed_imbalance": None if imbalance is None else ratio(2 * imbalance - 1),
            "microprice": None if stats["microprice"] is None else tick.format_fraction(stats["microprice"], RATIO_DECIMALS),
            "vpin": ratio(stats["vpin"]),
            "toxicity": stats["toxicity"],
            "last": price(stats["last"]),
            "volume": lot.format(stats["volume"]),
        }

    def price(self, symbol: str, ticks: int | None) -> str | None:
        if ticks is None:
            return None
        return self.catalog.known(symbol)[0].format(ticks)

    def qty(self, symbol: str, lots: int | None) -> str | None:
        if lots is None:
            return None
        return self.catalog.known(symbol)[1].format(lots)


# Per-class event encoders (Codec.event): each takes the catalog and the
# event's fields as ``astuple`` gives them, in declaration order, and returns
# the contract dict. Prices and quantities are formatted on the symbol's
# grids; without grids (a symbol not defined) they stay integers, as in
# ``Codec.event_generic``.


def _grids_of(catalog: Catalog, symbol: str) -> tuple[Grid | None, Grid | None]:
    grids = catalog.grids(symbol)
    return (None, None) if grids is None else grids


def _price(tick: Grid | None, value: Any) -> Any:
    return value if tick is None or value is None else tick.format(value)


def _qty(lot: Grid | None, value: Any) -> Any:
    return value if lot is None else lot.format(value)


def _accepted(catalog: Catalog, f: tuple) -> dict:
    return {"type": "accepted", "seq": f[0], "order_id": f[1], "client_id": f[2], "account": f[3], "symbol": f[4]}


def _rejected(catalog: Catalog, f: tuple) -> dict:
    return {"type": "rejected", "seq": f[0], "client_id": f[1], "account": f[2], "reason": f[3], "message": f[4]}


def _trade(catalog: Catalog, f: tuple) -> dict:
    tick, lot = _grids_of(catalog, f[1])
    return {"type": "trade", "seq": f[0], "symbol": f[1], "price": _price(tick, f[2]), "qty": _qty(lot, f[3]),
            "maker_order_id": f[4], "taker_order_id": f[5], "maker_client_id": f[6], "taker_client_id": f[7],
            "buyer": f[8], "seller": f[9], "aggressor": f[10]}


def _cancelled(catalog: Catalog, f: tuple) -> dict:
    _, lot = _grids_of(catalog, f[5])
    return {"type": "cancelled", "seq": f[0], "order_id": f[1], "client_id": f[2], "reason": f[3],
            "remaining_qty": _qty(lot, f[4]), "symbol": f[5]}


def _triggered(catalog: Catalog, f: tuple) -> dict:
    return {"type": "triggered", "seq": f[0], "order_id": f[1], "client_id": f[2], "symbol": f[3]}


def _amended(catalog: Catalog, f: tuple) -> dict:
    tick, lot = _grids_of(catalog, f[5])
    return {"type": "amended", "seq": f[0], "order_id": f[1], "client_id": f[2], "qty": _qty(lot, f[3]),
            "price": _price(tick, f[4]), "symbol": f[5]}


def _prevented(catalog: Catalog, f: tuple) -> dict:
    _, lot = _grids_of(catalog, f[5])
    return {"type": "prevented", "seq": f[0], "taker_order_id": f[1], "maker_order_id": f[2], "qty": _qty(lot, f[3]),
            "mode": f[4], "symbol": f[5]}


def _auction(catalog: Catalog, f: tuple) -> dict:
    tick, lot = _grids_of(catalog, f[1])
    return {"type": "auction", "seq": f[0], "symbol": f[1], "price": _price(tick, f[2]), "volume": _qty(lot, f[3]),
            "surplus": _qty(lot, f[4])}


def _instrument_added(catalog: Catalog, f: tuple) -> dict:
    return {"type": "instrument", "seq": f[0], "symbol": f[1], "tick": f[2], "lot": f[3]}


def _phase(catalog: Catalog, f: tuple) -> dict:
    return {"type": "phase", "seq": f[0], "symbol": f[1], "phase": f[2]}


_EVENT_ENCODERS: Final = {
    E.Accepted: _accepted,
    E.Rejected: _rejected,
    E.Trade: _trade,
    E.Cancelled: _cancelled,
    E.Triggered: _triggered,
    E.Amended: _amended,
    E.Prevented: _prevented,
    E.AuctionResult: _auction,
    E.InstrumentAdded: _instrument_added,
    E.Phase: _phase,
}

_PRICE_FIELDS: Final = {E.Trade: ("price",), E.Amended: ("price",), E.AuctionResult: ("price",)}
_QTY_FIELDS: Final = {
    E.Trade: ("qty",),
    E.Cancelled: ("remaining_qty",),
    E.Amended: ("qty",),
    E.Prevented: ("qty",),
    E.AuctionResult: ("volume", "surplus"),
}


_SIDE_CODES: Final = {name: code for code, name in enumerate(C.SIDE_NAMES)}
_KIND_CODES: Final = {name: code for code, name in enumerate(C.KIND_NAMES)}
_TIF_CODES: Final = {name: code for code, name in enumerate(C.TIF_NAMES)}
_STP_CODES: Final = {name: code for code, name in enumerate(C.STP_NAMES)}
# The names WOrder's Literal fields allow must be the codes' names (Codec._from_dict checks against the codes).
# Codec._from_dict: per wire Struct, each key's slot (its field's position;
# "type" gets a spare last slot) and the slots' values when the key is absent
# (a required field's is _ABSENT, which no type check passes). The last field
# of each Struct is ts.
_ABSENT: Final = object()


def _slots(struct: Any) -> dict[str, int]:
    names = struct.__struct_fields__
    assert names[0] == "account" and names[-1] == "ts" and "type" not in names, names
    slots = {name: i for i, name in enumerate(names)}
    slots["type"] = len(names)
    return slots


def _defaults(struct: Any) -> tuple:
    fields = msgspec.structs.fields(struct)
    return tuple(_ABSENT if f.required else f.default for f in fields) + (None,)


_ORDER_SLOTS: Final = _slots(WOrder)
_ORDER_DEFAULTS: Final = _defaults(WOrder)
_CANCEL_SLOTS: Final = _slots(WCancel)
_CANCEL_DEFAULTS: Final = _defaults(WCancel)
_REPLACE_SLOTS: Final = _slots(WReplace)
_REPLACE_DEFAULTS: Final = _defaults(WReplace)
assert WCancel.__struct_fields__[:3] == WReplace.__struct_fields__[:3] == ("account", "client_id", "order_id")
assert WReplace.__struct_fields__[3:5] == ("qty", "price")


def _literal_names(annotation: Any) -> set:
    """The strings of a Literal annotation, also inside a Union (``| None``)."""
    if get_origin(annotation) is Literal:
        return {name for name in get_args(annotation) if isinstance(name, str)}
    names: set = set()
    for option in get_args(annotation):
        names |= _literal_names(option)
    return names


_WORDER_HINTS: Final = get_type_hints(WOrder)


assert _literal_names(_WORDER_HINTS["side"]) == set(_SIDE_CODES)
assert _literal_names(_WORDER_HINTS["kind"]) == set(_KIND_CODES)
assert _literal_names(_WORDER_HINTS["tif"]) == set(_TIF_CODES)
assert _literal_names(_WORDER_HINTS["stp"]) == set(_STP_CODES)
_ORDER_PATH_FIELDS: Final = ("account", "client_id", "symbol", "qty", "price", "trigger", "trail_amount", "activation_price",
                      "trail_percent", "expire_at")
# Positions in a _paths tuple (constant indexes: no dict lookup per field).
_AT_ACCOUNT: Final = 0
_AT_CLIENT_ID: Final = 1
_AT_SYMBOL: Final = 2
_AT_QTY: Final = 3
_AT_PRICE: Final = 4
_AT_TRIGGER: Final = 5
_AT_TRAIL_AMOUNT: Final = 6
_AT_ACTIVATION: Final = 7
_AT_TRAIL_PERCENT: Final = 8
_AT_EXPIRE_AT: Final = 9
_path_cache: Final[dict[str, tuple[str, ...]]] = {}


def _paths(at: str) -> tuple[str, ...]:
    """JSON paths of an order body's fields under ``at`` ("$", "$.legs[0]",
    "$.entry", ...: a handful of values, so cached), in _ORDER_PATH_FIELDS order."""
    paths = _path_cache.get(at)
    if paths is None:
        paths = tuple(f"{at}.{name}" for name in _ORDER_PATH_FIELDS)
        _path_cache[at] = paths
    return paths


_TOP_PATHS: Final = _paths("$")


def _check_target(client_id: str | None, order_id: int | None) -> None:
    if (client_id is None) == (order_id is None):
        raise CommandError("$", "give exactly one of client_id and order_id")
    if client_id is not None:
        _check_id(client_id, "$.client_id")
    if order_id is not None and not 1 <= order_id <= 2**63 - 1:
        raise CommandError("$.order_id", "must be a positive integer")


def _check_order_shape(
    kind: int,
    tif: int,
    price: int | None,
    trigger: int | None,
    trail_amount: int | None,
    trail_pct: int | None,
    activation: int | None,
    expire_at: int | None,
    post_only: bool,
    at: str,
) -> None:
    """Field combinations each order kind accepts (edge validation)."""
    needs_price = kind == LIMIT or kind == STOP_LIMIT
    if needs_price and price is None:
        raise CommandError(f"{at}.price", f"is required for a {C.KIND_NAMES[kind]} order")
    if not needs_price and price is not None:
        raise CommandError(f"{at}.price", f"is not allowed for a {C.KIND_NAMES[kind]} order")
    if kind == STOP or kind == STOP_LIMIT:
        if trigger is None:
            raise CommandError(f"{at}.trigger", f"is required for a {C.KIND_NAMES[kind]} order")
    elif trigger is not None:
        raise CommandError(f"{at}.trigger", f"is not allowed for a {C.KIND_NAMES[kind]} order")
    if kind == TRAILING_STOP:
        if (trail_amount is None) == (trail_pct is None):
            raise CommandError(f"{at}.trail_amount", "give exactly one of trail_amount and trail_percent")
    elif trail_amount is not None or trail_pct is not None or activation is not None:
        name = "trail_amount" if trail_amount is not None else "trail_percent" if trail_pct is not None else "activation_price"
        raise CommandError(f"{at}.{name}", "is only allowed for a trailing_stop order")
    if kind == MARKET and tif != IOC and tif != FOK:
        raise CommandError(f"{at}.tif", "a market order must be IOC or FOK")
    if (kind == STOP or kind == TRAILING_STOP) and tif != GTC and tif != GTD:
        raise CommandError(f"{at}.tif", "a stop order must be GTC or GTD")
    if tif == GTD and expire_at is None:
        raise CommandError(f"{at}.expire_at", "is required for a GTD order")
    if tif != GTD and expire_at is not None:
        raise CommandError(f"{at}.expire_at", "is only allowed with tif GTD")
    if post_only and (kind != LIMIT or (tif != GTC and tif != GTD)):
        raise CommandError(f"{at}.post_only", "needs a GTC or GTD limit order")
