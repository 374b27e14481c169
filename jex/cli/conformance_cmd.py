"""``jex conformance serve``: the tracebook-conformance candidate adapter (cli room)."""

from __future__ import annotations

import sys

import typer

from jex.cli.main import app

conformance_app = typer.Typer(help="External conformance suite (tracebook-conformance) adapter.", no_args_is_help=True)
app.add_typer(conformance_app, name="conformance")


@conformance_app.command("serve", help="Speak the tracebook NDJSON protocol on stdin/stdout; every decision comes from core.Engine.")
def serve() -> int:
    from jex.conformance.adapter import serve as run_adapter

    return run_adapter(sys.stdin, sys.stdout)
