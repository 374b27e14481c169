"""``jex snapshot`` and ``jex snapshot list`` (cli room).

`jex snapshot` opens the node (takes the writer lock, recovers), writes a
snapshot of the durable state in-process, keeps the newest two, prunes the
WAL behind them, and returns once the snapshot is durable. A running node
takes its own snapshots (automatically, every `snapshot_every` seqs), so
this command is for an idle data directory.

`jex snapshot list` reads without the lock: per snapshot the seq, time,
size, digest, and whether its checksums verify and its chain value is the
WAL's chain value at its seq (`--deep` also restores it and checks the
digest).
"""

from __future__ import annotations

import typer

from jex.cli import output
from jex.cli.main import EXIT_INTEGRITY, EXIT_OK, EXIT_USAGE, app, check_backend, state

snapshot_app = typer.Typer(
    help="Take a snapshot now (durable before it returns), or list snapshots.",
    invoke_without_command=True,
    no_args_is_help=False,
)
app.add_typer(snapshot_app, name="snapshot")


@snapshot_app.callback(invoke_without_command=True)
def snapshot_take(
    ctx: typer.Context,
    backend: str = typer.Option("auto", "--backend", callback=check_backend, help="WAL writer used while the node is open: auto, uring or pwrite."),
    prune: bool = typer.Option(True, "--prune/--no-prune", help="Prune WAL segments wholly before the older kept snapshot."),
) -> int:
    if ctx.invoked_subcommand is not None:
        return EXIT_OK
    from jex.node.exchange import Exchange

    st = state(ctx)
    if not (st.data_dir / "wal").is_dir():
        output.diag(f"jex: bad input: {st.data_dir} holds no journal (nothing submitted yet?)")
        raise typer.Exit(EXIT_USAGE)
    with Exchange.open(st.data_dir, backend=backend, snapshot_every=0, prune_wal=prune, hugepages=False) as node:
        if node.journal.last_seq == 0:
            output.diag("jex: bad input: nothing to snapshot (the log is empty)")
            raise typer.Exit(EXIT_USAGE)
        info = node.snapshot()
    retention = info.pop("retention")
    view = {**info, "kept": retention["kept"], "deleted_snapshots": retention["deleted_snapshots"],
            "pruned_segments": retention["pruned_segments"]}
    if st.json:
        output.emit_json(view)
    else:
        seconds = view.pop("seconds")
        view["seconds"] = round(sum(seconds.values()), 3)
        output.stdout.print(output.kv_table("snapshot", view))
    raise typer.Exit(EXIT_OK)


@snapshot_app.command("list", help="Snapshots with seq, time, size, digest and whether their chain value is in the WAL.")
def snapshot_list(
    ctx: typer.Context,
    deep: bool = typer.Option(False, "--deep", help="Also restore each snapshot and check its digest (slow)."),
) -> int:
    from jex.replay.recover import judge, wal_view
    from jex.replay.timetravel import format_ns
    from jex.snapshots import SnapshotError, list_snapshots, snapshot_dir
    from jex.snapshots import store

    st = state(ctx)
    log = wal_view(st.data_dir / "wal")
    rows = []
    for file in reversed(list_snapshots(snapshot_dir(st.data_dir)).snapshots):
        verdict = judge(log, file)
        header = verdict.header
        error = verdict.error
        if deep and error is None:
            try:
                store.load(file.path)
            except SnapshotError as exc:
                error = exc
        rows.append({
            "seq": file.seq,
            "ts": format_ns(header.ts_ns) if header else None,
            "size_bytes": verdict.size_bytes,
            "digest": header.digest_hex if header else None,
            "chain_ok": verdict.chain_ok,
            "ok": error is None,
            "problem": error.reason if error else None,
            "file": file.path.name,
        })
    if st.json:
        for row in rows:
            output.emit_json(row)
    else:
        title = f"snapshots ({len(rows)}); WAL starts at seq {log.first_seq}"
        output.stdout.print(output.dict_table(title, rows, ["seq", "ts", "size_bytes", "digest", "chain_ok", "ok", "problem"]))
    bad = [r for r in rows if not r["ok"]]
    for row in bad:
        output.diag(f"jex: snapshot {row['file']}: {row['problem']}")
    return EXIT_INTEGRITY if bad else EXIT_OK
