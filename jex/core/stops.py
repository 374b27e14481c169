"""Pending stop orders of one instrument, indexed by trigger (core room).

A trade must not scan every pending stop, so each kind is indexed by the
price at which it fires:

* plain stops (stop, stop_limit) sit in a ``SortedDict`` trigger -> FIFO
  list per side: a trade at ``p`` pops buy stops with trigger <= p (lowest
  first) and sell stops with trigger >= p (highest first). O(log n + k).
* trailing stops waiting for their activation price sit in the same kind of
  index keyed by the activation price (a sell trails up from activation at
  or above it, a buy from activation at or below it).
* active trailing stops are kept in *extreme groups*: every stop in a group
  shares the same extreme (H for sells, L for buys). A trade that ratchets
  the extreme merges all groups it passes into one (smaller groups move into
  the largest, so each stop moves O(log n) times overall). Inside a group,
  stops are sorted by distance, and a global index of each group's nearest
  trigger finds the groups that fire in O(log n + k).

All comparisons are exact integers: a percent distance is held in millionths
of a percent (``trail_percent_e6``) and every trigger is compared in units of
ticks x 10^8 (``SCALE``).
"""

from __future__ import annotations

from sortedcontainers import SortedDict, SortedKeyList, SortedList

from .book import Order
from .commands import BUY, SELL, TRAILING_STOP

SCALE = 100_000_000  # 100 percent in millionths of a percent; ticks are scaled by this


def _effective_scaled(side: int, extreme: int, order: Order) -> int:
    """The trigger of an active trailing stop, in ticks x SCALE."""
    if order.trail_amount is not None:
        offset = order.trail_amount * SCALE
        return extreme * SCALE - offset if side == SELL else extreme * SCALE + offset
    pct = order.trail_percent_e6
    assert pct is not None  # a trailing stop has exactly one distance
    return extreme * (SCALE - pct) if side == SELL else extreme * (SCALE + pct)


class _TrailGroup:
    """Active trailing stops of one side and distance kind sharing one extreme."""

    __slots__ = ("gid", "extreme", "members")

    def __init__(self, gid: int, extreme: int, by_percent: bool) -> None:
        self.gid = gid
        self.extreme = extreme
        if by_percent:
            self.members = SortedKeyList(key=lambda o: (o.trail_percent_e6, o.order_id))
        else:
            self.members = SortedKeyList(key=lambda o: (o.trail_amount, o.order_id))


class _TrailSet:
    """Active trailing stops of one side, by amount or by percent."""

    __slots__ = ("side", "by_percent", "groups", "by_extreme", "nearest", "next_gid")

    def __init__(self, side: int, by_percent: bool) -> None:
        self.side = side
        self.by_percent = by_percent
        self.groups: dict[int, _TrailGroup] = {}  # gid -> group
        self.by_extreme = SortedDict()  # extreme -> group
        self.nearest = SortedList()  # (trigger_scaled, gid): each group's closest trigger
        self.next_gid = 1

    def __len__(self) -> int:
        return len(self.groups)

    def _key(self, group: _TrailGroup) -> tuple[int, int]:
        return (_effective_scaled(self.side, group.extreme, group.members[0]), group.gid)

    def add(self, order: Order, extreme: int) -> None:
        group = self.by_extreme.get(extreme)
        if group is None:
            group = _TrailGroup(self.next_gid, extreme, self.by_percent)
            self.next_gid += 1
            self.groups[group.gid] = group
            self.by_extreme[extreme] = group
        else:
            self.nearest.remove(self._key(group))
        group.members.add(order)
        order.extreme = extreme
        order.trail_group = group
        self.nearest.add(self._key(group))

    def remove(self, order: Order) -> None:
        group: _TrailGroup = order.trail_group
        self.nearest.remove(self._key(group))
        group.members.remove(order)
        order.trail_group = None
        if group.members:
            self.nearest.add(self._key(group))
        else:
            self._drop(group)

    def _drop(self, group: _TrailGroup) -> None:
        del self.groups[group.gid]
        del self.by_extreme[group.extreme]

    def ratchet(self, price: int) -> None:
        """Move every extreme that ``price`` passes to ``price`` (merging groups)."""
        by_extreme = self.by_extreme
        if not by_extreme:
            return
        if self.side == SELL:  # H only rises
            passed = list(by_extreme.irange(maximum=price, inclusive=(True, False)))
        else:  # L only falls
            passed = list(by_extreme.irange(minimum=price, inclusive=(False, True)))
        if not passed:
            return
        groups = [by_extreme[e] for e in passed]
        base = max(groups, key=lambda g: (len(g.members), -g.gid))
        for group in groups:
            self.nearest.remove(self._key(group))
            del by_extreme[group.extreme]
        for group in groups:
            if group is not base:
                for order in group.members:
                    order.trail_group = base
                base.members.update(group.members)
                del self.groups[group.gid]
        existing = by_extreme.get(price)
        if existing is not None:  # merge into the group already at this extreme
            self.nearest.remove(self._key(existing))
            for order in base.members:
                order.trail_group = existing
            existing.members.update(base.members)
            del self.groups[base.gid]
            base = existing
        else:
            base.extreme = price
            by_extreme[price] = base
        for order in base.members:
            order.extreme = price
        self.nearest.add(self._key(base))

    def fire(self, price: int) -> list[tuple[int, Order]]:
        """Pop stops whose trigger ``price`` reaches: [(trigger_scaled, order)]."""
        nearest = self.nearest
        scaled = price * SCALE
        fired: list[tuple[int, Order]] = []
        while nearest:
            key = nearest[-1] if self.side == SELL else nearest[0]
            trigger, gid = key
            if (scaled > trigger) if self.side == SELL else (scaled < trigger):
                break
            nearest.remove(key)
            group = self.groups[gid]
            members = group.members
            while members:
                order = members[0]
                eff = _effective_scaled(self.side, group.extreme, order)
                if (scaled > eff) if self.side == SELL else (scaled < eff):
                    break
                members.pop(0)
                order.trail_group = None
                fired.append((eff, order))
            if members:
                nearest.add(self._key(group))
            else:
                self._drop(group)
        return fired

    def orders(self):
        for group in self.groups.values():
            yield from group.members


