"""The reference oracle, second part: stops, groups, pro-rata, auctions, VPIN.

Tests room. Extends ``tests/test_reference_oracle.py`` (same ``Harness``: after
every command the event lists (``rejected.message`` aside), ``book()``, both
``queue()`` sides and ``stats()`` of every symbol and the live orders (id,
client id, status, open qty) must agree, and the fast engine's
``check_invariants()`` must pass; a fresh ``Engine`` fed the same commands
must give the same ``digest()``) to docs/semantics.md §9-§15, with command
streams that mix every kind of command.

One command generator, two drivers: ``Gen.command`` draws through a chooser,
which is either a seeded ``random.Random`` (the long streams) or a hypothesis
``data`` object (the state machine, which shrinks a disagreement to a short
command list; the draws shrink towards the first / ordinary options).

The instruments are built so that the rules are exercised often:

- ``F``: FIFO, VPIN buckets of 5 lots over a window of 3 (aggressor rule).
- ``P``: pro-rata with TOP order and min_alloc 2, VPIN by the tick rule.
- ``S``: FIFO, post-only slide, OCO mode ``reduce``, VPIN buckets of 3.
- ``Q``: pro-rata without TOP, residual ``largest``, OCO mode
  ``cancel_on_full_fill``, stop entry check off.

Prices stay within a few ticks of each symbol's last trade (stop triggers,
trailing distances, OCO/bracket prices, condition values and auction
reference prices are drawn relative to it), so stops fire, cascade and get
refused at entry often; four accounts and every STP mode give self-trades;
GTD expiries race a clock; auctions open and uncross at random moments with
orders (markets, refused IOC/FOK/post-only) arriving during the call phase;
cancels and replaces name orders, group members and groups by id and client
id, live or dead, own or foreign.

Disagreements found (the fast engine is wrong by the documents; each has a
strict-xfail reproducer at the end of this file; the generators steer around
them via ``KNOWN_BUGS``, or the reference imitates them in the streams only,
via ``REF_QUIRKS``, when they are too frequent to steer around):

1. Cancelling a bracket group whose entry has no fill cancels the inactive
   TP/SL with reason ``bracket`` instead of ``user`` (§11).
2. A call auction (even with nothing crossing) drops the pro-rata TOP order
   (§13: TOP lasts until the order leaves the book or is bettered).
3. ``check_invariants()`` fails ("child exceeds the filled entry") after a
   replace sizes up an active bracket TP or SL, which §6/§9 allow.
4. OCO checks: a leg failing the §3 structural checks is reported
   ``oco_legs_invalid`` when the legs also differ in qty/side/kind; §10 lists
   ``invalid_order`` first.
5. Auction surplus under the market-only rule (market-rules §4.3 (e)) is
   market buys - market sells, not D(p*) - S(p*).
6. Pro-rata FOK with an own order in a level (STP expire_taker/expire_both/
   decrement): the simulation counts the makers ahead of the own order, but
   matching resolves STP for the whole level first, so the FOK is not killed
   and ends by STP (possibly after partial fills).
7. Replacing a post-only order during a call phase (losing priority) emits
   ``amended`` and then ``cancelled(auction)``: it leaves the book (and a
   crossing price is not refused ``post_only_would_cross``).
8. VPIN tick rule for auction trades at an unchanged price: the fast engine
   takes the class of the previous *auction* (tick-classified) trade, a buy
   if there was none, instead of the previous trade's class.
9. A condition leaf with an operator code out of range is accepted, then the
   next trade in its symbol raises ``IndexError`` in ``Engine.apply``.

Readings chosen where the documents are silent or ambiguous are listed in the
docstring of ``tests/reference_engine.py``. Where the fast engine made a
different but defensible choice the reference follows it, and it is listed
there as a gap to settle in docs/semantics.md: the order of the effects of
one trade; id order for bracket cascades; the auction maker rule; buyer
before seller for auction fill effects; a conditional group is gone once
released; bracket_entry_invalid between the two invalid_order checks. Gaps
that the streams do not generate: zero trailing distances (fast accepts
``trail_amount=0``/``trail_percent_e6=0`` although its message says
"positive"); out-of-range ``Oco.mode``, ``Bracket.activation``, leaf field and
empty all/any, and instrument enum fields (all accepted by the fast engine).
"""

from __future__ import annotations

import copy
import random
from fractions import Fraction

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import initialize, rule

from jex.core import Engine
from jex.core import commands as C
from jex.core import events as E
from reference_engine import ReferenceEngine, live
from test_reference_oracle import ACCOUNTS, ORACLE_SETTINGS, Harness, HarnessMachine, assert_engines_agree

N = C.NewOrder
INSTRUMENTS_X = (
    C.Instrument("F", "0.01", "1", vpin_bucket=5, vpin_window=3),
    C.Instrument("P", "0.01", "1", matching=C.MATCH_PRO_RATA, top_order=True, min_alloc=2, vpin_bucket=4,
                 vpin_window=2, vpin_classify=C.VPIN_TICK_RULE),
    C.Instrument("S", "0.01", "1", post_only_mode=C.POST_ONLY_SLIDE, oco_mode=C.OCO_REDUCE, vpin_bucket=3,
                 vpin_window=1),
    C.Instrument("Q", "0.5", "1", matching=C.MATCH_PRO_RATA, residual=C.RESIDUAL_LARGEST,
                 oco_mode=C.OCO_CANCEL_ON_FULL_FILL, stop_entry_check=False),
)
SYMS = tuple(cmd.symbol for cmd in INSTRUMENTS_X)
UNKNOWN = "ZZZ"
MID = 100
STPS = (C.STP_NONE, C.STP_NONE, C.STP_NONE, C.STP_EXPIRE_TAKER, C.STP_EXPIRE_MAKER, C.STP_EXPIRE_BOTH,
        C.STP_DECREMENT)
PERCENTS_E6 = (500_000, 1_000_000, 1_500_000, 2_500_000)  # 0.5 %, 1 %, 1.5 %, 2.5 %

