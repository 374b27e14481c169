"""Runner for the golden scenario tables in tests/golden/*.txt.

A scenario file is a sequence of scenarios, each a table of commands in and
events and books out:

    ## name of the scenario (market-rules reference)
    defaults symbol=X                 # fields added to commands that take them
    > order account=A client_id=a1 side=sell kind=limit qty=5 price=100
    >> order account=B client_id=b1 side=buy kind=market qty=2
    < accepted client_id=b1
    < trade price=100 qty=2 maker_client_id=a1 taker_client_id=b1
    < cancelled client_id=b1 reason=ioc remaining_qty=0
    = bids -
    = asks 100x3
    = queue asks a1:3

``>`` sends a command and ignores its events; ``>>`` sends one whose events
must be listed by the following ``<`` lines exactly (same count, same types,
in order; each listed field must equal the event's JSON-contract value).
Commands are ``type key=value ...`` (a value starting with ``[`` or ``{`` is
JSON) and go through the real JSON edge codec.
``= bids``/``= asks`` list levels best first as ``PRICExQTY`` (``-`` for
empty); ``= queue SIDE`` lists orders in priority as ``client_id:qty`` with
``/`` between levels; ``= last PRICE``; ``= stats key=value ...`` checks
fields of the stats JSON. ``!>`` sends a command that the edge
must refuse; the following ``!`` line gives the expected field.
"""

from __future__ import annotations

import json
import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path

from jex.core import Codec, CommandError, Engine
from jex.core.commands import BUY, SELL

GOLDEN_DIR = Path(__file__).parent / "golden"
INT_FIELDS = {"expire_at", "order_id", "ts", "vpin_window", "vpin_bar_seconds"}
BOOL_FIELDS = {"post_only", "top_order", "stop_entry_check"}
SYMBOL_TYPES = {"instrument", "order", "oco", "bracket", "auction"}
TS_STEP_NS = 1_000_000_000


@dataclass
class Step:
    line_no: int
    kind: str  # ">", ">>", "!>", "<", "=", "!", "defaults"
    text: str


@dataclass
class Scenario:
    name: str
    path: Path
    line_no: int
    steps: list[Step] = field(default_factory=list)

    @property
    def id(self) -> str:
        return f"{self.path.stem}:{self.line_no}:{self.name}"


def load_scenarios(directory: Path = GOLDEN_DIR) -> list[Scenario]:
    scenarios: list[Scenario] = []
    for path in sorted(directory.glob("*.txt")):
        current: Scenario | None = None
        for no, raw in enumerate(path.read_text().splitlines(), 1):
            line = raw.split(" #", 1)[0].rstrip() if not raw.startswith("##") else raw.rstrip()
            if not line.strip() or line.lstrip().startswith("#") and not line.startswith("##"):
                continue
            if line.startswith("##"):
                current = Scenario(line[2:].strip(), path, no)
                scenarios.append(current)
                continue
            if current is None:
                raise ValueError(f"{path}:{no}: step before the first ## scenario line")
            match = re.match(r"^(>>|!>|>|<|=|!|defaults)\s*(.*)$", line.strip())
            if match is None:
                raise ValueError(f"{path}:{no}: cannot parse {line!r}")
            current.steps.append(Step(no, match.group(1), match.group(2)))
    return scenarios


def parse_command(text: str, defaults: dict) -> dict:
    parts = shlex.split(text)
    obj: dict = {"type": parts[0]}
    for part in parts[1:]:
        key, _, value = part.partition("=")
        if value[:1] in "[{":
            obj[key] = json.loads(value)
        elif key in INT_FIELDS:
            obj[key] = int(value)
        elif key in BOOL_FIELDS:
            obj[key] = value == "true"
        else:
            obj[key] = value
    for key, value in defaults.items():
        if key == "symbol" and obj["type"] not in SYMBOL_TYPES:
            continue
        obj.setdefault(key, value)
    return obj


