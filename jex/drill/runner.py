"""Running a drill: the plan, the runs, the summary (room: jex.drill).

    report = run_drill(Plan(runs=PRESETS["ci"], seed=7))
    report.ok, report.summaries, report.failures, report.as_dict()

Run i of scenario S uses seed `plan.seed + i`, so a failure is reproduced by
`jex drill --scenario S --seed <that seed> --runs 1` (the failure carries the
exact command). Each run works in its own directory under the drill's
directory, removed when the run ends unless `keep`.
"""

from __future__ import annotations

import random
import shlex
import shutil
import tempfile
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from jex.drill.harness import COMMANDS_DEFAULT, DrillFailure, Run, RunResult, Settings
from jex.drill.scenarios import KILL_POINTS, SCENARIOS
from jex.journal.backends import uring_unavailable_reason

# Runs per scenario. `ci` is what tests/test_drill.py runs (~20 kills, ~20
# power losses); `soak` is the long run documented in docs/drills.md.
PRESETS: dict[str, dict[str, int]] = {
    "small": {"kill": 1, "killpoint": 2, "power-drop": 2, "power-random": 2, "io-error": 1, "bitflip": 1, "torn": 1},
    "ci": {"kill": 11, "killpoint": 9, "power-drop": 10, "power-random": 10, "io-error": 5, "bitflip": 4, "torn": 4},
    "soak": {"kill": 1000, "killpoint": 1000, "power-drop": 1000, "power-random": 1000, "io-error": 250,
             "bitflip": 250, "torn": 250},
}
BACKEND_CHOICES = ("mixed", "auto", "pwrite", "uring")
SEED_MAX = 2**31 - 1


@dataclass
class Plan:
    runs: dict[str, int]  # scenario -> runs, in the order they run
    seed: int | None = None  # None: a random seed (reported)
    commands: int = COMMANDS_DEFAULT
    backend: str = "mixed"  # mixed: each run draws pwrite or io_uring (where the kernel allows it)
    directory: Path | None = None  # None: a new temporary directory
    keep: bool = False

    def backends(self) -> tuple[str, ...]:
        uring = uring_unavailable_reason() is None
        if self.backend == "mixed":
            return ("pwrite", "uring") if uring else ("pwrite",)
        if self.backend == "auto":
            return ("uring",) if uring else ("pwrite",)
        return (self.backend,)


@dataclass
class ScenarioSummary:
    scenario: str
    runs: int = 0
    acknowledged: int = 0
    lost: int = 0
    diverged: int = 0
    detected: int = 0
    failed: int = 0
    seconds: float = 0.0
    outcomes: dict[str, int] = field(default_factory=dict)  # recovery decision rows and the like

    def add(self, result: RunResult) -> None:
        self.runs += 1
        self.acknowledged += result.acknowledged
        self.lost += result.lost
        self.diverged += result.diverged
        self.detected += result.detected
        self.failed += 0 if result.ok else 1
        self.seconds += result.seconds
        for word in _outcome_words(result.outcome):
            self.outcomes[word] = self.outcomes.get(word, 0) + 1

    def as_dict(self) -> dict:
        return {"scenario": self.scenario, "runs": self.runs, "acknowledged": self.acknowledged, "lost": self.lost,
                "diverged": self.diverged, "detected": self.detected, "failed": self.failed,
                "seconds": round(self.seconds, 3), "outcomes": dict(sorted(self.outcomes.items()))}


@dataclass
class Failure:
    scenario: str
    seed: int
    messages: list[str]
    outcome: str
    config: dict
    reproduce: str
    directory: str | None

    def as_dict(self) -> dict:
        return dict(self.__dict__)


@dataclass
class DrillReport:
    seed: int
    directory: str
    kept: bool
    summaries: list[ScenarioSummary]
    failures: list[Failure]
    seconds: float

    @property
    def ok(self) -> bool:
        return not self.failures

    def as_dict(self) -> dict:
        return {"ok": self.ok, "seed": self.seed, "seconds": round(self.seconds, 3), "directory": self.directory,
                "kept": self.kept, "scenarios": [s.as_dict() for s in self.summaries],
                "failures": [f.as_dict() for f in self.failures]}