# Inputs on which the fast engine is known to disagree with docs/semantics.md
# (each has a strict-xfail reproducer below). While listed, the generators
# avoid them so the oracle keeps hunting for new disagreements.
KNOWN_BUGS: frozenset[str] = frozenset()
# Known disagreements too frequent to steer around: the reference imitates them in the random streams (and only
# there; its default is the documented behaviour, which the strict-xfail reproducer checks).
REF_QUIRKS: frozenset[str] = frozenset()
PRO_RATA_SYMS = ("P", "Q")
STOPPING_STPS = (C.STP_EXPIRE_TAKER, C.STP_EXPIRE_BOTH, C.STP_DECREMENT)


# ------------------------------------------------------------------ choosers


class RngChooser:
    """Draws from a seeded ``random.Random``."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng

    def choice(self, options):
        return self.rng.choice(options)

    def randint(self, low: int, high: int) -> int:
        return self.rng.randint(low, high)

    def chance(self, p: float) -> bool:
        return self.rng.random() < p

    def weighted(self, table):
        return self.rng.choices([v for _, v in table], [w for w, _ in table])[0]


class DataChooser:
    """Draws through hypothesis (shrinks towards the first option, small numbers and ``False``)."""

    def __init__(self, data) -> None:
        self.data = data

    def choice(self, options):
        return options[self.data.draw(st.integers(0, len(options) - 1))]

    def randint(self, low: int, high: int) -> int:
        if low <= 0 <= high:  # shrink towards 0, not towards ``low``
            return self.data.draw(st.integers(low, high))
        return low + self.data.draw(st.integers(0, high - low))

    def chance(self, p: float) -> bool:
        return self.data.draw(st.integers(0, 999)) >= 1000 - int(p * 1000)

    def weighted(self, table):
        total = sum(w for w, _ in table)
        pick = self.data.draw(st.integers(0, total - 1))
        for weight, value in table:
            if pick < weight:
                return value
            pick -= weight
        raise AssertionError


# ----------------------------------------------------------------- generator


class Gen:
    """Builds random commands from the reference engine's current state."""

    def __init__(self, h: Harness) -> None:
        self.h = h

    @property
    def ref(self) -> ReferenceEngine:
        return self.h.ref

    def last(self, symbol: str) -> int:
        inst = self.ref.instruments.get(symbol)
        if inst is None or inst.last is None:
            return MID
        return inst.last

    def cid(self, r, account: str) -> str:
        mode = r.weighted([(20, "fresh"), (1, "dup"), (1, "other"), (1, "retry")])
        return self.h.pick_client_id(account, mode, r.randint(0, 999))

    def symbol(self, r) -> str:
        return UNKNOWN if r.chance(0.01) else r.choice(SYMS)

    def expire(self, r, ts: int, tif: int) -> int | None:
        if tif != C.GTD:
            return None
        return ts + r.randint(-1, 60)

    # ----------------------------------------------------------- orders

    def limit_body(self, r, account, cid, symbol, side, ts, tifs=(C.GTC, C.GTC, C.GTC, C.IOC, C.FOK, C.GTD)):
        tif = r.choice(tifs)
        base = self.last(symbol)
        price = max(1, base + r.randint(-3, 3))
        post_only = tif in (C.GTC, C.GTD) and r.chance(0.12)
        qty = r.randint(1, 6) if tif != C.FOK else r.randint(1, 12)
        return N(account, cid, symbol, side, C.LIMIT, qty, price, tif=tif, expire_at=self.expire(r, ts, tif),
                 post_only=post_only, stp=self.stp(r, symbol, tif))

    def market_body(self, r, account, cid, symbol, side):
        tif = r.choice((C.IOC, C.IOC, C.FOK))
        return N(account, cid, symbol, side, C.MARKET, r.randint(1, 8), tif=tif, stp=self.stp(r, symbol, tif))

    @staticmethod
    def stp(r, symbol, tif):
        stp = r.choice(STPS)
        if "pro_rata_fok_stp" in KNOWN_BUGS and tif == C.FOK and symbol in PRO_RATA_SYMS and stp in STOPPING_STPS:
            return C.STP_EXPIRE_MAKER
        return stp

    def stop_body(self, r, account, cid, symbol, side, ts, kind=None):
        kind = kind if kind is not None else r.choice((C.STOP, C.STOP_LIMIT))
        base = self.last(symbol)
        # Mostly not yet triggered (buy above / sell below the last price), sometimes already triggered.
        delta = r.randint(-1, 3)
        trigger = max(1, base + delta if side == C.BUY else base - delta)
        price = None
        if kind == C.STOP_LIMIT:
            price = max(1, trigger + (r.randint(0, 2) if side == C.BUY else -r.randint(0, 2)))
        tif = r.choice((C.GTC, C.GTC, C.GTD))
        return N(account, cid, symbol, side, kind, r.randint(1, 6), price, trigger=trigger, tif=tif,
                 expire_at=self.expire(r, ts, tif), stp=r.choice(STPS))

    def trailing_body(self, r, account, cid, symbol, side, ts):
        amount = pct = activation = None
        if r.chance(0.5):
            pct = r.choice(PERCENTS_E6)
        else:
            amount = r.randint(1, 3)
        if r.chance(0.35):
            activation = max(1, self.last(symbol) + r.randint(-2, 2))
        tif = r.choice((C.GTC, C.GTC, C.GTD))
        return N(account, cid, symbol, side, C.TRAILING_STOP, r.randint(1, 6), trail_amount=amount,
                 trail_percent_e6=pct, activation_price=activation, tif=tif, expire_at=self.expire(r, ts, tif),
                 stp=r.choice(STPS))

    def any_body(self, r, account, cid, symbol, side, ts):
        kind = r.weighted([(6, "limit"), (2, "market"), (3, "stop"), (1, "trailing")])
        if kind == "limit":
            return self.limit_body(r, account, cid, symbol, side, ts)
        if kind == "market":
            return self.market_body(r, account, cid, symbol, side)
        if kind == "stop":
            return self.stop_body(r, account, cid, symbol, side, ts)
        return self.trailing_body(r, account, cid, symbol, side, ts)

    def malformed_stop(self, r, account, cid, symbol, side):
        variant = r.choice(("no_trigger", "trigger0", "stop_price", "ioc", "fok", "sl_no_price", "trail_none",
                            "trail_both", "trail_negative", "trail_pct_100", "trail_price", "sl_post_only"))
        kw = dict(kind=C.STOP, price=None, trigger=95, tif=C.GTC, trail_amount=None, trail_percent_e6=None,
                  post_only=False)
        kw.update({
            "no_trigger": dict(trigger=None),
            "trigger0": dict(trigger=0),
            "stop_price": dict(price=99),
            "ioc": dict(tif=C.IOC),
            "fok": dict(tif=C.FOK),
            "sl_no_price": dict(kind=C.STOP_LIMIT),
            "trail_none": dict(kind=C.TRAILING_STOP, trigger=None),
            "trail_both": dict(kind=C.TRAILING_STOP, trail_amount=1, trail_percent_e6=1_000_000),
            "trail_negative": dict(kind=C.TRAILING_STOP, trail_amount=-1),
            "trail_pct_100": dict(kind=C.TRAILING_STOP, trail_percent_e6=100_000_000),
            "trail_price": dict(kind=C.TRAILING_STOP, trail_amount=1, price=99),
            "sl_post_only": dict(kind=C.STOP_LIMIT, price=94, post_only=True),
        }[variant])
        return N(account, cid, symbol, side, kw["kind"], 2, kw["price"], trigger=kw["trigger"],
                 trail_amount=kw["trail_amount"], trail_percent_e6=kw["trail_percent_e6"], tif=kw["tif"],
                 post_only=kw["post_only"])

    # ----------------------------------------------------------- groups

    def oco(self, r, account, ts):
        symbol = self.symbol(r)
        side = r.choice((C.BUY, C.SELL))
        base = self.last(symbol)
        qty = r.randint(1, 6)
        a, b = r.randint(1, 3), r.randint(1, 3)
        if r.chance(0.12):  # breach the price relationship
            a, b = -r.randint(0, 1), r.randint(0, 2)
        if side == C.SELL:
            limit_price, trigger = base + a, base - b
        else:
            limit_price, trigger = base - a, base + b
        limit_price, trigger = max(1, limit_price), max(1, trigger)
        tif = r.choice((C.GTC, C.GTC, C.GTC, C.GTD, C.IOC))
        limit_leg = N(account, self.cid(r, account), symbol, side, C.LIMIT, qty, limit_price, tif=tif,
                      expire_at=self.expire(r, ts, tif), post_only=tif != C.IOC and r.chance(0.08),
                      stp=r.choice(STPS))
        stop_kind = r.choice((C.STOP, C.STOP_LIMIT))
        stop_price = None
        if stop_kind == C.STOP_LIMIT:
            stop_price = max(1, trigger + (1 if side == C.BUY else -1) * r.randint(0, 1))
        stop_tif = r.choice((C.GTC, C.GTC, C.GTD))
        stop_leg = N(account, self.cid(r, account), symbol, side, stop_kind, qty, stop_price, trigger=trigger,
                     tif=stop_tif, expire_at=self.expire(r, ts, stop_tif), stp=r.choice(STPS))
        roll = r.randint(0, 39) - 33  # 0..6: one kind of malformed group each (the draw shrinks to a valid one)
        if roll == 0:
            stop_leg = N(account, stop_leg.client_id, symbol, side, C.LIMIT, qty, limit_price)  # two limit legs
        elif roll == 1:
            stop_leg = N(account, stop_leg.client_id, symbol, side, stop_kind, qty + 1, stop_price, trigger=trigger)
        elif roll == 2:
            stop_leg = N(account, stop_leg.client_id, symbol, 1 - side, stop_kind, qty, stop_price, trigger=trigger)
        elif roll == 3:
            other = ACCOUNTS[(ACCOUNTS.index(account) + 1) % len(ACCOUNTS)]
            limit_leg = N(other, limit_leg.client_id, symbol, side, C.LIMIT, qty, limit_price)
        elif roll == 4:
            limit_leg = N(account, limit_leg.client_id, symbol, side, C.LIMIT, 0, limit_price)
        elif roll == 5:
            stop_leg = N(account, limit_leg.client_id, symbol, side, stop_kind, qty, stop_price, trigger=trigger)
        elif roll == 6:
            stop_leg = N(account, stop_leg.client_id, symbol, side, C.TRAILING_STOP, qty, trail_amount=2)
        legs = (limit_leg, stop_leg) if r.chance(0.5) else (stop_leg, limit_leg)
        mode = None if r.chance(0.6) else r.choice((C.OCO_CANCEL_ON_ANY_FILL, C.OCO_REDUCE,
                                                    C.OCO_CANCEL_ON_FULL_FILL))
        return C.Oco(account, self.cid(r, account), symbol, legs, mode)

    def bracket(self, r, account, ts):
        symbol = self.symbol(r)
        side = r.choice((C.BUY, C.SELL))
        base = self.last(symbol)
        cid = self.cid(r, account)
        kind = r.weighted([(5, C.LIMIT), (2, C.MARKET), (1, C.STOP)])
        if kind == C.LIMIT:
            entry = self.limit_body(r, account, self.cid(r, account), symbol, side, ts)
        elif kind == C.MARKET:
            entry = self.market_body(r, account, self.cid(r, account), symbol, side)
        else:
            entry = self.stop_body(r, account, self.cid(r, account), symbol, side, ts)
        ref_price = entry.price if entry.kind == C.LIMIT else base
        up, down = r.randint(1, 4), r.randint(1, 4)
        if r.chance(0.12):
            up, down = -r.randint(0, 1), r.randint(0, 2)
        if side == C.BUY:
            tp, sl = ref_price + up, ref_price - down
        else:
            tp, sl = ref_price - up, ref_price + down
        tp, sl = max(1, tp), max(1, sl)
        sl_price = None
        if r.chance(0.4):
            sl_price = max(1, sl + (-1 if side == C.BUY else 1) * r.randint(0, 1))
        if r.chance(0.03):
            entry = N(ACCOUNTS[(ACCOUNTS.index(account) + 1) % 4], entry.client_id, symbol, side, C.LIMIT, 2, 100)
        if r.chance(0.02):
            tp = 0
        activation = r.choice((C.ACTIVATE_FIRST_FILL, C.ACTIVATE_FIRST_FILL, C.ACTIVATE_FULL_FILL))
        return C.Bracket(account, cid, symbol, entry, tp, sl, sl_price, activation)

    def leaf(self, r):
        symbol = UNKNOWN if r.chance(0.03) else r.choice(SYMS)
        inst = self.ref.instruments.get(symbol)
        if r.chance(0.65):
            value = max(1, self.last(symbol) + r.randint(-2, 2))
            return C.Leaf(symbol, C.FIELD_LAST, r.choice((C.OP_GT, C.OP_GE, C.OP_LT, C.OP_LE, C.OP_EQ)), value)
        volume = inst.volume if inst is not None else 0
        return C.Leaf(symbol, C.FIELD_VOLUME, r.choice((C.OP_GT, C.OP_GE, C.OP_EQ)), volume + r.randint(0, 8))

    def condition(self, r, depth=0):
        if depth >= 2 or r.chance(0.55):
            return self.leaf(r)
        terms = tuple(self.condition(r, depth + 1) for _ in range(r.randint(1, 3)))
        return C.All(terms) if r.chance(0.5) else C.Any_(terms)

    def conditional(self, r, account, ts):
        symbol = self.symbol(r)
        side = r.choice((C.BUY, C.SELL))
        body = self.any_body(r, account, self.cid(r, account), symbol, side, ts)
        if r.chance(0.03):
            body = N(ACCOUNTS[(ACCOUNTS.index(account) + 1) % 4], body.client_id, symbol, side, C.LIMIT, 2, 100)
        return C.Conditional(account, self.cid(r, account), self.condition(r), body)

    # ---------------------------------------------------- cancel / replace

    def live_orders(self):
        return list(self.ref.live_orders)

    def target(self, r, for_replace: bool):
        """(account, client_id, order_id) naming an order or group, live or not."""
        mode = r.weighted([(10, "live_id"), (6, "live_cid"), (2, "live_both"), (4, "group_id"), (4, "group_cid"),
                           (2, "any_id"), (2, "any_cid"), (1, "disagree"), (1, "wrong_account"), (1, "unknown"),
                           (1, "none")])
        pool = self.live_orders()
        if for_replace and mode.startswith("live"):
            preferred = [o for o in pool if o.status in ("open", "pending")]
            pool = preferred or pool
        groups = [g for g in self.ref.groups if self.ref._group_live(g)] or self.ref.groups
        account = r.choice(ACCOUNTS)
        if mode.startswith("live") and pool:
            order = pool[r.randint(0, len(pool) - 1)]
            if mode == "live_id":
                return order.account, None, order.order_id
            if mode == "live_cid":
                return order.account, order.client_id, None
            return order.account, order.client_id, order.order_id
        if mode.startswith("group") and groups:
            group = groups[r.randint(0, len(groups) - 1)]
            if mode == "group_id":
                return group.account, None, group.group_id
            return group.account, group.client_id, None
        ids = self.h.order_ids
        if mode in ("any_id", "any_cid", "disagree", "wrong_account") and ids:
            order_id = ids[r.randint(0, len(ids) - 1)]
            owner, cid = self.h.owner[order_id]
            if mode == "any_id":
                return owner, None, order_id
            if mode == "any_cid":
                return owner, cid, None
            if mode == "disagree":
                return owner, cid, order_id + 1
            wrong = ACCOUNTS[(ACCOUNTS.index(owner) + r.randint(1, 3)) % len(ACCOUNTS)]
            return (wrong, cid, None) if r.chance(0.5) else (wrong, None, order_id)
        if mode == "none":
            return account, None, None
        return account, "nope", None if r.chance(0.5) else 999_999

    def replace(self, r):
        account, cid, order_id = self.target(r, for_replace=True)
        order = self.ref._find_live(order_id) if order_id is not None else None
        if order is None and cid is not None:
            found = self.ref.registry.get((account, cid))
            order = self.ref._find_live(found) if found is not None else None
        qty = None if r.chance(0.45) else (r.randint(1, 7) if r.chance(0.95) else r.randint(-1, 0))
        price = None
        if r.chance(0.55):
            if order is not None and order.price is not None:
                price = max(1, order.price + r.randint(-3, 3))
            elif order is not None and order.kind in (C.STOP, C.TRAILING_STOP) and r.chance(0.8):
                price = None
            else:
                price = max(1, self.last(order.symbol if order is not None else "F") + r.randint(-3, 3))
            if r.chance(0.02):
                price = r.randint(-1, 0)
        if qty is None and price is None and r.chance(0.9):
            qty = r.randint(1, 6)
        return C.Replace(account, cid, order_id, qty, price)

    def known_bug(self, cmd, ts: int) -> bool:
        """Whether ``cmd`` would hit a known disagreement (see KNOWN_BUGS)."""
        if isinstance(cmd, C.Cancel) and "bracket_group_cancel_unfilled" in KNOWN_BUGS:
            target = self.ref._target(cmd.account, cmd.client_id, cmd.order_id)
            if getattr(target, "kind", None) == "bracket":
                entry = target.member("entry")
                if live(entry) and entry.filled == 0:
                    return True
        if isinstance(cmd, C.Replace):
            target = self.ref._target(cmd.account, cmd.client_id, cmd.order_id)
            if "bracket_child_size_up" in KNOWN_BUGS and cmd.qty is not None:
                if getattr(target, "role", None) in ("tp", "sl") and cmd.qty > target.open_qty:
                    return True
            if "post_only_replace_in_call" in KNOWN_BUGS and getattr(target, "post_only", False):
                if self.ref.instruments[target.symbol].phase == "call":
                    return True
        if isinstance(cmd, C.Oco) and "oco_check_order" in KNOWN_BUGS:
            a, b = cmd.legs
            kinds = sorted(leg.kind for leg in cmd.legs)
            legs_invalid = a.side != b.side or a.qty != b.qty or kinds not in ([C.LIMIT, C.STOP], [C.LIMIT, C.STOP_LIMIT])
            if legs_invalid and any(ReferenceEngine._structurally_invalid(leg) for leg in cmd.legs):
                return True
        if isinstance(cmd, C.Auction) and cmd.symbol == "P" and "top_lost_in_auction" in KNOWN_BUGS:
            return cmd.action == C.AUCTION_OPEN  # P is the only instrument with a TOP order
        if isinstance(cmd, C.Auction) and "auction_market_only_surplus" in KNOWN_BUGS:
            inst = self.ref.instruments.get(cmd.symbol)
            if cmd.action == C.AUCTION_UNCROSS and inst is not None and inst.phase == "call":
                # The GTD expiries at the command's time come first: if any is due, plan on a copy that has
                # seen them.
                sim = self.ref
                if any(o.tif == C.GTD and o.expire_at <= ts and o.symbol == cmd.symbol for o in self.ref.live_orders):
                    sim = copy.deepcopy(self.ref)
                    sim.apply(C.Clock(), self.ref.seq + 1, ts)
                inst = sim.instruments[cmd.symbol]
                reference = cmd.reference_price if cmd.reference_price is not None else inst.last
                plan = sim.plan_uncross(inst, reference)
                market_buy = sum(o.open_qty for o in inst.call_market if o.side == C.BUY)
                market_sell = sum(o.open_qty for o in inst.call_market if o.side == C.SELL)
                if plan is not None and inst.orders and market_buy >= plan[1] and market_sell >= plan[1] and (
                    plan[2] != market_buy - market_sell
                ):
                    return True
        return False

    # ------------------------------------------------------------ top level

    def command(self, r) -> tuple[object, int]:
        """A random command (and its ts step) that does not hit a known disagreement."""
        cmd, dt = self.draw(r)
        if not self.known_bug(cmd, self.h.next_ts(dt)):
            return cmd, dt
        if isinstance(cmd, C.Auction) and cmd.action == C.AUCTION_UNCROSS:
            # cancel a waiting market order instead, so that the call phase can end
            waiting = self.ref.instruments[cmd.symbol].call_market[0]
            return C.Cancel(waiting.account, None, waiting.order_id), dt
        return C.Clock(), dt

    def draw(self, r) -> tuple[object, int]:
        h = self.h
        dt = r.choice((0, 0, 1, 1, 2, 3, 5, 8))
        ts = h.next_ts(dt)
        account = r.choice(ACCOUNTS)
        what = r.weighted([
            (22, "limit"), (5, "market"), (7, "stop"), (4, "trailing"), (6, "oco"), (6, "bracket"),
            (5, "conditional"), (7, "cancel"), (8, "replace"), (4, "clock"), (4, "auction"), (2, "malformed"),
            (1, "instrument"),
        ])
        if what == "limit":
            symbol, side = self.symbol(r), r.choice((C.BUY, C.SELL))
            return self.limit_body(r, account, self.cid(r, account), symbol, side, ts), dt
        if what == "market":
            symbol, side = self.symbol(r), r.choice((C.BUY, C.SELL))
            return self.market_body(r, account, self.cid(r, account), symbol, side), dt
        if what == "stop":
            symbol, side = self.symbol(r), r.choice((C.BUY, C.SELL))
            return self.stop_body(r, account, self.cid(r, account), symbol, side, ts), dt
        if what == "trailing":
            symbol, side = self.symbol(r), r.choice((C.BUY, C.SELL))
            return self.trailing_body(r, account, self.cid(r, account), symbol, side, ts), dt
        if what == "oco":
            return self.oco(r, account, ts), dt
        if what == "bracket":
            return self.bracket(r, account, ts), dt
        if what == "conditional":
            return self.conditional(r, account, ts), dt
        if what == "cancel":
            return C.Cancel(*self.target(r, for_replace=False)), dt
        if what == "replace":
            return self.replace(r), dt
        if what == "clock":
            return C.Clock(), r.randint(0, 30)
        if what == "auction":
            in_call = [s for s in SYMS if self.ref.instruments[s].phase == "call"]
            if in_call and r.chance(0.7):
                symbol = r.choice(in_call)
                reference = None if r.chance(0.6) else max(1, self.last(symbol) + r.randint(-4, 4))
                return C.Auction(symbol, C.AUCTION_UNCROSS, reference), dt
            action = C.AUCTION_OPEN if r.chance(0.85) else C.AUCTION_UNCROSS
            return C.Auction(self.symbol(r), action), dt
        if what == "malformed":
            symbol, side = self.symbol(r), r.choice((C.BUY, C.SELL))
            return self.malformed_stop(r, account, self.cid(r, account), symbol, side), dt
        return C.Instrument(r.choice(SYMS), "0.01", "1"), dt


