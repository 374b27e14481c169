"""The HTTP + WebSocket API on Litestar (api room).

``create_app(service)`` builds the application; ``server.py`` runs it on
uvicorn next to the binary protocol. Every route is a thin shell over
``Service``: authenticate, rate-limit, build the command, wait for the
durable result. Errors are ``{"error": {"code", "message"}}`` with a
one-line message; a malformed body gets the codec's ``<field>: <reason>``.

Routes (all JSON):

    POST /api/v1/orders                       order            (key)
    POST /api/v1/orders/oco                   oco              (key)
    POST /api/v1/orders/bracket               bracket          (key)
    POST /api/v1/orders/conditional           conditional      (key)
    POST /api/v1/orders/{order_id}/cancel     cancel           (key)
    POST /api/v1/orders/{order_id}/replace    replace          (key)
    GET  /api/v1/orders                       own open orders  (key)
    GET  /api/v1/orders/{symbol}/{order_id}   one own order    (key)
    POST /api/v1/instruments                  instrument       (admin key)
    POST /api/v1/auctions                     auction          (admin key)
    GET  /api/v1/orderbook/{symbol}[/microprice|/imbalance]    (public)
    GET  /api/v1/trades/{symbol}                               (public)
    GET  /health                                               (public)
    GET  /ws                                  WebSocket feed   (public)
    GET  /schema/openapi.json                 OpenAPI document
"""

from __future__ import annotations

import asyncio
import os
import sys
from typing import Any, Generator

import msgspec
from litestar import Litestar, Request, Response, get, post, websocket
from litestar.connection import WebSocket
from litestar.dto import AbstractDTO
from litestar.exceptions import HTTPException, ValidationException, WebSocketDisconnect
from litestar.openapi import OpenAPIConfig, ResponseSpec
from litestar.openapi.plugins import JsonRenderPlugin
from litestar.openapi.spec import Components, SecurityRequirement, SecurityScheme
from litestar.params import JSONBody, PathParameter, QueryParameter
from litestar.typing import FieldDefinition
from typing_extensions import Annotated

from jex.api import schemas as S
from jex.api.hub import CHANNELS, Hub, Subscriber, WsRequest
from jex.api.keys import Principal
from jex.api.limits import (
    BODY_BYTES_MAX,
    BOOK_DEPTH_MAX,
    ORDERS_LIST_MAX,
    TRADES_LIMIT_MAX,
    WS_CONNECTIONS_MAX,
    WS_MESSAGE_BYTES_MAX,
    WS_SUBSCRIPTIONS_MAX,
)
from jex.api.service import ApiError, ERROR_CODES, Service, parse_json_object, public_trade
from jex.core.codec import SYMBOL_CHARS_MAX
from jex.node.exchange import order_dict
from jex.node.gateway import BOOK_DEPTH_PUBLISHED

API_VERSION = "1.0.0"
API_PREFIX = "/api/v1"
SECURITY: list[SecurityRequirement] = [{"bearer": []}, {"api_key": []}]

# --------------------------------------------------------------- the body DTO


class ContractBody(AbstractDTO):
    """Hands the raw request body to the handler untouched, and documents it
    in OpenAPI as ``model_type`` (a body Struct from ``schemas``).

    Litestar would otherwise decode the body itself (non-strictly, with its
    own error format). The codec must be the one decoder, so that a
    malformed body gets its one-line ``<field>: <reason>`` error and the
    documented schema is derived from the very Structs it decodes with.
    """

    @classmethod
    def generate_field_definitions(cls, model_type: type[Any]) -> Generator[Any, None, None]:
        yield from ()

    @classmethod
    def detect_nested_field(cls, field_definition: FieldDefinition) -> bool:
        return False

    @classmethod
    def create_for_field_definition(cls, field_definition: FieldDefinition, handler_id: str, backend_cls=None) -> None:
        return None  # no transfer model: the handler decodes the bytes

    @classmethod
    def create_openapi_schema(cls, field_definition: FieldDefinition, handler_id: str, schema_creator) -> Any:
        return schema_creator.for_field_definition(FieldDefinition.from_annotation(cls.model_type))

    def decode_bytes(self, value: bytes) -> bytes:
        return bytes(value)

    def decode_builtins(self, value: dict[str, Any]) -> bytes:
        return msgspec.json.encode(value)


# ------------------------------------------------------------------- helpers


def _service(connection: Request | WebSocket) -> Service:
    return connection.app.state.service


