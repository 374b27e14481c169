"""VPIN: volume-synchronised probability of informed trading (core room).

Easley, López de Prado & O'Hara (2012), market-rules §1. Volume is added in
trade order into buckets of exactly ``bucket`` lots; a trade that overflows
a bucket is split, the rest starting the next bucket with the same buy
fraction. ``VPIN = sum |V_buy - V_sell| over the last n closed buckets /
(n * bucket)``, None until n buckets have closed.

Classification:

* ``aggressor`` (default): the exchange knows the taker's side exactly;
  trades without an aggressor (auction uncrosses) fall back to the tick rule.
* ``tick``: above the previous trade price = buy, below = sell, equal = the
  previous trade's class (buy for the very first trade).
* ``bvc``: bulk volume classification on time bars of ``bar_ns``: a bar's
  buy fraction is Z(dP / sigma) (standard normal CDF; 1, 0 or 1/2 by the
  sign of dP when sigma is 0). A bar is classified when the first trade of a
  later bar arrives.

State is exact: buy volumes are ``Fraction``s (integers except under BVC),
so the VPIN value and the state digest are identical on replay. The one
float in this module is the BVC fraction Z(x), computed by CPython's own
``math.erf`` and immediately turned into an exact Fraction.
"""

from __future__ import annotations

import math
from collections import deque
from fractions import Fraction

from .commands import BUY, VPIN_AGGRESSOR, VPIN_BVC, VPIN_TICK_RULE

ONE = Fraction(1)
HALF = Fraction(1, 2)


class Vpin:
    """Bucketed order-flow imbalance for one instrument."""

    __slots__ = (
        "bucket",
        "window",
        "classify",
        "sigma",
        "bar_ns",
        "cur_total",
        "cur_buy",
        "closed",
        "oi_window",
        "oi_sum",
        "last_price",
        "last_class",
        "bar_start",
        "bar_volume",
        "bar_close",
        "prev_close",
    )

    def __init__(self, bucket: int, window: int, classify: int, sigma: int, bar_ns: int) -> None:
        self.bucket = bucket
        self.window = window
        self.classify = classify
        self.sigma = sigma
        self.bar_ns = bar_ns
        self.cur_total = 0  # lots in the open bucket
        self.cur_buy = Fraction(0)  # buy lots in the open bucket
        self.closed = 0  # buckets closed so far
        self.oi_window: deque[Fraction] = deque()
        self.oi_sum = Fraction(0)
        self.last_price: int | None = None
        self.last_class = ONE
        self.bar_start: int | None = None
        self.bar_volume = 0
        self.bar_close: int | None = None
        self.prev_close: int | None = None

    def on_trade(self, price: int, qty: int, aggressor: int | None, ts: int) -> None:
        """Account one trade (``aggressor`` is BUY/SELL or None)."""
        if self.classify == VPIN_BVC:
            self._bar(price, qty, ts)
            return
        if self.classify == VPIN_AGGRESSOR and aggressor is not None:
            fraction = ONE if aggressor == BUY else Fraction(0)
            self.last_class = fraction  # a later same-price auction trade inherits it
        else:
            fraction = self._tick(price)
        self.last_price = price
        self._add(qty, fraction)

    def _tick(self, price: int) -> Fraction:
        last = self.last_price
        if last is not None and price != last:
            self.last_class = ONE if price > last else Fraction(0)
        return self.last_class

    def _bar(self, price: int, qty: int, ts: int) -> None:
        if self.bar_start is not None and ts >= self.bar_start + self.bar_ns:
            self._close_bar()
        if self.bar_start is None:
            self.bar_start = ts - ts % self.bar_ns
        self.bar_volume += qty
        self.bar_close = price

    def _close_bar(self) -> None:
        close = self.bar_close
        assert close is not None  # a bar closes only after a trade opened it
        prev = self.prev_close if self.prev_close is not None else close
        delta = close - prev
        if self.sigma == 0:
            fraction = ONE if delta > 0 else (Fraction(0) if delta < 0 else HALF)
        else:
            z = 0.5 * (1.0 + math.erf(delta / self.sigma / math.sqrt(2.0)))
            fraction = Fraction(z).limit_denominator(1_000_000_000)
        self._add(self.bar_volume, fraction)
        self.prev_close = close
        self.bar_start = None
        self.bar_volume = 0

    def _add(self, qty: int, fraction: Fraction) -> None:
        bucket = self.bucket
        while qty > 0:
            take = min(qty, bucket - self.cur_total)
            self.cur_total += take
            self.cur_buy += take * fraction
            qty -= take
            if self.cur_total == bucket:
                self._close_bucket()

    def _close_bucket(self) -> None:
        buy = self.cur_buy
        oi = abs(buy - (self.bucket - buy))
        self.oi_window.append(oi)
        self.oi_sum += oi
        if len(self.oi_window) > self.window:
            self.oi_sum -= self.oi_window.popleft()
        self.closed += 1
        self.cur_total = 0
        self.cur_buy = Fraction(0)

    def value(self) -> Fraction | None:
        """VPIN in [0, 1] as an exact fraction, or None before n buckets closed."""
        if self.closed < self.window:
            return None
        return self.oi_sum / (self.window * self.bucket)

    def state(self) -> list:
        """Canonical state for the digest and snapshots."""
        return [
            self.cur_total,
            [self.cur_buy.numerator, self.cur_buy.denominator],
            self.closed,
            [[f.numerator, f.denominator] for f in self.oi_window],
            self.last_price,
            [self.last_class.numerator, self.last_class.denominator],
            self.bar_start,
            self.bar_volume,
            self.bar_close,
            self.prev_close,
        ]

    def load(self, state: list) -> None:
        """Restore from ``state()`` output."""
        (
            self.cur_total,
            cur_buy,
            self.closed,
            window,
            self.last_price,
            last_class,
            self.bar_start,
            self.bar_volume,
            self.bar_close,
            self.prev_close,
        ) = state
        self.cur_buy = Fraction(*cur_buy)
        self.oi_window = deque(Fraction(n, d) for n, d in window)
        self.oi_sum = sum(self.oi_window, Fraction(0))
        self.last_class = Fraction(*last_class)


def toxicity(vpin: Fraction | None) -> str | None:
    """low for VPIN <= 0.4, medium for <= 0.7, high above (DESIGN §4)."""
    if vpin is None:
        return None
    if vpin <= Fraction(2, 5):
        return "low"
    if vpin <= Fraction(7, 10):
        return "medium"
    return "high"