def seed_books(h: Harness, r) -> None:
    """A few resting levels per symbol and, usually, a first trade (so there is a last price)."""
    for symbol in SYMS:
        depth = r.randint(0, 3)
        for level in range(depth):
            for side, price in ((C.BUY, MID - 1 - level), (C.SELL, MID + 1 + level)):
                account = ACCOUNTS[(level + side + r.randint(0, 3)) % len(ACCOUNTS)]
                h.step(N(account, h.fresh_client_id(), symbol, side, C.LIMIT, r.randint(1, 6), price), 0)
        if r.chance(0.8):
            h.step(N("A", h.fresh_client_id(), symbol, C.BUY, C.LIMIT, 2, MID), 0)
            h.step(N("B", h.fresh_client_id(), symbol, C.SELL, C.LIMIT, 2, MID), 0)


def new_harness() -> Harness:
    h = Harness(INSTRUMENTS_X, REF_QUIRKS)
    h.report_tail = 60
    return h


# ---------------------------------------------------------------- hypothesis


class ContingentMachine(HarnessMachine):
    """Random mixed command streams into both engines; every step is compared."""

    def __init__(self) -> None:
        super().__init__()
        self.h = new_harness()
        self.gen = Gen(self.h)

    @initialize(data=st.data())
    def seed(self, data):
        seed_books(self.h, DataChooser(data))

    @rule(data=st.data())
    def command(self, data):
        cmd, dt = self.gen.command(DataChooser(data))
        self.h.step(cmd, dt)


