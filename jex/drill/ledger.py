"""The drill's model of the log and the checks after a recovery (room: jex.drill).

A Ledger is what the log is known to hold, in log order, up to `end_seq`,
and a reference Engine fed exactly those commands with the seq and ts they
were logged with. After every process (or in-process burst) the drill hands
it what was sent (the input lines, in order), what was acknowledged (line
index -> seq, and the events the client was told) and the recovered
journal. `absorb` then checks, record by record, that

  * every acknowledged line is in the log at the seq it was acknowledged
    with (else it is *lost*);
  * the records after `end_seq` decode, in order, to the lines that were
    sent, from the first one on: the log is a prefix of what was sent, and
    no record holds anything that was not sent (else it has *diverged*);
  * the reference engine, applying each logged command, gives exactly the
    events that were acknowledged for it (else *diverged*);

and `check_digest` compares the reference digest with the recovered node's.

Records pruned behind a snapshot before the drill could read them are
covered by acknowledgements: the node snapshots only at a durable batch
boundary, and the segments it prunes lie before the older of the two kept
snapshots, whose results were all released before the newer one was taken.
So a pruned record must be an acknowledged line, and the reference engine is
fed that line at its acknowledged seq (its ts is the line's own `ts`: the
drill runs the node with `--clock input` for this reason). If that argument
ever failed, the visible records would no longer line up with the lines sent
and the check would report a divergence, not pass silently.
"""

from __future__ import annotations

import bisect
import itertools
from dataclasses import dataclass, field
from typing import Iterable, Iterator, Mapping, Protocol, Sequence

import msgspec

from jex.core import Codec, CommandError, Engine, decode_command
from jex.journal.record import RecordType

PROBLEMS_KEPT = 5  # Messages kept per check; the counts are exact, the text is for people.

_json = msgspec.json.Encoder()


class LogReader(Protocol):
    """What absorb reads: an open Journal (the node's) is one."""

    @property
    def last_seq(self) -> int: ...

    def records(self, from_seq: int = 1, to_seq: int | None = None) -> Iterator: ...


@dataclass
class LedgerCheck:
    """What one absorb found. `lost` and `diverged` count lines; `problems`
    keeps the first few messages."""

    acknowledged: int = 0  # acknowledgements checked
    logged: int = 0  # lines now known to be in the log (a prefix of those sent)
    lost: int = 0
    diverged: int = 0
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.lost == 0 and self.diverged == 0

    def add(self, kind: str, message: str) -> None:
        if kind == "lost":
            self.lost += 1
        else:
            self.diverged += 1
        if len(self.problems) < PROBLEMS_KEPT:
            self.problems.append(f"{kind}: {message}")


