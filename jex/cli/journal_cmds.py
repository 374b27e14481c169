"""``jex journal verify|stat|repair`` (cli room)."""

from __future__ import annotations

import typer

from jex.cli import output
from jex.cli.main import EXIT_INTEGRITY, EXIT_OK, EXIT_USAGE, journal_app, state


def _wal_dir(ctx: typer.Context):
    wal = state(ctx).data_dir / "wal"
    if not wal.is_dir():
        output.diag(f"jex: bad input: {wal} does not exist (nothing submitted yet?)")
        raise typer.Exit(EXIT_USAGE)
    return wal


def _report_dict(report) -> dict:
    data = report.as_dict()
    data["decision_row"] = data.pop("row")
    return data


@journal_app.command("verify", help="Walk the whole chain; report clean, torn tail, or corruption (exit 3) with file and offset.")
def verify_cmd(ctx: typer.Context) -> int:
    from jex.journal import Decision, verify

    report = verify(_wal_dir(ctx))
    data = _report_dict(report)
    if state(ctx).json:
        output.emit_json(data)
    else:
        shown = {k: v for k, v in data.items() if k not in ("rows", "problem")}
        output.stdout.print(output.kv_table("journal verify", shown))
        if report.problem is not None:
            output.stdout.print(f"problem: {report.problem}")
        if report.decision is Decision.TORN:
            output.stdout.print("a torn tail holds nothing acknowledged; the next open (or `jex journal repair`) quarantines it")
    if report.decision is Decision.CORRUPT:
        output.diag(f"jex: integrity failure: {report.problem}")
        return EXIT_INTEGRITY
    return EXIT_OK


@journal_app.command("stat", help="Segments with their first/last seq, size and fill.")
def stat_cmd(ctx: typer.Context) -> int:
    from jex.journal import stat

    report = stat(_wal_dir(ctx))
    rows = [
        {
            "segment": s.path.name,
            "first_seq": s.first_seq,
            "last_seq": s.last_seq,
            "records": s.records,
            "size_bytes": s.size_bytes,
            "used_bytes": s.used_bytes,
            "fill": f"{s.fill:.4f}",
            "sealed": s.sealed,
        }
        for s in report.segments
    ]
    if state(ctx).json:
        output.emit_json({"decision": report.decision.value, "last_seq": report.last_seq, "segments": rows})
    else:
        output.stdout.print(output.dict_table(f"journal: {report.decision.value}, last seq {report.last_seq}", rows))
    return EXIT_OK


@journal_app.command(
    "repair",
    help="Quarantine and zero a torn tail (takes the writer lock); refuses corruption (exit 3). "
    "--final-batch: quarantine an unproven final batch instead (only after a power loss).",
)
def repair_cmd(
    ctx: typer.Context,
    final_batch: bool = typer.Option(
        False,
        "--final-batch",
        help="The machine lost power: quarantine the final batch that `verify` reports as unproven "
        "(it may have been acknowledged if the cause was corruption instead). Refuses anything else.",
    ),
) -> int:
    from jex.journal import DirLock, repair

    wal = _wal_dir(ctx)
    lock = DirLock.acquire(wal.parent)
    try:
        report = repair(wal, lock=lock, final_batch=final_batch)
    finally:
        lock.release()
    data = _report_dict(report)
    if state(ctx).json:
        output.emit_json(data)
    elif report.final_batch is not None:
        batch = report.final_batch
        output.stdout.print(
            f"journal: quarantined the final batch (seq {batch.first_seq}..{batch.last_seq}) from "
            f"{batch.path.name} offset {batch.offset} to {wal.parent / 'quarantine'}; "
            f"last seq now {batch.first_seq - 1}"
        )
    else:
        output.stdout.print(f"journal {report.decision.value}: last seq {report.last_seq}" + (f"; repaired {report.problem}" if report.problem else ""))
    return EXIT_OK