class Runner:
    """Drives a fresh Engine through one scenario and checks its expectations."""

    def __init__(self, scenario: Scenario) -> None:
        self.scenario = scenario
        self.engine = Engine()
        self.codec = Codec.for_engine(self.engine)
        self.seq = 0
        self.ts = 1_000 * TS_STEP_NS
        self.defaults: dict = {}

    def fail(self, step: Step, message: str) -> None:
        raise AssertionError(f"{self.scenario.path.name}:{step.line_no}: {message}")

    def send(self, obj: dict) -> list[dict]:
        command, ts = self.codec.command(obj)
        self.seq += 1
        self.ts = ts if ts is not None else self.ts + TS_STEP_NS
        events = self.engine.apply(command, self.seq, self.ts)
        self.engine.check_invariants()
        return [self.codec.event(e) for e in events]

    def run(self) -> None:
        steps = self.scenario.steps
        i = 0
        while i < len(steps):
            step = steps[i]
            i += 1
            if step.kind == "defaults":
                self.defaults.update(parse_command("x " + step.text, {}))
                self.defaults.pop("type")
            elif step.kind in (">", ">>"):
                events = self.send(parse_command(step.text, self.defaults))
                if step.kind == ">>":
                    expected = []
                    while i < len(steps) and steps[i].kind == "<":
                        expected.append(steps[i])
                        i += 1
                    self.check_events(step, events, expected)
            elif step.kind == "!>":
                if i >= len(steps) or steps[i].kind != "!":
                    self.fail(step, "!> must be followed by a ! line naming the field")
                want = steps[i].text.strip()
                i += 1
                try:
                    self.send(parse_command(step.text, self.defaults))
                except CommandError as exc:
                    if exc.field != want:
                        self.fail(step, f"refused on {exc.field} ({exc}), expected field {want}")
                else:
                    self.fail(step, "the edge accepted a command it must refuse")
            elif step.kind == "=":
                self.check_state(step)
            else:
                self.fail(step, f"unexpected {step.kind} line")

    def check_events(self, step: Step, events: list[dict], expected: list[Step]) -> None:
        got = "\n    ".join(_compact(e) for e in events)
        if len(events) != len(expected):
            self.fail(step, f"expected {len(expected)} events, got {len(events)}:\n    {got}")
        for event, want in zip(events, expected):
            parts = shlex.split(want.text)
            if event["type"] != parts[0]:
                self.fail(want, f"expected a {parts[0]} event, got:\n    {got}")
            for part in parts[1:]:
                key, _, value = part.partition("=")
                actual = event.get(key, "<missing>")
                actual_text = "null" if actual is None else str(actual)
                if actual_text != value:
                    self.fail(want, f"{parts[0]}.{key} = {actual_text}, expected {value}; events:\n    {got}")

    def check_state(self, step: Step) -> None:
        parts = step.text.split()
        what = parts[0]
        symbol = self.defaults.get("symbol")
        if len(parts) > 1 and parts[1].startswith("@"):
            symbol = parts[1][1:]
            parts = [what] + parts[2:]
        book = self.engine.book(symbol)
        if book is None:
            self.fail(step, f"no book for {symbol}")
        if what in ("bids", "asks"):
            got = " ".join(
                f"{self.codec.price(symbol, lv['price'])}x{self.codec.qty(symbol, lv['qty'])}" for lv in book[what]
            ) or "-"
            want = " ".join(parts[1:]) or "-"
            if got != want:
                self.fail(step, f"{what} are {got}, expected {want}")
        elif what == "queue":
            side = BUY if parts[1] == "bids" else SELL
            levels = []
            for level in self.engine.queue(symbol, side):
                names = []
                for order_id, qty in level:
                    order = self.engine.orders[order_id]
                    names.append(f"{order.client_id}:{self.codec.qty(symbol, qty)}")
                levels.append(" ".join(names))
            got = " / ".join(levels) or "-"
            want = " ".join(parts[2:]) or "-"
            if got != want:
                self.fail(step, f"queue {parts[1]} is {got}, expected {want}")
        elif what == "stats":
            stats = self.codec.stats(self.engine.stats(symbol))
            for part in parts[1:]:
                key, _, value = part.partition("=")
                actual = "null" if stats[key] is None else str(stats[key])
                if actual != value:
                    self.fail(step, f"stats {key} = {actual}, expected {value}")
        elif what == "last":
            got = self.codec.price(symbol, book["last"]) or "-"
            if got != parts[1]:
                self.fail(step, f"last is {got}, expected {parts[1]}")
        else:
            self.fail(step, f"unknown check {what}")


def _compact(event: dict) -> str:
    return " ".join([event["type"]] + [f"{k}={v}" for k, v in event.items() if k not in ("type", "seq")])
