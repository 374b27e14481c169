"""Test support for the network edge (api room): a real server on loopback,
and storages whose sync can be held or made to fail.

Lives beside the code (like ``jex.journal.faultfs``) so tests, benchmarks
and drills share one way to start a server.
"""

from __future__ import annotations

import errno
import os
import re
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from jex.api.keys import KeyStore
from jex.api.server import Running, ServeConfig, serve_in_thread
from jex.journal.storage import OsStorage

SERVER_START_TIMEOUT_S = 60.0
LISTEN_LINE = re.compile(r"jex serve: http://([\d.]+):(\d+)(?:, binary [\d.]+:(\d+))?")


class GatedStorage(OsStorage):
    """Real files; when ``hold()`` is armed, each fdatasync waits until
    ``release()``, so a test can look at the world while a batch is written
    but not yet durable."""

    def __init__(self) -> None:
        self._held = threading.Event()
        self._open = threading.Event()
        self.waiting = threading.Event()  # set while a sync is held

    def hold(self) -> None:
        self._open.clear()
        self._held.set()

    def release(self) -> None:
        self._held.clear()
        self._open.set()

    def fdatasync(self, fd: int) -> None:
        if self._held.is_set():
            self.waiting.set()
            self._open.wait()
            self.waiting.clear()
        super().fdatasync(fd)


class FailingStorage(OsStorage):
    """Real files; after ``fail_syncs()`` every fdatasync raises EIO."""

    def __init__(self) -> None:
        self.failing = False

    def fail_syncs(self) -> None:
        self.failing = True

    def fdatasync(self, fd: int) -> None:
        if self.failing:
            raise OSError(errno.EIO, os.strerror(errno.EIO))
        super().fdatasync(fd)


@dataclass
class ApiServer:
    """A server in a background thread with an admin key and account keys."""

    data_dir: Path
    running: Running
    thread: threading.Thread
    exit_code: list[int]
    keys: dict[str, str] = field(default_factory=dict)  # account -> key

    @classmethod
    def start(cls, data_dir: Path, accounts: tuple[str, ...] = ("A", "B"), **options) -> ApiServer:
        store = KeyStore(data_dir)
        keys = {"ops": store.add("ops", admin=True)[1]}
        for account in accounts:
            keys[account] = store.add(account)[1]
        options.setdefault("backend", "pwrite")
        config = ServeConfig(data_dir, port=0, binary_port=0, quiet=True, **options)
        running, thread, code = serve_in_thread(config, SERVER_START_TIMEOUT_S)
        return cls(data_dir, running, thread, code, keys)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.running.http_port}"

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.running.http_port}/ws"

    def headers(self, account: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.keys[account]}"}

    def last_seq(self) -> int:
        """The journal's last durable seq, read in the writer thread."""
        return self.running.gateway.read(lambda x: x.journal.last_seq).result(10)

    def stop(self, timeout_s: float = 30.0) -> int | None:
        if self.thread.is_alive():
            self.running.stop()
            self.thread.join(timeout_s)
        return self.exit_code[0] if self.exit_code else None


def spawn_server(data_dir: Path, *extra: str, env: dict | None = None) -> tuple[subprocess.Popen, int, int | None]:
    """``jex serve`` as a child process on free ports; returns (process,
    http port, binary port) once it listens."""
    command = [sys.executable, "-m", "jex", "--data-dir", str(data_dir), "serve", "--port", "0", *extra]
    child = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                             env={**os.environ, **(env or {})})
    deadline = time.monotonic() + SERVER_START_TIMEOUT_S
    assert child.stderr is not None
    while time.monotonic() < deadline:
        line = child.stderr.readline()
        if not line:
            break
        match = LISTEN_LINE.search(line)
        if match:
            threading.Thread(target=_drain, args=(child.stderr,), daemon=True).start()
            binary = int(match.group(3)) if match.group(3) else None
            return child, int(match.group(2)), binary
    child.kill()
    child.wait()
    raise RuntimeError(f"jex serve did not start (exit {child.returncode})")


def _drain(stream) -> None:
    for _ in stream:
        pass
