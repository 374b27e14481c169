"""The JSON wire schema of commands, and the edge's error type (core room).

The msgspec Structs a JSON command decodes into before the codec
(``jex.core.codec``) converts it to an internal command, the limits on
client-supplied values, and ``CommandError``. They live apart from the
codec's logic because that compiles with mypyc (``make fast``) and these
cannot: msgspec Structs and exceptions are not native classes.
"""

from __future__ import annotations

from typing import Any, Literal, Union, get_args

import msgspec

# Limits on client-supplied values (named, with units).
ID_CHARS_MAX = 64  # account and client_id length
SYMBOL_CHARS_MAX = 32
QTY_LOTS_MAX = 10**15
PRICE_TICKS_MAX = 10**15
TS_NS_MAX = 2**63 - 1
CONDITION_DEPTH_MAX = 8
CONDITION_LEAVES_MAX = 64
TRAIL_PERCENT_DECIMALS_MAX = 6
LINE_BYTES_MAX = 64 * 1024  # longest JSON command accepted
RATIO_DECIMALS = 10  # decimals printed for ratios (imbalance, VPIN, microprice)


def one_line(text: str) -> str:
    """Escape line breaks and other control characters so that a message
    quoting client input stays on one line."""
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else c.encode("unicode_escape").decode("ascii") for c in text)


class CommandError(ValueError):
    """Malformed or invalid input at the edge. ``str()`` is one line."""

    def __init__(self, field: str, message: str) -> None:
        field, message = one_line(field), one_line(message)
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


Num = Union[str, int]

_WIRE = dict(forbid_unknown_fields=True, tag_field="type")


class WInstrument(msgspec.Struct, tag="instrument", **_WIRE):
    symbol: str
    tick: str
    lot: str
    matching: Literal["fifo", "pro_rata"] = "fifo"
    min_alloc: Num | None = None
    top_order: bool = False
    vpin_bucket: Num | None = None
    vpin_window: int = 50
    oco_mode: Literal["cancel_on_any_fill", "reduce", "cancel_on_full_fill"] = "cancel_on_any_fill"
    post_only_mode: Literal["reject", "slide"] = "reject"
    residual: Literal["fifo", "largest"] = "fifo"
    stop_entry_check: bool = True
    vpin_classify: Literal["aggressor", "tick", "bvc"] = "aggressor"
    vpin_sigma: Num | None = None
    vpin_bar_seconds: int = 60
    ts: int | None = None


_Side = Literal["buy", "sell"]
_Kind = Literal["limit", "market", "stop", "stop_limit", "trailing_stop"]
_Tif = Literal["GTC", "IOC", "FOK", "GTD"]
_Stp = Literal["none", "expire_taker", "expire_maker", "expire_both", "decrement"]


class WOrder(msgspec.Struct, tag="order", **_WIRE):
    account: str
    client_id: str
    symbol: str
    side: _Side
    kind: _Kind
    qty: Num
    price: Num | None = None
    trigger: Num | None = None
    trail_amount: Num | None = None
    trail_percent: Num | None = None
    activation_price: Num | None = None
    tif: _Tif | None = None
    expire_at: int | None = None
    post_only: bool = False
    stp: _Stp = "none"
    ts: int | None = None


class WLeg(msgspec.Struct, forbid_unknown_fields=True):
    """An order body inside a group (no ``type``; account/symbol default to the group's)."""

    side: _Side
    kind: _Kind
    qty: Num
    account: str | None = None
    client_id: str | None = None
    symbol: str | None = None
    price: Num | None = None
    trigger: Num | None = None
    trail_amount: Num | None = None
    trail_percent: Num | None = None
    activation_price: Num | None = None
    tif: _Tif | None = None
    expire_at: int | None = None
    post_only: bool = False
    stp: _Stp = "none"


class WCancel(msgspec.Struct, tag="cancel", **_WIRE):
    account: str
    client_id: str | None = None
    order_id: int | None = None
    ts: int | None = None


class WReplace(msgspec.Struct, tag="replace", **_WIRE):
    account: str
    client_id: str | None = None
    order_id: int | None = None
    qty: Num | None = None
    price: Num | None = None
    ts: int | None = None


class WOco(msgspec.Struct, tag="oco", **_WIRE):
    account: str
    client_id: str
    symbol: str
    legs: list[WLeg]
    mode: Literal["cancel_on_any_fill", "reduce", "cancel_on_full_fill"] | None = None
    ts: int | None = None


class WTakeProfit(msgspec.Struct, forbid_unknown_fields=True):
    price: Num


class WStopLoss(msgspec.Struct, forbid_unknown_fields=True):
    trigger: Num
    price: Num | None = None


class WBracket(msgspec.Struct, tag="bracket", **_WIRE):
    account: str
    client_id: str
    symbol: str
    entry: WLeg
    take_profit: WTakeProfit
    stop_loss: WStopLoss
    activation: Literal["first_fill", "full_fill"] = "first_fill"
    ts: int | None = None


class WConditional(msgspec.Struct, tag="conditional", **_WIRE):
    account: str
    client_id: str
    when: dict[str, Any]
    order: WLeg
    ts: int | None = None


class WAuction(msgspec.Struct, tag="auction", **_WIRE):
    symbol: str
    action: Literal["open", "uncross"]
    reference_price: Num | None = None
    ts: int | None = None


class WClock(msgspec.Struct, tag="clock", **_WIRE):
    ts: int | None = None


WireCommand = Union[WInstrument, WOrder, WCancel, WReplace, WOco, WBracket, WConditional, WAuction, WClock]

_json_decoder = msgspec.json.Decoder(WireCommand)
# Converting a dict into the union re-resolves it on every call (~17 µs);
# dispatching on the tag first makes it ~1 µs.
_WIRE_BY_TAG = {cls.__struct_config__.tag: cls for cls in get_args(WireCommand)}


def _msgspec_error(exc: msgspec.MsgspecError) -> CommandError:
    """Turn msgspec's message ('Expected `str`, got `int` - at `$.qty`') into a CommandError."""
    text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    field = "$"
    if " - at `" in text:
        text, _, path = text.rpartition(" - at `")
        field = path.rstrip("`")
    return CommandError(field, text)


def decode_wire(data: bytes | str | dict) -> Any:
    """Decode one JSON command (bytes/str line or already-parsed dict) to a wire Struct."""
    try:
        if isinstance(data, dict):
            tag = data.get("type")
            cls = _WIRE_BY_TAG.get(tag) if isinstance(tag, str) else None
            if cls is None:
                return msgspec.convert(data, WireCommand)  # for msgspec's own error message
            return msgspec.convert(data, cls)
        if isinstance(data, (bytes, bytearray, memoryview, str)):
            if len(data) > LINE_BYTES_MAX:
                raise CommandError("$", f"command longer than {LINE_BYTES_MAX} bytes")
            return _json_decoder.decode(data)
        raise CommandError("$", f"expected a JSON object, got {type(data).__name__}")
    except msgspec.MsgspecError as exc:
        raise _msgspec_error(exc) from None
    except UnicodeError:
        raise CommandError("$", "text is not valid UTF-8") from None
    except RecursionError:
        raise CommandError("$", "nested too deeply") from None
