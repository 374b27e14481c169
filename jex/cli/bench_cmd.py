"""``jex bench``: the benchmark suite (cli room), a thin edge over jex.bench.

Prints the figures table (every figure with its same-run baseline and the
ratio) and the latency tables, or with ``--json`` one JSON object; always
writes ``bench.json`` and, when matplotlib is installed, ``bench-latency.png``
into ``--out``. Progress goes to stderr. Exit 0, or 2 for bad options.
"""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from jex.cli import output
from jex.cli.main import EXIT_OK, app, state

DEFAULT_OUT = Path("benchmarks/out")  # used when ./benchmarks exists (a checkout; git-ignored)
FALLBACK_OUT = Path("jex-bench-out")
TABLE_WIDTH_MIN = 150  # columns: the tables are read in logs and CI output, not only on terminals


def _split(values: list[str] | None, known: tuple[str, ...], hint: str) -> tuple[str, ...] | None:
    if not values:
        return None
    names = [part.strip() for value in values for part in value.split(",") if part.strip()]
    unknown = [name for name in names if name not in known]
    if unknown:
        raise typer.BadParameter(f"unknown {', '.join(unknown)}; known: {', '.join(known)}", param_hint=hint)
    return tuple(dict.fromkeys(names))


@app.command(help="Benchmarks: in-memory engine throughput and per-kind latency (HDR), durable throughput on "
                  "io_uring and pwrite, acknowledgement latency at fixed loads, replay, recovery and snapshots; "
                  "every figure next to its same-run baseline as a ratio. Seeded and reproducible.")
def bench(
    ctx: typer.Context,
    quick: bool = typer.Option(False, "--quick", help="Small sizes: seconds instead of a minute or two."),
    seed: int = typer.Option(1, "--seed", min=0, help="Seed of the synthetic workloads."),
    workload: Optional[List[str]] = typer.Option(None, "--workload", "-w",
                                                 help="Workload (repeatable or comma-separated; default all): "
                                                      "std, exchange-core, amzn."),
    out: Optional[Path] = typer.Option(None, "--out", help="Where bench.json and bench-latency.png go "
                                                         "(default benchmarks/out in a checkout, else jex-bench-out)."),
    section: Optional[List[str]] = typer.Option(None, "--section", "-s",
                                                help="Section (repeatable; default all): engine, durable, ack, "
                                                     "replay, recovery, snapshot."),
    backend: Optional[List[str]] = typer.Option(None, "--backend", help="Journal backends (default pwrite,uring)."),
    commands: Optional[int] = typer.Option(None, "--commands", min=100, max=10_000_000,
                                           help="Timed commands per synthetic workload (quick 10,000; default 100,000)."),
    amzn_rows: Optional[int] = typer.Option(None, "--amzn-rows", min=100,
                                            help="LOBSTER rows read for amzn (quick 5,000; default the whole file)."),
    rounds: Optional[int] = typer.Option(None, "--rounds", min=1, max=20,
                                         help="Interleaved durable rounds; figures are medians (quick 1; default 2)."),
    ack_rate: Optional[List[int]] = typer.Option(None, "--ack-rate", min=1, max=1_000_000,
                                                 help="Offered load for ack latency, cmd/s (repeatable; "
                                                      "default 1,000 and 10,000)."),
    ack_seconds: Optional[float] = typer.Option(None, "--ack-seconds", min=0.05, max=600,
                                                help="Offered time per load and backend (quick 0.5; default 2)."),
    resting: Optional[int] = typer.Option(None, "--resting", min=100, max=10_000_000,
                                          help="Resting orders of the snapshot section (quick 10,000; default 100,000)."),
    full_snapshot: bool = typer.Option(False, "--full-snapshot",
                                       help="The snapshot section at 1,000,000 resting orders (several minutes)."),
    work_dir: Optional[Path] = typer.Option(None, "--work-dir", help="Where the data directories go (default: "
                                                                     "under --out; keep it on the disk you measure)."),
    keep: bool = typer.Option(False, "--keep", help="Keep the data directories."),
    no_plot: bool = typer.Option(False, "--no-plot", help="Skip the PNG."),
    json_out: bool = typer.Option(False, "--json", help="One JSON object on stdout (same as the global --json)."),
) -> int:
    from jex.bench import Config, run
    from jex.bench.report import tables
    from jex.bench.suite import BACKENDS, SECTIONS, FULL_RESTING
    from jex.bench.workloads import WORKLOAD_NAMES

    as_json = json_out or state(ctx).json
    if full_snapshot and resting is not None:
        raise typer.BadParameter("give --resting or --full-snapshot, not both", param_hint="--full-snapshot")
    config = Config.preset(
        out or (DEFAULT_OUT if Path("benchmarks").is_dir() else FALLBACK_OUT),
        quick=quick,
        seed=seed,
        workloads=_split(workload, WORKLOAD_NAMES, "--workload"),
        sections=_split(section, SECTIONS, "--section"),
        backends=_split(backend, BACKENDS, "--backend"),
        commands=commands,
        amzn_rows=amzn_rows,
        rounds=rounds,
        ack_rates=tuple(ack_rate) if ack_rate else None,
        ack_seconds=ack_seconds,
        resting=FULL_RESTING if full_snapshot else resting,
        work_dir=work_dir,
        keep=keep,
        plot=not no_plot,
    )
    result = run(config, progress=output.diag)
    if as_json:
        output.emit_json(result)
    else:
        from rich.console import Console

        # Console.print(width=) cannot widen past the console's own width (80 when piped).
        console = Console(soft_wrap=True, highlight=False, width=max(output.stdout.width, TABLE_WIDTH_MIN))
        for table in tables(result):
            console.print(table)
        console.print(f"results: {result['meta']['result_file']}", markup=False)
        if result["plot"]:
            console.print(f"latency plot: {result['plot']}", markup=False)
    output.flush()
    return EXIT_OK
