"""Triggered and contingent orders: OCO, brackets, conditionals (core room).

A layer of ``Engine`` (see base.py): the groups and how they react to their members'
fills, endings and triggers, and the release queue that turns triggered
stops, bracket children and conditional orders into incoming orders after
the order that caused them has finished (market-rules §5.4, §6).

Reactions that only *remove or shrink* orders (an OCO sibling cancelled, a
bracket child reduced) happen at once, inside the match that caused them.
Reactions that *add* orders to a book (a fired stop, a bracket's children,
a conditional's order) are queued and released one at a time.
"""

from __future__ import annotations

from . import commands as C
from .base import EngineBase, InstrumentState, shape_problem
from .book import DONE, INACTIVE, OPEN, PENDING, TRIGGERED, Order
from .commands import BUY, FOK, GTC, IOC, LIMIT, MARKET, SELL, STOP, STOP_LIMIT
from .errors import GroupError
from .events import Accepted, Amended, Rejected, Triggered

RELEASE_STOP = 0
RELEASE_BRACKET = 1
RELEASE_CONDITIONAL = 2


def _live(order: Order) -> bool:
    return order.status != DONE


class OcoGroup:
    """Two legs, one limit and one stop; see docs/semantics.md §9."""

    __slots__ = ("group_id", "client_id", "account", "symbol", "mode", "legs")

    def __init__(self, group_id: int, client_id: str, account: str, symbol: str, mode: int) -> None:
        self.group_id = group_id
        self.client_id = client_id
        self.account = account
        self.symbol = symbol
        self.mode = mode
        self.legs: list[Order] = []

    def members(self) -> list[Order]:
        return self.legs

    def check(self, engine) -> None:
        _check_members(self, engine)


class BracketGroup:
    """Entry + take-profit + stop-loss; see docs/semantics.md §10."""

    __slots__ = ("group_id", "client_id", "account", "symbol", "entry", "tp", "sl", "activation", "active", "queued", "closed")

    def __init__(self, group_id: int, client_id: str, account: str, symbol: str, activation: int) -> None:
        self.group_id = group_id
        self.client_id = client_id
        self.account = account
        self.symbol = symbol
        self.activation = activation
        self.active = False  # children released
        self.queued = False  # activation waiting in the release queue
        self.closed = 0  # lots the children have filled (position closed)
        # The members are created right after the group (they need its id).
        self.entry: Order
        self.tp: Order
        self.sl: Order

    def members(self) -> list[Order]:
        return [self.entry, self.tp, self.sl]

    def check(self, engine) -> None:
        _check_members(self, engine)
        open_position = self.entry.filled - self.closed
        for child in (self.tp, self.sl):
            if _live(child):
                if not self.active:
                    _require(child.status == INACTIVE and child.qty == 0, f"bracket {self.group_id} child active early")
                else:
                    _require(child.qty <= open_position, f"bracket {self.group_id} child exceeds the filled entry")


class ConditionalGroup:
    """An order waiting for a condition tree; see docs/semantics.md §11."""

    __slots__ = ("group_id", "client_id", "account", "when", "order", "symbols")

    def __init__(self, group_id: int, client_id: str, account: str, when: C.Condition, symbols: list[str]) -> None:
        self.group_id = group_id
        self.client_id = client_id
        self.account = account
        self.when = when
        self.symbols = symbols
        self.order: Order  # created right after the group

    def members(self) -> list[Order]:
        return [self.order]

    def check(self, engine) -> None:
        _check_members(self, engine)
        _require(self.order.status == INACTIVE, f"conditional {self.group_id} order not inactive")
        for symbol in self.symbols:
            _require(engine.watch.get(symbol, {}).get(self.group_id) is self, f"conditional {self.group_id} not watched")


def _require(condition: bool, what: str) -> None:
    if not condition:
        raise GroupError(what)