def _key_text(connection: Request | WebSocket) -> str | None:
    headers = connection.headers
    auth = headers.get("authorization")
    if auth:
        scheme, _, token = auth.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise ApiError(401, "Authorization must be 'Bearer <key>'", headers={"WWW-Authenticate": "Bearer"})
        return token.strip()
    return headers.get("x-api-key")


def _principal(request: Request) -> Principal:
    """Authenticate the key and spend one token of its rate bucket."""
    service = _service(request)
    principal = service.authenticate(_key_text(request))
    service.admit("key:" + principal.key_id)
    return principal


def _public(request: Request) -> None:
    """Public reads: rate-limited by key when one is given, else by address."""
    service = _service(request)
    text = _key_text(request)
    if text:
        principal = service.authenticate(text)
        service.admit("key:" + principal.key_id)
    else:
        host = request.client.host if request.client else "unknown"
        service.admit("addr:" + host)


def _check_symbol(symbol: str) -> None:
    if not symbol or len(symbol) > SYMBOL_CHARS_MAX or not symbol.isprintable():
        raise ApiError(400, f"symbol: must be 1..{SYMBOL_CHARS_MAX} printable characters")


async def _submit(request: Request, data: bytes, tag: str, *, admin: bool = False, has_account: bool = True) -> S.SubmitResponse:
    principal = _principal(request)
    if admin:
        Service.require_admin(principal)
    service = _service(request)
    command = service.command(parse_json_object(data), tag, principal, has_account=has_account)
    seq, events = await service.submit(command, principal)
    return S.SubmitResponse(seq, events)


def _errors(*statuses: int) -> dict[int, ResponseSpec]:
    return {
        status: ResponseSpec(S.ErrorBody, description=ERROR_CODES.get(status, "error").replace("_", " "))
        for status in statuses
    }


_WRITE_ERRORS = _errors(400, 401, 403, 413, 429, 503)
_ORDER_WRITE_ERRORS = _errors(400, 401, 403, 404, 413, 429, 503)  # 404: the path names no order id
_KEY_READ_ERRORS = _errors(400, 401, 404, 429, 503)
_PUBLIC_ERRORS = _errors(400, 401, 404, 429, 503)


def _write_route(path: str, body: type, summary: str):
    return post(
        path,
        status_code=200,
        dto=ContractBody[body],
        return_dto=None,
        responses=_WRITE_ERRORS,
        security=SECURITY,
        summary=summary,
        tags=["orders" if path.startswith(API_PREFIX + "/orders") else "admin"],
    )


# ------------------------------------------------------------------- writes


@_write_route(API_PREFIX + "/orders", S.OrderBody, "Submit an order")
async def submit_order(request: Request, data: JSONBody[bytes] = b"") -> S.SubmitResponse:
    return await _submit(request, data, "order")


@_write_route(API_PREFIX + "/orders/oco", S.OcoBody, "Submit an OCO group")
async def submit_oco(request: Request, data: JSONBody[bytes] = b"") -> S.SubmitResponse:
    return await _submit(request, data, "oco")


@_write_route(API_PREFIX + "/orders/bracket", S.BracketBody, "Submit a bracket")
async def submit_bracket(request: Request, data: JSONBody[bytes] = b"") -> S.SubmitResponse:
    return await _submit(request, data, "bracket")


@_write_route(API_PREFIX + "/orders/conditional", S.ConditionalBody, "Submit a conditional order")
async def submit_conditional(request: Request, data: JSONBody[bytes] = b"") -> S.SubmitResponse:
    return await _submit(request, data, "conditional")


@_write_route(API_PREFIX + "/instruments", S.InstrumentBody, "Define an instrument (admin key)")
async def define_instrument(request: Request, data: JSONBody[bytes] = b"") -> S.SubmitResponse:
    return await _submit(request, data, "instrument", admin=True, has_account=False)


@_write_route(API_PREFIX + "/auctions", S.AuctionBody, "Open or uncross a call auction (admin key)")
async def run_auction(request: Request, data: JSONBody[bytes] = b"") -> S.SubmitResponse:
    return await _submit(request, data, "auction", admin=True, has_account=False)


OrderIdPath = Annotated[int, PathParameter(description="Engine-assigned order id", ge=1, le=2**63 - 1)]
SymbolPath = Annotated[str, PathParameter(description="Instrument symbol", min_length=1, max_length=SYMBOL_CHARS_MAX)]


