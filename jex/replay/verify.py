"""Determinism and snapshot verification (replay room).

``verify_replay`` proves that the state is a function of the log:

1. The reference replay starts at genesis (or, on a pruned log, at the
   oldest snapshot that loads) and runs to the end. At the seq of every
   retained snapshot its digest must equal the digest in that snapshot's
   header, which is the live node's digest at that seq (the snapshot child
   hashed the node's own memory).
2. A second replay from the same start, checking every invariant after
   every command, must reach the same state digest and the same stream of
   events (hashed).
3. Every retained snapshot + the tail after it must reach the same final
   digest, and its tail's events must hash like the reference's events
   after that seq.
4. Recovery as the node performs it (newest usable snapshot + tail, with
   its fallbacks) must reach the same digest; so must ``live_digest`` when
   the caller has a live node's digest to offer.

A snapshot that cannot be used (bad checksum, chain not in the log, digest
mismatch) fails the verification: `ok` is False and `problems` says why.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import xxhash

from jex.core import Engine
from jex.core.events import encode_events
from jex.replay.rebuild import replay_records
from jex.replay.recover import RecoveryError, WalView, check_against_log, recover
from jex.snapshots import SnapshotError, list_snapshots, snapshot_dir
from jex.snapshots import store


@dataclass
class VerifyReport:
    seq: int
    start: str = "genesis"  # where the reference replay started
    digests: dict[str, str] = field(default_factory=dict)  # how -> final state digest
    event_digests: dict[str, str] = field(default_factory=dict)  # reference runs -> events digest (whole range)
    snapshots: list[dict] = field(default_factory=list)  # per snapshot: seq, header vs reference, tail events
    problems: list[str] = field(default_factory=list)
    invariants: bool = True

    @property
    def ok(self) -> bool:
        return (
            self.invariants
            and not self.problems
            and len(set(self.digests.values())) <= 1
            and len(set(self.event_digests.values())) <= 1
            and all(s["ok"] for s in self.snapshots)
        )

    def as_dict(self) -> dict:
        return {
            "ok": self.ok,
            "seq": self.seq,
            "start": self.start,
            "digests": self.digests,
            "event_digests": self.event_digests,
            "snapshots": self.snapshots,
            "problems": self.problems,
            "invariants": self.invariants,
        }


class _TailHashers:
    """Events digests of every suffix (seq > start) of one replay."""

    def __init__(self, starts: list[int]) -> None:
        self.hashers = {start: xxhash.xxh3_128() for start in starts}

    def __call__(self, seq: int, events: list) -> None:
        data = encode_events(events)
        for start, hasher in self.hashers.items():
            if seq > start:
                hasher.update(data)

    def digest(self, start: int) -> str:
        return self.hashers[start].hexdigest()


def verify_replay(data_dir: Path, to_seq: int | None = None, *, live_digest: str | None = None) -> VerifyReport:
    """See the module docstring. Raises JournalCorrupt, ReplayError, RecoveryError."""
    data_dir = Path(data_dir)
    log = WalView(data_dir / "wal")
    directory = snapshot_dir(data_dir)
    files = [s for s in list_snapshots(directory).snapshots if to_seq is None or s.seq <= to_seq]
    report = VerifyReport(seq=0)
    headers = {}
    for snap in files:
        try:
            headers[snap.seq] = store.read_header(snap.path)
        except SnapshotError as error:
            report.problems.append(str(error))
    start_seq, engine = _reference_start(log, files, report)
    boundaries = sorted(seq for seq in headers if seq > start_seq)
    tails = _TailHashers([start_seq, *boundaries])
    versions = {seq: headers[seq].state_version for seq in boundaries}
    at_boundary = _reference_run(log, engine, start_seq, boundaries, versions, to_seq, tails)
    final_seq = at_boundary.pop("end")
    report.seq = final_seq
    report.digests[report.start] = engine.digest()
    report.event_digests[report.start] = tails.digest(start_seq)
    _checked_run(log, report, start_seq, to_seq, final_seq)
    for seq in boundaries:
        report.snapshots.append(_snapshot_check(log, files, headers[seq], at_boundary[seq], tails.digest(seq), final_seq, report))
    try:
        recovered = recover(log, directory, to_seq=final_seq)
        report.digests["recovered"] = recovered.engine.digest()
    except RecoveryError as error:
        report.problems.append(str(error))
    if live_digest is not None:
        report.digests["live"] = live_digest
    return report


def _reference_start(log: WalView, files, report: VerifyReport) -> tuple[int, Engine]:
    """Genesis if the log starts at seq 1, else the oldest snapshot that loads."""
    if log.first_seq == 1:
        return 0, Engine()
    for snap in files:
        try:
            header = store.read_header(snap.path)
            for _ in check_against_log(log, header, snap.path, header.seq):
                pass
            loaded = store.load(snap.path)
        except SnapshotError as error:
            report.problems.append(f"{error} (cannot start the reference replay here)")
            continue
        report.start = f"snapshot {header.seq}"
        return header.seq, loaded.engine
    raise RecoveryError(f"the log starts at seq {log.first_seq} (pruned) and no snapshot loads to start a replay")


def _reference_run(log: WalView, engine: Engine, start_seq: int, boundaries: list[int], versions: dict[int, int],
                   to_seq: int | None, tails: _TailHashers) -> dict:
    """Replay range by range; the state digest at each boundary (as the
    snapshot there states it: ``versions`` maps a boundary to its state
    version), and the end seq."""
    out: dict = {}
    position = start_seq
    for boundary in boundaries:
        stats = replay_records(engine, log.records(position + 1, boundary), to_seq=boundary, on_events=tails)
        if stats.records:
            position = stats.last_seq
        out[boundary] = store.state_digest(engine, versions[boundary]) if position == boundary else None
    stats = replay_records(engine, log.records(position + 1, to_seq), to_seq=to_seq, on_events=tails)
    out["end"] = stats.last_seq if stats.records else position
    return out


def _checked_run(log: WalView, report: VerifyReport, start_seq: int, to_seq: int | None, final_seq: int) -> None:
    name = f"{report.start} checked"
    if start_seq == 0:
        engine = Engine()
    else:
        engine = store.load(_path_of(log, report, start_seq)).engine
    hasher = _TailHashers([start_seq])
    try:
        replay_records(engine, log.records(start_seq + 1, final_seq), to_seq=final_seq, on_events=hasher,
                       check_invariants=True)
    except AssertionError as error:
        report.invariants = False
        report.problems.append(f"invariant broken on {name}: {error}")
        return
    report.digests[name] = engine.digest()
    report.event_digests[name] = hasher.digest(start_seq)


def _path_of(log: WalView, report: VerifyReport, seq: int) -> Path:
    from jex.snapshots.format import file_name

    return snapshot_dir(log.wal_dir.parent) / file_name(seq)


def _snapshot_check(log: WalView, files, header, reference_digest: str | None, reference_events: str,
                    final_seq: int, report: VerifyReport) -> dict:
    """Snapshot + tail against the reference replay."""
    path = next(s.path for s in files if s.seq == header.seq)
    row = {"seq": header.seq, "header_digest": header.digest_hex, "reference_digest": reference_digest,
           "tail_events": None, "reference_events": reference_events, "final_digest": None, "ok": False, "error": None}
    try:
        tail = check_against_log(log, header, path, final_seq)
        loaded = store.load(path)
    except SnapshotError as error:
        row["error"] = str(error)
        return row
    hasher = _TailHashers([header.seq])
    replay_records(loaded.engine, tail, to_seq=final_seq, on_events=hasher)
    row["tail_events"] = hasher.digest(header.seq)
    row["final_digest"] = loaded.engine.digest()
    report.digests[f"snapshot {header.seq}"] = row["final_digest"]
    row["ok"] = header.digest_hex == reference_digest and row["tail_events"] == reference_events
    return row
