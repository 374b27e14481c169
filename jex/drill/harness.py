"""One drill run: its configuration, its data directory, and the steps every
scenario shares (room: jex.drill).

A run is one fresh data directory, one seeded flow (jex.workload.mixed_flow:
every command and order kind, with input timestamps), one injected fault,
then recovery and the checks. Its random choices (segment size, batch size,
snapshot interval, writer backend, where the fault lands) all come from one
`random.Random` seeded by (scenario, seed), so `jex drill --scenario S
--seed N --runs 1` makes the same choices again. Where the fault lands in
time (a SIGKILL after a delay, a thread's interleaving) is as reproducible as
a real machine allows.

Shared steps, in the order a scenario uses them:

    history(n)       the first n lines, in-process on the fault-injecting
                     storage (fast: no real fsync), with snapshots
    flow_file(lines) the input file of a `jex submit` child
    absorb(...)      the ledger checks for what one process sent and was told
    pre_verify()     the journal after the fault: clean or torn, never corrupt
    reopen()         recovery, in-process, exactly as `jex submit` recovers
    finish(node)     digest, idempotent resubmission, continuing the flow
    post_verify()    the journal verifies clean once the node is closed
"""

from __future__ import annotations

import contextlib
import io
import json
import random
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

from jex.drill.ledger import Ledger, LedgerCheck
from jex.journal import Decision, JournalCorrupt, JournalError, JournalUnproven, verify
from jex.journal.faultfs import FaultStorage
from jex.node.exchange import BULK_BATCH_WAIT_NS, Exchange
from jex.replay.rebuild import ReplayError
from jex.workload import mixed_flow

KIB = 1024
# 16 KiB segments roll over every ~50 commands. The node closes a batch when one
# more maximal (96 KiB) command might not fit the journal's batch bound, which
# segments under ~300 KiB make smaller than that: every batch is one command.
SEGMENT_SMALL_BYTES = 16 * KIB
# 320 KiB segments: batches of up to ~80 commands (group commit), a rollover every ~1,800.
SEGMENT_LARGE_BYTES = 320 * KIB
SEGMENT_CHOICES = (SEGMENT_SMALL_BYTES, SEGMENT_LARGE_BYTES)
BATCH_CHOICES = (1, 8, 64, 4096)  # `jex submit --batch`
SNAPSHOT_EVERY_CHOICES = (0, 120, 300)  # seqs between automatic snapshots (0: none)
RECORDS_PER_SMALL_SEGMENT = 70  # commands a 16 KiB segment holds before it rolls over (measured: records average 117 B)
RECORD_FRAMED_BYTES_MIN = 96  # the smallest logged command with its 80-byte header and padding
RESUBMITS_MAX = 10  # acknowledged orders resubmitted after each recovery
CONTINUE_LINES = 40  # lines of the flow submitted after each recovery
COMMANDS_DEFAULT = 600  # flow length of one run (plus instrument definitions)


class DrillFailure(Exception):
    """A run cannot go on (the failure is already recorded)."""


@dataclass
class Settings:
    """What a whole drill uses for every run."""

    commands: int = COMMANDS_DEFAULT
    backends: tuple[str, ...] = ("pwrite",)  # writer backends of the children; one per run, by seed


@dataclass
class RunResult:
    scenario: str
    seed: int
    acknowledged: int = 0
    lost: int = 0
    diverged: int = 0
    detected: int = 0
    seconds: float = 0.0
    outcome: str = ""  # what happened, e.g. "mid_rollover:2 sigkill rollover_incomplete"
    config: dict = field(default_factory=dict)
    failures: list[str] = field(default_factory=list)
    log: list[str] = field(default_factory=list)  # diagnostics of in-process nodes (refused snapshots...)

    @property
    def ok(self) -> bool:
        return not self.failures and self.lost == 0 and self.diverged == 0


