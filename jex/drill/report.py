"""The drill's summary for people: a table and the failures with their
reproducers (room: jex.drill). `DrillReport.as_dict()` is the JSON form."""

from __future__ import annotations

from rich.table import Table

from jex.drill.runner import DrillReport

COLUMNS = ("scenario", "runs", "acknowledged", "lost", "diverged", "detected", "seconds")
MESSAGES_SHOWN = 3  # per failure


def summary_table(report: DrillReport) -> Table:
    verdict = "PASSED" if report.ok else f"FAILED ({len(report.failures)} run(s))"
    table = Table(title=f"jex drill, seed {report.seed}: {verdict}")
    for column in COLUMNS:
        table.add_column(column, justify="left" if column == "scenario" else "right")
    total = {"runs": 0, "acknowledged": 0, "lost": 0, "diverged": 0, "detected": 0, "seconds": 0.0}
    for s in report.summaries:
        table.add_row(s.scenario, str(s.runs), str(s.acknowledged), _flag(s.lost), _flag(s.diverged),
                      str(s.detected), f"{s.seconds:.1f}")
        for key in total:
            total[key] += getattr(s, key)
    table.add_section()
    table.add_row("total", str(total["runs"]), str(total["acknowledged"]), _flag(total["lost"]),
                  _flag(total["diverged"]), str(total["detected"]), f"{report.seconds:.1f}")
    return table


def failure_lines(report: DrillReport) -> list[str]:
    """Each failed run: scenario, seed, what went wrong, and the command
    that reproduces it."""
    lines = []
    for failure in report.failures:
        lines.append(f"FAILED {failure.scenario} seed {failure.seed} ({failure.outcome}; {failure.config})")
        for message in failure.messages[:MESSAGES_SHOWN]:
            lines.append(f"  {message}")
        if failure.directory:
            lines.append(f"  kept: {failure.directory}")
        lines.append(f"  reproduce: {failure.reproduce}")
    return lines


def _flag(count: int) -> str:
    return f"[bold red]{count}[/]" if count else "0"