class StopBook:
    """All pending stops of one instrument."""

    __slots__ = ("plain", "activation", "waiting", "trailing", "count", "trail_count", "buy_min", "sell_max")

    def __init__(self) -> None:
        # plain[side]: trigger -> [orders in entry order]
        self.plain = (SortedDict(), SortedDict())
        # activation[side]: activation price -> [trailing stops waiting to activate]
        self.activation = (SortedDict(), SortedDict())
        # waiting[side]: trailing stops placed before any trade (start at the first trade)
        self.waiting: tuple[list[Order], list[Order]] = ([], [])
        # trailing[side]: (by amount, by percent)
        self.trailing = ((_TrailSet(BUY, False), _TrailSet(BUY, True)), (_TrailSet(SELL, False), _TrailSet(SELL, True)))
        self.count = 0
        # Fast path for the common trade that fires nothing: trailing stops
        # in any state, and the nearest plain triggers on each side.
        self.trail_count = 0
        self.buy_min: int | None = None
        self.sell_max: int | None = None

    def _refresh_bounds(self) -> None:
        buys, sells = self.plain
        self.buy_min = buys.peekitem(0)[0] if buys else None
        self.sell_max = sells.peekitem(-1)[0] if sells else None

    def __len__(self) -> int:
        return self.count

    # -------------------------------------------------------------- add/remove

    def add(self, order: Order, last: int | None) -> None:
        """Index a pending stop. A trailing stop without an activation price
        (or whose activation is already reached by ``last``) starts tracking
        from ``last``; with no last price it waits for the first trade."""
        self.count += 1
        if order.kind != TRAILING_STOP:
            trigger = order.trigger
            assert trigger is not None  # stop and stop-limit orders have one
            _push(self.plain[order.side], trigger, order)
            if order.side == BUY:
                if self.buy_min is None or trigger < self.buy_min:
                    self.buy_min = trigger
            elif self.sell_max is None or trigger > self.sell_max:
                self.sell_max = trigger
            return
        self.trail_count += 1
        act = order.activation_price
        if act is None:
            if last is None:
                self.waiting[order.side].append(order)
            else:
                self._trail_set(order).add(order, last)
            return
        if last is not None and (last >= act if order.side == SELL else last <= act):
            self._trail_set(order).add(order, last)
        else:
            _push(self.activation[order.side], act, order)

    def remove(self, order: Order) -> None:
        """Drop a pending stop (cancel, expiry, group)."""
        self.count -= 1
        if order.kind != TRAILING_STOP:
            assert order.trigger is not None
            _pull(self.plain[order.side], order.trigger, order)
            if order.trigger == (self.buy_min if order.side == BUY else self.sell_max):
                self._refresh_bounds()
            return
        self.trail_count -= 1
        if order.trail_group is not None:
            self._trail_set(order).remove(order)
        elif order.activation_price is not None and order in self.activation[order.side].get(order.activation_price, ()):
            _pull(self.activation[order.side], order.activation_price, order)
        else:
            self.waiting[order.side].remove(order)

    def _trail_set(self, order: Order) -> _TrailSet:
        return self.trailing[order.side][1 if order.trail_percent_e6 is not None else 0]

    # ------------------------------------------------------------------ trade

    def on_trade(self, price: int) -> list[Order]:
        """Process one trade at ``price``; return the stops it fires, ordered
        buy stops first (lowest trigger first), then sell stops (highest
        first), ties by entry (order id)."""
        if not self.trail_count:
            low, high = self.buy_min, self.sell_max
            if (low is None or price < low) and (high is None or price > high):
                return []
        fired_buy: list[tuple[int, int, Order]] = []
        fired_sell: list[tuple[int, int, Order]] = []
        self._activate(price)
        for side in (BUY, SELL):
            for trail in self.trailing[side]:
                if trail.groups:
                    trail.ratchet(price)
        # Plain stops.
        buys, sells = self.plain
        if buys and buys.peekitem(0)[0] <= price:
            for trigger in list(buys.irange(maximum=price)):
                for order in buys.pop(trigger):
                    fired_buy.append((trigger * SCALE, order.order_id, order))
        if sells and sells.peekitem(-1)[0] >= price:
            for trigger in list(sells.irange(minimum=price, reverse=True)):
                for order in sells.pop(trigger):
                    fired_sell.append((-trigger * SCALE, order.order_id, order))
        plain_fired = len(fired_buy) + len(fired_sell)
        if plain_fired:
            self._refresh_bounds()
        # Active trailing stops.
        for side, out in ((BUY, fired_buy), (SELL, fired_sell)):
            for trail in self.trailing[side]:
                if trail.nearest:
                    for eff, order in trail.fire(price):
                        out.append((eff if side == BUY else -eff, order.order_id, order))
        if not fired_buy and not fired_sell:
            return []
        fired_buy.sort(key=lambda t: (t[0], t[1]))
        fired_sell.sort(key=lambda t: (t[0], t[1]))
        fired = [t[2] for t in fired_buy] + [t[2] for t in fired_sell]
        self.count -= len(fired)
        self.trail_count -= len(fired) - plain_fired
        return fired

    def _activate(self, price: int) -> None:
        """Trailing stops whose activation price this trade reaches start
        tracking with the trade price as their extreme."""
        buys, sells = self.activation  # buy trails activate at p <= act; sell at p >= act
        moved: list[Order] = []
        for waiting in self.waiting:
            if waiting:
                moved.extend(waiting)
                waiting.clear()
        if buys:
            for act in list(buys.irange(minimum=price)):
                moved.extend(buys.pop(act))
        if sells:
            for act in list(sells.irange(maximum=price)):
                moved.extend(sells.pop(act))
        for order in sorted(moved, key=lambda o: o.order_id):
            self._trail_set(order).add(order, price)

    # ---------------------------------------------------------------- reading

    def orders(self):
        """Every pending stop (any order; callers sort)."""
        for index in self.plain + self.activation:
            for bucket in index.values():
                yield from bucket
        for waiting in self.waiting:
            yield from waiting
        for side in self.trailing:
            for trail in side:
                yield from trail.orders()


