"""Single writer: a second process is refused with a message naming the holder."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from jex.journal.errors import DirLocked
from jex.journal.lock import DirLock
from jex.journal.writer import Journal

ROOT = Path(__file__).resolve().parents[2]


def spawn(code: str, *args: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(code), *args],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )


HOLDER = """
    import sys, time
    from pathlib import Path
    from jex.journal.writer import Journal
    journal = Journal.open(Path(sys.argv[1]) / "wal", backend="pwrite", segment_bytes=16384, prepare_ahead=False)
    print("holding", flush=True)
    time.sleep(60)
"""


def test_second_writer_in_another_process_is_refused_naming_the_holder(tmp_path):
    holder = spawn(HOLDER, str(tmp_path))
    try:
        assert holder.stdout.readline().strip() == "holding"
        with pytest.raises(DirLocked) as caught:
            Journal.open(tmp_path / "wal", backend="pwrite", segment_bytes=16384)
        message = str(caught.value)
        assert f"pid {holder.pid}" in message and "Journal.open" not in message
        assert "-c" in message and str(tmp_path) in message and "\n" not in message
        assert caught.value.exit_code == 1
        with pytest.raises(DirLocked):
            DirLock.acquire(tmp_path)
    finally:
        holder.kill()
        holder.wait()
    # The kernel dropped the flock when the holder died: the next writer gets in.
    with Journal.open(tmp_path / "wal", backend="pwrite") as journal:
        assert journal.last_seq == 0


def test_a_child_is_refused_while_this_process_writes(tmp_path):
    with Journal.open(tmp_path / "wal", backend="pwrite", segment_bytes=16384, prepare_ahead=False):
        child = spawn(
            """
            import sys
            from pathlib import Path
            from jex.journal.errors import DirLocked
            from jex.journal.writer import Journal
            try:
                Journal.open(Path(sys.argv[1]) / "wal", backend="pwrite")
            except DirLocked as error:
                print(error)
                sys.exit(error.exit_code)
            """,
            str(tmp_path),
        )
        out, err = child.communicate(timeout=30)
    assert child.returncode == 1, err
    assert f"pid {os.getpid()}" in out and "locked by" in out


def test_lock_is_released_and_its_holder_info_cleared(tmp_path):
    lock = DirLock.acquire(tmp_path)
    assert '"pid"' in (tmp_path / "LOCK").read_text()
    lock.release()
    lock.release()
    assert (tmp_path / "LOCK").read_text() == ""
    with DirLock(tmp_path) as again:
        assert again.held


def test_unreadable_holder_info_still_gives_a_clear_error(tmp_path):
    holder = spawn(
        """
        import fcntl, os, sys, time
        fd = os.open(sys.argv[1] + "/LOCK", os.O_RDWR | os.O_CREAT)
        os.write(fd, b"not json")
        fcntl.flock(fd, fcntl.LOCK_EX)
        print("holding", flush=True)
        time.sleep(60)
        """,
        str(tmp_path),
    )
    try:
        assert holder.stdout.readline().strip() == "holding"
        started = time.monotonic()
        with pytest.raises(DirLocked, match="holder info unreadable"):
            DirLock.acquire(tmp_path)
        assert time.monotonic() - started < 1  # non-blocking
    finally:
        holder.kill()
        holder.wait()