ContingentMachine.TestCase.settings = settings(max_examples=80, stateful_step_count=50, **ORACLE_SETTINGS)
TestContingentMachine = ContingentMachine.TestCase


# ----------------------------------------------------------- seeded streams

SEEDS = (7, 11, 12, 13, 2024)
STREAM_COMMANDS = 4_000
DIGEST_EVERY = 1_000
RESTART_EVERY = 900  # a snapshot/restore of the fast engine mid-stream


@pytest.mark.parametrize("seed", SEEDS)
def test_seeded_mixed_stream(seed):
    rng = random.Random(seed)
    r = RngChooser(rng)
    h = new_harness()
    seed_books(h, r)
    gen = Gen(h)
    for n in range(STREAM_COMMANDS):
        cmd, dt = gen.command(r)
        h.step(cmd, dt)
        if n % DIGEST_EVERY == DIGEST_EVERY - 1:
            h.check_replay_digest()
        if n % RESTART_EVERY == RESTART_EVERY - 1:
            h.restart()
    h.check_replay_digest()
    # The stream must actually exercise the rules, or the oracle proves little.
    assert sum(inst.trade_count for inst in h.ref.instruments.values()) > STREAM_COMMANDS // 10


# --------------------------------------------------------- explicit examples


run_both = assert_engines_agree  # every step compared, events returned


