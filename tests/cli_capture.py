"""Run the `jex` CLI in-process with stdout and stderr captured (shared by the fuzz tests)."""

from __future__ import annotations

import io
import sys
from contextlib import nullcontext
from pathlib import Path


def run_cli(data_dir: Path, *argv: str, bound=nullcontext) -> tuple[int, str, str]:
    """``jex --data-dir DATA_DIR ARGV...`` -> (exit code, stdout, stderr).

    ``bound`` is a context-manager factory wrapped around the run (e.g. a time limit).
    """
    from jex.cli.main import run

    out, err = io.BytesIO(), io.BytesIO()
    fake_out = io.TextIOWrapper(out, encoding="utf-8", write_through=True)
    fake_err = io.TextIOWrapper(err, encoding="utf-8", write_through=True)
    saved = sys.stdout, sys.stderr
    sys.stdout, sys.stderr = fake_out, fake_err
    try:
        with bound():
            code = run(["--data-dir", str(data_dir), *argv])
    finally:
        sys.stdout, sys.stderr = saved
    return code, out.getvalue().decode(), err.getvalue().decode()
