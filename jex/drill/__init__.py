"""Crash-recovery drills: prove on this machine that nothing acknowledged is lost
(room: jex.drill).

A drill runs the exchange the way a user does, injects one fault per run,
recovers, and checks. The faults (scenarios.py):

    kill          SIGKILL of a real `jex submit` child at a random moment
    killpoint     a child SIGKILLs itself at a named kill point (Nth hit):
                  before_write, after_write_before_fsync, after_fsync_before_ack,
                  mid_rollover, and the snapshot steps snapshot_tmp_written,
                  mid_snapshot, snapshot_renamed, snapshot_durable, mid_prune
    power-drop    power loss on the fault-injecting storage: only synced data survives
    power-random  power loss keeping a random subset of unsynced blocks, torn or zeroed
    io-error      EIO / ENOSPC / a short write on a WAL write or fdatasync
    bitflip       a bit flipped in a copy of the data directory (a record before
                  the final batch: must be refused, or, before the newest
                  snapshot's record, which opening does not read, must start
                  from that snapshot; or the newest snapshot: must fall back
                  to an older start with the same state)
    torn          the log's tail cut, zeroed or followed by garbage in a copy:
                  must be repaired, keeping everything before the damage

The checks (ledger.py) after every run: every acknowledged command is in the
log at the seq it was acknowledged with, and decodes to the command that was
sent on that line; the log is a prefix of what was sent; a reference Engine
fed exactly the logged commands reaches the recovered node's digest and
gave the events the client was told; resubmitting an acknowledged order is
`duplicate_client_id`; the journal verifies clean afterwards.

This room composes node, journal, replay and the `jex` command line (as
child processes); nothing below it imports it. Entry points: runner.run_drill
(the CLI `jex drill` and tests/test_drill.py call the same function).
"""

from jex.drill.ledger import Ledger, LedgerCheck
from jex.drill.runner import PRESETS, DrillReport, Plan, run_drill
from jex.drill.scenarios import SCENARIOS

__all__ = ["PRESETS", "SCENARIOS", "DrillReport", "Ledger", "LedgerCheck", "Plan", "run_drill"]
