"""Seeded synthetic order flow (shared by the demo, drills and benchmarks).

``mixed_flow`` produces JSON-contract command dicts that exercise every
command and order kind (limit, market, IOC, FOK, GTD, post-only, STP,
cancel, replace, stop, stop-limit, trailing stop, OCO, bracket,
conditional, call auction), deterministically from a seed. Pure: uses its
own ``random.Random``; imports nothing from the rest of jex.
"""

from __future__ import annotations

import random
from typing import Iterator

TICK = "0.01"
SECOND_NS = 1_000_000_000


def _price(ticks: int) -> str:
    return f"{ticks // 100}.{ticks % 100:02d}"


def instruments() -> list[dict]:
    return [
        {"type": "instrument", "symbol": "JEX", "tick": TICK, "lot": "1", "vpin_bucket": "500", "vpin_window": 20},
        {"type": "instrument", "symbol": "PRO", "tick": TICK, "lot": "1", "matching": "pro_rata", "min_alloc": "2",
         "top_order": True},
    ]


def mixed_flow(seed: int, count: int, *, start_ts: int = 1_700_000_000 * SECOND_NS, with_ts: bool = False,
               accounts: int = 8) -> Iterator[dict]:
    """``count`` commands after the instrument definitions (which come first).

    With ``with_ts`` every command carries a non-decreasing ``ts`` (for
    ``--clock input``); GTD expiries are placed relative to it.
    """
    rng = random.Random(seed)
    ts = start_ts
    mids = {"JEX": 10_000, "PRO": 5_000}
    live: dict[str, list[tuple[str, str]]] = {"JEX": [], "PRO": []}  # (account, client_id)
    auction_open = False
    for cmd in instruments():
        if with_ts:
            cmd = {**cmd, "ts": ts}
        yield cmd
    for n in range(count):
        ts += rng.randint(1_000, 2_000_000)
        symbol = "JEX" if rng.random() < 0.8 else "PRO"
        mids[symbol] = max(200, mids[symbol] + rng.choice((-1, 0, 0, 1)))
        mid = mids[symbol]
        account = f"acct{rng.randrange(accounts)}"
        cid = f"c{seed}-{n}"
        roll = rng.random()
        cmd = _pick(rng, roll, symbol, mid, account, cid, live, ts)
        if cmd is None and symbol == "JEX":
            if auction_open:
                cmd = {"type": "auction", "symbol": "JEX", "action": "uncross"}
            else:
                cmd = {"type": "auction", "symbol": "JEX", "action": "open"}
            auction_open = not auction_open
        elif cmd is None:
            cmd = {"type": "clock"}
        if cmd.get("type") == "order" and cmd.get("tif") in ("IOC", "FOK") and auction_open and symbol == "JEX":
            cmd["tif"] = "IOC" if cmd["kind"] == "market" else "GTC"
        if cmd.get("type") == "order" and cmd.get("post_only") and auction_open and symbol == "JEX":
            cmd.pop("post_only")
        if with_ts:
            cmd["ts"] = ts
        yield cmd
    if auction_open:  # leave the book in continuous trading
        cmd = {"type": "auction", "symbol": "JEX", "action": "uncross"}
        if with_ts:
            cmd["ts"] = ts
        yield cmd