class Run:
    """The state of one run; scenarios drive it."""

    def __init__(self, scenario: str, seed: int, workdir: Path, settings: Settings) -> None:
        self.rng = random.Random(f"{scenario}:{seed}")
        self.seed = seed
        self.workdir = workdir
        self.data = workdir / "data"
        self.settings = settings
        self.result = RunResult(scenario, seed)
        self.ledger = Ledger()
        self.lines = [json.dumps(c, separators=(",", ":")) for c in mixed_flow(seed, settings.commands, with_ts=True)]
        self.cursor = 0  # index of the first line of the flow not (yet) in the log
        self.acked_seq_max = 0
        self.flow_acks: dict[int, int] = {}  # index in the flow -> seq it was acknowledged with
        self.flow_events: dict[int, list] = {}  # index in the flow -> events acknowledged
        self.accepted: list[str] = []  # acknowledged orders that were accepted (lines), for resubmission
        self.segment_bytes = SEGMENT_SMALL_BYTES
        self.batch = 1
        self.snapshot_every = 0
        self.backend = settings.backends[0]
        self._outcome: list[str] = []

    # --- configuration and bookkeeping --------------------------------------------------------

    def configure(self, *, segment_bytes: int | None = None, batch: int | None = None,
                  snapshot_every: int | None = None) -> None:
        """Draw (or set) the run's segment size, batch size, snapshot interval and backend."""
        rng = self.rng
        self.segment_bytes = segment_bytes if segment_bytes is not None else rng.choice(SEGMENT_CHOICES)
        self.batch = batch if batch is not None else rng.choice(BATCH_CHOICES)
        self.snapshot_every = snapshot_every if snapshot_every is not None else rng.choice(SNAPSHOT_EVERY_CHOICES)
        self.backend = rng.choice(self.settings.backends)
        self.result.config = {"segment_bytes": self.segment_bytes, "batch": self.batch,
                              "snapshot_every": self.snapshot_every, "backend": self.backend}

    def batch_commands(self) -> int:
        """How many commands one batch of this configuration holds at most
        (so that len(lines) // batch_commands() batches surely happen)."""
        from jex.journal.writer import default_batch_bytes_max

        by_bytes = default_batch_bytes_max(self.segment_bytes) // RECORD_FRAMED_BYTES_MIN
        return max(1, min(self.batch, by_bytes))

    def note(self, text: str) -> None:
        self._outcome.append(text)
        self.result.outcome = " ".join(self._outcome)

    def fail(self, message: str) -> None:
        self.result.failures.append(message)

    def require(self, condition: bool, message: str) -> None:
        if not condition:
            self.fail(message)
            raise DrillFailure(message)

    @contextlib.contextmanager
    def quiet(self):
        """In-process nodes print notices (a refused snapshot) on stderr:
        keep them with the run instead of mixing them into the drill's output."""
        buffer = io.StringIO()
        try:
            with contextlib.redirect_stderr(buffer):
                yield
        finally:
            self.result.log.extend(line for line in buffer.getvalue().splitlines() if line)

    # --- steps ----------------------------------------------------------------------------------

    def open_node(self, data: Path | None = None, *, storage=None, backend: str | None = None,
                  snapshot_every: int = 0) -> Exchange:
        """The node as `jex submit --clock input` opens it, in this process.
        Snapshots (if any) are written inline: forking the drill is pointless."""
        return Exchange.open(
            data or self.data, backend=backend or ("pwrite" if storage is not None else self.backend),
            clock="input", segment_bytes=self.segment_bytes, batch_records_max=self.batch,
            batch_wait_ns=BULK_BATCH_WAIT_NS, storage=storage, snapshot_every=snapshot_every,
            snapshot_mode="inline", hugepages=False,
        )  # fmt: skip

    def history(self, count: int) -> None:
        """Submit the next `count` lines in-process on the fault-injecting
        storage (no real fsync, so fast), snapshots on; check them."""
        if count <= 0:
            return
        with self.quiet(), self.open_node(storage=FaultStorage(self.data), snapshot_every=self.snapshot_every) as node:
            self.submit_in_process(node, self.lines[self.cursor:self.cursor + count], flow_offset=self.cursor)

    def submit_in_process(self, node: Exchange, lines: list[str], *, flow_offset: int | None) -> dict[int, int]:
        """Submit lines through the node's API, then absorb them. `flow_offset`:
        where they start in the flow (None: they are not flow lines)."""
        acks, events = {}, {}
        for result in node.submit_many(lines):
            if result.error is not None:
                self.fail(f"line {result.index + 1}: the node refused it: {result.error}")
                raise DrillFailure("refused")
            acks[result.index], events[result.index] = result.seq, result.events
        self.absorb(lines, acks, events, node.journal, flow_offset=flow_offset)
        return acks

    def flow_file(self, lines: list[str], name: str = "flow.jsonl") -> Path:
        path = self.workdir / name
        path.write_text("".join(line + "\n" for line in lines))
        return path

    def absorb(self, lines: list[str], acks: dict[int, int], events: dict[int, list], journal,
               *, flow_offset: int | None) -> LedgerCheck:
        """The ledger checks for one process; failures are recorded, and a
        failed check stops the run."""
        check = self.ledger.absorb(lines, acks, journal, events=events)
        self.result.acknowledged += check.acknowledged
        self.result.lost += check.lost
        self.result.diverged += check.diverged
        self.result.failures.extend(check.problems)
        if flow_offset is not None:
            self.cursor = flow_offset + check.logged
            self.flow_acks.update((flow_offset + index, seq) for index, seq in acks.items())
            self.flow_events.update((flow_offset + index, told) for index, told in events.items())
        self.acked_seq_max = max([self.acked_seq_max, *acks.values()])
        self._remember_accepted(lines, acks, events)
        if not check.ok:
            raise DrillFailure("ledger check failed")
        return check

    def _remember_accepted(self, lines: list[str], acks: dict[int, int], events: dict[int, list]) -> None:
        for index in acks:
            command = json.loads(lines[index])
            if command.get("type") != "order":
                continue
            told = events.get(index, [])
            if any(e.get("type") == "accepted" and e.get("client_id") == command["client_id"] for e in told):
                self.accepted.append(lines[index])

    def pre_verify(self, allowed: Iterable[Decision] = (Decision.CLEAN, Decision.TORN), data: Path | None = None):
        """Verify the journal as the fault left it. Returns the report (None
        if the fault came before anything was written)."""
        wal = (data or self.data) / "wal"
        if not wal.is_dir():
            self.note("no-wal")
            return None
        report = verify(wal)
        if report.row not in ("clean_end", "empty_log") or (report.end is not None and report.end.batch_open):
            self.result.detected += 1  # a torn tail, an open batch, an interrupted rollover, an unproven batch
        self.require(report.decision in tuple(allowed),
                     f"journal verify after the fault: {report.decision.value} ({report.row}): {report.problem}")
        return report

    def reopen(self, *, unproven_ok: bool = False) -> Exchange:
        """Recover as the node does. A JournalUnproven is accepted only where
        the scenario says so (power loss keeping random blocks) and only if
        the batch it names starts after the last acknowledged seq; then the
        operator's `jex journal repair --final-batch` runs and recovery is
        tried again."""
        from jex.drill.child import run_jex

        try:
            with self.quiet():
                return self.open_node()
        except JournalUnproven as error:
            self.require(unproven_ok, f"recovery refused an unproven final batch: {error}")
            self.require(error.first_seq > self.acked_seq_max,
                         f"the unproven final batch seq {error.first_seq}..{error.last_seq} includes acknowledged "
                         f"seq {self.acked_seq_max}: {error}")
            self.result.detected += 1
            self.note(f"unproven:{error.first_seq}..{error.last_seq}")
            repair = run_jex(self.data, "journal", "repair", "--final-batch")
            self.require(repair.returncode == 0, f"`jex journal repair --final-batch` exited {repair.returncode}: "
                                                 f"{repair.stderr.strip()[-300:]}")
        except (JournalCorrupt, ReplayError) as error:
            self.fail(f"recovery refused to start: {error}")
            raise DrillFailure("refused") from None
        except JournalError as error:
            self.fail(f"recovery failed: {error}")
            raise DrillFailure("recovery") from None
        with self.quiet():
            return self.open_node()

    def finish(self, node: Exchange) -> None:
        """After recovery: the digest, resubmitting acknowledged orders (each
        must be a duplicate), and continuing the flow from where the log
        ends (the node must append after a repaired tail)."""
        self.check_digest(node)
        self.resubmit(node)
        more = self.lines[self.cursor:self.cursor + CONTINUE_LINES]
        if more:
            with self.quiet():
                self.submit_in_process(node, more, flow_offset=self.cursor)
        self.check_digest(node)

    def check_digest(self, node: Exchange) -> None:
        problem = self.ledger.check_digest(node.digest())
        if problem:
            self.result.diverged += 1
            self.fail(problem)
            raise DrillFailure("digest")

    def resubmit(self, node: Exchange) -> None:
        """Idempotent retry: an acknowledged, accepted order sent again is
        refused as duplicate_client_id (with the current ts: input clock)."""
        if not self.accepted:
            return
        chosen = self.rng.sample(self.accepted, min(RESUBMITS_MAX, len(self.accepted)))
        ts = self.ledger.last_ts
        retries = [json.dumps({**json.loads(line), "ts": ts}, separators=(",", ":")) for line in chosen]
        acks, events = {}, {}
        with self.quiet():
            for result in node.submit_many(retries):
                acks[result.index], events[result.index] = result.seq, result.events
        for index, line in enumerate(retries):
            told = events.get(index) or [{}]
            if told[0].get("type") != "rejected" or told[0].get("reason") != "duplicate_client_id":
                self.result.lost += 1
                self.fail(f"resubmitted acknowledged order {line[:120]} was not refused as duplicate_client_id: {told}")
        self.absorb(retries, acks, events, node.journal, flow_offset=None)

    def post_verify(self, data: Path | None = None) -> None:
        report = verify((data or self.data) / "wal")
        self.require(report.decision is Decision.CLEAN,
                     f"journal verify after recovery: {report.decision.value} ({report.row}): {report.problem}")

    def recover_and_check(self, sent: list[str], acks: dict[int, int], events: dict[int, list], *,
                          flow_offset: int, unproven_ok: bool = False,
                          allowed: Iterable[Decision] = (Decision.CLEAN, Decision.TORN)) -> None:
        """The common end of a fault run: verify, recover, absorb what the
        faulted process sent and was told, finish, verify clean."""
        report = self.pre_verify(tuple(allowed) + ((Decision.CORRUPT,) if unproven_ok else ()))
        if report is not None and report.decision is Decision.CORRUPT:
            self.require(report.unproven, f"journal verify after the fault: corrupt ({report.row}): {report.problem}")
        node = self.reopen(unproven_ok=unproven_ok)
        self.note(node.journal.report.row)
        try:
            self.absorb(sent, acks, events, node.journal, flow_offset=flow_offset)
            self.finish(node)
        finally:
            with self.quiet():
                node.close()
        self.post_verify()

    def cleanup(self) -> None:
        shutil.rmtree(self.workdir, ignore_errors=True)


def close_quietly(node: Exchange | None) -> None:
    """Close a node whose storage lost power or failed: its handles may be
    dead; nothing it does now can change what the disk holds."""
    if node is None:
        return
    try:
        node.close()
    except BaseException:  # noqa: BLE001 - the machine "died"; a failing close is expected
        pass
