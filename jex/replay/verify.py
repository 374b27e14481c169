"""Determinism verification (replay room).

``verify_replay`` proves that replaying the log is a function of the log:
two independent genesis replays must give the same state digest and the
same stream of events (hashed). Snapshot-based recovery joins this check
when snapshots exist (each retained snapshot + tail must land on the same
digest as genesis).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from jex.replay.rebuild import rebuild


@dataclass
class VerifyReport:
    seq: int
    digests: dict[str, str] = field(default_factory=dict)  # how -> state digest
    event_digests: dict[str, str] = field(default_factory=dict)  # how -> events digest
    invariants: bool = True

    @property
    def ok(self) -> bool:
        return (
            self.invariants
            and len(set(self.digests.values())) <= 1
            and len(set(self.event_digests.values())) <= 1
        )

    def as_dict(self) -> dict:
        return {
            "ok": self.ok,
            "seq": self.seq,
            "digests": self.digests,
            "event_digests": self.event_digests,
            "invariants": self.invariants,
        }


def verify_replay(data_dir: Path, to_seq: int | None = None) -> VerifyReport:
    """Replay from genesis twice (once checking invariants after every
    command) and compare state and event digests."""
    first, s1 = rebuild(data_dir, to_seq=to_seq, hash_events=True)
    report = VerifyReport(seq=s1.last_seq)
    report.digests["genesis"] = first.digest()
    report.event_digests["genesis"] = s1.events_digest
    try:
        from jex.core import Engine
        from jex.journal import read_records
        from jex.replay.rebuild import replay_records

        second = Engine()
        s2 = replay_records(
            second,
            read_records(Path(data_dir) / "wal", to_seq=s1.last_seq),
            to_seq=s1.last_seq,
            hash_events=True,
            check_invariants=True,
        )
    except AssertionError:
        report.invariants = False
        return report
    report.digests["genesis_checked"] = second.digest()
    report.event_digests["genesis_checked"] = s2.events_digest
    return report
