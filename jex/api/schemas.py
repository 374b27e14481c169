"""Request and response shapes of the HTTP API, for its OpenAPI document (api room).

Request bodies are the DESIGN §4 command contract. The body Structs here are
*derived* from the edge codec's wire Structs (``jex.core.codec.W*``) so the
document cannot drift from what the codec accepts: same fields, types and
defaults, except that ``type`` is implied by the endpoint (optional; when
given it must match), ``account`` is optional (filled from the API key;
when given it must be the key's account) and ``ts`` is absent (the node
stamps time). The handlers never decode bodies with these Structs: the raw
bytes go to the codec, so a malformed body gets the codec's one-line error.
"""

from __future__ import annotations

from typing import Any, Literal, Optional

import msgspec

from jex.core import codec as wire

_DROPPED_FIELDS = frozenset({"ts"})


def _body_struct(source: type[msgspec.Struct], name: str, *, has_account: bool) -> type[msgspec.Struct]:
    """A copy of a wire Struct's fields as an API body (see module docstring)."""
    tag = source.__struct_config__.tag
    fields: list[tuple] = [("type", Optional[Literal[tag]], None)]  # type: ignore[valid-type]
    for field in msgspec.structs.fields(source):
        if field.name in _DROPPED_FIELDS:
            continue
        if has_account and field.name == "account":
            fields.append(("account", Optional[str], None))
        elif field.required:
            fields.append((field.name, field.type))
        elif field.default_factory is not msgspec.NODEFAULT:
            fields.append((field.name, field.type, msgspec.field(default_factory=field.default_factory)))
        else:
            fields.append((field.name, field.type, field.default))
    return msgspec.defstruct(name, fields, kw_only=True, forbid_unknown_fields=True, module=__name__)


OrderBody = _body_struct(wire.WOrder, "OrderBody", has_account=True)
OcoBody = _body_struct(wire.WOco, "OcoBody", has_account=True)
BracketBody = _body_struct(wire.WBracket, "BracketBody", has_account=True)
ConditionalBody = _body_struct(wire.WConditional, "ConditionalBody", has_account=True)
InstrumentBody = _body_struct(wire.WInstrument, "InstrumentBody", has_account=False)
AuctionBody = _body_struct(wire.WAuction, "AuctionBody", has_account=False)


class ReplaceBody(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """A replace of the order named in the path: a new quantity and/or price."""

    qty: wire.Num | None = None
    price: wire.Num | None = None


# ------------------------------------------------------------- responses


class ErrorDetail(msgspec.Struct):
    code: str  # stable snake_case: bad_request, unauthorized, forbidden, not_found, ...
    message: str  # one line; for a malformed body "<field>: <reason>"


class ErrorBody(msgspec.Struct):
    error: ErrorDetail


class SubmitResponse(msgspec.Struct):
    """A durable command's outcome: its seq and the events it caused that the
    caller may see (fields naming another account are null)."""

    seq: int
    events: list[dict[str, Any]]


class Level(msgspec.Struct):
    price: str
    qty: str
    orders: int


class BookResponse(msgspec.Struct):
    symbol: str
    seq: int
    last: str | None
    bids: list[Level]
    asks: list[Level]


class MicropriceResponse(msgspec.Struct):
    symbol: str
    seq: int
    best_bid: str | None
    best_ask: str | None
    mid: str | None
    microprice: str | None


class ImbalanceResponse(msgspec.Struct):
    symbol: str
    seq: int
    best_bid: str | None
    best_ask: str | None
    imbalance: str | None
    signed_imbalance: str | None


class PublicTrade(msgspec.Struct):
    """A trade as the public sees it: no accounts, no client ids."""

    seq: int
    symbol: str
    price: str
    qty: str
    aggressor: str | None
    maker_order_id: int
    taker_order_id: int


class TradesResponse(msgspec.Struct):
    symbol: str
    trades: list[PublicTrade]


class OrderView(msgspec.Struct):
    """One live order (the ``jex orders`` shape)."""

    order_id: int
    client_id: str
    account: str
    symbol: str
    side: str
    kind: str
    price: str | None
    trigger: str | None
    qty: str
    remaining: str
    status: str
    group_id: int | None


class OrdersResponse(msgspec.Struct):
    orders: list[OrderView]


class HealthResponse(msgspec.Struct):
    status: str  # "ok"
    seq: int  # last durable seq
    backend: str  # WAL writer backend
    acknowledged: int  # commands acknowledged since the node opened
