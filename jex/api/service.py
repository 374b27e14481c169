"""The transport-independent core of the network edge (api room).

HTTP (``app.py``) and the binary protocol (``binary.py``) are thin shells
over ``Service``: authenticate a key, apply the rate limit, turn a request
body into a contract command for the key's account, hand it to the
``Gateway`` and wait for the durable result, then show the caller only what
its account may see. Every refusal is an ``ApiError`` with an HTTP status, a
stable snake_case code and a one-line message.
"""

from __future__ import annotations

import asyncio
import threading
from concurrent.futures import Future
from typing import Any, Callable

import msgspec

from jex.api.keys import KeyRing, Principal
from jex.api.limits import REQUEST_WAIT_S_MAX, RateLimiter, retry_after_header
from jex.core import CommandError
from jex.core.codec import decode_wire
from jex.node.gateway import Gateway, GatewayStopped, Overloaded

ERROR_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    413: "payload_too_large",
    429: "rate_limited",
    500: "internal_error",
    503: "unavailable",
}


class ApiError(Exception):
    """A refusal at the edge: HTTP status, stable code, one-line message."""

    def __init__(self, status: int, message: str, code: str | None = None, headers: dict[str, str] | None = None) -> None:
        super().__init__(" ".join(message.split()))
        self.status = status
        self.code = code or ERROR_CODES.get(status, "error")
        self.message = str(self)
        self.headers = headers or {}

    def body(self) -> dict:
        return {"error": {"code": self.code, "message": self.message}}


def bad_input(exc: CommandError) -> ApiError:
    return ApiError(400, str(exc))


_json_decoder = msgspec.json.Decoder()


def parse_json_object(raw: bytes) -> dict:
    """The body as a JSON object, or a 400 naming what is wrong."""
    if not raw:
        raise ApiError(400, "$: a JSON object body is required")
    try:
        value = _json_decoder.decode(raw)
    except msgspec.DecodeError as exc:
        raise ApiError(400, f"$: malformed JSON ({str(exc).splitlines()[0]})") from None
    except UnicodeError:
        raise ApiError(400, "$: the body is not valid UTF-8") from None
    except RecursionError:
        raise ApiError(400, "$: nested too deeply") from None
    if not isinstance(value, dict):
        raise ApiError(400, f"$: expected a JSON object, got {type(value).__name__}")
    return value


class Service:
    """Auth, limits, command preparation and durable submission."""

    def __init__(self, gateway: Gateway, keys: KeyRing, limiter: RateLimiter) -> None:
        self.gateway = gateway
        self.keys = keys
        self.limiter = limiter
        self._bridge: _Completions | None = None

    def _completions(self) -> _Completions:
        bridge = self._bridge
        if bridge is None:
            bridge = self._bridge = _Completions(asyncio.get_running_loop())
        return bridge

    # ----------------------------------------------------------- identity

    def authenticate(self, key_text: str | None) -> Principal:
        """The key's principal, or 401."""
        if not key_text:
            raise ApiError(401, "an API key is required (Authorization: Bearer <key> or X-API-Key)",
                           headers={"WWW-Authenticate": "Bearer"})
        principal = self.keys.authenticate(key_text)
        if principal is None:
            raise ApiError(401, "unknown or revoked API key", headers={"WWW-Authenticate": "Bearer"})
        return principal

    def admit(self, identity: str) -> None:
        """Spend one token of ``identity``'s bucket, or 429 with Retry-After."""
        wait_s = self.limiter.take(identity)
        if wait_s > 0:
            raise ApiError(429, f"rate limit of {self.limiter.rate_per_s:g} requests/s exceeded; retry in {wait_s:.3f} s",
                           headers={"Retry-After": retry_after_header(wait_s)})

    @staticmethod
    def require_admin(principal: Principal) -> None:
        if not principal.admin:
            raise ApiError(403, f"key {principal.key_id} is not an admin key")

    # ----------------------------------------------------------- commands

    @staticmethod
    def command(body: dict, tag: str, principal: Principal, *, has_account: bool = True) -> dict:
        """A contract command of type ``tag`` from a request body, for the
        key's account. The structure is checked here (pure, no state); the
        grids and the rest are checked by the node's codec."""
        given = body.get("type", tag)
        if given != tag:
            raise ApiError(400, f"$.type: must be {tag!r} on this endpoint (or omitted), got {_short(given)}")
        if "ts" in body:
            raise ApiError(400, "$.ts: not accepted over the API (the node stamps time)")
        command = {**body, "type": tag}
        if has_account:
            account = body.get("account")
            if account is not None and account != principal.account:
                raise ApiError(403, f"$.account: key {principal.key_id} may only act for account "
                                    f"{principal.account!r}, not {_short(account)}")
            command["account"] = principal.account
        try:
            decode_wire(command)
        except CommandError as exc:
            raise bad_input(exc) from None
        return command

    async def submit(self, command: dict, principal: Principal) -> tuple[int, list[dict]]:
        """Submit and wait until durable; returns (seq, visible events)."""
        return await self.finish_submit(self.start_submit(command), principal)

    def start_submit(self, command: dict) -> Future:
        """Queue a prepared command (never blocks); see ``finish_submit``."""
        return self._enqueue(self.gateway.submit, command)

    async def finish_submit(self, future: Future, principal: Principal) -> tuple[int, list[dict]]:
        """Wait for a queued command to be durable; (seq, visible events)."""
        result = await self._wait(future)
        if result.error is not None:
            raise bad_input(result.error)
        return result.seq, self.visible(result.events, principal.account)

    async def read(self, fn: Callable[[Any], Any]) -> Any:
        """Run a read in the node's writer thread (durable state only)."""
        return await self._wait(self._enqueue(self.gateway.read, fn))

    @staticmethod
    def _enqueue(enqueue: Callable[[Any], Future], arg: Any) -> Future:
        try:
            return enqueue(arg)
        except Overloaded as exc:
            raise ApiError(503, f"overloaded: {exc}", code="overloaded", headers={"Retry-After": "1"}) from None
        except GatewayStopped as exc:
            raise ApiError(503, str(exc)) from None

    async def _wait(self, future: Future) -> Any:
        waiter = self._completions().waiter(future)
        try:
            async with asyncio.timeout(REQUEST_WAIT_S_MAX):
                return await waiter
        except GatewayStopped as exc:
            raise ApiError(503, f"{exc}; this request was not acknowledged") from None
        except asyncio.TimeoutError:
            raise ApiError(503, f"no answer from the node within {REQUEST_WAIT_S_MAX:g} s; outcome unknown "
                                "(a retry with the same client_id is safe)", code="timeout") from None

    # ---------------------------------------------------------- isolation

    def visible(self, events: list[dict], account: str) -> list[dict]:
        """The events an account may see: its own orders' events, trades it
        is a party to (the other side's account and client id set to null),
        and market-wide events (instrument, phase, auction)."""
        owner = self.gateway.owner_of
        out = []
        for event in events:
            kind = event["type"]
            if kind in ("accepted", "rejected"):
                if event.get("account") in (account, None):
                    out.append(event)
            elif kind == "trade":
                if account in (event["buyer"], event["seller"]):
                    out.append(_redact_trade(event, account, owner))
            elif kind == "prevented":
                if owner(event["taker_order_id"]) == account:
                    out.append(event)
            elif "order_id" in event:
                if owner(event["order_id"]) == account:
                    out.append(event)
            else:
                out.append(event)
        return out


