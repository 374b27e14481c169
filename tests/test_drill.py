"""`jex drill`: the CI drill (real SIGKILLed children, kill points, power loss
on the fault-injecting storage, I/O errors, bit flips, torn tails), one real
`jex drill` subprocess, and proof that the drill's checks can fail: they are
run on data directories damaged so that an acknowledged record is missing,
or told a history that differs from the log."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

import jex
from jex.drill import PRESETS, SCENARIOS, Ledger, Plan, run_drill
from jex.drill.child import run_submit
from jex.drill.harness import SEGMENT_LARGE_BYTES, DrillFailure, Run, RunResult, Settings
from jex.drill.report import failure_lines
from jex.drill.runner import reproduce_command, run_one
from jex.drill.scenarios import KILL_POINTS
from jex.journal import damage
from jex.node.exchange import Exchange

CI_SEED = 20261126
SMALL_SEED = 424242


@pytest.mark.slow
def test_ci_drill_loses_nothing_acknowledged(tmp_path):
    """About 20 SIGKILLs (random moments and every kill point) and 20 power
    losses, plus I/O errors, bit flips and torn tails: no failure."""
    report = run_drill(Plan(dict(PRESETS["ci"]), seed=CI_SEED, directory=tmp_path / "drill"))
    assert report.ok, "\n".join(failure_lines(report))
    by_name = {s.scenario: s for s in report.summaries}
    assert [s.runs for s in report.summaries] == list(PRESETS["ci"].values())
    assert all(s.lost == 0 and s.diverged == 0 and s.acknowledged > 0 for s in report.summaries)
    assert set(KILL_POINTS) <= set(by_name["killpoint"].outcomes), by_name["killpoint"].outcomes
    assert by_name["bitflip"].detected == by_name["bitflip"].runs  # every flip refused (or a snapshot refused)
    assert by_name["io-error"].detected == by_name["io-error"].runs  # every injected error stopped the node
    assert not any((tmp_path / "drill").iterdir()), "run directories are removed"


@pytest.mark.slow
def test_jex_drill_subprocess_prints_json_and_exits_0(tmp_path):
    done = subprocess.run(
        [sys.executable, "-m", "jex", "drill", "--runs", "small", "--json", "--seed", str(SMALL_SEED),
         "--dir", str(tmp_path / "d")],
        cwd=tmp_path, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    report = json.loads(done.stdout)
    assert report["ok"] and report["seed"] == SMALL_SEED and report["failures"] == []
    assert [s["scenario"] for s in report["scenarios"]] == list(SCENARIOS)
    assert {"runs", "acknowledged", "lost", "diverged", "detected", "seconds"} <= set(report["scenarios"][0])
    assert f"seed {SMALL_SEED}" in done.stderr  # progress lines go to stderr


def test_jex_drill_refuses_bad_options(tmp_path):
    for args in (["--scenario", "nope"], ["--runs", "lots"], ["--runs", "0"], ["--backend", "floppy"]):
        done = subprocess.run([sys.executable, "-m", "jex", "drill", *args], cwd=tmp_path, capture_output=True,
                              text=True, timeout=60)
        assert done.returncode == 2, (args, done.stderr)
        assert done.stderr.count("\n") == 1, done.stderr


def test_every_kill_point_in_the_code_is_drilled():
    """A kill point added to the code without a drill would go untested."""
    used = set()
    for path in Path(jex.__file__).parent.rglob("*.py"):
        used |= set(re.findall(r'killpoints\.hit\("([a-z_]+)"\)', path.read_text()))
    assert used and used == set(KILL_POINTS), (used, KILL_POINTS)


def test_a_run_is_reproducible_from_its_seed(tmp_path):
    first = run_one("power-drop", 11, tmp_path / "a", Settings())
    second = run_one("power-drop", 11, tmp_path / "b", Settings())
    assert first.ok and second.ok
    assert first.config == second.config and first.outcome.split()[:2] == second.outcome.split()[:2]
    plan = Plan({"power-drop": 1}, seed=11, commands=300, backend="pwrite")
    assert reproduce_command(plan, "torn", 12) == (
        "jex drill --scenario torn --seed 12 --runs 1 --commands 300 --backend pwrite --keep"
    )


def test_failure_lines_name_the_seed_and_the_reproducer():
    from jex.drill.runner import DrillReport, Failure

    failure = Failure("kill", 77, ["lost: line 5 was acknowledged at seq 7; the log ends at seq 6"], "sigkill",
                      {"batch": 8}, "jex drill --scenario kill --seed 77 --runs 1 --keep", None)
    report = DrillReport(77, "/tmp/x", False, [], [failure], 1.0)
    text = "\n".join(failure_lines(report))
    assert "kill seed 77" in text and "reproduce: jex drill --scenario kill --seed 77 --runs 1 --keep" in text
    assert not report.ok and report.as_dict()["failures"][0]["seed"] == 77


# --- the checks can fail --------------------------------------------------------------------------


def _completed_run(tmp_path) -> tuple[Run, object]:
    """A real child submits a whole flow (every line acknowledged)."""
    run = Run("kill", 5, tmp_path, Settings(commands=200))
    run.configure(segment_bytes=SEGMENT_LARGE_BYTES, batch=8, snapshot_every=0)
    child = run_submit(run.data, run.flow_file(run.lines), backend="pwrite", segment_bytes=run.segment_bytes,
                       batch=run.batch)
    assert child.returncode == 0 and len(child.acks) == len(run.lines), child.stderr
    return run, child


def _zero_final_batch(data: Path) -> list:
    """Zero every record of the log's final batch; returns their locations."""
    records = damage.locate_all(data / "wal")
    ends = [i for i, r in enumerate(records) if r.batch_end]
    final = records[ends[-2] + 1:]
    damage.zero_range(final[0].path, final[0].offset, final[-1].offset + final[-1].length - final[0].offset)
    return final


