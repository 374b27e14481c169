"""Limits of the network edge, and the per-key rate limiter (api room).

Every queue, message and rate at the edge has a named limit with its unit,
so a misbehaving client costs bounded memory and time.
"""

from __future__ import annotations

import math
import time
from collections import OrderedDict
from dataclasses import dataclass

from jex.core.codec import LINE_BYTES_MAX

BODY_BYTES_MAX = LINE_BYTES_MAX  # largest HTTP request body (bytes): the codec's longest command
FRAME_BYTES_MAX = LINE_BYTES_MAX  # largest binary-protocol frame payload (bytes)
WS_MESSAGE_BYTES_MAX = 4 * 1024  # largest WebSocket message a client may send (bytes)
WS_QUEUE_MESSAGES_MAX = 1024  # messages queued per WebSocket connection before the oldest are dropped
WS_SUBSCRIPTIONS_MAX = 64  # channels one WebSocket connection may subscribe to
WS_CONNECTIONS_MAX = 512  # open WebSocket connections per server
BINARY_CONNECTIONS_MAX = 512  # open binary-protocol connections per server
BINARY_PIPELINE_MAX = 256  # requests one binary connection may have in flight
AUTH_TIMEOUT_S = 10.0  # a binary connection must authenticate within this time
RATE_PER_S_DEFAULT = 2000.0  # sustained requests per second per key
RATE_BURST_DEFAULT = 4000.0  # bucket size (requests) per key
RATE_BUCKETS_MAX = 65_536  # rate buckets kept (keys and anonymous addresses); least recently used dropped
TRADES_LIMIT_MAX = 1000  # most trades one GET /trades returns
BOOK_DEPTH_MAX = 1000  # most levels per side one GET /orderbook returns
ORDERS_LIST_MAX = 10_000  # most orders one GET /orders returns
REQUEST_WAIT_S_MAX = 30.0  # a request waiting longer than this for the node gets 503


@dataclass(slots=True)
class _Bucket:
    tokens: float
    stamp: float


class RateLimiter:
    """Token buckets keyed by an identity (key id, or an anonymous address).

    Each identity may make ``burst`` requests at once and ``rate_per_s`` per
    second sustained. ``take`` returns 0.0 when a request may proceed, else
    the seconds to wait before one token is available (for Retry-After).
    Not thread-safe: the server calls it from its event loop only.
    """

    def __init__(self, rate_per_s: float = RATE_PER_S_DEFAULT, burst: float = RATE_BURST_DEFAULT,
                 buckets_max: int = RATE_BUCKETS_MAX, clock=time.monotonic) -> None:
        if rate_per_s <= 0 or burst < 1:
            raise ValueError("rate must be positive and burst at least 1")
        self.rate_per_s = rate_per_s
        self.burst = burst
        self.buckets_max = buckets_max
        self._clock = clock
        self._buckets: OrderedDict[str, _Bucket] = OrderedDict()

    def take(self, identity: str, cost: float = 1.0) -> float:
        now = self._clock()
        bucket = self._buckets.get(identity)
        if bucket is None:
            bucket = self._buckets[identity] = _Bucket(self.burst, now)
            if len(self._buckets) > self.buckets_max:
                self._buckets.popitem(last=False)
        else:
            self._buckets.move_to_end(identity)
            bucket.tokens = min(self.burst, bucket.tokens + (now - bucket.stamp) * self.rate_per_s)
            bucket.stamp = now
        if bucket.tokens >= cost:
            bucket.tokens -= cost
            return 0.0
        return (cost - bucket.tokens) / self.rate_per_s


def retry_after_header(wait_s: float) -> str:
    """Retry-After is whole seconds (RFC 9110): round up, at least 1."""
    return str(max(1, math.ceil(wait_s)))