class Ledger:
    """The log as the drill knows it, and a reference engine fed with it."""

    def __init__(self) -> None:
        self.engine = Engine()
        self.codec = Codec.for_engine(self.engine)
        self.end_seq = 0  # Last seq (of any record type) known to be in the log.
        self.last_ts = 0  # ts of the last logged command.
        self.command_seqs: list[int] = []  # Seqs of the command records known, ascending.
        self.broken = False  # A divergence was found: the reference is no longer comparable.

    def absorb(
        self,
        sent: Sequence[str | bytes],
        acks: Mapping[int, int],
        journal: LogReader,
        *,
        events: Mapping[int, list[dict]] | None = None,
    ) -> LedgerCheck:
        """Match the records after `end_seq` against `sent` (lines in the
        order one process sent them), with `acks` (index into sent -> seq)
        and the acknowledged `events` per index. O(records read)."""
        check = LedgerCheck(acknowledged=len(acks))
        last_seq = journal.last_seq
        acked = sorted(acks.items())
        for index, seq in acked:
            if seq > last_seq:
                check.add("lost", f"line {index + 1} was acknowledged at seq {seq}; the log ends at seq {last_seq}")
        gone = len(self.command_seqs) - bisect.bisect_right(self.command_seqs, last_seq)
        for _ in range(gone):
            check.add("lost", f"the log ends at seq {last_seq}, but it held commands up to seq "
                              f"{self.command_seqs[-1]} before")
        if gone:
            self.broken = True  # the reference holds commands the log no longer does
            return check
        if self.broken:
            check.add("diverged", "an earlier divergence left the reference engine unusable")
            return check
        records = iter(journal.records(self.end_seq + 1)) if last_seq > self.end_seq else iter(())
        first = next(records, None)
        visible_from = first.seq if first is not None else last_seq + 1
        position = self._absorb_pruned(sent, acked, visible_from, events, check)
        if position is not None:
            position = self._absorb_records(sent, acks, itertools.chain([first] if first else [], records),
                                            position, events, check)
        if position is None:
            self.broken = True
            return check
        check.logged = position
        for index, seq in acked:
            if index >= position and seq <= last_seq:
                check.add("lost", f"line {index + 1} was acknowledged at seq {seq} but the log holds only "
                                  f"{position} of the lines sent")
        self.end_seq = max(self.end_seq, last_seq)
        return check

    def _absorb_pruned(self, sent, acked, visible_from: int, events, check: LedgerCheck) -> int | None:
        """Feed the reference the acknowledged lines whose records were
        pruned before the drill could read them; returns the next position."""
        position = 0
        for index, seq in acked:
            if not self.end_seq < seq < visible_from:
                continue
            if index != position:
                check.add("diverged", f"seq {seq} (line {index + 1}) was pruned, but line {position + 1} before it "
                                      "was never acknowledged: the log cannot be lined up with what was sent")
                return None
            problem = self._apply(sent[index], seq, None, events, index)
            if problem:
                check.add("diverged", problem)
                return None
            position += 1
        return position

    def _absorb_records(self, sent, acks, records: Iterable, position: int, events, check: LedgerCheck) -> int | None:
        for record in records:
            if record.type != RecordType.COMMAND:
                continue
            if position >= len(sent):
                check.add("diverged", f"seq {record.seq} holds a command, but all {len(sent)} lines sent are "
                                      "already in the log before it")
                return None
            acked_seq = acks.get(position)
            if acked_seq is not None and acked_seq != record.seq:
                check.add("diverged", f"line {position + 1} was acknowledged at seq {acked_seq} but the log "
                                      f"holds it at seq {record.seq}")
                return None
            problem = self._apply(sent[position], record.seq, record, events, position)
            if problem:
                check.add("diverged", problem)
                return None
            position += 1
        return position

    def _apply(self, line, seq: int, record, events, index: int) -> str | None:
        """Apply line `index` to the reference at `seq`; if a record is
        given, it must decode to the same command with the same ts. Returns
        a problem, or None."""
        try:
            expected, input_ts = self.codec.command(line)
        except CommandError as error:
            return f"line {index + 1}: the reference codec refuses it ({error})"
        if record is None:
            if input_ts is None:
                return f"line {index + 1} (seq {seq}) was pruned and has no ts: drills need --clock input"
            ts = input_ts
        else:
            try:
                logged = decode_command(record.payload)
            except (msgspec.DecodeError, msgspec.ValidationError) as error:
                return f"seq {seq}: undecodable payload ({error})"
            if logged != expected:
                return f"seq {seq} holds {_show(logged)}, but line {index + 1} sent {_show(expected)}"
            if input_ts is not None and record.ts_ns != input_ts:
                return f"seq {seq} carries ts {record.ts_ns}, line {index + 1} sent ts {input_ts}"
            ts = record.ts_ns
        produced = self.engine.apply(expected, seq, ts)
        self.last_ts = ts
        self.command_seqs.append(seq)
        told = None if events is None else events.get(index)
        if told is not None:
            mine = [self.codec.event(e) for e in produced]
            if _canonical(mine) != _canonical(told):
                return (f"line {index + 1} (seq {seq}): the acknowledged events differ from the reference replay: "
                        f"told {_json.encode(told)[:300]!r}, replay {_json.encode(mine)[:300]!r}")
        return None

    def check_digest(self, node_digest: str) -> str | None:
        """None if the reference digest equals the node's; else a message."""
        mine = self.engine.digest()
        if mine == node_digest:
            return None
        return f"recovered digest {node_digest} differs from the reference replay of the logged prefix ({mine})"


def _canonical(events: list[dict]) -> list:
    """Events as plain JSON values (tuples become lists), compared as values."""
    return msgspec.json.decode(_json.encode(events))


def _show(command) -> str:
    text = repr(command)
    return text if len(text) <= 160 else text[:157] + "..."