def _push(index: SortedDict, key: int, order: Order) -> None:
    bucket = index.get(key)
    if bucket is None:
        index[key] = [order]
    else:
        bucket.append(order)


def _pull(index: SortedDict, key: int, order: Order) -> None:
    bucket = index[key]
    bucket.remove(order)
    if not bucket:
        del index[key]


# ------------------------------------------------------------- snapshots


def export_stops(stops: StopBook) -> list:
    """Plain data for a snapshot: every index with order ids in their order."""

    def index(d: SortedDict) -> list:
        return [[key, [o.order_id for o in bucket]] for key, bucket in d.items()]

    trailing = []
    for side in stops.trailing:
        for trail in side:
            groups = [[g.gid, g.extreme, [o.order_id for o in g.members]] for g in trail.groups.values()]
            trailing.append([trail.next_gid, groups])
    return [
        [index(d) for d in stops.plain],
        [index(d) for d in stops.activation],
        [[o.order_id for o in w] for w in stops.waiting],
        trailing,
        stops.count,
    ]


def restore_stops(data: list, orders: dict) -> StopBook:
    """Rebuild a StopBook from ``export_stops`` output and live orders by id."""
    stops = StopBook()
    plain, activation, waiting, trailing, count = data
    for target, rows in zip(stops.plain + stops.activation, plain + activation):
        for key, ids in rows:
            target[key] = [orders[i] for i in ids]
    for target, ids in zip(stops.waiting, waiting):
        target.extend(orders[i] for i in ids)
    sets = [trail for side in stops.trailing for trail in side]
    for trail, (next_gid, groups) in zip(sets, trailing):
        trail.next_gid = next_gid
        for gid, extreme, ids in groups:
            group = _TrailGroup(gid, extreme, trail.by_percent)
            for i in ids:
                order = orders[i]
                order.extreme = extreme
                order.trail_group = group
                group.members.add(order)
            trail.groups[gid] = group
            trail.by_extreme[extreme] = group
            trail.nearest.add(trail._key(group))
    stops.count = count
    stops.trail_count = count - sum(len(b) for d in stops.plain for b in d.values())
    stops._refresh_bounds()
    return stops
