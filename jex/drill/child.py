"""Real `jex` child processes for the drills, and killing them (room: jex.drill).

The node under test is started exactly as a user starts it:

    python -m jex --data-dir D submit FLOW --results --no-progress --clock input ...

`--results` prints one JSON line per command (line, seq, events) only once
the command is durable, so every line read from the child's stdout is an
acknowledgement. After a SIGKILL the drill keeps reading until EOF: lines
already in the pipe were acknowledged too. A last line cut short (the kill
landed while it was being written) was never a complete acknowledgement and
is not counted.

Kill points are armed through JEX_KILLPOINT and automatic snapshots through
JEX_SNAPSHOT_EVERY, the node's own switches; the drill adds none.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import jex
from jex import killpoints
from jex.node.exchange import SNAPSHOT_EVERY_ENV

CHILD_TIMEOUT_S = 180.0  # A child that runs longer than this is killed and the run fails as hung.
STDERR_KEPT_BYTES = 64 * 1024  # Diagnostics kept from one child.
# Children import the same jex as the drill (not one that happens to sit in
# their working directory: `python -m` puts the cwd first on sys.path).
JEX_IMPORT_ROOT = Path(jex.__file__).resolve().parents[1]


@dataclass
class ChildRun:
    """How one child ended and what it acknowledged."""

    argv: list[str]
    returncode: int
    acks: dict[int, int] = field(default_factory=dict)  # index of the input line -> seq
    events: dict[int, list[dict]] = field(default_factory=dict)  # index -> events acknowledged
    stdout: str = ""
    stderr: str = ""
    seconds: float = 0.0
    killed: bool = False  # the drill sent the SIGKILL
    hung: bool = False

    @property
    def sigkilled(self) -> bool:
        return self.returncode == -signal.SIGKILL


def jex_argv(data_dir: Path, *args: str) -> list[str]:
    """`python -m jex --data-dir D ARGS...` with this interpreter."""
    return [sys.executable, "-m", "jex", "--data-dir", str(Path(data_dir).resolve()), *args]


def child_env(*, killpoint: str | None = None, snapshot_every: int | None = None) -> dict[str, str]:
    env = dict(os.environ)
    env.pop(killpoints.ENV_VAR, None)
    env.pop(SNAPSHOT_EVERY_ENV, None)
    env.pop("JEX_DATA_DIR", None)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(JEX_IMPORT_ROOT), env.get("PYTHONPATH")) if p)
    if killpoint:
        env[killpoints.ENV_VAR] = killpoint
    if snapshot_every is not None:
        env[SNAPSHOT_EVERY_ENV] = str(snapshot_every)
    return env


def run_submit(
    data_dir: Path,
    flow_path: Path,
    *,
    backend: str,
    segment_bytes: int,
    batch: int,
    snapshot_every: int = 0,
    killpoint: str | None = None,
    kill_after_acks: int | None = None,
    kill_after_s: float | None = None,
    from_first_ack: bool = False,
    timeout_s: float = CHILD_TIMEOUT_S,
) -> ChildRun:
    """Run `jex submit FLOW --results` in a child; SIGKILL it after
    `kill_after_acks` acknowledgements or `kill_after_s` seconds (counted
    from its start, or with `from_first_ack` from its first
    acknowledgement), if it is still running; or let it SIGKILL itself at
    `killpoint`."""
    argv = jex_argv(data_dir, "submit", str(Path(flow_path).resolve()), "--results", "--no-progress",
                    "--clock", "input", "--batch", str(batch), "--segment-bytes", str(segment_bytes),
                    "--backend", backend)
    env = child_env(killpoint=killpoint, snapshot_every=snapshot_every)
    started = time.perf_counter()
    with tempfile.TemporaryFile() as err:
        child = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=err, env=env, cwd=Path(data_dir).parent)
        run = ChildRun(argv, 0)
        lock = threading.Lock()

        def kill(reason: str) -> None:
            with lock:
                if child.poll() is None:
                    child.send_signal(signal.SIGKILL)
                    run.killed = True
                    run.hung = reason == "timeout"

        timers = [threading.Timer(timeout_s, kill, ("timeout",))]
        if kill_after_s is not None:
            timers.append(threading.Timer(kill_after_s, kill, ("drill",)))
        for timer in timers[: 1 if from_first_ack else None]:
            timer.daemon = True
            timer.start()

        def on_ack(count: int) -> None:
            if count == 1 and from_first_ack and kill_after_s is not None:
                timers[1].daemon = True
                timers[1].start()
            if kill_after_acks is not None and count >= kill_after_acks:
                kill("drill")

        try:
            if kill_after_acks is not None and kill_after_acks <= 0:
                kill("drill")
            lines = _read_acks(child, run, on_ack)
        finally:
            for timer in timers:
                timer.cancel()
            child.wait()
            child.stdout.close()
        run.returncode = child.returncode
        run.stdout = "".join(lines[-5:])
        err.seek(0)
        run.stderr = _tail(err.read())
    run.seconds = time.perf_counter() - started
    return run


def _read_acks(child: subprocess.Popen, run: ChildRun, on_ack: Callable[[int], None]) -> list[str]:
    """Read result lines until EOF (also after a kill: the pipe still holds
    acknowledgements); `on_ack(count)` after each. Returns the raw lines."""
    lines: list[str] = []
    for raw in child.stdout:
        text = raw.decode("utf-8", "replace")
        lines.append(text)
        if not text.endswith("\n"):
            break  # Cut short by the kill: never a complete acknowledgement.
        try:
            result = json.loads(text)
        except json.JSONDecodeError:
            continue
        if result.get("seq") is not None:
            index = result["line"] - 1
            run.acks[index] = result["seq"]
            run.events[index] = result["events"]
            on_ack(len(run.acks))
    return lines


def run_jex(data_dir: Path, *args: str, killpoint: str | None = None,
            timeout_s: float = CHILD_TIMEOUT_S) -> ChildRun:
    """Run one `jex` command to completion (or to its kill point)."""
    argv = jex_argv(data_dir, *args)
    started = time.perf_counter()
    try:
        done = subprocess.run(argv, env=child_env(killpoint=killpoint), capture_output=True, timeout=timeout_s,
                              cwd=Path(data_dir).parent)
    except subprocess.TimeoutExpired as expired:
        return ChildRun(argv, -signal.SIGKILL, stdout=_tail(expired.stdout or b""), stderr=_tail(expired.stderr or b""),
                        seconds=time.perf_counter() - started, killed=True, hung=True)
    return ChildRun(argv, done.returncode, stdout=_tail(done.stdout), stderr=_tail(done.stderr),
                    seconds=time.perf_counter() - started)


def _tail(data: bytes) -> str:
    return data[-STDERR_KEPT_BYTES:].decode("utf-8", "replace")