class _Completions:
    """Hands the gateway's thread futures to the event loop, coalesced.

    ``asyncio.wrap_future`` wakes the loop once per future (a self-pipe
    write each); the writer resolves a whole drain of futures at once, so
    here completions are queued and the loop is woken once per burst.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self._lock = threading.Lock()
        self._done: list[tuple[Future, asyncio.Future]] = []
        self._scheduled = False

    def waiter(self, future: Future) -> asyncio.Future:
        waiter = self.loop.create_future()
        future.add_done_callback(lambda f: self._completed(f, waiter))
        return waiter

    def _completed(self, future: Future, waiter: asyncio.Future) -> None:
        """Any thread: queue the pair; wake the loop unless already woken."""
        with self._lock:
            self._done.append((future, waiter))
            if self._scheduled:
                return
            self._scheduled = True
        try:
            self.loop.call_soon_threadsafe(self._deliver)
        except RuntimeError:  # the loop is closed: nobody is waiting any more
            pass

    def _deliver(self) -> None:
        with self._lock:
            done, self._done = self._done, []
            self._scheduled = False
        for future, waiter in done:
            if waiter.done():  # timed out or cancelled meanwhile
                continue
            if future.cancelled():
                waiter.cancel()
                continue
            exc = future.exception()
            if exc is not None:
                waiter.set_exception(exc)
            else:
                waiter.set_result(future.result())


def _short(value: Any, chars_max: int = 80) -> str:
    """repr() of a client value, cut to keep error messages short."""
    text = repr(value)
    return text if len(text) <= chars_max else text[: chars_max - 3] + "..."


def _redact_trade(event: dict, account: str, owner: Callable[[int], str | None]) -> dict:
    out = dict(event)
    if out["buyer"] != account:
        out["buyer"] = None
    if out["seller"] != account:
        out["seller"] = None
    if owner(out["maker_order_id"]) != account:
        out["maker_client_id"] = None
    if owner(out["taker_order_id"]) != account:
        out["taker_client_id"] = None
    return out


def public_trade(event: dict) -> dict:
    """A trade event without accounts or client ids (public feeds)."""
    return {
        "seq": event["seq"],
        "symbol": event["symbol"],
        "price": event["price"],
        "qty": event["qty"],
        "aggressor": event["aggressor"],
        "maker_order_id": event["maker_order_id"],
        "taker_order_id": event["taker_order_id"],
    }
