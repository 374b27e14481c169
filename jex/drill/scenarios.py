"""The drill scenarios: one injected fault per run (room: jex.drill).

Each scenario is a function of a harness.Run. The table SCENARIOS maps its
name to the function and a one-line description (`jex drill --help` and
docs/drills.md show them). What "detected" counts, per scenario: a fault the
system noticed and handled (a torn tail repaired, an interrupted rollover
finished, an unproven final batch refused, corruption refused, a snapshot
refused, an I/O error that stopped the node).
"""

from __future__ import annotations

import errno
import json
import shutil
from dataclasses import dataclass
from typing import Callable

from jex.drill.child import run_jex, run_submit
from jex.drill.harness import (
    BATCH_CHOICES,
    CONTINUE_LINES,
    RECORDS_PER_SMALL_SEGMENT,
    SEGMENT_CHOICES,
    SEGMENT_SMALL_BYTES,
    Run,
    close_quietly,
)
from jex.drill.ledger import Ledger
from jex.journal import Decision, JournalCorrupt, JournalIOError, JournalUnproven, damage
from jex.journal.faultfs import FaultStorage, PowerCut
from jex.journal.limits import RECORD_HEADER_BYTES
from jex.replay.recover import recovery_anchor
from jex.snapshots import list_snapshots, snapshot_dir

NODE_KILL_POINTS = ("before_write", "after_write_before_fsync", "after_fsync_before_ack", "mid_rollover")
SNAPSHOT_KILL_POINTS = ("snapshot_tmp_written", "mid_snapshot", "snapshot_renamed", "snapshot_durable", "mid_prune")
KILL_POINTS = NODE_KILL_POINTS + SNAPSHOT_KILL_POINTS
SNAPSHOT_DRILL_EVERY = (100, 150)  # seqs between snapshots when a snapshot step is the target
CHILD_STARTUP_S = 0.35  # `python -m jex submit` before its first command (measured ~0.3 s)
CHILD_COMMAND_S = 0.0006  # one command in a child with one-command batches (one fdatasync each)
POWER_OPS_PER_BATCH = 2  # storage operations per batch (a pwrite and an fdatasync) and then some
IO_FAULTS = (
    ("pwrite", errno.EIO),
    ("pwrite", errno.ENOSPC),
    ("fdatasync", errno.EIO),
    ("fdatasync", errno.ENOSPC),
    ("short_write", errno.ENOSPC),  # a short write whose continuation fails
)


@dataclass(frozen=True)
class Scenario:
    name: str
    run: Callable[[Run], None]
    description: str


# --------------------------------------------------------------------- SIGKILL