# ------------------------- the reference against the worked examples of market-rules.md


def aggressive(buyer: str, seller: str, side: int, qty: int, price: int, symbol: str, tag: str) -> list:
    """A resting order and an incoming one that trades it in full: one trade with aggressor ``side``."""
    if side == C.BUY:
        return [N(seller, f"m{tag}", symbol, C.SELL, C.LIMIT, qty, price), N(buyer, f"t{tag}", symbol, C.BUY, C.LIMIT,
                                                                             qty, price)]
    return [N(buyer, f"m{tag}", symbol, C.BUY, C.LIMIT, qty, price), N(seller, f"t{tag}", symbol, C.SELL, C.LIMIT, qty,
                                                                         price)]


def test_example_1a_vpin():
    """market-rules §1 Example 1a: V = 10, n = 3; B6 S3 B4 B5 S12 B2 S6 B2 -> 20/30 after bucket 3, 18/30 after 4."""
    commands = [C.Instrument("V", "0.01", "1", vpin_bucket=10, vpin_window=3)]
    checkpoints = {}
    for n, (side, qty) in enumerate([(C.BUY, 6), (C.SELL, 3), (C.BUY, 4), (C.BUY, 5), (C.SELL, 12), (C.BUY, 2),
                                     (C.SELL, 6), (C.BUY, 2)]):
        commands += aggressive("X", "Y", side, qty, 100, "V", str(n))
        checkpoints[n] = len(commands)
    fast, ref = Engine(), ReferenceEngine()
    seen = {}
    for seq, cmd in enumerate(commands, start=1):
        fast.apply(cmd, seq, seq)
        ref.apply(cmd, seq, seq)
        assert fast.stats("V") == ref.stats("V")
        seen[seq] = ref.stats("V")["vpin"]
    assert seen[checkpoints[3]] is None  # one bucket closed ({B7, S3})
    assert seen[checkpoints[4]] == Fraction(20, 30)  # S12 closes buckets 2 ({B8, S2}) and 3 ({B0, S10})
    assert seen[checkpoints[6]] == Fraction(20, 30)  # bucket 4 still open
    assert seen[checkpoints[7]] == Fraction(18, 30)  # B2 closes bucket 4 ({B4, S6}): buckets 2-4