@post(API_PREFIX + "/orders/{order_id:int}/cancel", status_code=200, responses=_ORDER_WRITE_ERRORS, security=SECURITY,
      summary="Cancel one of the key's orders (or groups)", tags=["orders"])
async def cancel_order(request: Request, order_id: OrderIdPath) -> S.SubmitResponse:
    principal = _principal(request)
    command = {"type": "cancel", "account": principal.account, "order_id": order_id}
    seq, events = await _service(request).submit(command, principal)
    return S.SubmitResponse(seq, events)


@post(API_PREFIX + "/orders/{order_id:int}/replace", status_code=200, dto=ContractBody[S.ReplaceBody], return_dto=None,
      responses=_ORDER_WRITE_ERRORS, security=SECURITY, summary="Replace the quantity and/or price of one of the key's orders",
      tags=["orders"])
async def replace_order(request: Request, order_id: OrderIdPath, data: JSONBody[bytes] = b"") -> S.SubmitResponse:
    principal = _principal(request)
    body = parse_json_object(data)
    unknown = sorted(set(body) - {"qty", "price"})
    if unknown:
        raise ApiError(400, f"$.{unknown[0]}: object contains unknown field `{unknown[0]}`")
    service = _service(request)
    command = service.command({**body, "order_id": order_id}, "replace", principal)
    seq, events = await service.submit(command, principal)
    return S.SubmitResponse(seq, events)


# -------------------------------------------------------------------- reads


@get(API_PREFIX + "/orders/{symbol:str}/{order_id:int}", responses=_KEY_READ_ERRORS, security=SECURITY,
     summary="One live order of the key's account", tags=["orders"])
async def get_order(request: Request, symbol: SymbolPath, order_id: OrderIdPath) -> S.OrderView:
    principal = _principal(request)
    _check_symbol(symbol)

    def read(exchange) -> dict | None:
        order = exchange.engine.order(order_id)
        if order is None or order.account != principal.account or order.symbol != symbol:
            return None
        return order_dict(exchange.codec, order)

    view = await _service(request).read(read)
    if view is None:
        raise ApiError(404, f"no live order {order_id} on {symbol} for account {principal.account!r}")
    return msgspec.convert(view, S.OrderView)


@get(API_PREFIX + "/orders", responses=_KEY_READ_ERRORS, security=SECURITY,
     summary="The key's live orders (resting, pending stops, group legs)", tags=["orders"])
async def list_orders(
    request: Request,
    symbol: Annotated[str | None, QueryParameter(min_length=1, max_length=SYMBOL_CHARS_MAX)] = None,
) -> S.OrdersResponse:
    principal = _principal(request)
    if symbol is not None:
        _check_symbol(symbol)
    views = await _service(request).read(lambda x: x.orders(principal.account, symbol)[:ORDERS_LIST_MAX])
    return S.OrdersResponse([msgspec.convert(v, S.OrderView) for v in views])


@get(API_PREFIX + "/orderbook/{symbol:str}", responses=_PUBLIC_ERRORS, summary="Aggregated book, best first",
     tags=["market data"])
async def get_book(
    request: Request,
    symbol: SymbolPath,
    depth: Annotated[int | None, QueryParameter(ge=1, le=BOOK_DEPTH_MAX)] = None,
) -> S.BookResponse:
    _public(request)
    _check_symbol(symbol)
    book = await _service(request).read(lambda x: x.book(symbol, depth or BOOK_DEPTH_MAX))
    if book is None:
        raise ApiError(404, f"unknown symbol {symbol}")
    return msgspec.convert(book, S.BookResponse)


async def _stats(request: Request, symbol: str) -> dict:
    _public(request)
    _check_symbol(symbol)
    stats = await _service(request).read(lambda x: x.stats(symbol))
    if stats is None:
        raise ApiError(404, f"unknown symbol {symbol}")
    return stats


@get(API_PREFIX + "/orderbook/{symbol:str}/microprice", responses=_PUBLIC_ERRORS,
     summary="Size-weighted mid of the best levels", tags=["market data"])
async def get_microprice(request: Request, symbol: SymbolPath) -> S.MicropriceResponse:
    st = await _stats(request, symbol)
    return S.MicropriceResponse(st["symbol"], st["seq"], st["best_bid"], st["best_ask"], st["mid"], st["microprice"])


@get(API_PREFIX + "/orderbook/{symbol:str}/imbalance", responses=_PUBLIC_ERRORS,
     summary="Best-level imbalance bid_qty/(bid_qty+ask_qty)", tags=["market data"])
