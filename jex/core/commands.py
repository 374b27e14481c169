"""Commands: the inputs of the state machine (core room).

These Structs are what the write-ahead log stores (msgpack, ``array_like``,
integer tags) and what ``Engine.apply`` consumes. Prices are integer ticks,
quantities integer lots, times integer nanoseconds: the decimal strings of the
JSON contract are converted at the edge (``jex.core.codec``) and never reach
the matching path.

Schema evolution rule: fields are only ever *appended*, each with a default,
so an old log decodes with a new build. Never reorder, rename or retype a
field, and never reuse a tag.
"""

from __future__ import annotations

from typing import Final, Union

import msgspec

# Integer codes are Final: mypyc inlines them in the compiled core.

# Sides.
BUY: Final = 0
SELL: Final = 1
SIDE_NAMES = ("buy", "sell")

# Order kinds.
LIMIT: Final = 0
MARKET: Final = 1
STOP: Final = 2
STOP_LIMIT: Final = 3
TRAILING_STOP: Final = 4
KIND_NAMES = ("limit", "market", "stop", "stop_limit", "trailing_stop")

# Time in force.
GTC: Final = 0
IOC: Final = 1
FOK: Final = 2
GTD: Final = 3
TIF_NAMES = ("GTC", "IOC", "FOK", "GTD")

# Self-trade prevention modes (the taker's mode decides).
STP_NONE: Final = 0
STP_EXPIRE_TAKER: Final = 1
STP_EXPIRE_MAKER: Final = 2
STP_EXPIRE_BOTH: Final = 3
STP_DECREMENT: Final = 4
STP_NAMES = ("none", "expire_taker", "expire_maker", "expire_both", "decrement")

# Instrument matching algorithms.
MATCH_FIFO: Final = 0
MATCH_PRO_RATA: Final = 1
MATCHING_NAMES = ("fifo", "pro_rata")

# Pro-rata residual policy.
RESIDUAL_FIFO: Final = 0
RESIDUAL_LARGEST: Final = 1
RESIDUAL_NAMES = ("fifo", "largest")

# OCO modes.
OCO_CANCEL_ON_ANY_FILL: Final = 0
OCO_REDUCE: Final = 1
OCO_CANCEL_ON_FULL_FILL: Final = 2
OCO_MODE_NAMES = ("cancel_on_any_fill", "reduce", "cancel_on_full_fill")

# Post-only handling.
POST_ONLY_REJECT: Final = 0
POST_ONLY_SLIDE: Final = 1
POST_ONLY_MODE_NAMES = ("reject", "slide")

# Bracket activation.
ACTIVATE_FIRST_FILL: Final = 0
ACTIVATE_FULL_FILL: Final = 1
ACTIVATION_NAMES = ("first_fill", "full_fill")

# VPIN trade classification.
VPIN_AGGRESSOR: Final = 0
VPIN_TICK_RULE: Final = 1
VPIN_BVC: Final = 2
VPIN_CLASSIFY_NAMES = ("aggressor", "tick", "bvc")

# Auction actions.
AUCTION_OPEN: Final = 0
AUCTION_UNCROSS: Final = 1
AUCTION_ACTION_NAMES = ("open", "uncross")

# Condition fields and operators.
FIELD_LAST: Final = 0
FIELD_VOLUME: Final = 1
FIELD_NAMES = ("last", "volume")
OP_GT: Final = 0
OP_GE: Final = 1
OP_LT: Final = 2
OP_LE: Final = 3
OP_EQ: Final = 4
OP_NAMES = (">", ">=", "<", "<=", "==")

_STRUCT = dict(array_like=True, frozen=True, gc=False, omit_defaults=False)


class Instrument(msgspec.Struct, tag=1, **_STRUCT):
    """Define a tradable instrument. ``tick``/``lot`` are decimal strings."""

    symbol: str
    tick: str
    lot: str
    matching: int = MATCH_FIFO
    min_alloc: int = 0  # lots; pro-rata allocations below this become 0
    top_order: bool = False  # pro-rata: first order that betters the market fills first
    vpin_bucket: int = 0  # lots per VPIN bucket; 0 disables VPIN
    vpin_window: int = 50  # closed buckets in the VPIN window
    oco_mode: int = OCO_CANCEL_ON_ANY_FILL
    post_only_mode: int = POST_ONLY_REJECT
    residual: int = RESIDUAL_FIFO
    stop_entry_check: bool = True  # reject a stop whose condition already holds
    vpin_classify: int = VPIN_AGGRESSOR
    vpin_sigma_ticks: int = 0  # BVC: sigma of bar price changes, in ticks (0 = sign rule)
    vpin_bar_ns: int = 60_000_000_000  # BVC bar length