def kill(run: Run) -> None:
    """SIGKILL a real `jex submit` child after a random number of
    acknowledgements or a random delay (which may land in its startup and
    recovery of the history before it)."""
    run.configure()
    rng = run.rng
    run.history(rng.choice((0, 0, rng.randrange(1, len(run.lines) // 2))))
    offset, rest = run.cursor, run.lines[run.cursor:]
    if rng.random() < 0.5:
        acks = rng.randrange(0, len(rest))
        child = run_submit(run.data, run.flow_file(rest), backend=run.backend, segment_bytes=run.segment_bytes,
                           batch=run.batch, snapshot_every=run.snapshot_every, kill_after_acks=acks)
        run.note(f"after-{acks}-acks")
    else:
        # With history, the delay counts from the child's start (the kill may land in its recovery);
        # without, from its first acknowledgement (a kill during the interpreter's startup tests nothing).
        work_s = len(rest) * CHILD_COMMAND_S / (1 if run.batch_commands() == 1 else 4)
        delay = rng.uniform(0.05, CHILD_STARTUP_S + work_s) if offset else rng.uniform(0.0, work_s)
        child = run_submit(run.data, run.flow_file(rest), backend=run.backend, segment_bytes=run.segment_bytes,
                           batch=run.batch, snapshot_every=run.snapshot_every, kill_after_s=delay,
                           from_first_ack=not offset)
        run.note(f"after-{delay:.3f}s" + ("" if offset else "-from-first-ack"))
    _child_ended(run, child)
    run.recover_and_check(rest, child.acks, child.events, flow_offset=offset)


def killpoint(run: Run) -> None:
    """The child SIGKILLs itself at a named kill point, at its Nth hit. The
    point is chosen by seed (consecutive seeds take every point in turn)."""
    point = KILL_POINTS[run.seed % len(KILL_POINTS)]
    if point in NODE_KILL_POINTS:
        _node_killpoint(run, point)
    else:
        _snapshot_killpoint(run, point)


def _node_killpoint(run: Run, point: str) -> None:
    rng = run.rng
    run.configure(segment_bytes=SEGMENT_SMALL_BYTES if point == "mid_rollover" else rng.choice(SEGMENT_CHOICES),
                  batch=rng.choice((1, 4, 16)))
    run.history(rng.choice((0, rng.randrange(1, len(run.lines) // 3))))
    offset, rest = run.cursor, run.lines[run.cursor:]
    if point == "mid_rollover":
        hits = len(rest) // RECORDS_PER_SMALL_SEGMENT
    else:
        hits = len(rest) // run.batch_commands()
    nth = 1 if rng.random() < 0.3 else rng.randint(1, max(1, hits // 2))
    spec = f"{point}:{nth}"
    run.note(spec)
    child = run_submit(run.data, run.flow_file(rest), backend=run.backend, segment_bytes=run.segment_bytes,
                       batch=run.batch, snapshot_every=run.snapshot_every, killpoint=spec)
    _child_ended(run, child)
    run.require(child.sigkilled, f"kill point {spec} was not reached: the child exited {child.returncode} "
                                 f"({child.stderr.strip()[-300:]})")
    run.recover_and_check(rest, child.acks, child.events, flow_offset=offset)


def _snapshot_killpoint(run: Run, point: str) -> None:
    """Snapshot steps run in two places. `jex submit` snapshots in a forked
    child (the point kills that child; the node must carry on, and is
    sometimes SIGKILLed later as well). `jex snapshot` writes in-process (the
    point kills the command itself). Small segments, frequent snapshots, so
    that there is something to prune."""
    rng = run.rng
    every = rng.choice(SNAPSHOT_DRILL_EVERY)
    run.configure(segment_bytes=SEGMENT_SMALL_BYTES, batch=rng.choice((1, 8, 64)), snapshot_every=every)
    offset, rest = run.cursor, run.lines
    nth = rng.randint(1, 2) if point == "mid_prune" else 1
    spec = f"{point}:{nth}"
    if rng.random() < 0.5:
        # Sometimes SIGKILL the node too, once the snapshot children had their chance (three snapshots).
        late = 3 * every + every // 2
        later = rng.choice((None, rng.randrange(late, len(rest)))) if late < len(rest) else None
        run.note(f"fork {spec}" + (f" then-sigkill-after-{later}-acks" if later else ""))
        child = run_submit(run.data, run.flow_file(rest), backend=run.backend, segment_bytes=run.segment_bytes,
                           batch=run.batch, snapshot_every=every, killpoint=spec, kill_after_acks=later)
        _child_ended(run, child)
        run.require("killed by signal 9" in child.stderr,
                    f"kill point {spec} was not reached in a snapshot child ({child.stderr.strip()[-300:]})")
        run.result.detected += 1  # the node noticed its snapshot child died, and went on
    else:
        run.note(f"inline {spec}")
        child = run_submit(run.data, run.flow_file(rest), backend=run.backend, segment_bytes=run.segment_bytes,
                           batch=run.batch, snapshot_every=every)
        _child_ended(run, child)
        snap = run_jex(run.data, "--json", "snapshot", "--backend", run.backend, killpoint=spec)
        run.require(not snap.hung, "`jex snapshot` hung and was killed after its timeout")
        if point == "mid_prune" and snap.returncode == 0 and _pruned(snap.stdout) < nth:
            run.note("nothing-to-prune")  # the child's own snapshots had pruned all there was
        else:
            run.require(snap.sigkilled, f"kill point {spec} was not reached by `jex snapshot`: it exited "
                                        f"{snap.returncode} ({snap.stderr.strip()[-300:]})")
    run.recover_and_check(rest, child.acks, child.events, flow_offset=offset)


def _pruned(stdout: str) -> int:
    """Segments a `jex --json snapshot` run reports it pruned (0 if unreadable)."""
    try:
        value = json.loads(stdout.strip().splitlines()[-1]).get("pruned_segments", 0)
    except (ValueError, IndexError, AttributeError):
        return 0
    return len(value) if isinstance(value, list) else int(value or 0)


def _child_ended(run: Run, child) -> None:
    """A child ends by exiting 0 or by SIGKILL (the drill's or its own);
    one that hung, or exited otherwise, fails the run."""
    run.require(not child.hung, f"the child hung and was killed after its timeout: {' '.join(child.argv)}")
    run.note("sigkill" if child.sigkilled else f"exit-{child.returncode}")
    run.require(child.returncode in (0, -9), f"the child exited {child.returncode}: {child.stderr.strip()[-400:]}")


# ------------------------------------------------------------------ power loss


def power_drop(run: Run) -> None:
    """Power loss on the fault-injecting storage keeping only synced data."""
    _power(run, "drop_unsynced")


def power_random(run: Run) -> None:
    """Power loss keeping a random subset of unsynced 4 KiB blocks, each
    whole, old, torn at 512-byte sectors, or zeroed."""
    _power(run, "keep_random")


def _power(run: Run, mode: str) -> None:
    """History first, then the node (in-process, pwrite backend, snapshots
    inline through the same storage) runs until the power is cut: after a
    random number of storage operations (which may fall in recovery, a
    rollover, a snapshot or a prune) or just before a random fdatasync."""
    run.configure()
    rng = run.rng
    run.history(rng.choice((0, rng.randrange(1, len(run.lines) // 2))))
    offset, rest = run.cursor, run.lines[run.cursor:]
    batches = max(1, len(rest) // run.batch_commands())
    storage = FaultStorage(run.data)
    if rng.random() < 0.5:
        ops = rng.randrange(0, batches * POWER_OPS_PER_BATCH)
        storage.cut_power_after(ops)
        run.note(f"{mode} after-{ops}-ops")
    else:
        syncs = rng.randint(1, batches)
        storage.cut_power_before("fdatasync", syncs)
        run.note(f"{mode} before-fdatasync-{syncs}")
    acks, events, node = {}, {}, None
    try:
        with run.quiet():
            node = run.open_node(storage=storage, snapshot_every=run.snapshot_every)
            for result in node.submit_many(rest):
                acks[result.index], events[result.index] = result.seq, result.events
        run.note("no-cut")  # the flow ended before the cut; the power loss comes after it
    except PowerCut:
        run.note("cut")
    storage.power_loss(mode, rng)
    close_quietly(node)
    run.recover_and_check(rest, acks, events, flow_offset=offset, unproven_ok=mode == "keep_random")


# -------------------------------------------------------------------- I/O errors


def io_error(run: Run) -> None:
    """EIO or ENOSPC from a WAL pwrite or fdatasync (or a short write whose
    continuation fails), by seed. The node must raise, acknowledge nothing
    more (a further submit fails too), and recover after a restart (page
    cache kept) or a power loss (unsynced data dropped)."""
    operation, error = IO_FAULTS[run.seed % len(IO_FAULTS)]
    run.configure()
    rng = run.rng
    run.history(rng.choice((0, rng.randrange(1, len(run.lines) // 2))))
    offset, rest = run.cursor, run.lines[run.cursor:]
    nth = rng.randint(1, max(1, len(rest) // run.batch_commands() // 2))
    after = rng.choice(("restart", "power_loss"))
    run.note(f"{operation}:{errno.errorcode[error]}:{nth} {after}")
    storage = FaultStorage(run.data)
    acks, events, raised = {}, {}, None
    with run.quiet():
        node = run.open_node(storage=storage)
    try:
        if operation == "short_write":
            storage.fail("pwrite", short=True, nth=nth, path_contains=".wal")
            storage.fail("pwrite", error=error, nth=nth, path_contains=".wal")
        else:
            storage.fail(operation, error=error, nth=nth, path_contains=".wal")
        try:
            with run.quiet():
                for result in node.submit_many(rest):
                    acks[result.index], events[result.index] = result.seq, result.events
        except JournalIOError as failure:
            raised = failure
        run.require(raised is not None, f"the injected {operation} {errno.errorcode[error]} never fired")
        run.result.detected += 1
        _nothing_more_acknowledged(run, node)
        if after == "power_loss":
            storage.power_loss("drop_unsynced", rng)
    finally:
        close_quietly(node)
    run.recover_and_check(rest, acks, events, flow_offset=offset)


def _nothing_more_acknowledged(run: Run, node) -> None:
    """After a write or sync error the journal is stopped: a further submit
    (a clock command the edge accepts) raises JournalIOError before any
    result is released (the CLI maps it to exit 1: the process exits
    non-zero)."""
    run.require(node.journal.failed, "the journal is not marked failed after an I/O error")
    probe = json.dumps({"type": "clock", "ts": json.loads(run.lines[-1])["ts"]})
    released = []
    try:
        with run.quiet():
            released = [r for r in node.submit_many([probe]) if r.seq is not None or r.error is None]
    except JournalIOError:
        pass
    else:
        run.fail(f"a submit after the I/O error did not raise (released {len(released)} result(s))")
    if released:
        run.result.lost += len(released)
        run.fail(f"{len(released)} command(s) acknowledged after the I/O error")


# ------------------------------------------------------------ damaged copies


def bitflip(run: Run) -> None:
    """Flip one bit in a copy of a data directory. In a record followed by a
    later batch: `jex journal verify` and `jex journal repair` exit 3, and the
    node refuses to start (JournalCorrupt, not merely unproven) with no file
    changed, unless the record lies before the newest snapshot's: opening
    verifies the log from that record on (docs/snapshots.md, "What opening
    verifies"), so the node starts from that snapshot and must reach the
    acknowledged state without touching the damaged segment. In the newest
    snapshot (a quarter of the runs that have one): recovery falls back to an
    older start and reaches the same state."""
    run.configure(batch=run.rng.choice(BATCH_CHOICES[:-1]))  # several batches, so a flip can precede a later one
    run.history(len(run.lines))
    copy = run.workdir / "copy"
    shutil.copytree(run.data, copy)
    snapshots = list_snapshots(snapshot_dir(copy)).snapshots
    if snapshots and run.rng.random() < 0.25:
        _flip_snapshot(run, copy, snapshots[-1].path)
    else:
        _flip_record(run, copy)


def _flip_record(run: Run, copy) -> None:
    rng = run.rng
    records = damage.locate_all(copy / "wal")
    ends = [i for i, r in enumerate(records) if r.batch_end and i < len(records) - 1]
    run.require(bool(ends), f"no record precedes a later batch ({len(records)} records)")
    target = rng.choice(records[: ends[-1] + 1])
    offset, bit = rng.randrange(target.offset, target.offset + target.length), rng.randrange(8)
    run.note(f"record seq {target.seq} +{offset - target.offset} bit {bit}")
    damage.flip_bit(target.path, offset, bit)
    before = _hashes(copy)
    verify_cli = run_jex(copy, "--json", "journal", "verify")
    run.require(verify_cli.returncode == 3, f"`jex journal verify` exited {verify_cli.returncode}, not 3")
    repair_cli = run_jex(copy, "journal", "repair")
    run.require(repair_cli.returncode == 3, f"`jex journal repair` exited {repair_cli.returncode}, not 3")
    run.require(_hashes(copy) == before, "files changed after the refusals")
    anchor = recovery_anchor(copy)
    try:
        with run.quiet():
            node = run.open_node(copy)
    except JournalCorrupt as error:
        run.result.detected += 1
        run.note(f"{'refused-unproven' if isinstance(error, JournalUnproven) else 'refused-corrupt'} {error.reason}")
        if error.seq != target.seq:
            run.fail(f"the refusal names seq {error.seq}, the flip is in seq {target.seq}: {error}")
        if isinstance(error, JournalUnproven) and not _unprovable(records, ends, target, offset):
            run.fail(f"a flip before a later batch was judged merely unproven (repair --final-batch would "
                     f"quarantine acknowledged records): {error}")
    else:
        try:
            if anchor is None or target.seq >= anchor.seq:
                run.fail(f"the node started on a log with a flipped bit in seq {target.seq}")
            else:
                _check_started_before_anchor(run, node, anchor.seq)
        finally:
            close_quietly(node)
        damaged = target.path.name
        run.require(_hashes(copy).get(f"wal/{damaged}") == before[f"wal/{damaged}"],
                    f"the node changed the damaged segment {damaged}")
        return
    run.require(_hashes(copy) == before, "files changed after the refusals")


def _check_started_before_anchor(run: Run, node, anchor_seq: int) -> None:
    """The flip lies before the newest snapshot's record, which opening does
    not read: the node must have started from that snapshot, in the state
    the acknowledged commands give (the refusals above already came from the
    full verification)."""
    run.result.detected += 1
    run.note(f"started-from-snapshot-{node.recovered_from.seq} (flip before the verified part)")
    run.require(node.recovered_from.seq == anchor_seq,
                f"the node started from {node.recovered_from.name}, not the snapshot at seq {anchor_seq}")
    run.require(node.journal.report.verified_from_seq == anchor_seq,
                f"opening verified from seq {node.journal.report.verified_from_seq}, not {anchor_seq}")
    run.check_digest(node)


def _unprovable(records, ends, target, offset: int) -> bool:
    """True where the format cannot prove the damage predates the final
    batch: the flip is in the header of the record that ended the batch
    just before it, so the BATCH_END flag that proves the boundary is itself
    unreadable, and the record after it may, as far as the scanner can
    tell, be the rest of one batch that a power cut landed out of order.
    The node still refuses (exit 3, files unchanged); the refusal is a
    JournalUnproven, whose operator repair (`--final-batch`, meant for a
    power loss) would quarantine acknowledged records."""
    return target is records[ends[-1]] and offset < target.offset + RECORD_HEADER_BYTES


def _flip_snapshot(run: Run, copy, path) -> None:
    rng = run.rng
    offset, bit = rng.randrange(path.stat().st_size), rng.randrange(8)
    run.note(f"snapshot {path.name} +{offset} bit {bit}")
    damage.flip_bit(path, offset, bit)
    with run.quiet():
        node = run.open_node(copy)
    try:
        run.require(node.recovered_from.path != path, f"recovery used the damaged snapshot {path.name}")
        run.result.detected += 1
        run.note(f"recovered-from-{node.recovered_from.name.replace(' ', '-')}")
        run.check_digest(node)
    finally:
        close_quietly(node)
    run.post_verify(copy)


def torn(run: Run) -> None:
    """Damage the tail of a copy: cut the last record at a random byte, zero
    one of its sectors, or write garbage after it. `jex journal verify` says
    torn (exit 0), `jex journal repair` quarantines it, and the node recovers
    every record before the damage and appends after it."""
    run.configure()
    run.history(len(run.lines) - CONTINUE_LINES)  # the rest continues the flow after the repair
    copy = run.workdir / "copy"
    shutil.copytree(run.data, copy)
    last = damage.locate_all(copy / "wal")[-1]
    expected_last = _tear(run, last)
    report = run.pre_verify((Decision.TORN, Decision.CLEAN), data=copy)
    verify_cli = run_jex(copy, "--json", "journal", "verify")
    run.require(verify_cli.returncode == 0, f"`jex journal verify` of a torn tail exited {verify_cli.returncode}")
    repair_cli = run_jex(copy, "journal", "repair")
    run.require(repair_cli.returncode == 0, f"`jex journal repair` exited {repair_cli.returncode}: "
                                            f"{repair_cli.stderr.strip()[-300:]}")
    if report is not None and report.decision is Decision.TORN:
        run.require(any((copy / "quarantine").glob("*.torn")), "the torn tail was not quarantined")
    _check_copy(run, copy, expected_last, torn=report is not None and report.decision is Decision.TORN)


def _tear(run: Run, last) -> int:
    """Damage the tail; return the last seq that must survive."""
    rng = run.rng
    data = damage.read_at(last.path, last.offset, last.length)
    size = last.path.stat().st_size
    end = last.offset + last.length
    kind = rng.choice(("cut", "sector", "garbage") if end + 512 <= size else ("cut", "sector"))
    if kind == "garbage":
        start = end + 8 * rng.randrange(0, 64)
        length = min(rng.randint(1, 512), size - start)
        damage.write_at(last.path, start, rng.randbytes(length) or b"\x01")
        run.note(f"garbage +{start - end} {length}B after seq {last.seq}")
        return last.seq
    if kind == "cut":
        cut = rng.randrange(1, last.length)
        damage.zero_range(last.path, last.offset + cut, last.length - cut)
        run.note(f"cut seq {last.seq} at byte {cut}/{last.length}")
        changed = any(data[cut:])
    else:  # a zeroed 512-byte sector, as far as it overlaps the record
        sector = rng.randrange(last.offset // 512, (end - 1) // 512 + 1) * 512
        lo, hi = max(sector, last.offset), min(sector + 512, end)
        damage.zero_range(last.path, lo, hi - lo)
        run.note(f"zero sector {sector} of seq {last.seq}")
        changed = any(data[lo - last.offset : hi - last.offset])
    return last.seq - 1 if changed else last.seq


def _check_copy(run: Run, copy, expected_last: int, *, torn: bool) -> None:
    """Recover the repaired copy against a fresh ledger: the acknowledged
    lines up to the damage must all be there; the next append takes the
    next seq (after a torn tail: the torn record's own seq, N); then the
    usual finish."""
    with run.quiet():
        node = run.open_node(copy)
    try:
        run.require(node.journal.last_seq == expected_last,
                    f"after repair the log ends at seq {node.journal.last_seq}, expected {expected_last}")
        base_acks = {i: s for i, s in run.flow_acks.items() if s <= expected_last}
        base_events = {i: run.flow_events[i] for i in base_acks}
        run.ledger, run.accepted, run.acked_seq_max = Ledger(), [], 0
        run.absorb(run.lines[:run.cursor], base_acks, base_events, node.journal, flow_offset=0)
        run.result.acknowledged -= len(base_acks)  # counted once, when the history was written
        with run.quiet():
            acks = run.submit_in_process(node, run.lines[run.cursor:run.cursor + 1], flow_offset=run.cursor)
        first = acks[0]
        allowed = (expected_last + 1,) if torn else (expected_last + 1, expected_last + 2)  # +2: after a SEAL
        run.require(first in allowed, f"the first append after the repair got seq {first}, expected {allowed}")
        run.finish(node)
    finally:
        close_quietly(node)
    run.post_verify(copy)


def _hashes(root) -> dict[str, str]:
    """Hashes of the files a refusal must leave alone (LOCK records its holder)."""
    return {name: digest for name, digest in damage.file_hashes(root).items() if name != "LOCK"}


SCENARIOS: dict[str, Scenario] = {
    s.name: s
    for s in (
        Scenario("kill", kill, "SIGKILL a `jex submit` child at a random moment"),
        Scenario("killpoint", killpoint, "SIGKILL at a named kill point (Nth hit), node and snapshot steps"),
        Scenario("power-drop", power_drop, "power loss keeping only synced data (fault-injecting storage)"),
        Scenario("power-random", power_random, "power loss keeping random unsynced blocks, torn or zeroed"),
        Scenario("io-error", io_error, "EIO/ENOSPC/short write on a WAL write or fdatasync"),
        Scenario("bitflip", bitflip, "one bit flipped in a copy: refused (exit 3, unchanged), or started from the "
                                      "newest snapshot if before it, or snapshot fallback"),
        Scenario("torn", torn, "a torn tail in a copy: verify says torn, repair keeps everything before it"),
    )
}
