"""Named kill points for crash drills: the process SIGKILLs itself on cue.

Set the environment variable JEX_KILLPOINT to a point name (`before_write`)
or to `name:N` to die at the Nth time that point is reached. The drill
(tests, `jex drill`) starts a child with the variable set, lets it die
mid-operation, and checks that recovery keeps every acknowledged record.

SIGKILL leaves the page cache intact, so these drills test ordering and
atomicity of the on-disk protocol, not durability (that is the
fault-injecting storage's job).

This module sits at the package root and imports nothing from jex, so any
room may call it. The environment is read once at import: `hit()` costs one
comparison when no kill point is armed, which matters on the WAL hot path.

Points used by jex.journal (every record write, SEALs included):
    before_write              before a batch's write is issued
    after_write_before_fsync  after the write, before its sync (pwrite backend;
                              for io_uring: after the write+sync is submitted)
    mid_rollover              after the next segment is renamed into place,
                              before the old one gets its SEAL record
(`after_fsync_before_ack` belongs to jex.node, right after Journal.wait().)
"""

from __future__ import annotations

import os
import signal

ENV_VAR = "JEX_KILLPOINT"


def parse(spec: str | None) -> tuple[str | None, int]:
    """Parse `name` or `name:N` into (name, N). Empty or unset disarms.

    >>> parse("mid_rollover:3")
    ('mid_rollover', 3)
    >>> parse("before_write")
    ('before_write', 1)
    >>> parse(None)
    (None, 1)
    """
    if not spec:
        return None, 1
    name, sep, count = spec.partition(":")
    if not name:
        raise ValueError(f"{ENV_VAR}={spec!r}: empty kill point name")
    if not sep:
        return name, 1
    if not count.isdigit() or int(count) < 1:
        raise ValueError(f"{ENV_VAR}={spec!r}: N must be a positive integer")
    return name, int(count)


_armed_name, _armed_nth = parse(os.environ.get(ENV_VAR))
_hits = 0


def hit(name: str) -> None:
    """Die by SIGKILL if `name` is the armed kill point and this is its Nth hit.

    O(1); a single comparison when nothing is armed.
    """
    if _armed_name is None or name != _armed_name:
        return
    global _hits
    _hits += 1
    if _hits >= _armed_nth:
        os.kill(os.getpid(), signal.SIGKILL)


def armed() -> str | None:
    """The armed kill point's name, or None."""
    return _armed_name
