"""The binary protocol server: length-prefixed msgpack over TCP (api room).

Framing and message shapes are in ``frames.py``. The same ``Service`` as
HTTP does the work, so auth, isolation, rate limits and durability are the
same: a ``result`` frame leaves only after its command is durable.

A connection may pipeline up to ``BINARY_PIPELINE_MAX`` requests; replies
come back in request order. The reader queues each command to the node as
soon as it is decoded (so one connection's requests group-commit together)
and a responder task writes the replies as they become durable.
"""

from __future__ import annotations

import asyncio
from typing import Any

from jex.api import frames
from jex.api.keys import Principal
from jex.api.limits import AUTH_TIMEOUT_S, BINARY_CONNECTIONS_MAX, BINARY_PIPELINE_MAX
from jex.api.service import ApiError, Service

ACCOUNT_COMMANDS = frozenset({"order", "oco", "bracket", "conditional", "cancel", "replace"})
ADMIN_COMMANDS = frozenset({"instrument", "auction"})
_DONE = object()


class BinaryServer:
    """Accepts binary-protocol connections for one ``Service``."""

    def __init__(self, service: Service) -> None:
        self.service = service
        self.connections = 0
        self._server: asyncio.AbstractServer | None = None
        self._tasks: set[asyncio.Task] = set()

    async def start(self, host: str, port: int, sock=None) -> None:
        if sock is not None:
            self._server = await asyncio.start_server(self._handle, sock=sock)
        else:
            self._server = await asyncio.start_server(self._handle, host, port)

    @property
    def port(self) -> int:
        assert self._server is not None
        return self._server.sockets[0].getsockname()[1]

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            for task in list(self._tasks):
                task.cancel()
            await self._server.wait_closed()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._tasks.add(task)
        self.connections += 1
        try:
            if self.connections > BINARY_CONNECTIONS_MAX:
                await _send(writer, _error(None, "unavailable", f"at most {BINARY_CONNECTIONS_MAX} connections"))
                return
            principal = await self._authenticate(reader, writer)
            if principal is not None:
                await self._serve(principal, reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.CancelledError):
            pass
        finally:
            self.connections -= 1
            if task is not None:
                self._tasks.discard(task)
            writer.close()

    async def _authenticate(self, reader, writer) -> Principal | None:
        try:
            message = await asyncio.wait_for(_read(reader), AUTH_TIMEOUT_S)
        except asyncio.TimeoutError:
            await _send(writer, _error(None, "unauthorized", f"no auth frame within {AUTH_TIMEOUT_S:g} s"))
            return None
        except frames.FrameError as exc:
            await _send(writer, _error(None, exc.code, str(exc)))
            return None
        if message.get("type") != "auth" or not isinstance(message.get("key"), str):
            await _send(writer, _error(message.get("id"), "unauthorized",
                                       "the first frame must be {type: auth, key: <API key>}"))
            return None
        try:
            principal = self.service.authenticate(message["key"])
        except ApiError as exc:
            await _send(writer, _error(message.get("id"), exc.code, exc.message))
            return None
        await _send(writer, {"type": "auth_ok", "account": principal.account, "key_id": principal.key_id,
                             "admin": principal.admin})
        return principal

    async def _serve(self, principal: Principal, reader, writer) -> None:
        pending: asyncio.Queue = asyncio.Queue(maxsize=BINARY_PIPELINE_MAX)
        responder = asyncio.create_task(self._respond(principal, pending, writer))
        try:
            while True:
                try:
                    message = await _read(reader)
                except frames.FrameError as exc:
                    await pending.put(_error(None, exc.code, str(exc)))
                    if exc.code == "frame_too_large":
                        break  # the stream cannot be resynchronised safely
                    continue
                except (asyncio.IncompleteReadError, ConnectionError):
                    break
                await pending.put(self._start(principal, message))
        finally:
            await pending.put(_DONE)
            try:
                await responder
            except (ConnectionError, asyncio.CancelledError):
                pass

    def _start(self, principal: Principal, message: dict) -> Any:
        """Queue one request to the node; returns (id, future) or an error reply."""
        request_id = message.pop("id", None)
        kind = message["type"]
        try:
            self.service.admit("key:" + principal.key_id)
            if kind in ADMIN_COMMANDS:
                Service.require_admin(principal)
                command = self.service.command(message, kind, principal, has_account=False)
            elif kind in ACCOUNT_COMMANDS:
                command = self.service.command(message, kind, principal)
            else:
                raise ApiError(400, f"$.type: {kind!r} is not a command accepted here")
            return request_id, self.service.start_submit(command)
        except ApiError as exc:
            return _error(request_id, exc.code, exc.message, exc.headers.get("Retry-After"))

    async def _respond(self, principal: Principal, pending: asyncio.Queue, writer: asyncio.StreamWriter) -> None:
        while True:
            item = await pending.get()
            if item is _DONE:
                return
            if isinstance(item, dict):
                reply = item
            else:
                request_id, future = item
                try:
                    seq, events = await self.service.finish_submit(future, principal)
                    reply = {"type": "result", "seq": seq, "events": events}
                    if request_id is not None:
                        reply["id"] = request_id
                except ApiError as exc:
                    reply = _error(request_id, exc.code, exc.message)
            writer.write(frames.encode(reply))
            if pending.empty():
                await writer.drain()


async def _read(reader: asyncio.StreamReader) -> dict:
    header = await reader.readexactly(frames.HEADER_BYTES)
    length = frames.payload_length(header)
    return frames.decode(await reader.readexactly(length))


async def _send(writer: asyncio.StreamWriter, message: dict) -> None:
    writer.write(frames.encode(message))
    await writer.drain()


def _error(request_id: Any, code: str, message: str, retry_after: str | None = None) -> dict:
    out: dict = {"type": "error", "code": code, "message": message}
    if request_id is not None:
        out["id"] = request_id
    if retry_after is not None:
        out["retry_after_s"] = int(retry_after)
    return out
