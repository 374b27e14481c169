"""A deliberately naive reference engine: the oracle for ``jex.core.Engine``.

Tests room. This module is written from ``docs/semantics.md`` and
``../shared/spec/market-rules.md`` alone (plus the command/event Structs of
``jex/core/commands.py`` and ``jex/core/events.py`` and the reason codes of
``jex/core/reasons.py``), never from the fast engine's source, so that the two
implementations can only agree by both following the written rules.

Clarity over speed on purpose: every order ever accepted lives in one plain
list (and the live ones in another); each instrument keeps one plain list of
resting orders and one of call-phase market orders; the best price
and the next maker are found by sorting or scanning on every access; all
pending stops are scanned on every trade; a trailing stop keeps the list of
every trade price since its activation and takes max()/min() of it; the
auction curve is computed by brute force at every candidate price; VPIN is
recomputed from the full list of trades of the instrument every time it is
asked for. There is no caching, no sorted container and no linked list.

Covered: all of docs/semantics.md §1-§16 (instruments FIFO and pro-rata,
limit/market/stop/stop-limit/trailing orders, STP, post-only, FOK, GTD,
cancel/replace, OCO, brackets, conditionals, call auctions, VPIN and stats),
except the BVC VPIN classification, which semantics.md only names (it raises
``NotImplementedError``).

Readings chosen where the documents leave room. Entries marked [fast] are
places where the first reading differed from the fast engine's and the
documents do not decide between them, so the reference follows the fast
engine; they should be settled in docs/semantics.md (see also the docstring of
``tests/test_reference_oracle_contingent.py``):

§1-§8 (from the first part):
- ``rejected`` events carry the command's own ``client_id`` and ``account``
  (``None``/``None`` for ``instrument`` and ``auction``); the ``message`` text
  is not specified and is not compared.
- Only GTD orders expire; an ``expire_at`` on another tif is ignored.
- A replace is checked for its target first (``unknown_order``), then for its
  structure (``invalid_order``).
- An order whose ``side``, ``tif``, ``stp`` or ``kind`` is outside its enum is
  structurally invalid (``invalid_order``).

§9 stops (structural checks are not listed in §3 for the stop kinds):
- stop: ``trigger`` > 0, no ``price``; stop_limit: ``trigger`` > 0 and
  ``price`` > 0; trailing_stop: no ``price``, exactly one of ``trail_amount``
  (> 0) and ``trail_percent_e6`` (0 < pct < 10^8); all of them GTC or GTD.
  Other fields (a ``trigger`` on a trailing stop or limit order,
  ``activation_price``) are not checked. [fast, except that the fast engine
  accepts a zero trail distance]
- Event order around a trade (§9, §10 and §11 each say "after the trade" /
  "at once" without ordering their effects against each other): the
  ``trade`` event; then the stops fired by that trade (each OCO stop leg's
  "firing cancels the limit leg" happening as it fires); then the
  conditionals (by group id); then the fill effects of the groups of the
  maker and then of the taker (OCO cancel/reduce, bracket growth and
  one-updates-other, a bracket activation joining the release queue). An
  auction trade has no evaluation of its own: its fill effects (buyer's, then
  seller's) come at once, and the stops/conditionals see p* after the uncross.
  [fast]
- A triggered stop that was cancelled before its release (an OCO leg reduced
  to 0 in ``reduce`` mode) is skipped at release.
- Release queue items created by GTD expiry (bracket activation after an
  entry with a fill expired) are released after the command, like everything
  else.

§10-§12 groups:
- OCO/bracket/conditional duplicate checks use the group's account.
- Bracket checks: unknown_symbol, duplicate_client_id, invalid_order (entry
  account/symbol differ from the group's), bracket_entry_invalid, invalid_order
  (the entry fails §3's structural checks), the §3 entry checks, invalid_order
  (a price not positive, an activation code out of range),
  bracket_price_relationship. §11 does not place bracket_entry_invalid.
  [fast]
- An OCO ``mode`` out of range is ``invalid_order``; a condition leaf with a
  field or operator out of range, or an empty all/any, is
  ``condition_invalid`` (reasons.py: "or is malformed").
- OCO entry checks (expire_in_past, call_phase_tif, stop_already_triggered)
  are run leg by leg in the given order, each leg's checks in §3 order.
- "Ends unfilled" (OCO leg, bracket child/entry) means "ends with a
  remainder for its own reason", i.e. any cancel other than oco/bracket/
  condition; a full fill is not an end "unfilled".
- Group consequences of an order's end are emitted right after that order's
  ``cancelled`` event; a bracket child ending for its own reason cancels the
  other live members in id order (entry, TP, SL), the order the members were
  accepted in (§11 names "the other child and a live entry" without an order);
  so does an SL refused at activation ("cancels the TP (and a live entry)").
  [fast]
- In OCO ``reduce`` mode and in bracket one-updates-other, a sibling reduced
  to 0 is cancelled with ``remaining_qty`` = its open qty before the cut.
- A resting order that is reduced (OCO reduce, bracket OUO) keeps its place.
- An OCO or bracket group is live (can be cancelled by its id / client id)
  while any member is live; a conditional group only while its order waits
  (once released, the order is on its own). [fast]

§13 pro-rata: TOP is taken only by an order that *rests* at a price better
than its side's best (or on an empty side); an order that betters the market
and trades away without resting does not take (or remove) TOP. A replace that
loses priority loses TOP, and may take it again when it rests if it betters the
side's best without itself. Residual "largest" is by open qty at the level
before the allocation. FOK simulation in a pro-rata level with own orders and a
mode other than expire_maker stops before that level.

§14 auctions:
- The auction maker ("the order that entered earlier") is the order that
  entered the book earlier: its acceptance, or a replace that loses
  priority, the growth of a resting bracket TP, or its release (stop,
  conditional, bracket activation) counts as its entry. Ties by order id.
- Unfilled market orders are each matched and then cancelled (``auction``),
  one after the other.
- With nothing crossing the ``auction`` event has surplus 0.
- The market-only rule needs a reference price (without one the ordinary
  rules apply; with no limit order at all there is then no uncross) and
  clamps into [best bid, best ask], the low bound first.
- A call-phase market order is live with status "open" but is not on the
  book: a replace naming it is ``unknown_order``, a cancel works.

§15: a tick-rule trade at the same price as the previous trade takes the
class the previous trade was counted with (its aggressor side if it had one);
a tick-rule trade with no previous trade is a buy.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from fractions import Fraction

from jex.core import commands as C
from jex.core import events as E
from jex.core.reasons import REJECT_REASONS

STOP_KINDS = (C.STOP, C.STOP_LIMIT, C.TRAILING_STOP)
STATUS_CODES = {"pending": 0, "open": 1, "done": 2, "inactive": 3, "triggered": 4}
LIVE = ("pending", "open", "inactive", "triggered", "incoming")
E8 = 10**8


@dataclass(eq=False)  # identity: "in" and remove() on the plain lists find this very order
class RefOrder:
    """One order. ``open_qty`` is what is left to trade."""

    order_id: int
    client_id: str
    account: str
    symbol: str
    side: int
    kind: int
    price: int | None  # None for a market order and a stop-market
    open_qty: int
    tif: int
    expire_at: int | None
    post_only: bool
    stp: int
    priority: tuple = (0, 0)  # (seq, n): when it (last) got time priority
    entered: int = 0  # seq of its acceptance or of its last priority-losing replace (auction maker rule)
    trigger: int | None = None
    trail_amount: int | None = None
    trail_percent_e6: int | None = None
    activation_price: int | None = None
    # pending (stop index) | open (book or call-phase market queue) | inactive |
    # triggered (on the release queue) | incoming (being matched) | done
    status: str = "new"
    filled: int = 0
    group: "RefGroup | None" = None
    role: str | None = None  # oco: "limit"/"stop"; bracket: "entry"/"tp"/"sl"; conditional: "order"
    tracking: bool = False  # trailing stop: activated
    trail_prices: list = field(default_factory=list)  # every trade price since activation


@dataclass(eq=False)
class RefGroup:
    group_id: int
    kind: str  # "oco" | "bracket" | "conditional"
    client_id: str
    account: str
    symbol: str
    members: list
    oco_mode: int = C.OCO_CANCEL_ON_ANY_FILL
    activation: int = C.ACTIVATE_FIRST_FILL
    activation_queued: bool = False
    activated: bool = False
    when: object = None

    def member(self, role: str) -> RefOrder:
        return next(o for o in self.members if o.role == role)


@dataclass(eq=False)
class RefInstrument:
    symbol: str
    tick: str
    lot: str
    config: C.Instrument
    last: int | None = None
    volume: int = 0
    trade_count: int = 0
    orders: list = field(default_factory=list)  # every resting order of both sides, in no particular order
    phase: str = "continuous"
    call_market: list = field(default_factory=list)  # market orders waiting in a call phase
    top: dict = field(default_factory=lambda: {C.BUY: None, C.SELL: None})  # pro-rata TOP order id per side
    trades: list = field(default_factory=list)  # (price, qty, aggressor side or None), every trade

    @property
    def post_only_mode(self) -> int:
        return self.config.post_only_mode


def live(order: RefOrder | None) -> bool:
    return order is not None and order.status in LIVE


class ReferenceEngine:
    """Naive, obviously-correct model of docs/semantics.md."""

    def __init__(self, known_quirks: frozenset[str] = frozenset()) -> None:
        # Deviations of the fast engine from the documents that this engine may be asked to imitate, so that
        # a long random stream can go on past a known (and separately reproduced) disagreement:
        # "vpin_tick_same_price" - see test_xfail_vpin_auction_trade_at_unchanged_price.
        self.known_quirks = known_quirks
        self.instruments: dict[str, RefInstrument] = {}
        self.registry: dict[tuple[str, str], int] = {}
        self.next_order_id = 1
        self.seq = 0
        self.ts = 0
        self.all_orders: list[RefOrder] = []  # every accepted order, live or dead
        self.live_orders: list[RefOrder] = []  # the live ones (in acceptance order), scanned linearly
        self.groups: list[RefGroup] = []  # every accepted group
        self.releases: list[tuple[str, object]] = []  # the release queue of the current command
        self.events: list = []
        self.cur_seq = 0
        self.cur_ts = 0
        self.priority_counter = 0

    # ------------------------------------------------------------------ reads

    def _side_sorted(self, inst: RefInstrument, side: int) -> list[RefOrder]:
        """Resting orders of one side, best price first, then time priority."""
        same_side = [o for o in inst.orders if o.side == side]
        if side == C.BUY:
            return sorted(same_side, key=lambda o: (-o.price, o.priority))
        return sorted(same_side, key=lambda o: (o.price, o.priority))

    def _levels(self, inst: RefInstrument, side: int) -> list[list[RefOrder]]:
        levels: list[list[RefOrder]] = []
        for order in self._side_sorted(inst, side):
            if levels and levels[-1][0].price == order.price:
                levels[-1].append(order)
            else:
                levels.append([order])
        return levels

    def book(self, symbol: str) -> dict | None:
        inst = self.instruments.get(symbol)
        if inst is None:
            return None

        def side_levels(side: int) -> list[dict]:
            return [
                {"price": lvl[0].price, "qty": sum(o.open_qty for o in lvl), "orders": len(lvl)}
                for lvl in self._levels(inst, side)
            ]

        return {
            "symbol": symbol,
            "seq": self.seq,
            "last": inst.last,
            "bids": side_levels(C.BUY),
            "asks": side_levels(C.SELL),
        }

    def queue(self, symbol: str, side: int) -> list[list[tuple[int, int]]]:
        inst = self.instruments[symbol]
        return [[(o.order_id, o.open_qty) for o in lvl] for lvl in self._levels(inst, side)]

    def stats(self, symbol: str) -> dict | None:
        inst = self.instruments.get(symbol)
        if inst is None:
            return None
        bids, asks = self._levels(inst, C.BUY), self._levels(inst, C.SELL)
        best_bid = bids[0][0].price if bids else None
        best_ask = asks[0][0].price if asks else None
        mid = spread = imbalance = microprice = None
        if bids and asks:
            qb = sum(o.open_qty for o in bids[0])
            qa = sum(o.open_qty for o in asks[0])
            mid = Fraction(best_bid + best_ask, 2)
            spread = best_ask - best_bid
            imbalance = Fraction(qb, qb + qa)
            microprice = Fraction(best_bid * qa + best_ask * qb, qb + qa)
        vpin = self.vpin(symbol)
        toxicity = None
        if vpin is not None:
            toxicity = "low" if vpin <= Fraction(4, 10) else "medium" if vpin <= Fraction(7, 10) else "high"
        return {
            "symbol": symbol,
            "seq": self.seq,
            "best_bid": best_bid,
            "best_ask": best_ask,
            "mid": mid,
            "spread": spread,
            "imbalance": imbalance,
            "microprice": microprice,
            "vpin": vpin,
            "toxicity": toxicity,
            "last": inst.last,
            "volume": inst.volume,
        }

    def vpin(self, symbol: str) -> Fraction | None:
        """§15 recomputed from scratch over every trade of the instrument."""
        inst = self.instruments[symbol]
        size, window = inst.config.vpin_bucket, inst.config.vpin_window
        if size <= 0:
            return None
        if inst.config.vpin_classify == C.VPIN_BVC:
            raise NotImplementedError("BVC classification is only named by docs/semantics.md")
        classified = []  # (qty, is_buy)
        prev_price, prev_buy = None, True
        quirk_buy = True  # known_quirks: the class of the previous *tick-classified* trade
        for price, qty, aggressor in inst.trades:
            if inst.config.vpin_classify == C.VPIN_AGGRESSOR and aggressor is not None:
                is_buy = aggressor == "buy"
            else:
                if prev_price is None:
                    is_buy = True  # no previous trade: a buy
                elif price != prev_price:
                    is_buy = price > prev_price
                else:
                    is_buy = quirk_buy if "vpin_tick_same_price" in self.known_quirks else prev_buy
                quirk_buy = is_buy
            classified.append((qty, is_buy))
            prev_price, prev_buy = price, is_buy
        closed: list[tuple[int, int]] = []
        buy = sell = 0
        for qty, is_buy in classified:
            while qty > 0:
                take = min(qty, size - buy - sell)
                if is_buy:
                    buy += take
                else:
                    sell += take
                qty -= take
                if buy + sell == size:
                    closed.append((buy, sell))
                    buy = sell = 0
        if len(closed) < window:
            return None
        return Fraction(sum(abs(b - s) for b, s in closed[-window:]), window * size)

    def open_orders(self) -> list[tuple[int, str, int, int]]:
        """Every live order as (order_id, client_id, status code, open qty), by id."""
        return [
            (o.order_id, o.client_id, STATUS_CODES[o.status], o.open_qty)
            for o in sorted(self.live_orders, key=lambda o: o.order_id)
        ]

    def _find_live(self, order_id: int) -> RefOrder | None:
        for order in self.live_orders:
            if order.order_id == order_id and live(order):
                return order
        return None

    def _find_live_group(self, group_id: int) -> RefGroup | None:
        for group in self.groups:
            if group.group_id == group_id and self._group_live(group):
                return group
        return None

    @staticmethod
    def _group_live(group: RefGroup) -> bool:
        """OCO/bracket: while a member is live; conditional: while its order waits (not after the release)."""
        if group.kind == "conditional":
            return group.members[0].status == "inactive"
        return any(live(o) for o in group.members)

    def _best_price(self, inst: RefInstrument, side: int) -> int | None:
        prices = [o.price for o in inst.orders if o.side == side]
        if not prices:
            return None
        return max(prices) if side == C.BUY else min(prices)

    # ----------------------------------------------------------------- apply

    def apply(self, cmd: C.Command, seq: int, ts: int) -> list:
        self.events = []
        self.releases = []
        self.cur_seq, self.cur_ts = seq, ts
        self._expire_due(ts)
        if isinstance(cmd, C.Instrument):
            self._instrument(cmd)
        elif isinstance(cmd, C.NewOrder):
            self._new_order(cmd)
        elif isinstance(cmd, C.Cancel):
            self._cancel(cmd)
        elif isinstance(cmd, C.Replace):
            self._replace(cmd)
        elif isinstance(cmd, C.Oco):
            self._oco(cmd)
        elif isinstance(cmd, C.Bracket):
            self._bracket(cmd)
        elif isinstance(cmd, C.Conditional):
            self._conditional(cmd)
        elif isinstance(cmd, C.Auction):
            self._auction(cmd)
        elif isinstance(cmd, C.Clock):
            pass
        else:
            raise NotImplementedError(type(cmd).__name__)
        self._drain_releases()
        self.seq = seq
        self.ts = ts
        return self.events

    def _emit(self, event) -> None:
        self.events.append(event)

    def _reject(self, client_id: str | None, account: str | None, reason: str) -> None:
        self._emit(E.Rejected(self.cur_seq, client_id, account, reason, REJECT_REASONS[reason]))

    def _next_priority(self) -> tuple[int, int]:
        self.priority_counter += 1
        return (self.cur_seq, self.priority_counter)

    def _new_id(self) -> int:
        order_id = self.next_order_id
        self.next_order_id += 1
        return order_id

    def _expire_due(self, ts: int) -> None:
        due = [o for o in self.live_orders if o.tif == C.GTD and o.expire_at is not None and o.expire_at <= ts]
        due.sort(key=lambda o: (o.expire_at, o.order_id))
        for order in due:
            if live(order):  # an earlier expiry may have ended it (its OCO sibling, ...)
                self._end(order, "expired")

    def _instrument(self, cmd: C.Instrument) -> None:
        if cmd.symbol in self.instruments:
            self._reject(None, None, "instrument_exists")
            return
        self.instruments[cmd.symbol] = RefInstrument(cmd.symbol, cmd.tick, cmd.lot, cmd)
        self._emit(E.InstrumentAdded(self.cur_seq, cmd.symbol, cmd.tick, cmd.lot))

    # ------------------------------------------------- ending and removing

    def _remove(self, order: RefOrder) -> None:
        """Take an order out of wherever it is (book, call-phase queue, stop index) and mark it done."""
        inst = self.instruments[order.symbol]
        if order in inst.orders:
            inst.orders.remove(order)
            if inst.top[order.side] == order.order_id:
                inst.top[order.side] = None
        if order in inst.call_market:
            inst.call_market.remove(order)
        self._done(order)

    def _done(self, order: RefOrder) -> None:
        order.status = "done"
        if order in self.live_orders:
            self.live_orders.remove(order)

    def _unrest(self, order: RefOrder) -> None:
        """Take a resting order off its level (it loses priority and TOP) without ending it."""
        inst = self.instruments[order.symbol]
        inst.orders.remove(order)
        if inst.top[order.side] == order.order_id:
            inst.top[order.side] = None

    def _end(self, order: RefOrder, reason: str, remaining: int | None = None, cascade: bool = True) -> None:
        """``cancelled(reason)``; then, for an end of its own, the group consequences."""
        rem = order.open_qty if remaining is None else remaining
        self._remove(order)
        self._emit(E.Cancelled(self.cur_seq, order.order_id, order.client_id, reason, rem, order.symbol))
        if cascade:
            self._on_own_end(order)

    def _on_own_end(self, order: RefOrder) -> None:
        """An order ended with a remainder for its own reason (user, expiry, STP, kills, auction)."""
        group = order.group
        if group is None:
            return
        if group.kind == "oco":
            for other in group.members:
                if other is not order and live(other):
                    self._end(other, "oco", cascade=False)
        elif group.kind == "bracket":
            if order.role == "entry":
                if order.filled == 0:
                    for child in (group.member("tp"), group.member("sl")):
                        if live(child):
                            self._end(child, "bracket", cascade=False)
                elif not group.activated and not group.activation_queued:
                    group.activation_queued = True
                    self.releases.append(("activate", group))
            else:  # the other child and a live entry, in id order (entry, TP, SL)
                for other in group.members:
                    if other is not order and live(other):
                        self._end(other, "bracket", cascade=False)

    def _on_fill(self, order: RefOrder, q: int) -> None:
        """Group effects of a fill of ``q`` on ``order`` (after the stops/conditionals of its trade, see _trade)."""
        group = order.group
        if group is None:
            return
        seq = self.cur_seq
        if group.kind == "oco":
            other = next(o for o in group.members if o is not order)
            if not live(other):
                return
            if group.oco_mode == C.OCO_CANCEL_ON_ANY_FILL:
                self._end(other, "oco", cascade=False)
            elif group.oco_mode == C.OCO_REDUCE:
                self._reduce(other, q, "oco")
            elif group.oco_mode == C.OCO_CANCEL_ON_FULL_FILL:
                if order.open_qty == 0:
                    self._end(other, "oco", cascade=False)
        elif group.kind == "bracket":
            if order.role == "entry":
                if group.activated:
                    for child in (group.member("tp"), group.member("sl")):
                        if live(child):
                            child.open_qty += q
                            if child.status == "open" and child in self.instruments[child.symbol].orders:
                                # a resting TP that grows moves to the back of its level (and loses TOP)
                                child.entered = seq
                                self._unrest(child)
                                self._rest(self.instruments[child.symbol], child, may_take_top=False)
                            self._emit(E.Amended(seq, child.order_id, child.client_id, child.open_qty, child.price,
                                                 child.symbol))
                elif not group.activation_queued:
                    if group.activation == C.ACTIVATE_FIRST_FILL or order.open_qty == 0:
                        group.activation_queued = True
                        self.releases.append(("activate", group))
            else:
                other = group.member("sl" if order.role == "tp" else "tp")
                if live(other):
                    self._reduce(other, q, "bracket")

    def _reduce(self, order: RefOrder, q: int, reason: str) -> None:
        before = order.open_qty
        if before - q <= 0:
            self._end(order, reason, remaining=before, cascade=False)
            return
        order.open_qty = before - q
        self._emit(E.Amended(self.cur_seq, order.order_id, order.client_id, order.open_qty, order.price, order.symbol))

    # ------------------------------------------------------------ new orders

    @staticmethod
    def _structurally_invalid(cmd: C.NewOrder) -> bool:
        if cmd.kind not in range(len(C.KIND_NAMES)):
            return True
        if cmd.side not in (C.BUY, C.SELL) or cmd.tif not in range(len(C.TIF_NAMES)):
            return True
        if cmd.stp not in range(len(C.STP_NAMES)):
            return True
        if cmd.qty <= 0:
            return True
        if cmd.kind in (C.LIMIT, C.STOP_LIMIT):
            if cmd.price is None or cmd.price <= 0:
                return True
        elif cmd.price is not None:  # market, stop, trailing stop
            return True
        if cmd.kind == C.MARKET and cmd.tif not in (C.IOC, C.FOK):
            return True
        if cmd.kind in STOP_KINDS and cmd.tif not in (C.GTC, C.GTD):
            return True
        if cmd.kind in (C.STOP, C.STOP_LIMIT) and (cmd.trigger is None or cmd.trigger <= 0):
            return True
        if cmd.kind == C.TRAILING_STOP:
            if (cmd.trail_amount is None) == (cmd.trail_percent_e6 is None):
                return True
            if cmd.trail_amount is not None and cmd.trail_amount <= 0:
                return True
            if cmd.trail_percent_e6 is not None and not 0 < cmd.trail_percent_e6 < E8:
                return True
        if cmd.post_only and (cmd.kind != C.LIMIT or cmd.tif in (C.IOC, C.FOK)):
            return True
        if cmd.tif == C.GTD and cmd.expire_at is None:
            return True
        return False

    @staticmethod
    def _call_phase_refuses(inst: RefInstrument, kind: int, tif: int, post_only: bool) -> bool:
        if inst.phase != "call":
            return False
        if post_only:
            return True
        if kind == C.LIMIT and tif in (C.IOC, C.FOK):
            return True
        return kind == C.MARKET and tif == C.FOK

    @staticmethod
    def _stop_already_triggered(inst: RefInstrument, side: int, kind: int, trigger: int | None) -> bool:
        """§9 entry check (never for trailing stops)."""
        if kind not in (C.STOP, C.STOP_LIMIT) or not inst.config.stop_entry_check or inst.last is None:
            return False
        return inst.last >= trigger if side == C.BUY else inst.last <= trigger

    def _entry_check(self, inst: RefInstrument, cmd: C.NewOrder) -> str | None:
        """§3 checks 4-6 (after the structural ones)."""
        if cmd.tif == C.GTD and cmd.expire_at <= self.cur_ts:
            return "expire_in_past"
        if self._call_phase_refuses(inst, cmd.kind, cmd.tif, cmd.post_only):
            return "call_phase_tif"
        if self._stop_already_triggered(inst, cmd.side, cmd.kind, cmd.trigger):
            return "stop_already_triggered"
        return None

    def _make_order(self, cmd: C.NewOrder, order_id: int) -> RefOrder:
        order = RefOrder(
            order_id=order_id,
            client_id=cmd.client_id,
            account=cmd.account,
            symbol=cmd.symbol,
            side=cmd.side,
            kind=cmd.kind,
            price=cmd.price,
            open_qty=cmd.qty,
            tif=cmd.tif,
            expire_at=cmd.expire_at if cmd.tif == C.GTD else None,
            post_only=cmd.post_only,
            stp=cmd.stp,
            trigger=cmd.trigger if cmd.kind in (C.STOP, C.STOP_LIMIT) else None,
            trail_amount=cmd.trail_amount if cmd.kind == C.TRAILING_STOP else None,
            trail_percent_e6=cmd.trail_percent_e6 if cmd.kind == C.TRAILING_STOP else None,
            activation_price=cmd.activation_price if cmd.kind == C.TRAILING_STOP else None,
        )
        self.all_orders.append(order)
        self.live_orders.append(order)
        return order

    def _accept(self, cmd: C.NewOrder, group: RefGroup | None = None, role: str | None = None) -> RefOrder:
        order_id = self._new_id()
        self.registry[(cmd.account, cmd.client_id)] = order_id
        self._emit(E.Accepted(self.cur_seq, order_id, cmd.client_id, cmd.account, cmd.symbol))
        order = self._make_order(cmd, order_id)
        order.group, order.role = group, role
        order.entered = self.cur_seq
        return order

    def _new_order(self, cmd: C.NewOrder) -> None:
        inst = self.instruments.get(cmd.symbol)
        if inst is None:
            self._reject(cmd.client_id, cmd.account, "unknown_symbol")
            return
        if (cmd.account, cmd.client_id) in self.registry:
            self._reject(cmd.client_id, cmd.account, "duplicate_client_id")
            return
        if self._structurally_invalid(cmd):
            self._reject(cmd.client_id, cmd.account, "invalid_order")
            return
        reason = self._entry_check(inst, cmd)
        if reason is not None:
            self._reject(cmd.client_id, cmd.account, reason)
            return
        order = self._accept(cmd)
        self._place(inst, order)

    def _place(self, inst: RefInstrument, order: RefOrder) -> None:
        """An accepted order goes live: a stop waits pending, anything else comes in."""
        if order.kind in STOP_KINDS:
            self._place_stop(inst, order)
        else:
            self._incoming(inst, order)

    def _place_stop(self, inst: RefInstrument, order: RefOrder) -> None:
        order.status = "pending"
        if order.kind == C.TRAILING_STOP and inst.last is not None:
            act = order.activation_price
            if act is None or (order.side == C.SELL and inst.last >= act) or (order.side == C.BUY and inst.last <= act):
                order.tracking = True
                order.trail_prices = [inst.last]

    # ------------------------------------------------------------- incoming

    def _would_cross(self, inst: RefInstrument, side: int, price: int) -> bool:
        if side == C.BUY:
            best_ask = self._best_price(inst, C.SELL)
            return best_ask is not None and price >= best_ask
        best_bid = self._best_price(inst, C.BUY)
        return best_bid is not None and price <= best_bid

    def _slid_price(self, inst: RefInstrument, side: int) -> int:
        if side == C.BUY:
            return self._best_price(inst, C.SELL) - 1
        return self._best_price(inst, C.BUY) + 1

    def _incoming(self, inst: RefInstrument, order: RefOrder) -> None:
        """§3 steps 1-4 for an accepted (or released) order, or the call-phase rules of §14."""
        order.status = "incoming"
        if inst.phase == "call":
            if order.kind == C.MARKET:
                order.status = "open"
                order.priority = self._next_priority()
                inst.call_market.append(order)
            else:
                self._rest(inst, order)
            return
        seq = self.cur_seq
        # §3.1 post-only.
        if order.post_only and self._would_cross(inst, order.side, order.price):
            slid = self._slid_price(inst, order.side) if inst.post_only_mode == C.POST_ONLY_SLIDE else None
            if slid is None or slid <= 0:
                self._end(order, "post_only")
                return
            order.price = slid
            self._emit(E.Amended(seq, order.order_id, order.client_id, order.open_qty, order.price, order.symbol))
        # §3.2 FOK: all or nothing, decided by a side-effect-free simulation.
        if order.tif == C.FOK and self._fok_fillable(inst, order) < order.open_qty:
            self._end(order, "fok")
            return
        ended_by_stp = self._match(inst, order)
        self._finish_taker(inst, order, ended_by_stp)

    def _finish_taker(self, inst: RefInstrument, order: RefOrder, ended_by_stp: bool) -> None:
        """§3.4: what happens to the taker after matching."""
        if ended_by_stp or not live(order):
            return
        if order.open_qty == 0:
            self._done(order)
            return
        if order.kind == C.MARKET or order.tif in (C.IOC, C.FOK):
            self._end(order, "ioc")
            return
        self._rest(inst, order)

    def _rest(self, inst: RefInstrument, order: RefOrder, may_take_top: bool = True) -> None:
        """Put an order at the back of its level; it takes TOP if it betters its side's best."""
        best = self._best_price(inst, order.side)
        if may_take_top and (
            best is None or (order.side == C.BUY and order.price > best) or (order.side == C.SELL and order.price < best)
        ):
            inst.top[order.side] = order.order_id
        order.priority = self._next_priority()
        order.status = "open"
        inst.orders.append(order)

    @staticmethod
    def _acceptable(taker: RefOrder, maker_price: int) -> bool:
        if taker.kind == C.MARKET:
            return True
        if taker.side == C.BUY:
            return maker_price <= taker.price
        return maker_price >= taker.price

    def _fok_fillable(self, inst: RefInstrument, taker: RefOrder) -> int:
        """How much a FOK taker would fill, without changing anything."""
        counted = 0
        if inst.config.matching == C.MATCH_PRO_RATA:
            for level in self._levels(inst, 1 - taker.side):
                if not self._acceptable(taker, level[0].price):
                    break
                own = [m for m in level if taker.stp != C.STP_NONE and m.account == taker.account]
                if own and taker.stp != C.STP_EXPIRE_MAKER:
                    break
                counted += sum(m.open_qty for m in level if m not in own)
                if counted >= taker.open_qty:
                    break
            return counted
        for maker in self._side_sorted(inst, 1 - taker.side):
            if not self._acceptable(taker, maker.price):
                break
            if taker.stp != C.STP_NONE and maker.account == taker.account:
                if taker.stp == C.STP_EXPIRE_MAKER:
                    continue
                break
            counted += maker.open_qty
            if counted >= taker.open_qty:
                break
        return counted

    # -------------------------------------------------------------- matching

    def _match(self, inst: RefInstrument, taker: RefOrder) -> bool:
        """§4 / §13 matching with STP. Returns True if STP ended the taker."""
        if inst.config.matching == C.MATCH_PRO_RATA:
            return self._match_pro_rata(inst, taker)
        while taker.open_qty > 0 and live(taker):
            opposite = self._side_sorted(inst, 1 - taker.side)
            if not opposite:
                return False
            maker = opposite[0]
            if not self._acceptable(taker, maker.price):
                return False
            q = min(taker.open_qty, maker.open_qty)
            if taker.stp != C.STP_NONE and maker.account == taker.account:
                if self._prevent(inst, taker, maker, q):
                    return True
                continue
            self._trade(inst, maker, taker, q, maker.price, C.SIDE_NAMES[taker.side])
        return False

    def _match_pro_rata(self, inst: RefInstrument, taker: RefOrder) -> bool:
        while taker.open_qty > 0 and live(taker):
            levels = self._levels(inst, 1 - taker.side)
            if not levels or not self._acceptable(taker, levels[0][0].price):
                return False
            price = levels[0][0].price
            # STP first: every same-account maker of the level, in time priority.
            if taker.stp != C.STP_NONE:
                for maker in levels[0]:
                    if maker.account == taker.account and live(maker) and maker in inst.orders:
                        if self._prevent(inst, taker, maker, min(taker.open_qty, maker.open_qty)):
                            return True
            level = [o for o in self._side_sorted(inst, 1 - taker.side) if o.price == price]
            if not level:
                continue
            for maker, q in self._allocate(inst, level, taker.open_qty):
                if not live(taker) or not live(maker) or maker not in inst.orders:
                    continue
                q = min(q, maker.open_qty, taker.open_qty)
                if q > 0:
                    self._trade(inst, maker, taker, q, price, C.SIDE_NAMES[taker.side])
        return False

    def _allocate(self, inst: RefInstrument, level: list[RefOrder], r: int) -> list[tuple[RefOrder, int]]:
        """§13 / market-rules §3 allocation of ``r`` over one level (time priority order in)."""
        cfg = inst.config
        top_id = inst.top[level[0].side] if cfg.top_order else None
        top = next((o for o in level if o.order_id == top_id), None)
        alloc = {o.order_id: 0 for o in level}
        if r >= sum(o.open_qty for o in level):
            for o in level:
                alloc[o.order_id] = o.open_qty
        else:
            if top is not None:
                alloc[top.order_id] = min(r, top.open_qty)
                r -= alloc[top.order_id]
            others = [o for o in level if o is not top]
            total = sum(o.open_qty for o in others)
            if r > 0 and total > 0:
                for o in others:
                    share = o.open_qty * r // total
                    alloc[o.order_id] = share if share >= cfg.min_alloc else 0
                residual = r - sum(alloc[o.order_id] for o in others)
                if cfg.residual == C.RESIDUAL_LARGEST:
                    order = sorted(others, key=lambda o: (-o.open_qty, o.priority))
                else:
                    order = others
                for o in order:
                    give = min(residual, o.open_qty - alloc[o.order_id])
                    alloc[o.order_id] += give
                    residual -= give
        printing = ([top] if top is not None else []) + [o for o in level if o is not top]
        return [(o, alloc[o.order_id]) for o in printing if alloc[o.order_id] > 0]

    def _prevent(self, inst: RefInstrument, taker: RefOrder, maker: RefOrder, q: int) -> bool:
        """One prevented match. Returns True if the taker was expired."""
        mode = taker.stp
        self._emit(E.Prevented(self.cur_seq, taker.order_id, maker.order_id, q, C.STP_NAMES[mode], inst.symbol))
        if mode == C.STP_EXPIRE_TAKER:
            self._end(taker, "stp")
            return True
        if mode == C.STP_EXPIRE_MAKER:
            self._end(maker, "stp")
            return False
        if mode == C.STP_EXPIRE_BOTH:
            self._end(maker, "stp")
            if live(taker):
                self._end(taker, "stp")
            return True
        if mode == C.STP_DECREMENT:
            maker_expires = maker.open_qty == q
            taker_expires = taker.open_qty == q
            maker.open_qty -= q
            taker.open_qty -= q
            if maker_expires:
                self._end(maker, "stp", remaining=q)
            if taker_expires and live(taker):
                self._end(taker, "stp", remaining=q)
            return taker_expires
        raise AssertionError(f"unknown stp mode {mode}")

    def _trade(self, inst: RefInstrument, maker: RefOrder, taker: RefOrder, q: int, price: int,
               aggressor: str | None) -> None:
        buy, sell = (maker, taker) if maker.side == C.BUY else (taker, maker)
        self._emit(
            E.Trade(self.cur_seq, inst.symbol, price, q, maker.order_id, taker.order_id, maker.client_id,
                    taker.client_id, buy.account, sell.account, aggressor)
        )
        for order in (maker, taker):
            order.open_qty -= q
            order.filled += q
            if order.open_qty == 0 and order.status == "open":
                self._remove(order)  # leaves the book (or the call-phase market queue)
        inst.last = price
        inst.volume += q
        inst.trade_count += 1
        inst.trades.append((price, q, aggressor))
        if aggressor is None:  # an auction trade: seen by stops/conditionals once, after the uncross
            self._on_fill(buy, q)  # the buy side's group effects first
            self._on_fill(sell, q)
        else:
            self._on_trade_price(inst, price)
            self._on_fill(maker, q)
            self._on_fill(taker, q)

    # ---------------------------------------------------- triggers and releases

    def _on_trade_price(self, inst: RefInstrument, price: int) -> None:
        self._evaluate_stops(inst, price)
        self._evaluate_conditions(inst.symbol)

    @staticmethod
    def _effective_trigger(order: RefOrder) -> Fraction:
        if order.kind != C.TRAILING_STOP:
            return Fraction(order.trigger)
        if order.side == C.SELL:
            extreme = max(order.trail_prices)
            if order.trail_amount is not None:
                return Fraction(extreme - order.trail_amount)
            return Fraction(extreme * (E8 - order.trail_percent_e6), E8)
        extreme = min(order.trail_prices)
        if order.trail_amount is not None:
            return Fraction(extreme + order.trail_amount)
        return Fraction(extreme * (E8 + order.trail_percent_e6), E8)

    def _evaluate_stops(self, inst: RefInstrument, price: int) -> None:
        """§9: scan every pending stop of the instrument after one trade at ``price``."""
        fired = []
        for order in self.live_orders:
            if order.status != "pending" or order.symbol != inst.symbol or order.kind not in STOP_KINDS:
                continue
            if order.kind == C.TRAILING_STOP:
                if not order.tracking:
                    act = order.activation_price
                    if act is not None and not (
                        (order.side == C.SELL and price >= act) or (order.side == C.BUY and price <= act)
                    ):
                        continue
                    order.tracking = True
                    order.trail_prices = []
                order.trail_prices.append(price)
            trigger = self._effective_trigger(order)
            if (order.side == C.BUY and price >= trigger) or (order.side == C.SELL and price <= trigger):
                fired.append((order, trigger))
        buys = sorted((f for f in fired if f[0].side == C.BUY), key=lambda f: (f[1], f[0].order_id))
        sells = sorted((f for f in fired if f[0].side == C.SELL), key=lambda f: (-f[1], f[0].order_id))
        for order, _ in buys + sells:
            if order.status != "pending":
                continue
            order.status = "triggered"
            self.releases.append(("stop", order))
            group = order.group
            if group is not None and group.kind == "oco" and group.oco_mode != C.OCO_REDUCE:
                other = next(o for o in group.members if o is not order)
                if live(other):
                    self._end(other, "oco", cascade=False)

    def _holds(self, cond) -> bool:
        if isinstance(cond, C.All):
            return all(self._holds(t) for t in cond.terms)
        if isinstance(cond, C.Any_):
            return any(self._holds(t) for t in cond.terms)
        inst = self.instruments[cond.symbol]
        if cond.field == C.FIELD_LAST:
            if inst.last is None:
                return False
            value = inst.last
        else:
            value = inst.volume
        return {
            C.OP_GT: value > cond.value,
            C.OP_GE: value >= cond.value,
            C.OP_LT: value < cond.value,
            C.OP_LE: value <= cond.value,
            C.OP_EQ: value == cond.value,
        }[cond.op]

    @classmethod
    def _leaves(cls, cond) -> list:
        if isinstance(cond, C.Leaf):
            return [cond]
        return [leaf for term in cond.terms for leaf in cls._leaves(term)]

    def _evaluate_conditions(self, symbol: str) -> None:
        for group in self.groups:
            if group.kind != "conditional":
                continue
            order = group.member("order")
            if order.status != "inactive":
                continue
            if symbol not in [leaf.symbol for leaf in self._leaves(group.when)]:
                continue
            if self._holds(group.when):
                order.status = "triggered"
                self.releases.append(("conditional", group))

    def _drain_releases(self) -> None:
        while self.releases:
            what, item = self.releases.pop(0)
            if what == "stop":
                self._release_stop(item)
            elif what == "activate":
                self._activate(item)
            else:
                self._release_conditional(item)

    def _release_stop(self, order: RefOrder) -> None:
        if order.status != "triggered":
            return
        self._emit(E.Triggered(self.cur_seq, order.order_id, order.client_id, order.symbol))
        if order.kind == C.STOP_LIMIT:
            order.kind = C.LIMIT
        else:
            order.kind, order.price, order.tif = C.MARKET, None, C.IOC
        inst = self.instruments[order.symbol]
        order.status = "incoming"
        order.entered = self.cur_seq  # §14: it enters the book now
        if order.tif == C.FOK and self._fok_fillable(inst, order) < order.open_qty:
            self._end(order, "fok")
            return
        ended_by_stp = self._match(inst, order)
        self._finish_taker(inst, order, ended_by_stp)

    def _activate(self, group: RefGroup) -> None:
        """§11 bracket activation at release."""
        entry, tp, sl = group.member("entry"), group.member("tp"), group.member("sl")
        if not (live(tp) and live(sl)):
            return
        group.activated = True
        seq = self.cur_seq
        inst = self.instruments[group.symbol]
        target = entry.filled - tp.filled - sl.filled
        sl.open_qty = target
        self._emit(E.Triggered(seq, sl.order_id, sl.client_id, sl.symbol))
        if self._stop_already_triggered(inst, sl.side, sl.kind, sl.trigger) or self._call_phase_refuses(
            inst, sl.kind, sl.tif, sl.post_only
        ):
            self._reject(sl.client_id, sl.account, "child_rejected")
            self._end(sl, "bracket", cascade=False)
            for other in group.members:  # a live entry and the TP, in id order
                if live(other):
                    self._end(other, "bracket", cascade=False)
            return
        sl.entered = seq
        self._place_stop(inst, sl)
        tp.open_qty = target
        tp.entered = seq
        self._emit(E.Triggered(seq, tp.order_id, tp.client_id, tp.symbol))
        self._incoming(inst, tp)

    def _release_conditional(self, group: RefGroup) -> None:
        order = group.member("order")
        if order.status != "triggered":
            return
        self._emit(E.Triggered(self.cur_seq, order.order_id, order.client_id, order.symbol))
        inst = self.instruments[order.symbol]
        if self._call_phase_refuses(inst, order.kind, order.tif, order.post_only) or self._stop_already_triggered(
            inst, order.side, order.kind, order.trigger
        ):
            self._reject(order.client_id, order.account, "child_rejected")
            self._end(order, "condition", cascade=False)
            return
        order.entered = self.cur_seq
        self._place(inst, order)

    # ------------------------------------------------------- cancel / replace

    def _target(self, account: str, client_id: str | None, order_id: int | None):
        """§5: the live order (or group) named by order_id and/or client_id, owned by account."""
        by_client = None
        if client_id is not None:
            by_client = self.registry.get((account, client_id))
            if by_client is None:
                return None
        if order_id is not None and by_client is not None and order_id != by_client:
            return None
        wanted = order_id if order_id is not None else by_client
        if wanted is None:
            return None
        target = self._find_live(wanted) or self._find_live_group(wanted)
        if target is None or target.account != account:
            return None
        return target

    def _cancel(self, cmd: C.Cancel) -> None:
        target = self._target(cmd.account, cmd.client_id, cmd.order_id)
        if target is None:
            self._reject(cmd.client_id, cmd.account, "unknown_order")
            return
        if isinstance(target, RefGroup):
            for member in sorted(target.members, key=lambda o: o.order_id):
                if live(member):
                    self._end(member, "user", cascade=False)
            return
        self._end(target, "user")

    def _replace(self, cmd: C.Replace) -> None:
        order = self._target(cmd.account, cmd.client_id, cmd.order_id)
        if not isinstance(order, RefOrder) or order.status not in ("open", "pending"):
            self._reject(cmd.client_id, cmd.account, "unknown_order")
            return
        inst = self.instruments[order.symbol]
        if order.status == "open" and order not in inst.orders:  # a market order waiting in a call phase
            self._reject(cmd.client_id, cmd.account, "unknown_order")
            return
        if (cmd.qty is None and cmd.price is None) or (cmd.qty is not None and cmd.qty <= 0) or (
            cmd.price is not None and cmd.price <= 0
        ):
            self._reject(cmd.client_id, cmd.account, "invalid_order")
            return
        if cmd.qty is not None and order.group is not None and order.group.kind == "bracket" and order.role != "entry":
            entry, tp, sl = order.group.member("entry"), order.group.member("tp"), order.group.member("sl")
            if cmd.qty > entry.filled - tp.filled - sl.filled:  # §11: never above the open position
                self._reject(cmd.client_id, cmd.account, "invalid_order")
                return
        seq = self.cur_seq
        if order.status == "pending":  # §9: a pending stop
            if cmd.price is not None and order.kind != C.STOP_LIMIT:
                self._reject(cmd.client_id, cmd.account, "invalid_order")
                return
            if cmd.qty is not None:
                order.open_qty = cmd.qty
            if cmd.price is not None:
                order.price = cmd.price
            self._emit(E.Amended(seq, order.order_id, order.client_id, order.open_qty, order.price, order.symbol))
            return
        new_qty = cmd.qty if cmd.qty is not None else order.open_qty
        new_price = cmd.price if cmd.price is not None else order.price

        if new_price == order.price and new_qty <= order.open_qty:
            order.open_qty = new_qty
            self._emit(E.Amended(seq, order.order_id, order.client_id, new_qty, new_price, order.symbol))
            return

        # Loses priority. Post-only first: it may refuse or slide the new price.
        if order.post_only and self._would_cross(inst, order.side, new_price):
            slid = self._slid_price(inst, order.side) if inst.post_only_mode == C.POST_ONLY_SLIDE else None
            if slid is None or slid <= 0:  # reject mode, or a slide to a price <= 0 (handled as in reject mode)
                self._reject(cmd.client_id, cmd.account, "post_only_would_cross")
                return
            new_price = slid
        self._unrest(order)
        order.price = new_price
        order.open_qty = new_qty
        order.entered = seq
        order.status = "incoming"
        self._emit(E.Amended(seq, order.order_id, order.client_id, new_qty, new_price, order.symbol))
        if inst.phase == "call":
            self._rest(inst, order)
            return
        ended_by_stp = self._match(inst, order)
        if not ended_by_stp and live(order):
            if order.open_qty > 0:
                self._rest(inst, order)
            else:
                self._done(order)

    # ------------------------------------------------------------------- OCO

    def _oco(self, cmd: C.Oco) -> None:
        inst = self.instruments.get(cmd.symbol)
        acct, cid = cmd.account, cmd.client_id
        if inst is None:
            self._reject(cid, acct, "unknown_symbol")
            return
        cids = [cid] + [leg.client_id for leg in cmd.legs]
        if len(set(cids)) != len(cids) or any((acct, c) in self.registry for c in cids):
            self._reject(cid, acct, "duplicate_client_id")
            return
        for leg in cmd.legs:
            if leg.account != acct or leg.symbol != cmd.symbol or self._structurally_invalid(leg):
                self._reject(cid, acct, "invalid_order")
                return
        if cmd.mode is not None and cmd.mode not in range(len(C.OCO_MODE_NAMES)):
            self._reject(cid, acct, "invalid_order")
            return
        limits = [leg for leg in cmd.legs if leg.kind == C.LIMIT]
        stops = [leg for leg in cmd.legs if leg.kind in (C.STOP, C.STOP_LIMIT)]
        a, b = cmd.legs
        if len(limits) != 1 or len(stops) != 1 or a.side != b.side or a.qty != b.qty:
            self._reject(cid, acct, "oco_legs_invalid")
            return
        for leg in cmd.legs:
            reason = self._entry_check(inst, leg)
            if reason is not None:
                self._reject(cid, acct, reason)
                return
        limit, trigger, last = limits[0].price, stops[0].trigger, inst.last
        if a.side == C.SELL:
            ok = limit > trigger and (last is None or limit > last > trigger)
        else:
            ok = limit < trigger and (last is None or limit < last < trigger)
        if not ok:
            self._reject(cid, acct, "oco_price_relationship")
            return
        group_id = self._new_id()
        self.registry[(acct, cid)] = group_id
        self._emit(E.Accepted(self.cur_seq, group_id, cid, acct, cmd.symbol))
        mode = cmd.mode if cmd.mode is not None else inst.config.oco_mode
        group = RefGroup(group_id, "oco", cid, acct, cmd.symbol, [], oco_mode=mode)
        self.groups.append(group)
        for leg in cmd.legs:
            group.members.append(self._accept(leg, group, "limit" if leg.kind == C.LIMIT else "stop"))
        self._place_stop(inst, group.member("stop"))
        self._incoming(inst, group.member("limit"))

    # --------------------------------------------------------------- bracket

    def _bracket(self, cmd: C.Bracket) -> None:
        inst = self.instruments.get(cmd.symbol)
        acct, cid, entry = cmd.account, cmd.client_id, cmd.entry
        if inst is None:
            self._reject(cid, acct, "unknown_symbol")
            return
        cids = [cid, entry.client_id, f"{cid}/tp", f"{cid}/sl"]
        if len(set(cids)) != len(cids) or any((acct, c) in self.registry for c in cids):
            self._reject(cid, acct, "duplicate_client_id")
            return
        if entry.account != acct or entry.symbol != cmd.symbol:
            self._reject(cid, acct, "invalid_order")
            return
        if entry.kind not in (C.LIMIT, C.MARKET):
            self._reject(cid, acct, "bracket_entry_invalid")
            return
        if self._structurally_invalid(entry):
            self._reject(cid, acct, "invalid_order")
            return
        reason = self._entry_check(inst, entry)
        if reason is not None:
            self._reject(cid, acct, reason)
            return
        if cmd.tp_price <= 0 or cmd.sl_trigger <= 0 or (cmd.sl_price is not None and cmd.sl_price <= 0) or (
            cmd.activation not in range(len(C.ACTIVATION_NAMES))
        ):
            self._reject(cid, acct, "invalid_order")
            return
        tp, sl = cmd.tp_price, cmd.sl_trigger
        reference = entry.price if entry.kind == C.LIMIT else inst.last
        if entry.side == C.BUY:
            ok = sl < tp and (reference is None or sl < reference < tp)
        else:
            ok = tp < sl and (reference is None or tp < reference < sl)
        if not ok:
            self._reject(cid, acct, "bracket_price_relationship")
            return
        group_id = self._new_id()
        self.registry[(acct, cid)] = group_id
        self._emit(E.Accepted(self.cur_seq, group_id, cid, acct, cmd.symbol))
        group = RefGroup(group_id, "bracket", cid, acct, cmd.symbol, [], activation=cmd.activation)
        self.groups.append(group)
        exit_side = 1 - entry.side
        tp_cmd = C.NewOrder(acct, f"{cid}/tp", cmd.symbol, exit_side, C.LIMIT, 1, cmd.tp_price, stp=entry.stp)
        sl_kind = C.STOP if cmd.sl_price is None else C.STOP_LIMIT
        sl_cmd = C.NewOrder(acct, f"{cid}/sl", cmd.symbol, exit_side, sl_kind, 1, cmd.sl_price,
                            trigger=cmd.sl_trigger, stp=entry.stp)
        entry_order = self._accept(entry, group, "entry")
        group.members.append(entry_order)
        for child_cmd, role in ((tp_cmd, "tp"), (sl_cmd, "sl")):
            child = self._accept(child_cmd, group, role)
            child.open_qty = 0
            child.status = "inactive"
            group.members.append(child)
        self._incoming(inst, entry_order)

    # ----------------------------------------------------------- conditional

    def _conditional(self, cmd: C.Conditional) -> None:
        acct, cid, body = cmd.account, cmd.client_id, cmd.order
        inst = self.instruments.get(body.symbol)
        if inst is None:
            self._reject(cid, acct, "unknown_symbol")
            return
        if not self._condition_valid(cmd.when):
            self._reject(cid, acct, "condition_invalid")
            return
        if cid == body.client_id or (acct, cid) in self.registry or (acct, body.client_id) in self.registry:
            self._reject(cid, acct, "duplicate_client_id")
            return
        if body.account != acct or self._structurally_invalid(body) or (
            body.tif == C.GTD and body.expire_at <= self.cur_ts
        ):
            self._reject(cid, acct, "invalid_order")
            return
        group_id = self._new_id()
        self.registry[(acct, cid)] = group_id
        self._emit(E.Accepted(self.cur_seq, group_id, cid, acct, body.symbol))
        group = RefGroup(group_id, "conditional", cid, acct, body.symbol, [], when=cmd.when)
        self.groups.append(group)
        order = self._accept(body, group, "order")
        order.status = "inactive"
        group.members.append(order)

    def _condition_valid(self, cond) -> bool:
        if isinstance(cond, (C.All, C.Any_)):
            return len(cond.terms) > 0 and all(self._condition_valid(t) for t in cond.terms)
        if not isinstance(cond, C.Leaf):
            return False
        return (
            cond.symbol in self.instruments
            and cond.field in range(len(C.FIELD_NAMES))
            and cond.op in range(len(C.OP_NAMES))
        )

    # --------------------------------------------------------------- auction

    def _auction(self, cmd: C.Auction) -> None:
        inst = self.instruments.get(cmd.symbol)
        if inst is None:
            self._reject(None, None, "unknown_symbol")
            return
        if cmd.action == C.AUCTION_OPEN:
            if inst.phase == "call":
                self._reject(None, None, "auction_state")
                return
            inst.phase = "call"
            self._emit(E.Phase(self.cur_seq, cmd.symbol, "call"))
            return
        if inst.phase != "call":
            self._reject(None, None, "auction_state")
            return
        self._uncross(inst, cmd.reference_price if cmd.reference_price is not None else inst.last)

    def _curve(self, inst: RefInstrument, price: int) -> tuple[int, int]:
        """D(p), S(p) of market-rules §4.2, by brute force."""
        demand = sum(o.open_qty for o in inst.orders if o.side == C.BUY and o.price >= price)
        supply = sum(o.open_qty for o in inst.orders if o.side == C.SELL and o.price <= price)
        demand += sum(o.open_qty for o in inst.call_market if o.side == C.BUY)
        supply += sum(o.open_qty for o in inst.call_market if o.side == C.SELL)
        return demand, supply

    def plan_uncross(self, inst: RefInstrument, reference: int | None) -> tuple[int, int, int] | None:
        """(price, volume, surplus) of the uncross, or None when nothing crosses."""
        market_buy = sum(o.open_qty for o in inst.call_market if o.side == C.BUY)
        market_sell = sum(o.open_qty for o in inst.call_market if o.side == C.SELL)
        candidates = sorted({o.price for o in inst.orders})
        rows = []
        for p in candidates:
            d, s = self._curve(inst, p)
            rows.append((p, min(d, s), d - s))
        max_volume = max((v for _, v, _ in rows), default=0)
        if not rows:
            if market_buy > 0 and market_sell > 0 and reference is not None:
                return reference, min(market_buy, market_sell), market_buy - market_sell
            return None
        if max_volume == 0:
            return None
        if market_buy >= max_volume and market_sell >= max_volume and reference is not None:
            price = reference
            best_bid, best_ask = self._best_price(inst, C.BUY), self._best_price(inst, C.SELL)
            if best_bid is not None and price < best_bid:
                price = best_bid
            if best_ask is not None and price > best_ask:
                price = best_ask
            d, s = self._curve(inst, price)
            return price, min(d, s), d - s
        rows = [r for r in rows if r[1] == max_volume]
        least = min(abs(r[2]) for r in rows)
        rows = [r for r in rows if abs(r[2]) == least]
        if all(r[2] > 0 for r in rows):
            chosen = max(rows, key=lambda r: r[0])
        elif all(r[2] < 0 for r in rows):
            chosen = min(rows, key=lambda r: r[0])
        elif reference is None:
            chosen = max(rows, key=lambda r: r[0])
        else:
            chosen = min(rows, key=lambda r: (abs(r[0] - reference), -r[0]))
        return chosen

    def _uncross(self, inst: RefInstrument, reference: int | None) -> None:
        seq = self.cur_seq
        plan = self.plan_uncross(inst, reference)
        if plan is None:
            self._emit(E.AuctionResult(seq, inst.symbol, None, 0, 0))
        else:
            price, volume, surplus = plan
            self._emit(E.AuctionResult(seq, inst.symbol, price, volume, surplus))
            buys = self._auction_queue(inst, C.BUY, price)
            sells = self._auction_queue(inst, C.SELL, price)
            left = volume
            while left > 0:
                buys = [o for o in buys if live(o) and o.open_qty > 0]
                sells = [o for o in sells if live(o) and o.open_qty > 0]
                if not buys or not sells:
                    break
                b, s = buys[0], sells[0]
                q = min(b.open_qty, s.open_qty, left)
                maker, taker = (b, s) if (b.entered, b.order_id) < (s.entered, s.order_id) else (s, b)
                self._trade(inst, maker, taker, q, price, None)
                left -= q
        inst.phase = "continuous"
        self._emit(E.Phase(seq, inst.symbol, "continuous"))
        if plan is not None:
            self._on_trade_price(inst, plan[0])
        for order in sorted(inst.call_market, key=lambda o: o.order_id):
            if not live(order) or order not in inst.call_market:
                continue
            inst.call_market.remove(order)
            order.status = "incoming"
            ended_by_stp = self._match(inst, order)
            if ended_by_stp or not live(order):
                continue
            if order.open_qty == 0:
                self._done(order)
            else:
                self._end(order, "auction")

    def _auction_queue(self, inst: RefInstrument, side: int, price: int) -> list[RefOrder]:
        """Allocation priority at p*: market orders (time), better limits (best first, time), limits at p*."""
        markets = sorted((o for o in inst.call_market if o.side == side), key=lambda o: o.priority)
        if side == C.BUY:
            better = [o for o in self._side_sorted(inst, side) if o.price > price]
        else:
            better = [o for o in self._side_sorted(inst, side) if o.price < price]
        at = [o for o in self._side_sorted(inst, side) if o.price == price]
        return markets + better + at
