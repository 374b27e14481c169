"""Order book: price levels with intrusive FIFO queues (core room).

A side keeps its levels in a dict keyed by integer ticks plus a sorted list
of the prices with the best last, and caches the best level, so reading the
top of book is O(1). Each level is a doubly
linked list threaded through the orders themselves, so adding at the tail,
removing any order by reference (cancel by id) and consuming from the head
are all O(1) with no per-order allocation beyond the order object.

Nothing here reads a clock, a random source or a hash-ordered container.
"""

from __future__ import annotations

import bisect
from typing import Any, Final, Iterator


from .commands import BUY, GTC, LIMIT, STP_NONE

# Order status values.
PENDING: Final = 0  # a stop waiting in the stop index for its trigger
OPEN: Final = 1  # resting on the book (or in a call phase's market queue), or being matched
DONE: Final = 2  # filled, cancelled or expired
INACTIVE: Final = 3  # a group member waiting for its group (bracket child, conditional order)
TRIGGERED: Final = 4  # a fired stop waiting in the release queue (only inside one apply)
# C statics in the compiled core (no module-dict lookup per call).
insort: Final = bisect.insort
bisect_left: Final = bisect.bisect_left

STATUS_NAMES = ("pending", "open", "done", "inactive", "triggered")


# Every attribute of an Order (export/restore walk them by name).
ORDER_SLOTS = (
    "order_id",
    "client_id",
    "account",
    "symbol",
    "side",
    "kind",
    "price",
    "qty",
    "filled",
    "tif",
    "expire_at",
    "post_only",
    "stp",
    "status",
    "priority_seq",
    "prev",
    "next",
    "level",
    "trigger",
    "trail_amount",
    "trail_percent_e6",
    "activation_price",
    "extreme",
    "trail_group",
    "group",
    "entry_seq",
    "orig_qty",
    "in_call",
)


class Order:
    """A live order. Mutable on purpose: it is the hot-path object.

    ``qty`` is the open (remaining) quantity in lots and ``filled`` the
    cumulative executed quantity. ``prev``/``next`` thread it through its
    price level while it rests.
    """

    __slots__ = ORDER_SLOTS

    def __init__(
        self,
        order_id: Any,
        client_id: str,
        account: str,
        symbol: str,
        side: int,
        kind: int,
        price: int | None,
        qty: int,
        tif: int = GTC,
        expire_at: int | None = None,
        post_only: bool = False,
        stp: int = STP_NONE,
        entry_seq: int = 0,
    ) -> None:
        # An int, held as the Python object: the index, the registry and every
        # event share it (typed int, a compiled core would box it at each use).
        self.order_id: Any = order_id
        self.client_id = client_id
        self.account = account
        self.symbol = symbol
        self.side = side
        self.kind = kind
        self.price = price
        self.qty = qty
        self.filled = 0
        self.tif = tif
        self.expire_at = expire_at
        self.post_only = post_only
        self.stp = stp
        self.status = OPEN
        self.priority_seq = entry_seq
        self.prev: Order | None = None
        self.next: Order | None = None
        self.level: Level | None = None
        self.trigger: int | None = None
        self.trail_amount: int | None = None
        self.trail_percent_e6: int | None = None
        self.activation_price: int | None = None
        self.extreme: int | None = None
        self.trail_group: Any = None  # stops._TrailGroup while a trailing stop waits
        self.group: Any = None  # its OcoGroup, BracketGroup or ConditionalGroup
        self.entry_seq = entry_seq
        self.orig_qty = qty
        self.in_call = False

    def __repr__(self) -> str:  # pragma: no cover - debugging aid
        return (
            f"Order(id={self.order_id}, cid={self.client_id!r}, acct={self.account!r}, "
            f"{'buy' if self.side == BUY else 'sell'} {self.qty}@{self.price}, status={self.status})"
        )


class Level:
    """One price level: a FIFO of orders with cached total quantity and count."""

    __slots__ = ("price", "head", "tail", "qty", "count")

    def __init__(self, price: int) -> None:
        self.price = price
        self.head: Order | None = None
        self.tail: Order | None = None
        self.qty = 0
        self.count = 0

    def append(self, order: Order) -> None:
        """Add ``order`` at the back of the queue. O(1)."""
        tail = self.tail
        order.prev = tail
        order.next = None
        order.level = self
        if tail is None:
            self.head = order
        else:
            tail.next = order
        self.tail = order
        self.qty += order.qty
        self.count += 1

    def unlink(self, order: Order) -> None:
        """Remove ``order`` from the queue (its open qty leaves the level). O(1)."""
        prev = order.prev
        nxt = order.next
        if prev is None:
            self.head = nxt
        else:
            prev.next = nxt
        if nxt is None:
            self.tail = prev
        else:
            nxt.prev = prev
        order.prev = order.next = None
        order.level = None
        self.qty -= order.qty
        self.count -= 1

    def orders(self):
        """Iterate orders in time priority."""
        o = self.head
        while o is not None:
            nxt = o.next
            yield o
            o = nxt


class BookSide:
    """All levels of one side. ``best`` is the cached best level (or None).

    ``levels`` maps price -> level (for lookups only, never iterated for
    order); ``keys`` holds the level prices sorted so that the best is last:
    the price itself on the bid side, its negation on the ask side. Adding
    or removing the best level (the common case) touches the end of the
    list; a level deeper in the book costs one C-level memmove of the keys
    behind it (``bisect``), which beats a balanced tree in Python for books
    of up to tens of thousands of levels.
    """

    __slots__ = ("is_bid", "levels", "keys", "best")

    def __init__(self, is_bid: bool) -> None:
        self.is_bid = is_bid
        self.levels: dict[int, Level] = {}
        self.keys: list[int] = []
        self.best: Level | None = None

    def level_for_insert(self, price: Any) -> Level:
        """The level at ``price`` (an int, passed as its object: the lookup
        keys on it as it is), created if missing. O(1) at the best,
        O(log n + n) deeper."""
        levels = self.levels
        level = levels.get(price)
        if level is None:
            ticks: int = price
            level = Level(ticks)
            levels[price] = level
            key = ticks if self.is_bid else -ticks
            keys = self.keys
            if not keys or key > keys[-1]:
                keys.append(key)
                self.best = level
            else:
                insort(keys, key)
        return level

    def remove_level(self, level: Level) -> None:
        """Drop an empty level and refresh the cached best."""
        price = level.price
        del self.levels[price]
        keys = self.keys
        if self.best is level:
            keys.pop()
            if keys:
                key = keys[-1]
                self.best = self.levels[key if self.is_bid else -key]
            else:
                self.best = None
        else:
            key = price if self.is_bid else -price
            del keys[bisect_left(keys, key)]

    def iter_levels(self) -> Iterator[Level]:
        """Levels from best to worst."""
        levels = self.levels
        if self.is_bid:
            for key in reversed(self.keys):
                yield levels[key]
        else:
            for key in reversed(self.keys):
                yield levels[-key]

    def prices(self) -> list[int]:
        """Level prices, ascending."""
        return list(self.keys) if self.is_bid else [-key for key in reversed(self.keys)]

    def total_orders(self) -> int:
        return sum(level.count for level in self.levels.values())


class Book:
    """The two sides of one instrument."""

    __slots__ = ("bids", "asks")

    def __init__(self) -> None:
        self.bids = BookSide(True)
        self.asks = BookSide(False)

    def side(self, side: int) -> BookSide:
        return self.bids if side == BUY else self.asks

    def opposite(self, side: int) -> BookSide:
        return self.asks if side == BUY else self.bids


def is_limit(order: Order) -> bool:
    return order.kind == LIMIT
