"""Events: the outputs of the state machine (core room).

Every event carries ``seq``, the sequence number of the command that caused
it. Prices are integer ticks and quantities integer lots here; the edge codec
turns them into the decimal strings of the JSON contract. Events are created
on the hot path, so they are ``gc=False`` Structs built positionally.

Beyond the DESIGN §4 contract, ``cancelled``, ``triggered``, ``amended`` and
``prevented`` also carry ``symbol`` (needed to print quantities in lots of the
right instrument, and handy for per-symbol feeds), and two events are added:
``instrument`` (an instrument was defined) and ``phase`` (a symbol entered or
left a call auction).
"""

from __future__ import annotations

from typing import Union

import msgspec

_EVENT = dict(frozen=True, gc=False, tag_field="type")


class Accepted(msgspec.Struct, tag="accepted", **_EVENT):
    seq: int
    order_id: int
    client_id: str
    account: str
    symbol: str


class Rejected(msgspec.Struct, tag="rejected", **_EVENT):
    seq: int
    client_id: str | None
    account: str | None
    reason: str
    message: str


class Trade(msgspec.Struct, tag="trade", **_EVENT):
    seq: int
    symbol: str
    price: int
    qty: int
    maker_order_id: int
    taker_order_id: int
    maker_client_id: str
    taker_client_id: str
    buyer: str
    seller: str
    aggressor: str | None  # "buy" | "sell" | None (auction)


class Cancelled(msgspec.Struct, tag="cancelled", **_EVENT):
    seq: int
    order_id: int
    client_id: str
    reason: str
    remaining_qty: int
    symbol: str


class Triggered(msgspec.Struct, tag="triggered", **_EVENT):
    seq: int
    order_id: int
    client_id: str
    symbol: str


class Amended(msgspec.Struct, tag="amended", **_EVENT):
    seq: int
    order_id: int
    client_id: str
    qty: int  # the order's open (remaining) quantity after the change
    price: int | None
    symbol: str


class Prevented(msgspec.Struct, tag="prevented", **_EVENT):
    seq: int
    taker_order_id: int
    maker_order_id: int
    qty: int
    mode: str
    symbol: str


class AuctionResult(msgspec.Struct, tag="auction", **_EVENT):
    seq: int
    symbol: str
    price: int | None
    volume: int
    surplus: int


class InstrumentAdded(msgspec.Struct, tag="instrument", **_EVENT):
    seq: int
    symbol: str
    tick: str
    lot: str


class Phase(msgspec.Struct, tag="phase", **_EVENT):
    seq: int
    symbol: str
    phase: str  # "call" | "continuous"


Event = Union[
    Accepted, Rejected, Trade, Cancelled, Triggered, Amended, Prevented, AuctionResult, InstrumentAdded, Phase
]

_encoder = msgspec.msgpack.Encoder(order="deterministic")


def encode_events(events: list[Event]) -> bytes:
    """Deterministic bytes of an event list (for determinism checks and digests)."""
    return _encoder.encode(events)
