"""The ``jex`` command line (cli room): a thin edge over node/ and replay/.

Exit codes (DESIGN §5): 0 ok · 1 operational failure · 2 usage or bad input
· 3 integrity failure. Results go to stdout, progress and diagnostics to
stderr, and a user error is one line, never a traceback (set JEX_DEBUG=1 to
see one for an internal error).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Optional

import typer
from typer._click.exceptions import ClickException, NoArgsIsHelpError, UsageError  # typer vendors click
from typer.exceptions import Abort, Exit

from jex.cli import output
from jex.core import CommandError

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2
EXIT_INTEGRITY = 3


class CliState:
    """Global options shared by every command."""

    def __init__(self, data_dir: Path, json: bool) -> None:
        self.data_dir = data_dir
        self.json = json


app = typer.Typer(
    name="jex",
    help="jex: an event-sourced exchange (matching core, io_uring write-ahead log, replay, audit).",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)
journal_app = typer.Typer(help="Inspect and repair the write-ahead log.", no_args_is_help=True)
app.add_typer(journal_app, name="journal")


@app.callback()
def main(
    ctx: typer.Context,
    data_dir: Optional[Path] = typer.Option(
        None, "--data-dir", "-d", envvar="JEX_DATA_DIR", help="Data directory (default ./.jex).", show_default=False
    ),
    json: bool = typer.Option(False, "--json", help="Machine-readable output (JSON / JSON Lines)."),
) -> None:
    from jex.node.exchange import default_data_dir

    ctx.obj = CliState(data_dir or default_data_dir(), json)


def state(ctx: typer.Context) -> CliState:
    return ctx.find_root().obj


def check_backend(value: str) -> str:
    """Typer callback: a journal writer backend name."""
    from jex.journal.backends import BACKEND_KINDS

    if value not in BACKEND_KINDS:
        raise typer.BadParameter(f"must be one of {', '.join(BACKEND_KINDS)}")
    return value


def check_segment_bytes(value: Optional[int]) -> Optional[int]:
    """Typer callback: a WAL segment size within the journal's limits."""
    from jex.journal.limits import SEGMENT_BYTES_MAX, SEGMENT_BYTES_MIN

    if value is not None and not SEGMENT_BYTES_MIN <= value <= SEGMENT_BYTES_MAX:
        raise typer.BadParameter(f"must be {SEGMENT_BYTES_MIN}..{SEGMENT_BYTES_MAX} bytes")
    return value


# --------------------------------------------------------------------- submit

from jex.cli import submit as _submit  # noqa: E402  (registers commands on app)
from jex.cli import reads as _reads  # noqa: E402
from jex.cli import demo as _demo  # noqa: E402
from jex.cli import journal_cmds as _journal_cmds  # noqa: E402
from jex.cli import conformance_cmd as _conformance_cmd  # noqa: E402
from jex.cli import import_cmd as _import_cmd  # noqa: E402
from jex.cli import serve_cmds as _serve_cmds  # noqa: E402
from jex.cli import snapshot_cmds as _snapshot_cmds  # noqa: E402
from jex.cli import audit_cmds as _audit_cmds  # noqa: E402
from jex.cli import drill_cmd as _drill_cmd  # noqa: E402
from jex.cli import bench_cmd as _bench_cmd  # noqa: E402

_ = (_submit, _reads, _demo, _journal_cmds, _conformance_cmd, _import_cmd, _serve_cmds, _snapshot_cmds, _audit_cmds,
     _drill_cmd, _bench_cmd)


# ---------------------------------------------------------------------- entry


def run(argv: list[str] | None = None) -> int:
    """Console-script entry point: maps every failure to its exit code."""
    code = _run(argv)
    try:
        sys.stdout.flush()
    except BrokenPipeError:
        pass
    return code


def _run(argv: list[str] | None) -> int:
    from jex.journal import DirLocked, JournalCorrupt, JournalError, JournalIOError
    from jex.replay.rebuild import ReplayError

    try:
        result = app(args=argv, standalone_mode=False)
        return result if isinstance(result, int) else EXIT_OK
    except NoArgsIsHelpError as exc:
        exc.show()
        return EXIT_USAGE
    except UsageError as exc:
        output.diag(f"jex: usage: {exc.format_message()}")
        return EXIT_USAGE
    except Exit as exc:
        return exc.exit_code
    except Abort:
        output.diag("jex: aborted")
        return EXIT_FAILURE
    except ClickException as exc:
        output.diag(f"jex: {exc.format_message()}")
        return EXIT_USAGE
    except CommandError as exc:
        output.diag(f"jex: bad input: {exc}")
        return EXIT_USAGE
    except (JournalCorrupt, ReplayError) as exc:
        output.diag(f"jex: integrity failure: {exc}")
        return EXIT_INTEGRITY
    except (DirLocked, JournalIOError) as exc:
        output.diag(f"jex: {exc}")
        return EXIT_FAILURE
    except JournalError as exc:
        output.diag(f"jex: journal: {exc}")
        return EXIT_FAILURE
    except BrokenPipeError:
        _silence_stdout()
        return EXIT_OK
    except KeyboardInterrupt:
        output.diag("jex: interrupted")
        return 130
    except OSError as exc:
        output.diag(f"jex: {exc.strerror or exc}: {exc.filename or ''}".rstrip(": "))
        return EXIT_FAILURE
    except Exception as exc:  # pragma: no cover - last resort, still one line
        if os.environ.get("JEX_DEBUG"):
            raise
        output.diag(f"jex: internal error: {type(exc).__name__}: {exc} (set JEX_DEBUG=1 for a traceback)")
        return EXIT_FAILURE


def _silence_stdout() -> None:
    """After a closed pipe, point stdout at /dev/null so exit does not complain."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except OSError:
        pass


def entry() -> None:
    sys.exit(run())