def _check_members(group, engine) -> None:
    members = group.members()
    _require(any(_live(o) for o in members), f"group {group.group_id} kept with no live member")
    for order in members:
        _require(order.group is group, f"group {group.group_id} member {order.order_id} not linked")
        if _live(order):
            _require(engine.orders.get(order.order_id) is order, f"group member {order.order_id} not indexed")


def _symbols_of(node: C.Condition, out: list[str]) -> None:
    if isinstance(node, C.Leaf):
        if node.symbol not in out:
            out.append(node.symbol)
    else:
        for term in node.terms:
            _symbols_of(term, out)


CONDITION_DEPTH_MAX = 8  # same limits as the edge (core/codec.py)
CONDITION_LEAVES_MAX = 64


def _condition_problem(node, depth: int, leaves: list[int]) -> str | None:
    """Why a condition tree is malformed (engine re-check for embedders), or None."""
    if depth > CONDITION_DEPTH_MAX:
        return f"conditions nest at most {CONDITION_DEPTH_MAX} deep"
    if isinstance(node, C.Leaf):
        leaves[0] += 1
        if leaves[0] > CONDITION_LEAVES_MAX:
            return f"at most {CONDITION_LEAVES_MAX} conditions per tree"
        if node.field not in range(len(C.FIELD_NAMES)) or node.op not in range(len(C.OP_NAMES)):
            return "condition field or operator out of range"
        if node.value < 0:
            return "condition value must not be negative"
        return None
    if isinstance(node, (C.All, C.Any_)):
        if not node.terms:
            return "an all/any needs at least one term"
        for term in node.terms:
            problem = _condition_problem(term, depth + 1, leaves)
            if problem is not None:
                return problem
        return None
    return "unknown condition node"


_COMPARE = (
    lambda a, b: a > b,
    lambda a, b: a >= b,
    lambda a, b: a < b,
    lambda a, b: a <= b,
    lambda a, b: a == b,
)