def test_example_2_imbalance_and_microprice():
    """market-rules §2 Example 2: bid 100.00 x 300, ask 100.10 x 100 -> I 0.75, mid 100.05, W 100.075."""
    fast, ref, _ = run_both([
        C.Instrument("M", "0.01", "1"),
        N("A", "b", "M", C.BUY, C.LIMIT, 300, 10_000),
        N("B", "a", "M", C.SELL, C.LIMIT, 100, 10_010),
    ])
    stats = ref.stats("M")
    assert (stats["imbalance"], stats["mid"], stats["microprice"], stats["spread"]) == (
        Fraction(3, 4), Fraction(10_005), Fraction(20_015, 2), 10)


def test_example_3b_pro_rata():
    """market-rules §3 Example 3b: bids A 30, B 10, C 60 (time order), min_alloc 2; a sell of 15 -> A 6, B 0, C 9."""
    _, _, events = run_both([
        C.Instrument("R", "0.01", "1", matching=C.MATCH_PRO_RATA, min_alloc=2),
        N("A", "A", "R", C.BUY, C.LIMIT, 30, 100),
        N("B", "B", "R", C.BUY, C.LIMIT, 10, 100),
        N("C", "C", "R", C.BUY, C.LIMIT, 60, 100),
        N("D", "s", "R", C.SELL, C.LIMIT, 15, 100),
    ])
    assert [(e.maker_client_id, e.qty) for e in events[-1] if isinstance(e, E.Trade)] == [("A", 6), ("C", 9)]


def test_example_4a_auction():
    """market-rules §4 Example 4a: p* 100, volume 700, surplus 300, six trades, the book after."""
    buys = [("B1", None, 100), ("B2", 102, 200), ("B3", 101, 300), ("B4", 100, 400), ("B5", 99, 200)]
    sells = [("S1", None, 150), ("S2", 99, 300), ("S3", 100, 250), ("S4", 101, 300), ("S5", 103, 200)]
    commands = [C.Instrument("U", "1", "1"), C.Auction("U", C.AUCTION_OPEN)]
    for side, orders in ((C.BUY, buys), (C.SELL, sells)):
        for cid, price, qty in orders:
            kind, tif = (C.MARKET, C.IOC) if price is None else (C.LIMIT, C.GTC)
            commands.append(N(cid, cid, "U", side, kind, qty, price, tif=tif))
    commands.append(C.Auction("U", C.AUCTION_UNCROSS, 100))
    _, ref, events = run_both(commands)
    last = events[-1]
    assert last[0] == E.AuctionResult(len(commands), "U", 100, 700, 300)
    trades = [(e.buyer, e.seller, e.qty) for e in last if isinstance(e, E.Trade)]
    assert trades == [("B1", "S1", 100), ("B2", "S1", 50), ("B2", "S2", 150), ("B3", "S2", 150), ("B3", "S3", 150),
                      ("B4", "S3", 100)]
    assert ref.book("U")["bids"] == [{"price": 100, "qty": 300, "orders": 1}, {"price": 99, "qty": 200, "orders": 1}]
    assert ref.book("U")["asks"] == [{"price": 101, "qty": 300, "orders": 1}, {"price": 103, "qty": 200, "orders": 1}]


