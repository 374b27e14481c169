"""jex.bench: the benchmark suite behind ``jex bench`` and benchmarks/ (bench room).

Seeded, reproducible workloads (``workloads``), in-memory engine runs
(``inmemory``), durable runs through the real node (``durable``,
``snapshot``), HDR latency histograms (``hist``), and the report: figures
with same-run baselines and ratios, rich tables, one JSON object, a PNG
latency plot (``report``, ``plot``). ``run`` is the one entry point; see
docs/benchmarks.md for what each figure means.

May import anything (DESIGN §2): it measures the node, it is not part of it.
"""

from __future__ import annotations

import json
from pathlib import Path

from .suite import Config, Progress, run_suite

RESULT_FILE_NAME = "bench.json"

__all__ = ["Config", "RESULT_FILE_NAME", "run"]


def run(config: Config, progress: Progress | None = None) -> dict:
    """Run the suite, add ``figures`` and the plot, write ``bench.json`` (and
    the PNG) into ``config.out``; return the result object."""
    from . import plot, report

    notify = progress or (lambda _: None)
    result = run_suite(config, notify)
    result["figures"] = report.figures(result)
    result["plot"] = None
    if config.plot:
        path = plot.write_plot(result, config.out)
        if path is None and not plot.available():
            notify(plot.MISSING_NOTICE)
        result["plot"] = None if path is None else str(path)
    path = Path(config.out) / RESULT_FILE_NAME
    result["meta"]["result_file"] = str(path)
    path.write_text(json.dumps(result, indent=1) + "\n")
    return result