class ContingentMixin(EngineBase):
    """Groups, triggers and the release queue (a layer of ``Engine``)."""

    # ------------------------------------------------------------ entry

    def _new_group_id(self, client_id: str, account: str, symbol: str) -> int:
        group_id = self.next_id
        self.next_id = group_id + 1
        self.register(account, client_id, group_id)
        self._events.append(Accepted(self.seq_obj, group_id, client_id, account, symbol))
        return group_id

    def _duplicate(self, account: str, client_ids: list[str]) -> str | None:
        if len(set(client_ids)) != len(client_ids):
            return "client ids within a group must differ"
        for cid in client_ids:
            if self.registered(account, cid) is not None:
                return f"client_id {cid} was already used"
        return None

    def _group_member_problem(self, cmd, members: list[C.NewOrder], symbol: str) -> tuple[str, str] | None:
        for member in members:
            if member.account != cmd.account or member.symbol != symbol:
                return ("invalid_order", "group members must use the group's account and symbol")
        return None

    def _on_oco(self, cmd: C.Oco) -> None:
        inst = self.instruments.get(cmd.symbol)
        if inst is None:
            self._reject(cmd.client_id, cmd.account, "unknown_symbol", f"unknown symbol {cmd.symbol}")
            return
        legs = list(cmd.legs)
        dup = self._duplicate(cmd.account, [cmd.client_id] + [leg.client_id for leg in legs])
        if dup is not None:
            self._reject(cmd.client_id, cmd.account, "duplicate_client_id", dup)
            return
        problem = self._group_member_problem(cmd, legs, cmd.symbol) or self._oco_problem(legs, inst, cmd.mode)
        if problem is not None:
            self._reject(cmd.client_id, cmd.account, problem[0], problem[1])
            return
        mode = inst.config.oco_mode if cmd.mode is None else cmd.mode
        group = OcoGroup(self._new_group_id(cmd.client_id, cmd.account, cmd.symbol), cmd.client_id, cmd.account, cmd.symbol, mode)
        self.groups[group.group_id] = group
        for leg in legs:
            order = self._create_order(leg, INACTIVE)
            order.group = group
            group.legs.append(order)
        # The stop leg waits first, so that a fill of the limit leg on entry finds it.
        for order in sorted(group.legs, key=lambda o: o.kind == LIMIT):
            if order.status == INACTIVE:
                self._submit(order, inst)

    def _oco_problem(self, legs: list[C.NewOrder], inst: InstrumentState, mode: int | None = None) -> tuple[str, str] | None:
        if mode is not None and mode not in range(len(C.OCO_MODE_NAMES)):
            return ("invalid_order", f"OCO mode {mode} out of range")
        for leg in legs:
            problem = shape_problem(leg)
            if problem is not None:
                return ("invalid_order", problem)
        kinds = sorted(leg.kind for leg in legs)
        if kinds not in ([LIMIT, STOP], [LIMIT, STOP_LIMIT]):
            return ("oco_legs_invalid", "an OCO needs one limit leg and one stop or stop-limit leg")
        if legs[0].side != legs[1].side or legs[0].qty != legs[1].qty:
            return ("oco_legs_invalid", "OCO legs must have the same side and quantity")
        for leg in legs:
            leg_problem = self._order_problem(leg, inst)
            if leg_problem is not None:
                return leg_problem
        limit = next(leg for leg in legs if leg.kind == LIMIT)
        stop = next(leg for leg in legs if leg.kind != LIMIT)
        price, trigger = limit.price, stop.trigger
        assert price is not None and trigger is not None  # shape_problem checked both
        last = inst.last
        if limit.side == SELL:
            ok = price > trigger and (last is None or price > last > trigger)
            rule = "sell: limit price > last > stop trigger"
        else:
            ok = price < trigger and (last is None or price < last < trigger)
            rule = "buy: limit price < last < stop trigger"
        if not ok:
            return ("oco_price_relationship", f"OCO prices breach {rule} (limit {price}, trigger {trigger}, last {last})")
        return None

    def _on_bracket(self, cmd: C.Bracket) -> None:
        inst = self.instruments.get(cmd.symbol)
        if inst is None:
            self._reject(cmd.client_id, cmd.account, "unknown_symbol", f"unknown symbol {cmd.symbol}")
            return
        entry = cmd.entry
        tp_cid, sl_cid = f"{cmd.client_id}/tp", f"{cmd.client_id}/sl"
        dup = self._duplicate(cmd.account, [cmd.client_id, entry.client_id, tp_cid, sl_cid])
        if dup is not None:
            self._reject(cmd.client_id, cmd.account, "duplicate_client_id", dup)
            return
        problem = self._group_member_problem(cmd, [entry], cmd.symbol) or self._bracket_problem(cmd, inst)
        if problem is not None:
            self._reject(cmd.client_id, cmd.account, problem[0], problem[1])
            return
        group = BracketGroup(
            self._new_group_id(cmd.client_id, cmd.account, cmd.symbol), cmd.client_id, cmd.account, cmd.symbol, cmd.activation
        )
        self.groups[group.group_id] = group
        exit_side = SELL if entry.side == BUY else BUY
        tp_cmd = C.NewOrder(cmd.account, tp_cid, cmd.symbol, exit_side, LIMIT, entry.qty, cmd.tp_price, stp=entry.stp)
        sl_kind = STOP if cmd.sl_price is None else STOP_LIMIT
        sl_cmd = C.NewOrder(
            cmd.account, sl_cid, cmd.symbol, exit_side, sl_kind, entry.qty, cmd.sl_price, cmd.sl_trigger, stp=entry.stp
        )
        group.entry = self._create_order(entry, INACTIVE)
        group.tp = self._create_order(tp_cmd, INACTIVE)
        group.sl = self._create_order(sl_cmd, INACTIVE)
        for order in group.members():
            order.group = group
        group.tp.qty = group.sl.qty = 0
        self._submit(group.entry, inst)

    def _bracket_problem(self, cmd: C.Bracket, inst: InstrumentState) -> tuple[str, str] | None:
        entry = cmd.entry
        if cmd.activation not in range(len(C.ACTIVATION_NAMES)):
            return ("invalid_order", f"bracket activation {cmd.activation} out of range")
        if entry.kind not in (LIMIT, MARKET):
            return ("bracket_entry_invalid", "a bracket entry must be a limit or market order")
        problem = self._order_problem(entry, inst)
        if problem is not None:
            return problem
        if cmd.tp_price <= 0 or cmd.sl_trigger <= 0 or (cmd.sl_price is not None and cmd.sl_price <= 0):
            return ("invalid_order", "bracket prices must be positive")
        reference = entry.price if entry.kind == LIMIT else inst.last
        sl, tp = cmd.sl_trigger, cmd.tp_price
        if entry.side == BUY:
            ok = sl < tp and (reference is None or sl < reference < tp)
            rule = "buy: stop-loss < entry < take-profit"
        else:
            ok = tp < sl and (reference is None or tp < reference < sl)
            rule = "sell: take-profit < entry < stop-loss"
        if not ok:
            return ("bracket_price_relationship", f"bracket prices breach {rule}")
        return None

    def _on_conditional(self, cmd: C.Conditional) -> None:
        order_cmd = cmd.order
        inst = self.instruments.get(order_cmd.symbol)
        if inst is None:
            self._reject(cmd.client_id, cmd.account, "unknown_symbol", f"unknown symbol {order_cmd.symbol}")
            return
        malformed = _condition_problem(cmd.when, 1, [0])
        if malformed is not None:
            self._reject(cmd.client_id, cmd.account, "condition_invalid", malformed)
            return
        symbols: list[str] = []
        _symbols_of(cmd.when, symbols)
        unknown = [s for s in symbols if s not in self.instruments]
        if unknown:
            self._reject(cmd.client_id, cmd.account, "condition_invalid", f"condition on unknown symbol {unknown[0]}")
            return
        dup = self._duplicate(cmd.account, [cmd.client_id, order_cmd.client_id])
        if dup is not None:
            self._reject(cmd.client_id, cmd.account, "duplicate_client_id", dup)
            return
        if order_cmd.account != cmd.account:
            self._reject(cmd.client_id, cmd.account, "invalid_order", "the order must use the group's account")
            return
        problem = shape_problem(order_cmd)
        if problem is None and order_cmd.tif == C.GTD and order_cmd.expire_at is not None and order_cmd.expire_at <= self.ts:
            problem = f"expire_at {order_cmd.expire_at} is not after the command time"
        if problem is not None:
            self._reject(cmd.client_id, cmd.account, "invalid_order", problem)
            return
        group = ConditionalGroup(
            self._new_group_id(cmd.client_id, cmd.account, order_cmd.symbol), cmd.client_id, cmd.account, cmd.when, symbols
        )
        self.groups[group.group_id] = group
        group.order = self._create_order(order_cmd, INACTIVE)
        group.order.group = group
        for symbol in symbols:
            self.watch.setdefault(symbol, {})[group.group_id] = group

    # -------------------------------------------------------- reactions

    def _on_member_fill(self, order: Order, qty: int) -> None:
        group = order.group
        if isinstance(group, OcoGroup):
            other = group.legs[1] if group.legs[0] is order else group.legs[0]
            if _live(other):
                mode = group.mode
                if mode == C.OCO_CANCEL_ON_ANY_FILL or (mode == C.OCO_CANCEL_ON_FULL_FILL and order.qty == 0):
                    self._end(other, "oco", cascade=False)
                elif mode == C.OCO_REDUCE:
                    self._reduce_member(other, qty, "oco")
            self._maybe_close(group)
        elif isinstance(group, BracketGroup):
            if order is group.entry:
                if group.active:
                    self._grow_children(group, qty)
                elif not group.queued and (group.activation == C.ACTIVATE_FIRST_FILL or order.qty == 0):
                    group.queued = True
                    self._releases.append((RELEASE_BRACKET, group))
            else:
                group.closed += qty
                other = group.sl if order is group.tp else group.tp
                if _live(other) and other.status != INACTIVE:
                    self._reduce_member(other, qty, "bracket")
            self._maybe_close(group)

    def _reduce_member(self, order: Order, qty: int, reason: str) -> None:
        """One-updates-other: cut ``order`` by ``qty``; at zero it ends (no cascade)."""
        if order.qty <= qty:
            self._end(order, reason, cascade=False)
        else:
            self._shrink(order, qty)
            self._events.append(Amended(self.seq_obj, order.order_id, order.client_id, order.qty, order.price, order.symbol))

    def _grow_children(self, group: BracketGroup, qty: int) -> None:
        """A further entry fill: each live child grows by ``qty``; a resting
        take-profit that grows loses its time priority."""
        inst = self.instruments[group.symbol]
        for child in (group.tp, group.sl):
            if not _live(child):
                continue
            if child.level is not None:
                self._unrest(child, inst)
                child.qty += qty
                child.priority_seq = self.seq
                self._rest(child, inst)
            else:
                child.qty += qty
            self._events.append(Amended(self.seq_obj, child.order_id, child.client_id, child.qty, child.price, child.symbol))

    def _on_member_end(self, order: Order, reason: str, cascade: bool) -> None:
        group = order.group
        if isinstance(group, OcoGroup):
            if cascade:
                for leg in group.legs:
                    if _live(leg):
                        self._end(leg, "oco", cascade=False)
        elif isinstance(group, BracketGroup):
            if order is group.entry:
                if not cascade:
                    pass  # the group itself is ending its members
                elif order.filled == 0:
                    for child in (group.tp, group.sl):
                        if _live(child):
                            self._end(child, "bracket", cascade=False)
                elif not group.active and not group.queued:
                    group.queued = True
                    self._releases.append((RELEASE_BRACKET, group))
            elif cascade:
                for member in group.members():
                    if _live(member):
                        self._end(member, "bracket", cascade=False)
        elif isinstance(group, ConditionalGroup):
            self._unwatch(group)
        self._maybe_close(group)

    def _on_stop_fired(self, order: Order) -> None:
        """A stop's trigger was reached by a trade: queue its release."""
        order.status = TRIGGERED
        self._releases.append((RELEASE_STOP, order))
        group = order.group
        if isinstance(group, OcoGroup) and group.mode != C.OCO_REDUCE:
            for leg in group.legs:
                if leg is not order and _live(leg):
                    self._end(leg, "oco", cascade=False)
            self._maybe_close(group)

    def _cancel_group(self, group) -> None:
        for order in group.members():
            if _live(order):
                self._end(order, "user", cascade=False)
        if isinstance(group, ConditionalGroup):
            self._unwatch(group)
        self._maybe_close(group)

    def _maybe_close(self, group) -> None:
        """Drop ``group`` once every member is done, and unlink its members
        from it: the group keeps its members (the caller may still read them)
        but nothing points back, so the closed group and its done members are
        freed by reference counting alone, not left as a cycle that only the
        collector could free (never, once frozen: snapshots/gcpolicy.py).
        Only live members' links are read for what they decide, and those are
        untouched: a group closes when its last member is done. ``_fill`` and
        the uncross read a member's ``group`` again after retiring it; when
        that closed the group they skip ``_on_member_fill``, which would have
        found no live member to end, reduce, grow or release."""
        if group.group_id in self.groups and not any(_live(o) for o in group.members()):
            del self.groups[group.group_id]
            for order in group.members():
                order.group = None

    def _unwatch(self, group: ConditionalGroup) -> None:
        for symbol in group.symbols:
            watchers = self.watch.get(symbol)
            if watchers is not None:
                watchers.pop(group.group_id, None)
                if not watchers:
                    del self.watch[symbol]

    # ------------------------------------------------------ conditionals

    def _evaluate_conditionals(self, watchers: dict) -> None:
        """After a trade: release every watching conditional whose tree holds."""
        for group in list(watchers.values()):
            if group.group_id in self.groups and group.order.status == INACTIVE and self._holds(group.when):
                self._unwatch(group)
                self._releases.append((RELEASE_CONDITIONAL, group))

    def _holds(self, node: C.Condition) -> bool:
        if isinstance(node, C.Leaf):
            inst = self.instruments[node.symbol]
            value = inst.last if node.field == C.FIELD_LAST else inst.volume
            return value is not None and _COMPARE[node.op](value, node.value)
        if isinstance(node, C.All):
            return all(self._holds(term) for term in node.terms)
        return any(self._holds(term) for term in node.terms)

    # ---------------------------------------------------------- releases

    def _drain_releases(self) -> None:
        """Release queued orders one at a time until nothing is left."""
        releases = self._releases
        while releases:
            code, item = releases.popleft()
            if code == RELEASE_STOP:
                self._release_stop(item)
            elif code == RELEASE_BRACKET:
                self._activate_bracket(item)
            else:
                self._release_conditional(item)

    def _release_stop(self, order: Order) -> None:
        if order.status != TRIGGERED:
            return
        self._events.append(Triggered(self.seq_obj, order.order_id, order.client_id, order.symbol))
        if order.kind == STOP_LIMIT:
            order.kind = LIMIT
        else:
            order.kind = MARKET
            order.tif = IOC
        order.status = OPEN
        order.priority_seq = self.seq  # it enters the book now
        self._process_incoming(order, self.instruments[order.symbol])

    def _release_problem(self, order: Order, inst: InstrumentState) -> str | None:
        """Why a released group member cannot be placed now, if it cannot."""
        if inst.in_call and (order.tif in (IOC, FOK) and order.kind != MARKET or order.tif == FOK or order.post_only):
            return f"{order.symbol} is in a call phase"
        last, trigger = inst.last, order.trigger
        if order.kind in (STOP, STOP_LIMIT) and inst.config.stop_entry_check and last is not None and trigger is not None:
            if (last >= trigger) if order.side == BUY else (last <= trigger):
                return f"last price {last} already reached the trigger {trigger}"
        return None

    def _activate_bracket(self, group: BracketGroup) -> None:
        group.queued = False
        if group.active or group.group_id not in self.groups:
            return
        target = group.entry.filled - group.closed
        if target <= 0:
            return
        group.active = True
        inst = self.instruments[group.symbol]
        sl, tp = group.sl, group.tp
        if sl.status == INACTIVE:
            sl.qty = target
            self._events.append(Triggered(self.seq_obj, sl.order_id, sl.client_id, sl.symbol))
            problem = self._release_problem(sl, inst)
            if problem is not None:
                self._events.append(Rejected(self.seq_obj, sl.client_id, sl.account, "child_rejected", problem))
                self._end(sl, "bracket", cascade=True)
                return
            sl.priority_seq = self.seq
            self._submit(sl, inst)
        if tp.status == INACTIVE:
            tp.qty = target
            self._events.append(Triggered(self.seq_obj, tp.order_id, tp.client_id, tp.symbol))
            tp.priority_seq = self.seq
            self._submit(tp, inst)

    def _release_conditional(self, group: ConditionalGroup) -> None:
        order = group.order
        if order.status != INACTIVE or group.group_id not in self.groups:
            return
        del self.groups[group.group_id]
        order.group = None
        self._events.append(Triggered(self.seq_obj, order.order_id, order.client_id, order.symbol))
        inst = self.instruments[order.symbol]
        problem = self._release_problem(order, inst)
        if problem is not None:
            self._events.append(Rejected(self.seq_obj, order.client_id, order.account, "child_rejected", problem))
            self._end(order, "condition")
            return
        order.priority_seq = self.seq
        self._submit(order, inst)


__all__ = ["ContingentMixin", "OcoGroup", "BracketGroup", "ConditionalGroup", "GTC", "PENDING"]