class NewOrder(msgspec.Struct, tag=2, **_STRUCT):
    """A new order. Also the body of OCO legs, bracket entries and conditionals."""

    account: str
    client_id: str
    symbol: str
    side: int
    kind: int
    qty: int  # lots, > 0
    price: int | None = None  # limit price in ticks (limit, stop_limit)
    trigger: int | None = None  # stop trigger in ticks (stop, stop_limit)
    trail_amount: int | None = None  # trailing distance in ticks
    trail_percent_e6: int | None = None  # trailing distance in millionths of a percent
    activation_price: int | None = None  # trailing: start tracking at/through this price
    tif: int = GTC
    expire_at: int | None = None  # ns, GTD only
    post_only: bool = False
    stp: int = STP_NONE


class Cancel(msgspec.Struct, tag=3, **_STRUCT):
    """Cancel an order (or a whole pending group) by client id or order id."""

    account: str
    client_id: str | None = None
    order_id: int | None = None


class Replace(msgspec.Struct, tag=4, **_STRUCT):
    """Change an open order's quantity and/or price.

    ``qty`` is the new *open* quantity (what should rest on the book from now
    on; the filled part is history). A size-down at the same price keeps time
    priority; a price change or a size-up loses it, and a price change may
    make the order marketable, in which case it trades as an incoming order.
    """

    account: str
    client_id: str | None = None
    order_id: int | None = None
    qty: int | None = None
    price: int | None = None


class Oco(msgspec.Struct, tag=5, **_STRUCT):
    """One-cancels-other pair of orders."""

    account: str
    client_id: str
    symbol: str
    legs: tuple[NewOrder, NewOrder]
    mode: int | None = None  # None: the instrument's oco_mode


class Bracket(msgspec.Struct, tag=6, **_STRUCT):
    """Entry order plus take-profit (limit) and stop-loss (stop or stop-limit)."""

    account: str
    client_id: str
    symbol: str
    entry: NewOrder
    tp_price: int
    sl_trigger: int
    sl_price: int | None = None  # None: stop-market stop-loss
    activation: int = ACTIVATE_FIRST_FILL


class Leaf(msgspec.Struct, tag=20, **_STRUCT):
    """A condition on one symbol's last trade price or cumulative volume."""

    symbol: str
    field: int  # FIELD_LAST (ticks) | FIELD_VOLUME (lots)
    op: int
    value: int


class All(msgspec.Struct, tag=21, **_STRUCT):
    terms: tuple[Condition, ...]


class Any_(msgspec.Struct, tag=22, **_STRUCT):
    terms: tuple[Condition, ...]


Condition = Union[Leaf, All, Any_]


class Conditional(msgspec.Struct, tag=7, **_STRUCT):
    """An order released (like a triggered stop) when ``when`` becomes true."""

    account: str
    client_id: str
    when: Condition
    order: NewOrder


class Auction(msgspec.Struct, tag=8, **_STRUCT):
    """Open a call phase for a symbol, or uncross it."""

    symbol: str
    action: int
    reference_price: int | None = None


class Clock(msgspec.Struct, tag=9, **_STRUCT):
    """Let time pass: the record's timestamp expires GTD orders that are due."""


Command = Union[Instrument, NewOrder, Cancel, Replace, Oco, Bracket, Conditional, Auction, Clock]

_encoder = msgspec.msgpack.Encoder()
_decoder = msgspec.msgpack.Decoder(Command)


def encode_command(command: Command) -> bytes:
    """Encode a command for the log (deterministic: array_like, fixed field order)."""
    return _encoder.encode(command)


def decode_command(payload: bytes | memoryview) -> Command:
    """Decode a logged command. Raises ``msgspec.DecodeError`` (or ValidationError) only."""
    try:
        return _decoder.decode(payload)
    except UnicodeError:
        raise msgspec.DecodeError("a string is not valid UTF-8") from None
    except RecursionError:
        raise msgspec.DecodeError("nested too deeply") from None
