"""``jex drill``: crash-recovery drills with a summary table (cli room).

A thin edge over jex.drill.run_drill (tests/test_drill.py calls the same
function). Exit 0 when every run passed, 3 when any failed (integrity), 2
for bad options.
"""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from jex.cli import output
from jex.cli.main import EXIT_INTEGRITY, EXIT_OK, app, state

RUNS_HELP = "Runs per scenario: a number, or a preset: small, ci (~20 kills, ~20 power losses), soak (1,000 of each)."


@app.command(help="Crash-recovery drills: SIGKILL, kill points, power loss, I/O errors, bit flips and torn tails; "
                  "every acknowledged command must survive. Exit 3 on any failure.")
def drill(
    ctx: typer.Context,
    runs: str = typer.Option("ci", "--runs", help=RUNS_HELP),
    scenario: Optional[List[str]] = typer.Option(None, "--scenario", "-s",
                                                 help="Scenario to run (repeatable; default all): kill, killpoint, "
                                                      "power-drop, power-random, io-error, bitflip, torn."),
    seed: Optional[int] = typer.Option(None, "--seed", min=0, help="Seed of the first run (default: random, printed)."),
    commands: int = typer.Option(600, "--commands", min=50, max=1_000_000, help="Commands in each run's flow."),
    backend: str = typer.Option("mixed", "--backend",
                                help="Child writer backend: mixed (drawn per run), auto, pwrite, uring."),
    directory: Optional[Path] = typer.Option(None, "--dir", help="Work here instead of a temporary directory."),
    keep: bool = typer.Option(False, "--keep", help="Keep every run's data directory."),
    json_out: bool = typer.Option(False, "--json", help="One JSON object on stdout (same as the global --json)."),
) -> int:
    from jex.drill import PRESETS, SCENARIOS, Plan, run_drill
    from jex.drill.report import failure_lines, summary_table
    from jex.drill.runner import BACKEND_CHOICES

    as_json = json_out or state(ctx).json
    names = _scenarios(scenario, SCENARIOS)
    per_scenario = _runs(runs, names, PRESETS)
    if backend not in BACKEND_CHOICES:
        raise typer.BadParameter(f"must be one of {', '.join(BACKEND_CHOICES)}", param_hint="--backend")
    plan = Plan(per_scenario, seed=seed, commands=commands, backend=backend, directory=directory, keep=keep)
    total = sum(per_scenario.values())
    done = [0]

    def progress(result) -> None:
        done[0] += 1
        mark = "ok" if result.ok else "FAILED"
        output.diag(f"drill {done[0]}/{total}: {result.scenario} seed {result.seed} {mark} "
                    f"({result.seconds:.2f}s) {result.outcome}")

    report = run_drill(plan, on_run=progress)
    if as_json:
        output.emit_json(report.as_dict())
    else:
        output.stdout.print(summary_table(report))
        for line in failure_lines(report):
            output.stdout.print(line, markup=False)
        if report.kept:
            output.stdout.print(f"data directories kept under {report.directory}", markup=False)
    output.flush()
    return EXIT_OK if report.ok else EXIT_INTEGRITY


def _scenarios(chosen: list[str] | None, known: dict) -> list[str]:
    names = []
    for item in chosen or list(known):
        names.extend(part.strip() for part in item.split(",") if part.strip())
    unknown = [name for name in names if name not in known]
    if unknown:
        raise typer.BadParameter(f"unknown {', '.join(unknown)}; known: {', '.join(known)}", param_hint="--scenario")
    return list(dict.fromkeys(names))


def _runs(runs: str, names: list[str], presets: dict[str, dict[str, int]]) -> dict[str, int]:
    if runs in presets:
        return {name: presets[runs][name] for name in names}
    try:
        count = int(runs)
    except ValueError:
        raise typer.BadParameter(f"a number or one of {', '.join(presets)}", param_hint="--runs") from None
    if not 1 <= count <= 1_000_000:
        raise typer.BadParameter("must be 1..1000000", param_hint="--runs")
    return {name: count for name in names}