def run_drill(plan: Plan, *, on_run: Callable[[RunResult], None] | None = None) -> DrillReport:
    """Run every planned scenario `runs` times; never raises for a failed run
    (failures are in the report). `on_run` sees each run's result."""
    unknown = [name for name in plan.runs if name not in SCENARIOS]
    if unknown:
        raise ValueError(f"unknown scenario(s) {', '.join(unknown)}; known: {', '.join(SCENARIOS)}")
    seed = plan.seed if plan.seed is not None else random.SystemRandom().randrange(SEED_MAX)
    settings = Settings(commands=plan.commands, backends=plan.backends())
    made = plan.directory is None
    root = Path(tempfile.mkdtemp(prefix="jex-drill-")) if made else Path(plan.directory).resolve()
    root.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    summaries, failures = [], []
    try:
        for name, count in plan.runs.items():
            summary = ScenarioSummary(name)
            for index in range(count):
                result = run_one(name, seed + index, root / f"{name}-{seed + index}", settings, keep=plan.keep)
                summary.add(result)
                if not result.ok:
                    failures.append(_failure(plan, result, root))
                if on_run is not None:
                    on_run(result)
            summaries.append(summary)
    finally:
        if made and not plan.keep:
            shutil.rmtree(root, ignore_errors=True)
    return DrillReport(seed, str(root), plan.keep, summaries, failures, time.perf_counter() - started)


def run_one(scenario: str, seed: int, workdir: Path, settings: Settings, *, keep: bool = False) -> RunResult:
    """One run of one scenario in `workdir` (created fresh, removed unless keep)."""
    shutil.rmtree(workdir, ignore_errors=True)
    workdir.mkdir(parents=True)
    run = Run(scenario, seed, workdir, settings)
    started = time.perf_counter()
    try:
        SCENARIOS[scenario].run(run)
    except DrillFailure:
        pass  # recorded where it happened
    except Exception as error:  # noqa: BLE001 - an unexpected error is a failed run, with its traceback
        run.fail(f"unexpected {type(error).__name__}: {error} | {_where(error)}")
    run.result.seconds = time.perf_counter() - started
    if not keep:
        run.cleanup()
    return run.result


def reproduce_command(plan: Plan, scenario: str, seed: int) -> str:
    words = ["jex", "drill", "--scenario", scenario, "--seed", str(seed), "--runs", "1"]
    if plan.commands != COMMANDS_DEFAULT:
        words += ["--commands", str(plan.commands)]
    if plan.backend != "mixed":
        words += ["--backend", plan.backend]
    return shlex.join(words + ["--keep"])


def _failure(plan: Plan, result: RunResult, root: Path) -> Failure:
    directory = str(root / f"{result.scenario}-{result.seed}") if plan.keep else None
    messages = result.failures or [f"lost {result.lost}, diverged {result.diverged}"]
    return Failure(result.scenario, result.seed, messages, result.outcome, result.config,
                   reproduce_command(plan, result.scenario, result.seed), directory)


def _where(error: BaseException) -> str:
    frames = traceback.extract_tb(error.__traceback__)[-3:]
    return " < ".join(f"{Path(f.filename).name}:{f.lineno} {f.name}" for f in reversed(frames))


def _outcome_words(outcome: str) -> list[str]:
    """The words of an outcome that classify a run (recovery rows, how the
    child ended), not the numbers that vary from run to run."""
    keep = {"clean_end", "torn_tail", "rollover_incomplete", "rollover_incomplete_torn_seal", "unproven",
            "sigkill", "exit-0", "cut", "no-cut", "no-wal", "fork", "inline", "restart", "power_loss", "pwrite",
            "fdatasync", "short_write", "record", "snapshot", "sector", "garbage", "refused-corrupt", "refused-unproven",
            *KILL_POINTS}
    out = []
    for word in outcome.split():
        head = word.split(":")[0]
        if head in keep or word in keep:
            out.append(head)
    return out
