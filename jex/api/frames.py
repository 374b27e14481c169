"""The binary protocol's framing, shared by server and client (api room).

A frame is a 4-byte big-endian unsigned payload length followed by that
many bytes of msgpack: one map per frame. The maps mirror the JSON contract
(decimal values stay strings). This module imports nothing from the server
side, so ``jex.api.client`` stays light.

Client -> server:

    {"type": "auth", "key": "jex_..."}                 first frame, once
    {"type": "order", ..., "id"?: <int|str>}           any command of DESIGN §4
                                                        except clock; "id" is echoed

Server -> client, one reply per request, in request order:

    {"type": "auth_ok", "account": A, "key_id": K, "admin": bool}
    {"type": "result", "id"?: ..., "seq": N, "events": [...]}      durable
    {"type": "error", "id"?: ..., "code": ..., "message": ..., "retry_after_s"?: ...}

A frame whose payload is not a msgpack map gets an error reply and the
connection stays usable; a length over ``FRAME_BYTES_MAX`` gets an error
reply and the connection is closed (the stream cannot be trusted to
resynchronise).
"""

from __future__ import annotations

import struct

import msgspec

from jex.api.limits import FRAME_BYTES_MAX

HEADER = struct.Struct(">I")
HEADER_BYTES = HEADER.size

_encoder = msgspec.msgpack.Encoder()
_decoder = msgspec.msgpack.Decoder()


class FrameError(ValueError):
    """A frame that cannot be decoded. ``code`` is a stable snake_case code."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


def encode(message: dict) -> bytes:
    """One frame (header + msgpack payload) holding ``message``."""
    payload = _encoder.encode(message)
    return HEADER.pack(len(payload)) + payload


def payload_length(header: bytes, limit: int = FRAME_BYTES_MAX) -> int:
    """The payload length announced by a frame header, checked against ``limit``."""
    (length,) = HEADER.unpack(header)
    if length == 0:
        raise FrameError("bad_frame", "$: empty frame")
    if length > limit:
        raise FrameError("frame_too_large", f"$: frame of {length} bytes is larger than {limit} bytes")
    return length


def decode(payload: bytes) -> dict:
    """A frame payload as a map with a string ``type``."""
    try:
        value = _decoder.decode(payload)
    except msgspec.MsgspecError as exc:
        raise FrameError("bad_request", f"$: malformed msgpack ({str(exc).splitlines()[0]})") from None
    except UnicodeError:
        raise FrameError("bad_request", "$: a string is not valid UTF-8") from None
    except RecursionError:
        raise FrameError("bad_request", "$: nested too deeply") from None
    if not isinstance(value, dict):
        raise FrameError("bad_request", f"$: expected a map, got {type(value).__name__}")
    if not isinstance(value.get("type"), str):
        raise FrameError("bad_request", "$.type: a string type is required")
    return value