@pytest.mark.parametrize("final, fires", [(42_316, False), (42_315, True)])
def test_example_5b_trailing_percent(final, fires):
    """market-rules §5 Example 5b: trailing sell 7 % placed at 40,000; 42,000, 39,500, 45,500, then it triggers at
    42,315 (= 45,500 x 0.93) and not at 42,316."""
    commands = [C.Instrument("T", "1", "1")] + aggressive("X", "Y", C.BUY, 1, 40_000, "T", "0")
    commands.append(N("S", "trail", "T", C.SELL, C.TRAILING_STOP, 1, trail_percent_e6=7_000_000))
    for n, price in enumerate((42_000, 39_500, 45_500, final)):
        commands += aggressive("X", "Y", C.BUY, 1, price, "T", str(n + 1))
    _, _, events = run_both(commands)
    assert any(isinstance(e, E.Triggered) for e in events[-1]) == fires
    assert not any(isinstance(e, E.Triggered) for step in events[:-1] for e in step)


def test_example_6b_bracket():
    """market-rules §6 / semantics.md §11 Example 6b: buy 10 @100, TP 110, SL 95."""
    _, ref, events = run_both([
        C.Instrument("K", "1", "1"),
        C.Bracket("A", "br", "K", N("A", "en", "K", C.BUY, C.LIMIT, 10, 100), 110, 95),
        N("B", "s1", "K", C.SELL, C.LIMIT, 4, 100),  # entry fills 4 -> TP 4, SL 4
        N("B", "s2", "K", C.SELL, C.LIMIT, 6, 100),  # entry fills 6 more -> TP 10, SL 10
        N("C", "b1", "K", C.BUY, C.LIMIT, 3, 110),  # TP fills 3 -> SL 7
        N("D", "b2", "K", C.BUY, C.LIMIT, 20, 95),  # a bid for the stop-loss to hit
        N("E", "x1", "K", C.SELL, C.LIMIT, 1, 95),  # a trade at 95 fires the SL, which sells 7; TP cut to 0
    ])
    qty = {e.client_id: e.qty for step in events for e in step if isinstance(e, E.Amended)}
    assert qty == {"br/tp": 10, "br/sl": 7}
    final = events[-1]
    sl_trades = [e.qty for e in final if isinstance(e, E.Trade) and e.taker_client_id == "br/sl"]
    assert sl_trades == [7]
    assert [(e.client_id, e.reason, e.remaining_qty) for e in final if isinstance(e, E.Cancelled)] == [
        ("br/tp", "bracket", 7)]
    assert ref.open_orders() == [(8, "b2", 1, 12)]  # flat: only D's bid is left


# ----------------------------- regressions: disagreements the oracle found, now fixed


# Regression (was a disagreement): fast engine: cancelling a bracket group whose entry has no fill cancels the
# inactive TP/SL with reason 'bracket' instead of 'user' (semantics.md §11: cancelling the group cancels every
# live member with cancelled(user))
def test_regression_bracket_group_cancel_unfilled_entry():
    _, _, events = run_both([
        C.Instrument("X", "0.01", "1"),
        C.Bracket("A", "br", "X", N("A", "en", "X", C.BUY, C.LIMIT, 5, 100), 110, 95),
        C.Cancel("A", "br"),
    ])
    assert [(e.client_id, e.reason) for e in events[-1]] == [("en", "user"), ("br/tp", "user"), ("br/sl", "user")]


# Regression (was a disagreement): fast engine: a call auction (open + uncross, even with nothing crossing)
# drops the pro-rata TOP order (semantics.md §13: it stays TOP until it leaves the book or another order betters
# the market)
def test_regression_pro_rata_top_survives_an_auction():
    _, _, events = run_both([
        C.Instrument("P", "0.01", "1", matching=C.MATCH_PRO_RATA, min_alloc=2, top_order=True),
        N("B", "b1", "P", C.BUY, C.LIMIT, 5, 104),  # rests on an empty side: TOP
        N("C", "c1", "P", C.BUY, C.LIMIT, 4, 104),
        C.Auction("P", C.AUCTION_OPEN),
        C.Auction("P", C.AUCTION_UNCROSS),  # nothing crosses
        N("D", "d", "P", C.SELL, C.MARKET, 6, tif=C.IOC),
    ])
    # TOP b1 takes 5; the remaining 1 lot is below min_alloc for c1 and goes to it as residual.
    assert [(e.maker_client_id, e.qty) for e in events[-1] if isinstance(e, E.Trade)] == [("b1", 5), ("c1", 1)]


# Regression (was a disagreement): fast engine: check_invariants() fails ('child exceeds the filled entry')
# after a replace that sizes up an active bracket TP or SL, which semantics.md §6/§9 allow
@pytest.mark.parametrize("child", ["br/tp", "br/sl"])
def test_regression_bracket_child_replace_size_up_breaks_invariants(child):
    """Decided: a bracket child never exceeds the open position (§11), so the size-up is refused."""
    _, _, events = run_both([
        C.Instrument("X", "0.01", "1"),
        C.Bracket("A", "br", "X", N("A", "en", "X", C.BUY, C.LIMIT, 5, 100), 110, 95),
        N("B", "s", "X", C.SELL, C.LIMIT, 2, 100),  # entry fills 2: TP and SL active with 2
        C.Replace("A", child, qty=4),
        C.Replace("A", child, qty=1),
    ])
    assert [e.reason for e in events[-2]] == ["invalid_order"]
    assert [type(e).__name__ for e in events[-1]] == ["Amended"]


