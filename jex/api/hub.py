"""WebSocket fan-out of the durable event stream (api room).

The gateway calls ``Hub.listener`` in its writer thread after each durable
drain; the hub hops onto the event loop and offers each message to the
subscribers of its channel (``trades:<symbol>``, ``book:<symbol>``). So a
subscriber only ever sees events whose commands are already durable.

Each connection has a bounded queue (``WS_QUEUE_MESSAGES_MAX``): when a slow
consumer lets it fill, the oldest messages are dropped and the next message
it gets is ``{"type": "dropped", "count": N}``. Memory per connection is
bounded no matter how slow the reader is; book messages are full snapshots
(top levels with their ``seq``) so a consumer that lost some recovers at the
next one.
"""

from __future__ import annotations

import asyncio
from collections import deque
from typing import Literal

import msgspec

from jex.api.limits import WS_QUEUE_MESSAGES_MAX
from jex.api.service import public_trade
from jex.node.gateway import Gateway, Publication

CHANNELS = ("trades", "book")


class WsRequest(msgspec.Struct, forbid_unknown_fields=True):
    """A client message: subscribe/unsubscribe a channel of a symbol, or ping."""

    op: Literal["subscribe", "unsubscribe", "ping"]
    channel: Literal["trades", "book"] | None = None
    symbol: str | None = None


class Subscriber:
    """One connection's bounded outbound queue."""

    def __init__(self, queue_max: int = WS_QUEUE_MESSAGES_MAX) -> None:
        self.queue_max = queue_max
        self.queue: deque[dict] = deque()
        self.dropped = 0  # dropped since the last notice
        self.dropped_total = 0
        self.channels: set[tuple[str, str]] = set()
        self._wakeup = asyncio.Event()
        self.closed = False

    def offer(self, message: dict) -> None:
        if len(self.queue) >= self.queue_max:
            self.queue.popleft()
            self.dropped += 1
            self.dropped_total += 1
        self.queue.append(message)
        self._wakeup.set()

    async def take(self) -> list[dict]:
        """Wait for messages; return them (a dropped notice first, if any)."""
        while not self.queue and not self.dropped:
            self._wakeup.clear()
            await self._wakeup.wait()
        out: list[dict] = []
        if self.dropped:
            out.append({"type": "dropped", "count": self.dropped})
            self.dropped = 0
        out.extend(self.queue)
        self.queue.clear()
        return out


class Hub:
    """Channel -> subscribers, fed from the gateway's durable publications."""

    def __init__(self, gateway: Gateway, loop: asyncio.AbstractEventLoop) -> None:
        self.gateway = gateway
        self.loop = loop
        self._by_channel: dict[tuple[str, str], set[Subscriber]] = {}
        self.connections = 0
        gateway.add_listener(self.listener)

    def close(self) -> None:
        self.gateway.remove_listener(self.listener)

    def listener(self, publication: Publication) -> None:
        """Writer thread: hand the publication to the event loop."""
        if self._by_channel:
            try:
                self.loop.call_soon_threadsafe(self._deliver, publication)
            except RuntimeError:  # the loop is closed: the server is going down
                pass

    def _deliver(self, publication: Publication) -> None:
        by_channel = self._by_channel
        for event in publication.events:
            if event["type"] == "trade":
                subscribers = by_channel.get(("trades", event["symbol"]))
                if subscribers:
                    message = {"type": "trade", **public_trade(event)}
                    for subscriber in subscribers:
                        subscriber.offer(message)
        for symbol, book in publication.books.items():
            subscribers = by_channel.get(("book", symbol))
            if subscribers:
                message = {"type": "book", **book}
                for subscriber in subscribers:
                    subscriber.offer(message)

    def subscribe(self, subscriber: Subscriber, channel: str, symbol: str) -> bool:
        """Add a subscription; False if it already existed."""
        key = (channel, symbol)
        if key in subscriber.channels:
            return False
        subscriber.channels.add(key)
        members = self._by_channel.setdefault(key, set())
        members.add(subscriber)
        if channel == "book" and len(members) == 1:
            self.gateway.watch_book(symbol)
        return True

    def unsubscribe(self, subscriber: Subscriber, channel: str, symbol: str) -> bool:
        key = (channel, symbol)
        if key not in subscriber.channels:
            return False
        subscriber.channels.discard(key)
        members = self._by_channel.get(key)
        if members is not None:
            members.discard(subscriber)
            if not members:
                del self._by_channel[key]
                if channel == "book":
                    self.gateway.unwatch_book(symbol)
        return True

    def drop(self, subscriber: Subscriber) -> None:
        """Forget a closed connection's subscriptions."""
        for channel, symbol in list(subscriber.channels):
            self.unsubscribe(subscriber, channel, symbol)
        subscriber.closed = True
