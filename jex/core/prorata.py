"""Pro-rata allocation inside one price level (core room).

CME "Allocation" (algorithm A), market-rules §3:

1. The TOP order (if any) is filled first, as far as it goes.
2. The rest ``R`` is shared over the other orders: ``floor(q_i * R / sum q)``;
   a share below ``min_alloc`` becomes 0.
3. The residual (rounding leftovers and zeroed shares) goes FIFO (or, with
   the legacy policy, to the largest orders first, ties to the earlier),
   each order capped at what it still has open.
4. If ``R`` covers the whole level every order is filled completely.

Integer arithmetic only; the result depends only on the inputs' order.
"""

from __future__ import annotations

from .commands import RESIDUAL_LARGEST


def allocate(
    quantities: list[int], incoming: int, top_index: int | None, min_alloc: int, residual: int
) -> list[int]:
    """Allocation per order (same order as ``quantities``, time priority).

    ``quantities`` are the open quantities of the level's orders in time
    priority; ``incoming`` the quantity to allocate; ``top_index`` the
    position of the TOP order or None. The result sums to
    ``min(incoming, sum(quantities))`` and never exceeds an order's size.
    O(n log n) for the largest-residual policy, O(n) otherwise.
    """
    total = sum(quantities)
    if incoming >= total:
        return list(quantities)
    alloc = [0] * len(quantities)
    remaining = incoming
    if top_index is not None:
        take = min(remaining, quantities[top_index])
        alloc[top_index] = take
        remaining -= take
        if remaining == 0:
            return alloc
    others = [i for i in range(len(quantities)) if i != top_index]
    pool = sum(quantities[i] for i in others)
    if pool == 0:
        return alloc
    base = remaining
    for i in others:
        share = quantities[i] * base // pool
        if share < min_alloc:
            share = 0
        alloc[i] += share
        remaining -= share
    if remaining > 0:
        order = others
        if residual == RESIDUAL_LARGEST:
            order = sorted(others, key=lambda i: (-quantities[i], i))
        for i in order:
            room = quantities[i] - alloc[i]
            if room <= 0:
                continue
            take = room if room < remaining else remaining
            alloc[i] += take
            remaining -= take
            if remaining == 0:
                break
    return alloc