def test_the_drill_reports_a_missing_acknowledged_record_as_lost(tmp_path):
    """Zero the log's final batch (whole records, so recovery sees a clean
    log that simply ends earlier): those lines were acknowledged, and the
    drill's recovery check must report them lost."""
    run, child = _completed_run(tmp_path)
    final = _zero_final_batch(run.data)
    with pytest.raises(DrillFailure):  # the run stops at the failed check
        run.recover_and_check(run.lines, child.acks, child.events, flow_offset=0)
    result: RunResult = run.result
    assert not result.ok and result.lost == len(final)
    assert any(f"acknowledged at seq {final[-1].seq}" in message for message in result.failures), result.failures


def test_the_ledger_reports_a_log_that_differs_from_what_was_sent(tmp_path):
    run, child = _completed_run(tmp_path)
    with Exchange.open(run.data, backend="pwrite", clock="input") as node:
        honest = Ledger().absorb(run.lines, child.acks, node.journal, events=child.events)
        assert honest.ok and honest.logged == len(run.lines)
        # Claim that two lines were sent the other way round.
        swapped = list(run.lines)
        swapped[50], swapped[51] = swapped[51], swapped[50]
        check = Ledger().absorb(swapped, child.acks, node.journal, events=child.events)
        assert check.diverged == 1 and "line 51" in check.problems[0], check.problems
        # Claim that the client was told other events for one line.
        told = {**child.events, 60: [{"type": "accepted", "order_id": 999}]}
        check = Ledger().absorb(run.lines, child.acks, node.journal, events=told)
        assert check.diverged == 1 and "acknowledged events differ" in check.problems[0], check.problems
        # Claim an acknowledgement at a seq the log holds for another line.
        moved = {**child.acks, 70: child.acks[70] + 1}
        check = Ledger().absorb(run.lines, moved, node.journal)
        assert check.diverged == 1 and "line 71 was acknowledged at seq" in check.problems[0], check.problems
        # A node whose state is not the replay of its log.
        ledger = Ledger()
        ledger.absorb(run.lines, child.acks, node.journal)
        assert ledger.check_digest(node.digest()) is None
        assert "differs from the reference replay" in ledger.check_digest("0" * 32)


def test_the_ledger_notices_records_it_saw_before_that_are_gone(tmp_path):
    run, child = _completed_run(tmp_path)
    ledger = Ledger()
    with Exchange.open(run.data, backend="pwrite", clock="input") as node:
        assert ledger.absorb(run.lines, child.acks, node.journal).ok
    final = _zero_final_batch(run.data)
    with Exchange.open(run.data, backend="pwrite", clock="input") as node:
        check = ledger.absorb([], {}, node.journal)
    assert check.lost == len(final) and check.diverged == 0, check.problems
    assert "held commands up to seq" in check.problems[0], check.problems


@pytest.mark.parametrize("name", list(SCENARIOS))
def test_scenario_descriptions_are_one_line(name):
    scenario = SCENARIOS[name]
    assert scenario.name == name and scenario.description and "\n" not in scenario.description
