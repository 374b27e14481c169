"""Seeded benchmark workloads (bench room).

A ``Workload`` is one flow of commands in two forms that agree exactly:

* ``dicts``: JSON-contract command dicts, the input of the durable runs
  (``Exchange.submit_many``), so the edge codec is part of what they time;
* ``commands``: the same commands as internal Structs, the input of the
  in-memory engine runs, so only ``Engine.apply`` is timed.

Both are made once, up front, by one pass through a *shadow* engine: each
generated dict is decoded by a ``Codec`` over the shadow engine and applied
to it. The shadow lets the generators aim cancels and replaces at orders
that are really live (not filled meanwhile), and it is what makes the
Structs equal to what the node would log. ``setup`` commands (instrument
definitions, a pre-filled book) come first and are never timed.

Workloads:

* ``std``: one symbol; 60% passive limit adds within ±20 ticks of a
  drifting mid, 25% cancels of live orders, 10% aggressive limits, 5%
  market orders.
* ``exchange-core``: the exchange-core benchmark mix on one symbol: 82%
  replace/move of a live order's price, 9% GTC limits, 6% cancels, 3% IOC
  limits, on a book pre-filled to ~1,000 resting orders and held there
  (a GTC is placed passively below the target and marketable above it).
* ``amzn``: real Nasdaq flow, the LOBSTER file through
  ``jex.ingest.lobster.iter_commands`` (simulation clock: each command
  carries the file's ``ts``).

Determinism: every generator draws from its own ``random.Random(seed)`` and
reads only the deterministic shadow engine, so one seed gives one flow.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from pathlib import Path

import msgspec

from jex.core import Codec, Engine
from jex.core import commands as C

WORKLOAD_NAMES = ("std", "exchange-core", "amzn")
SETUP = "setup"  # label of untimed commands

STD_SYMBOL = "STD"
XC_SYMBOL = "XC"
MID_TICKS_START = 10_000  # 100.00 with a 0.01 tick
MID_TICKS_MIN = 1_000  # the drifting mid never goes below this
ACCOUNTS = 16  # accounts the synthetic flows spread orders over
QTY_LOTS_MAX = 100
STD_PASSIVE_TICKS_MAX = 20  # passive adds sit 1..20 ticks from the mid
STD_AGGRESSIVE_TICKS_MAX = 10  # aggressive limits reach 0..10 ticks through the mid
STOP_DISTANCE_TICKS = 500  # std's optional pending stops trigger 500..1000 ticks from the start mid
XC_RESTING_TARGET = 1_000  # the exchange-core book is held near this many resting orders
XC_BAND_TICKS = 15  # exchange-core prices sit within this many ticks of the mid
LIVE_PICK_TRIES_MAX = 8  # draws before a cancel/replace gives up on finding a live order

AMZN_FILE_NAME = "AMZN_2021-04-12_34200000_57600000_message_10.csv"
AMZN_SYMBOL = "AMZN"
AMZN_FILE_ENV = "JEX_BENCH_LOBSTER"  # overrides where the LOBSTER file is looked for


@dataclass
class Workload:
    """One flow, as dicts (durable input) and Structs (engine input).

    ``setup`` counts the leading untimed commands. ``labels[i]`` names the
    kind of command ``i`` (for per-kind latency). ``ts[i]`` is the time the
    in-memory runs stamp it with: the command's own ``ts`` under the
    simulation clock (``clock == "input"``), else its sequence number.
    """

    name: str
    symbol: str
    clock: str  # the node's clock for the durable runs: "live" or "input"
    seed: int
    dicts: list[dict] = field(default_factory=list)
    commands: list = field(default_factory=list)
    labels: list[str] = field(default_factory=list)
    ts: list[int] = field(default_factory=list)
    setup: int = 0
    digest: str = ""  # the shadow engine's state digest after the whole flow
    source: str = ""  # where the flow came from (the LOBSTER path for amzn)

    def __len__(self) -> int:
        return len(self.commands)

    @property
    def timed(self) -> int:
        """Commands after the setup prefix."""
        return len(self.commands) - self.setup

    def kinds(self) -> dict[str, int]:
        """Command count per label, setup excluded, in first-seen order."""
        counts: dict[str, int] = {}
        for label in self.labels[self.setup:]:
            counts[label] = counts.get(label, 0) + 1
        return counts

    def probe(self, client_id: str) -> dict:
        """A new passive order far from the market: the "first new command"
        of a recovery measurement. Carries the last ts under the input clock."""
        probe = {"type": "order", "account": "bench", "client_id": client_id, "symbol": self.symbol,
                 "side": "buy", "kind": "limit", "qty": "1", "price": "1.00"}
        if self.clock == "input":
            probe["ts"] = self.ts[-1]
        return probe


class _Builder:
    """Decodes each generated dict once, applies it to the shadow engine and
    appends both forms to the workload."""

    def __init__(self, workload: Workload) -> None:
        self.workload = workload
        self.engine = Engine()
        self.codec = Codec.for_engine(self.engine)
        self.encode = msgspec.json.Encoder().encode

    def add(self, label: str, command: dict) -> None:
        w = self.workload
        # Decoded from JSON bytes, not the dict: the same wire Struct, many
        # times faster to build (msgspec.convert re-resolves the union per call).
        struct, input_ts = self.codec.command(self.encode(command))
        seq = len(w.commands) + 1
        ts = input_ts if w.clock == "input" else seq
        self.engine.apply(struct, seq, ts)
        w.dicts.append(command)
        w.commands.append(struct)
        w.labels.append(label)
        w.ts.append(ts)
        if label == SETUP:
            assert w.setup == len(w.commands) - 1, "setup commands must come first"
            w.setup += 1

    def is_live(self, account: str, client_id: str) -> bool:
        order_id = self.engine.registered(account, client_id)
        return order_id is not None and order_id in self.engine.orders

    def resting(self) -> int:
        """Resting orders on the book (O(levels))."""
        book = self.engine.instruments[self.workload.symbol].book
        return sum(level.count for side in (book.bids, book.asks) for level in side.levels.values())

    def finish(self) -> Workload:
        self.workload.digest = self.engine.digest()
        return self.workload


def _price(ticks: int) -> str:
    return f"{ticks // 100}.{ticks % 100:02d}"


def _pick_live(rng: random.Random, live: list[tuple[str, str]], builder: _Builder, *, remove: bool):
    """A random live (account, client_id) from ``live``; dead entries found
    on the way are dropped. None if none was found within the try limit."""
    for _ in range(LIVE_PICK_TRIES_MAX):
        if not live:
            return None
        index = rng.randrange(len(live))
        target = live[index]
        alive = builder.is_live(*target)
        if remove or not alive:
            live[index] = live[-1]
            live.pop()
        if alive:
            return target
    return None


def std(seed: int, count: int, stops: int = 0) -> Workload:
    """The std mix: ``count`` timed commands after one instrument and
    ``stops`` pending stop orders (setup) far from the market, which never
    trigger but sit in the stop index every trade consults."""
    rng = random.Random(seed)
    builder = _Builder(Workload("std", STD_SYMBOL, "live", seed))
    builder.add(SETUP, {"type": "instrument", "symbol": STD_SYMBOL, "tick": "0.01", "lot": "1"})
    mid = MID_TICKS_START
    for i in range(stops):
        side = "sell" if i % 2 else "buy"
        distance = STOP_DISTANCE_TICKS + rng.randint(0, STOP_DISTANCE_TICKS)
        trigger = mid - distance if side == "sell" else mid + distance
        builder.add(SETUP, {"type": "order", "account": f"stop{i % 7}", "client_id": f"stop{seed}-{i}",
                            "symbol": STD_SYMBOL, "side": side, "kind": "stop", "qty": str(rng.randint(1, 10)),
                            "trigger": _price(trigger)})
    live: list[tuple[str, str]] = []
    for n in range(count):
        mid = max(MID_TICKS_MIN, mid + rng.choice((-1, 0, 0, 1)))
        roll = rng.random()
        account = f"a{rng.randrange(ACCOUNTS)}"
        cid = f"s{seed}-{n}"
        side = rng.choice(("buy", "sell"))
        sign = -1 if side == "buy" else 1
        qty = str(rng.randint(1, QTY_LOTS_MAX))
        base = {"type": "order", "account": account, "client_id": cid, "symbol": STD_SYMBOL, "side": side}
        if roll < 0.60:
            price = mid + sign * rng.randint(1, STD_PASSIVE_TICKS_MAX)
            builder.add("passive", {**base, "kind": "limit", "qty": qty, "price": _price(price)})
            live.append((account, cid))
        elif roll < 0.85:
            target = _pick_live(rng, live, builder, remove=True)
            if target is None:
                target = (account, f"gone-{cid}")  # nothing live: an unknown-order cancel
            builder.add("cancel", {"type": "cancel", "account": target[0], "client_id": target[1]})
        elif roll < 0.95:
            price = mid - sign * rng.randint(0, STD_AGGRESSIVE_TICKS_MAX)
            builder.add("aggressive", {**base, "kind": "limit", "qty": qty, "price": _price(price)})
            live.append((account, cid))
        else:
            builder.add("market", {**base, "kind": "market", "qty": qty, "tif": "IOC"})
    return builder.finish()


def exchange_core(seed: int, count: int, resting_target: int = XC_RESTING_TARGET) -> Workload:
    """The exchange-core mix: a pre-filled book of ``resting_target`` orders
    (setup), then ``count`` timed commands."""
    rng = random.Random(seed)
    builder = _Builder(Workload("exchange-core", XC_SYMBOL, "live", seed))
    builder.add(SETUP, {"type": "instrument", "symbol": XC_SYMBOL, "tick": "0.01", "lot": "1"})
    mid = MID_TICKS_START
    live: list[tuple[str, str]] = []

    def order(label: str, n: int, *, marketable: bool, tif: str = "GTC") -> None:
        account = f"a{rng.randrange(ACCOUNTS)}"
        cid = f"x{seed}-{n}"
        side = rng.choice(("buy", "sell"))
        sign = -1 if side == "buy" else 1
        offset = -rng.randint(0, 3) if marketable else rng.randint(1, XC_BAND_TICKS)
        builder.add(label, {"type": "order", "account": account, "client_id": cid, "symbol": XC_SYMBOL,
                            "side": side, "kind": "limit", "qty": str(rng.randint(1, QTY_LOTS_MAX)),
                            "price": _price(mid + sign * offset), "tif": tif})
        if tif == "GTC":
            live.append((account, cid))

    for n in range(resting_target):
        order(SETUP, -1 - n, marketable=False)
    resting = builder.resting()
    for n in range(count):
        mid = max(MID_TICKS_MIN, mid + rng.choice((-1, 0, 0, 1)))
        roll = rng.random()
        if roll < 0.82:
            target = _pick_live(rng, live, builder, remove=False)
            if target is None:
                builder.add("move", {"type": "replace", "account": "a0", "client_id": f"gone-{n}", "price": "1.00"})
                continue
            order_id = builder.engine.registered(*target)
            sign = -1 if builder.engine.orders[order_id].side == C.BUY else 1
            # Mostly passive moves; about one in eight reaches the touch or through it.
            price = mid + sign * rng.randint(-1, XC_BAND_TICKS)
            builder.add("move", {"type": "replace", "account": target[0], "client_id": target[1],
                                 "price": _price(price)})
        elif roll < 0.91:
            if n % 64 == 0:
                resting = builder.resting()  # O(levels): refreshed now and then
            order("gtc", n, marketable=resting >= resting_target)
            resting += 1
        elif roll < 0.97:
            target = _pick_live(rng, live, builder, remove=True)
            if target is None:
                target = ("a0", f"gone-{n}")
            builder.add("cancel", {"type": "cancel", "account": target[0], "client_id": target[1]})
            resting -= 1
        else:
            order("ioc", n, marketable=True, tif="IOC")
    return builder.finish()


def find_lobster_file() -> Path | None:
    """The shipped AMZN LOBSTER file: ``$JEX_BENCH_LOBSTER``, else
    ``shared/data/lobster/`` beside or above the current directory or the
    source checkout."""
    import os

    import jex

    explicit = os.environ.get(AMZN_FILE_ENV)
    if explicit:
        return Path(explicit)
    roots = [Path.cwd(), Path(jex.__file__).resolve().parents[1]]
    for root in roots:
        for base in (root, *root.parents):
            for candidate in (base / "shared" / "data" / "lobster" / AMZN_FILE_NAME,
                              base / "data" / "lobster" / AMZN_FILE_NAME):
                if candidate.is_file():
                    return candidate
    return None


_AMZN_LABELS = {("order", "GTC"): "new", ("order", "IOC"): "ioc", ("cancel", None): "cancel",
                ("replace", None): "replace"}


def amzn(path: Path | str, limit: int | None = None, seed: int = 0) -> Workload:
    """Real AMZN flow: the first ``limit`` rows of the LOBSTER file (all by
    default), converted once. ``seed`` is recorded only: the flow is fixed."""
    from jex.ingest.lobster import iter_commands

    builder = _Builder(Workload("amzn", AMZN_SYMBOL, "input", seed, source=str(path)))
    for command in iter_commands(path, AMZN_SYMBOL, limit):
        if command["type"] == "instrument":
            builder.add(SETUP, command)
            continue
        builder.add(_AMZN_LABELS.get((command["type"], command.get("tif")), command["type"]), command)
    return builder.finish()


def build(name: str, seed: int, count: int, *, amzn_rows: int | None = None, stops: int = 0) -> Workload | None:
    """Build a workload by name; None for ``amzn`` when the file is missing.
    ``stops`` applies to std only."""
    if name == "std":
        return std(seed, count, stops)
    if name == "exchange-core":
        return exchange_core(seed, count)
    if name == "amzn":
        path = find_lobster_file()
        return None if path is None else amzn(path, amzn_rows, seed)
    raise ValueError(f"unknown workload {name!r}; known: {', '.join(WORKLOAD_NAMES)}")
