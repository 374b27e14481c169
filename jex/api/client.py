"""A small blocking client of the binary protocol (api room).

    with Client("127.0.0.1", 9001, key) as c:
        events = c.submit({"type": "order", "client_id": "a1", "symbol": "X", ...})

``submit`` returns the command's events once it is durable on the server
(``account`` may be omitted: it is the key's). A refusal raises
``ClientError`` with the server's stable ``code`` (``bad_request``,
``forbidden``, ``rate_limited``, ``unavailable``, ...) and one-line message.
``submit_many`` pipelines up to ``window`` requests on the one connection.
Imports only the standard library, msgspec and ``jex.api.frames``.
"""

from __future__ import annotations

import socket
from collections import deque
from dataclasses import dataclass
from typing import Iterable, Iterator

from jex.api import frames

CONNECT_TIMEOUT_S = 10.0
REPLY_TIMEOUT_S = 60.0  # a reply slower than this means the server is stuck: the client gives up
PIPELINE_WINDOW_DEFAULT = 64  # requests in flight in submit_many (server allows up to 256)
RECV_BYTES = 256 * 1024


class ClientError(Exception):
    """The server refused a request (or the connection failed)."""

    def __init__(self, code: str, message: str, retry_after_s: int | None = None) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.retry_after_s = retry_after_s


@dataclass
class Reply:
    """One request's outcome in ``submit_many``: events, or an error."""

    index: int
    seq: int | None
    events: list[dict]
    error: ClientError | None = None


class Client:
    """One authenticated connection. Not thread-safe: one per thread."""

    def __init__(self, host: str, port: int, key: str, *, timeout_s: float = REPLY_TIMEOUT_S) -> None:
        self._sock = socket.create_connection((host, port), timeout=CONNECT_TIMEOUT_S)
        self._sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._sock.settimeout(timeout_s)
        self._buffer = bytearray()
        try:
            reply = self._call({"type": "auth", "key": key})
        except BaseException:
            self._sock.close()
            raise
        self.account: str = reply["account"]
        self.key_id: str = reply["key_id"]
        self.admin: bool = reply["admin"]

    def close(self) -> None:
        self._sock.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def submit(self, command: dict) -> list[dict]:
        """Submit one command; its events once durable (or ClientError)."""
        return self._call(command)["events"]

    def submit_result(self, command: dict) -> tuple[int, list[dict]]:
        """Like ``submit`` but also returns the command's seq."""
        reply = self._call(command)
        return reply["seq"], reply["events"]

    def submit_many(self, commands: Iterable[dict], window: int = PIPELINE_WINDOW_DEFAULT) -> Iterator[Reply]:
        """Pipeline commands, ``window`` in flight; yield a Reply per command in order."""
        assert window >= 1
        in_flight: deque[int] = deque()
        index = 0
        for command in commands:
            self._sock.sendall(frames.encode(command))
            in_flight.append(index)
            index += 1
            if len(in_flight) >= window:
                yield self._reply(in_flight.popleft())
        while in_flight:
            yield self._reply(in_flight.popleft())

    def send_raw(self, data: bytes) -> dict:
        """Send raw bytes and read one reply (for protocol tests)."""
        self._sock.sendall(data)
        return self._read()

    def _reply(self, index: int) -> Reply:
        message = self._read()
        if message.get("type") == "error":
            return Reply(index, None, [], _error(message))
        return Reply(index, message["seq"], message["events"])

    def _call(self, message: dict) -> dict:
        self._sock.sendall(frames.encode(message))
        reply = self._read()
        if reply.get("type") == "error":
            raise _error(reply)
        return reply

    def _read(self) -> dict:
        length = frames.payload_length(self._exactly(frames.HEADER_BYTES), limit=1 << 30)
        return frames.decode(self._exactly(length))

    def _exactly(self, n: int) -> bytes:
        buffer = self._buffer
        while len(buffer) < n:
            chunk = self._sock.recv(max(RECV_BYTES, n - len(buffer)))
            if not chunk:
                raise ClientError("disconnected", "the server closed the connection")
            buffer += chunk
        out = bytes(buffer[:n])
        del buffer[:n]
        return out


def _error(message: dict) -> ClientError:
    return ClientError(str(message.get("code", "error")), str(message.get("message", "")), message.get("retry_after_s"))