async def get_imbalance(request: Request, symbol: SymbolPath) -> S.ImbalanceResponse:
    st = await _stats(request, symbol)
    return S.ImbalanceResponse(st["symbol"], st["seq"], st["best_bid"], st["best_ask"], st["imbalance"],
                               st["signed_imbalance"])


@get(API_PREFIX + "/trades/{symbol:str}", responses=_PUBLIC_ERRORS, summary="Recent trades, oldest first",
     tags=["market data"])
async def get_trades(
    request: Request,
    symbol: SymbolPath,
    limit: Annotated[int, QueryParameter(ge=1, le=TRADES_LIMIT_MAX)] = 100,
) -> S.TradesResponse:
    _public(request)
    _check_symbol(symbol)

    def read(exchange) -> list[dict] | None:
        if symbol not in exchange.engine.instruments:
            return None
        return exchange.recent_trades(symbol, limit)

    trades = await _service(request).read(read)
    if trades is None:
        raise ApiError(404, f"unknown symbol {symbol}")
    return S.TradesResponse(symbol, [S.PublicTrade(**public_trade(t)) for t in trades])


@get("/health", responses=_errors(503), summary="Liveness: the writer is running", tags=["health"])
async def health(request: Request) -> S.HealthResponse:
    seq, backend, acknowledged = await _service(request).read(
        lambda x: (x.journal.last_seq, x.backend, x.acknowledged))
    return S.HealthResponse("ok", seq, backend, acknowledged)


# ---------------------------------------------------------------- WebSocket


_ws_encoder = msgspec.json.Encoder()
_ws_request = msgspec.json.Decoder(WsRequest)


@websocket("/ws")
async def feed(socket: WebSocket) -> None:
    """Subscribe to ``trades`` and ``book`` of a symbol. Send
    ``{"op": "subscribe", "channel": "trades", "symbol": "X"}``; receive
    ``{"type": "trade", ...}`` / ``{"type": "book", ...}`` from the durable
    event stream, ``{"type": "dropped", "count": N}`` after an overflow."""
    hub: Hub = socket.app.state.hub
    if hub.connections >= WS_CONNECTIONS_MAX:
        await socket.close(code=1013, reason=f"at most {WS_CONNECTIONS_MAX} connections")
        return
    await socket.accept()
    hub.connections += 1
    subscriber = Subscriber()
    pump = asyncio.create_task(_pump(socket, subscriber))
    try:
        while True:
            event = await socket.receive()
            if event["type"] == "websocket.disconnect":
                break
            raw = event.get("text") or event.get("bytes") or b""
            reply = await _ws_message(socket, hub, subscriber, raw)
            if reply is not None:
                subscriber.offer(reply)
    except WebSocketDisconnect:
        pass
    finally:
        hub.connections -= 1
        hub.drop(subscriber)
        pump.cancel()


async def _pump(socket: WebSocket, subscriber: Subscriber) -> None:
    try:
        while True:
            for message in await subscriber.take():
                await socket.send_data(_ws_encoder.encode(message).decode(), mode="text")
    except (WebSocketDisconnect, OSError, RuntimeError):
        return


async def _ws_message(socket: WebSocket, hub: Hub, subscriber: Subscriber, raw: str | bytes) -> dict | None:
    service = _service(socket)
    try:
        service.admit("addr:" + (socket.client.host if socket.client else "unknown"))
    except ApiError as exc:
        return _ws_error(exc.message, exc.code)
    if len(raw) > WS_MESSAGE_BYTES_MAX:
        return _ws_error(f"$: message longer than {WS_MESSAGE_BYTES_MAX} bytes")
    try:
        request = _ws_request.decode(raw)
    except msgspec.MsgspecError as exc:
        text = str(exc).splitlines()[0] if str(exc) else "malformed message"
        head, _, path = text.rpartition(" - at `")
        return _ws_error(f"{path.rstrip('`')}: {head}" if head else f"$: {text}")
    if request.op == "ping":
        return {"type": "pong"}
    if request.channel is None or request.symbol is None:
        return _ws_error(f"$: {request.op} needs channel ({' or '.join(CHANNELS)}) and symbol")
    symbol, channel = request.symbol, request.channel
    if not symbol or len(symbol) > SYMBOL_CHARS_MAX:
        return _ws_error(f"$.symbol: must be 1..{SYMBOL_CHARS_MAX} characters")
    if request.op == "unsubscribe":
        hub.unsubscribe(subscriber, channel, symbol)
        return {"type": "unsubscribed", "channel": channel, "symbol": symbol}
    if len(subscriber.channels) >= WS_SUBSCRIPTIONS_MAX:
        return _ws_error(f"$: at most {WS_SUBSCRIPTIONS_MAX} subscriptions per connection")
    try:
        # Subscribe first, then read the book: any later drain is published
        # to us, so the snapshot plus updates miss nothing (book messages carry seq).
        hub.subscribe(subscriber, channel, symbol)
        book = await service.read(lambda x: x.book(symbol, BOOK_DEPTH_PUBLISHED))
    except ApiError as exc:
        hub.unsubscribe(subscriber, channel, symbol)
        return _ws_error(exc.message, exc.code)
    if book is None:
        hub.unsubscribe(subscriber, channel, symbol)
        return _ws_error(f"$.symbol: unknown symbol {symbol}", "not_found")
    subscriber.offer({"type": "subscribed", "channel": channel, "symbol": symbol})
    if channel == "book":
        subscriber.offer({"type": "book", **book})
    return None


