"""``jex serve`` and ``jex keys`` (cli room): thin edges over jex.api."""

from __future__ import annotations

from typing import Optional

import typer

from jex.cli import output
from jex.cli.main import EXIT_FAILURE, EXIT_OK, EXIT_USAGE, app, check_backend, state

keys_app = typer.Typer(help="Manage API keys (stored hashed in <data-dir>/keys.json).", no_args_is_help=True)
app.add_typer(keys_app, name="keys")


@app.command(help=(
    "Serve the HTTP + WebSocket API (and, with --binary-port, the binary protocol) on the data directory. "
    "Responses leave only after their command is durable. Binds 127.0.0.1 unless --host says otherwise; "
    "port 0 picks a free port (printed on stderr). Exits 1 if the node stops on a journal failure."
))
def serve(
    ctx: typer.Context,
    host: str = typer.Option("127.0.0.1", "--host", help="Address to bind (HTTP and binary)."),
    port: int = typer.Option(8000, "--port", min=0, max=65535, help="HTTP port."),
    binary_port: Optional[int] = typer.Option(None, "--binary-port", min=0, max=65535,
                                              help="Port of the length-prefixed msgpack protocol (off if not given)."),
    backend: str = typer.Option("auto", "--backend", callback=check_backend, help="WAL writer: auto, uring or pwrite."),
    rate: float = typer.Option(None, "--rate", min=0.001, help="Requests per second per API key (sustained)."),
    burst: float = typer.Option(None, "--burst", min=1, help="Requests per API key allowed at once."),
    switch_interval_us: Optional[float] = typer.Option(None, "--switch-interval-us", min=1, hidden=True),
) -> int:
    from jex.api.keys import KeyStoreError
    from jex.api.limits import RATE_BURST_DEFAULT, RATE_PER_S_DEFAULT
    from jex.api.server import ServeConfig
    from jex.api.server import serve as run

    st = state(ctx)
    config = ServeConfig(st.data_dir, host=host, port=port, binary_port=binary_port, backend=backend,
                         rate_per_s=rate or RATE_PER_S_DEFAULT, rate_burst=burst or RATE_BURST_DEFAULT,
                         switch_interval_s=None if switch_interval_us is None else switch_interval_us / 1e6)
    try:
        return run(config)
    except KeyStoreError as exc:
        output.diag(f"jex: keys: {exc}")
        return EXIT_FAILURE


@keys_app.command("add", help="Make an API key for ACCOUNT and print it once (only its hash is stored).")
def keys_add(
    ctx: typer.Context,
    account: str = typer.Argument(..., help="The account the key acts for."),
    admin: bool = typer.Option(False, "--admin", help="The key may also define instruments and run auctions."),
) -> int:
    from jex.api.keys import KeyStore, KeyStoreError

    st = state(ctx)
    try:
        record, key = KeyStore(st.data_dir).add(account, admin)
    except KeyStoreError as exc:
        output.diag(f"jex: bad input: {exc}")
        return EXIT_USAGE
    if st.json:
        output.emit_json({"key_id": record.key_id, "account": record.account, "admin": record.admin, "key": key})
    else:
        print(key)
        output.diag(f"jex: key {record.key_id} for account {record.account}{' (admin)' if admin else ''}; "
                    "it is shown only now")
    return EXIT_OK


@keys_app.command("list", help="List keys (ids, accounts, admin, created, revoked); never the secrets.")
def keys_list(ctx: typer.Context) -> int:
    from jex.api.keys import KeyStore, KeyStoreError

    st = state(ctx)
    try:
        records = KeyStore(st.data_dir).load()
    except KeyStoreError as exc:
        output.diag(f"jex: keys: {exc}")
        return EXIT_FAILURE
    rows = [{"key_id": r.key_id, "account": r.account, "admin": r.admin, "created_at": r.created_at,
             "revoked_at": r.revoked_at} for r in records]
    if st.json:
        for row in rows:
            output.emit_json(row)
    else:
        output.stdout.print(output.dict_table("API keys", rows, ["key_id", "account", "admin", "created_at", "revoked_at"]))
    return EXIT_OK


@keys_app.command("revoke", help="Revoke a key by id; a running server stops accepting it within a second.")
def keys_revoke(ctx: typer.Context, key_id: str = typer.Argument(..., help="The key id (from `jex keys list`).")) -> int:
    from jex.api.keys import KeyStore, KeyStoreError

    st = state(ctx)
    try:
        record = KeyStore(st.data_dir).revoke(key_id)
    except KeyStoreError as exc:
        output.diag(f"jex: bad input: {exc}")
        return EXIT_USAGE
    if st.json:
        output.emit_json({"key_id": record.key_id, "account": record.account, "revoked_at": record.revoked_at})
    else:
        print(f"revoked {record.key_id} ({record.account})")
    return EXIT_OK