# Regression (was a disagreement): fast engine: an OCO whose leg fails the structural checks of §3 (here qty 0)
# and whose legs also differ in quantity is rejected oco_legs_invalid; semantics.md §10 lists invalid_order (a
# leg fails §3's structural checks) before oco_legs_invalid
def test_regression_oco_structural_check_before_legs_check():
    _, _, events = run_both([
        C.Instrument("F", "0.01", "1"),
        C.Oco("D", "g", "F", (N("D", "a", "F", C.SELL, C.STOP, 6, trigger=99), N("D", "b", "F", C.SELL, C.LIMIT, 0, 104))),
    ])
    assert [e.reason for e in events[-1]] == ["invalid_order"]


# Regression (was a disagreement): fast engine: when the market orders alone supply the volume (market-rules
# §4.3 (e)), the auction surplus is market buys - market sells, ignoring the limit orders that D(p*) and S(p*)
# include (semantics.md §14 / market-rules §4.2: surplus = D - S at p*)
def test_regression_auction_surplus_market_only_rule():
    _, _, events = run_both([
        C.Instrument("S", "0.01", "1"),
        C.Auction("S", C.AUCTION_OPEN),
        N("A", "b", "S", C.BUY, C.MARKET, 6, tif=C.IOC),
        N("B", "s", "S", C.SELL, C.MARKET, 8, tif=C.IOC),
        N("C", "l", "S", C.SELL, C.LIMIT, 3, 90),
        C.Auction("S", C.AUCTION_UNCROSS, 100),
    ])
    # D(90) = 6, S(90) = 8 + 3 = 11: price 90 (reference 100 clamped to the best ask), volume 6, surplus -5.
    assert events[-1][0] == E.AuctionResult(6, "S", 90, 6, -5)


# Regression (was a disagreement): fast engine: the FOK simulation in a pro-rata level counts the makers ahead
# of an own order, but matching resolves every own order of the level (STP) before allocating, so the FOK is not
# killed and ends by STP (here with no trade, in general after partial fills); semantics.md §13/§3.2 and market-
# rules §7.4: simulate the STP outcome, kill with no side effects
@pytest.mark.parametrize("stp", [C.STP_EXPIRE_TAKER, C.STP_EXPIRE_BOTH, C.STP_DECREMENT])
def test_regression_pro_rata_fok_simulation_with_own_order_in_level(stp):
    _, _, events = run_both([
        C.Instrument("P", "0.01", "1", matching=C.MATCH_PRO_RATA),
        N("C", "c", "P", C.SELL, C.LIMIT, 6, 100),
        N("A", "own", "P", C.SELL, C.LIMIT, 3, 100),
        N("A", "fok", "P", C.BUY, C.MARKET, 6, tif=C.FOK, stp=stp),
    ])
    assert [(type(e).__name__, getattr(e, "reason", None)) for e in events[-1]] == [("Accepted", None),
                                                                                      ("Cancelled", "fok")]


# Regression (was a disagreement): fast engine: during a call phase, a replace that makes a resting post-only
# order lose priority emits amended and then cancels it with reason 'auction' (it leaves the book); semantics.md
# §6/§14: it rests at its new price without matching (a crossing price in reject mode is rejected
# post_only_would_cross)
@pytest.mark.parametrize("new_price, expected", [(99, ["amended"]), (103, ["rejected"])])
def test_regression_post_only_replace_in_call_phase(new_price, expected):
    _, _, events = run_both([
        C.Instrument("X", "0.01", "1"),
        N("A", "s", "X", C.SELL, C.LIMIT, 2, 102),
        N("B", "b", "X", C.BUY, C.LIMIT, 2, 97, post_only=True),
        C.Auction("X", C.AUCTION_OPEN),
        C.Replace("B", "b", price=new_price),
    ])
    assert [type(e).__name__.lower() for e in events[-1]] == expected


# Regression (was a disagreement): fast engine: an auction trade (classified by the tick rule) at the same price
# as the previous trade takes the class of the previous *tick-classified* trade (a buy if none), not the
# previous trade's class (market-rules §1.5); here the previous trade was an aggressive sell at 100, so the
# auction trade at 100 is a sell
def test_regression_vpin_auction_trade_at_unchanged_price():
    _, ref, _ = run_both([
        C.Instrument("X", "0.01", "1", vpin_bucket=2, vpin_window=1),
        N("A", "m1", "X", C.SELL, C.LIMIT, 1, 99), N("B", "t1", "X", C.BUY, C.LIMIT, 1, 99),  # buy 1 @99
        N("A", "m2", "X", C.SELL, C.LIMIT, 1, 99), N("B", "t2", "X", C.BUY, C.LIMIT, 1, 99),  # buy 1 @99: bucket 1
        N("A", "m3", "X", C.BUY, C.LIMIT, 1, 100), N("B", "t3", "X", C.SELL, C.LIMIT, 1, 100),  # sell 1 @100
        C.Auction("X", C.AUCTION_OPEN),
        N("A", "ab", "X", C.BUY, C.LIMIT, 1, 100), N("B", "as", "X", C.SELL, C.LIMIT, 1, 100),
        C.Auction("X", C.AUCTION_UNCROSS),  # one trade at 100, same price as the sell before it: a sell
    ])
    assert ref.stats("X")["vpin"] == 1  # bucket 2 = {sell 1, sell 1}


# Regression (was a disagreement): fast engine: a condition leaf with an operator code out of range is accepted
# (reasons.py: condition_invalid covers a malformed condition) and the next trade in its symbol raises
# IndexError inside Engine.apply
def test_regression_condition_with_bad_operator():
    _, _, events = run_both([
        C.Instrument("X", "0.01", "1"),
        C.Conditional("A", "g", C.Leaf("X", C.FIELD_LAST, 9, 1), N("A", "o", "X", C.BUY, C.LIMIT, 1, 100)),
        N("Z", "z1", "X", C.BUY, C.LIMIT, 1, 100),
        N("Z", "z2", "X", C.SELL, C.LIMIT, 1, 100),
    ])
    assert [e.reason for e in events[1]] == ["condition_invalid"]