def _ws_error(message: str, code: str = "bad_request") -> dict:
    return {"type": "error", "code": code, "message": message}


# --------------------------------------------------------------- exceptions


def _error_response(status: int, code: str, message: str, headers: dict | None = None) -> Response:
    return Response({"error": {"code": code, "message": " ".join(message.split())}}, status_code=status,
                    headers=headers or {}, media_type="application/json")


def _on_api_error(request: Request, exc: ApiError) -> Response:
    return _error_response(exc.status, exc.code, exc.message, exc.headers)


def _on_http_exception(request: Request, exc: HTTPException) -> Response:
    status = exc.status_code
    message = exc.detail or ERROR_CODES.get(status, "error")
    if isinstance(exc, ValidationException) and isinstance(exc.extra, list) and exc.extra:
        first = exc.extra[0]
        if isinstance(first, dict) and first.get("key"):
            message = f"{first['key']}: {first.get('message', 'invalid')}"
    if status == 413:
        message = f"request body larger than {BODY_BYTES_MAX} bytes"
    return _error_response(status, ERROR_CODES.get(status, "error"), message, getattr(exc, "headers", None))


def _on_internal_error(request: Request, exc: Exception) -> Response:
    print(f"jex serve: internal error on {request.method} {request.url.path}: {type(exc).__name__}: {exc}",
          file=sys.stderr, flush=True)
    if os.environ.get("JEX_DEBUG"):
        import traceback

        traceback.print_exception(exc)
    return _error_response(500, "internal_error", f"internal error ({type(exc).__name__})")


# --------------------------------------------------------------------- app


ROUTES = [
    submit_order, submit_oco, submit_bracket, submit_conditional, cancel_order, replace_order,
    list_orders, get_order, define_instrument, run_auction, get_book, get_microprice, get_imbalance,
    get_trades, health, feed,
]


def create_app(service: Service, hub_factory=None) -> Litestar:
    """The Litestar application over ``service``. The WebSocket hub is made
    on startup, on the serving event loop (``hub_factory(loop)`` overrides)."""

    async def start_hub(app: Litestar) -> None:
        loop = asyncio.get_running_loop()
        app.state.hub = hub_factory(loop) if hub_factory else Hub(service.gateway, loop)

    async def stop_hub(app: Litestar) -> None:
        hub = getattr(app.state, "hub", None)
        if hub is not None:
            hub.close()

    openapi = OpenAPIConfig(
        title="jex",
        version=API_VERSION,
        description="The jex exchange API. Bodies are the DESIGN §4 command contract; see docs/api.md.",
        path="/schema",
        render_plugins=[JsonRenderPlugin()],
        components=Components(security_schemes={
            "bearer": SecurityScheme(type="http", scheme="bearer", description="Authorization: Bearer <key>"),
            "api_key": SecurityScheme(type="apiKey", name="X-API-Key", security_scheme_in="header"),
        }),
    )
    return Litestar(
        route_handlers=ROUTES,
        openapi_config=openapi,
        exception_handlers={
            ApiError: _on_api_error,
            HTTPException: _on_http_exception,
            Exception: _on_internal_error,
        },
        request_max_body_size=BODY_BYTES_MAX,
        on_startup=[start_hub],
        on_shutdown=[stop_hub],
        state=_state(service),
        debug=False,
        logging_config=None,
    )


def _state(service: Service):
    from litestar.datastructures import State

    return State({"service": service})
