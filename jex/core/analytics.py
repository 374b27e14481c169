"""Book analytics: mid, spread, imbalance, weighted mid (core room).

Pure functions of a book's top levels, market-rules §2. Everything is
exact: results are ``Fraction``s in ticks/lots (or None when a side is
empty or the quantities sum to zero); the edge formats them.
"""

from __future__ import annotations

from fractions import Fraction

from .book import Book


def top_quantities(book: Book, depth: int = 1) -> tuple[int | None, int, int | None, int]:
    """(best bid, bid qty over ``depth`` levels, best ask, ask qty over ``depth`` levels)."""
    bid = book.bids.best
    ask = book.asks.best
    bid_qty = ask_qty = 0
    if depth == 1:
        bid_qty = bid.qty if bid is not None else 0
        ask_qty = ask.qty if ask is not None else 0
    else:
        for i, level in enumerate(book.bids.iter_levels()):
            if i >= depth:
                break
            bid_qty += level.qty
        for i, level in enumerate(book.asks.iter_levels()):
            if i >= depth:
                break
            ask_qty += level.qty
    return (bid.price if bid else None, bid_qty, ask.price if ask else None, ask_qty)


def imbalance(book: Book, depth: int = 1) -> Fraction | None:
    """I = Qb / (Qb + Qa); None if a side is empty."""
    bid, bid_qty, ask, ask_qty = top_quantities(book, depth)
    if bid is None or ask is None or bid_qty + ask_qty == 0:
        return None
    return Fraction(bid_qty, bid_qty + ask_qty)


def signed_imbalance(book: Book, depth: int = 1) -> Fraction | None:
    """rho = (Qb - Qa) / (Qb + Qa) = 2I - 1."""
    i = imbalance(book, depth)
    return None if i is None else 2 * i - 1


def microprice(book: Book, depth: int = 1) -> Fraction | None:
    """Size-weighted mid (P_b * Q_a + P_a * Q_b) / (Q_b + Q_a), in ticks."""
    bid, bid_qty, ask, ask_qty = top_quantities(book, depth)
    if bid is None or ask is None or bid_qty + ask_qty == 0:
        return None
    return Fraction(bid * ask_qty + ask * bid_qty, bid_qty + ask_qty)


def mid(book: Book) -> Fraction | None:
    bid, ask = book.bids.best, book.asks.best
    if bid is None or ask is None:
        return None
    return Fraction(bid.price + ask.price, 2)


def spread(book: Book) -> int | None:
    bid, ask = book.bids.best, book.asks.best
    if bid is None or ask is None:
        return None
    return ask.price - bid.price