def _pick(rng: random.Random, roll: float, symbol: str, mid: int, account: str, cid: str,
          live: dict[str, list[tuple[str, str]]], ts: int) -> dict | None:
    side = rng.choice(("buy", "sell"))
    sign = -1 if side == "buy" else 1
    qty = str(rng.choice((1, 2, 3, 5, 10, 20, 50)))
    base = {"type": "order", "account": account, "client_id": cid, "symbol": symbol, "side": side}
    if roll < 0.45:  # passive limit
        order = {**base, "kind": "limit", "qty": qty, "price": _price(mid + sign * rng.randint(0, 20))}
        r = rng.random()
        if r < 0.08:
            order["post_only"] = True
        elif r < 0.14:
            order["tif"] = "GTD"
            order["expire_at"] = ts + rng.randint(1, 30) * SECOND_NS
        if rng.random() < 0.2:
            order["stp"] = rng.choice(("expire_taker", "expire_maker", "expire_both", "decrement"))
        live[symbol].append((account, cid))
        return order
    if roll < 0.62:  # cancel
        if not live[symbol]:
            return {"type": "cancel", "account": account, "client_id": f"missing-{cid}"}
        acct, target = live[symbol].pop(rng.randrange(len(live[symbol])))
        return {"type": "cancel", "account": acct, "client_id": target}
    if roll < 0.70:  # replace
        if not live[symbol]:
            return {"type": "clock"}
        acct, target = rng.choice(live[symbol])
        if rng.random() < 0.5:
            return {"type": "replace", "account": acct, "client_id": target, "qty": str(rng.randint(1, 20))}
        return {"type": "replace", "account": acct, "client_id": target, "price": _price(mid + rng.randint(-15, 15))}
    if roll < 0.80:  # aggressive limit, sometimes IOC/FOK
        order = {**base, "kind": "limit", "qty": qty, "price": _price(mid - sign * rng.randint(0, 5))}
        order["tif"] = rng.choice(("GTC", "IOC", "FOK"))
        if rng.random() < 0.3:
            order["stp"] = rng.choice(("expire_taker", "expire_maker", "decrement"))
        live[symbol].append((account, cid))
        return order
    if roll < 0.85:  # market
        return {**base, "kind": "market", "qty": qty, "tif": rng.choice(("IOC", "IOC", "FOK"))}
    if roll < 0.90:  # stops
        kind = rng.choice(("stop", "stop_limit", "trailing_stop"))
        order = {**base, "kind": kind, "qty": qty}
        trigger = mid - sign * rng.randint(3, 30)
        if kind == "trailing_stop":
            if rng.random() < 0.5:
                order["trail_amount"] = _price(rng.randint(2, 20))
            else:
                order["trail_percent"] = rng.choice(("0.1", "0.25", "1"))
        else:
            order["trigger"] = _price(trigger)
            if kind == "stop_limit":
                order["price"] = _price(trigger - sign * 2)
        live[symbol].append((account, cid))
        return order
    if roll < 0.93:  # OCO (sell: limit above, stop below; buy mirrored)
        limit = mid - sign * -rng.randint(5, 20)
        stop = mid + sign * -rng.randint(5, 20)
        legs = [
            {"side": side, "kind": "limit", "qty": qty, "price": _price(limit if side == "sell" else mid - rng.randint(5, 20))},
            {"side": side, "kind": "stop", "qty": qty, "trigger": _price(stop if side == "sell" else mid + rng.randint(5, 20))},
        ]
        return {"type": "oco", "account": account, "client_id": cid, "symbol": symbol, "legs": legs}
    if roll < 0.96:  # bracket
        entry_price = mid + sign * rng.randint(0, 5)
        tp = entry_price - sign * rng.randint(5, 30)
        sl = entry_price + sign * rng.randint(5, 30)
        return {
            "type": "bracket", "account": account, "client_id": cid, "symbol": symbol,
            "entry": {"side": side, "kind": "limit", "qty": qty, "price": _price(entry_price)},
            "take_profit": {"price": _price(tp)}, "stop_loss": {"trigger": _price(sl)},
        }
    if roll < 0.985:  # conditional on the other symbol
        other = "PRO" if symbol == "JEX" else "JEX"
        op = rng.choice((">", ">=", "<", "<="))
        when = {"any": [
            {"symbol": other, "field": "last", "op": op, "value": _price(mid if other == symbol else 5_000 + rng.randint(-10, 10))},
            {"symbol": symbol, "field": "volume", "op": ">", "value": str(rng.randint(100, 5_000))},
        ]}
        order = {"symbol": symbol, "side": side, "kind": "limit", "qty": qty, "price": _price(mid + sign * rng.randint(0, 10))}
        return {"type": "conditional", "account": account, "client_id": cid, "when": when, "order": order}
    return None
