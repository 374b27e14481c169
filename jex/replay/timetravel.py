"""Time travel: the state as it was after a seq or at a time (room: jex.replay).

    point = parse_point("2023-11-14T22:13:20.5Z")   # or "1200", "seq:1200", "ns:1700000000000000000"
    recovered = state_at(data_dir, point)           # nearest snapshot at or before it + replay

A point names either a seq (state after that record) or a time (state after
the last command whose timestamp is <= it; timestamps never decrease along
the log). How text is read is a table (POINT_FORMS): an explicit prefix
wins; ISO-8601 text is a time (UTC unless it carries an offset); a bare
integer is a seq below TIME_NS_MIN and nanoseconds since the epoch from
there on (no log reaches 10^15 records; no live clock reads before
1970-01-12). Logs written with `--clock input` and tiny timestamps need the
`ns:` prefix.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Callable

from jex.replay.recover import Recovered, recover, wal_view
from jex.snapshots import snapshot_dir

TIME_NS_MIN = 10**15  # bare integers at or above this are nanoseconds since the epoch
NS_PER_S = 1_000_000_000
EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
POINT_TEXT_BYTES_MAX = 64  # longer text is refused before any parsing

_FRACTION = re.compile(r"\.(\d{1,9})(?=(Z|z|[+-]\d\d:?\d\d)?$)")


class PointError(ValueError):
    """Text that names neither a seq nor a time. One line."""


@dataclass(frozen=True)
class Point:
    seq: int | None = None
    ts_ns: int | None = None

    def __str__(self) -> str:
        return f"seq {self.seq}" if self.seq is not None else f"{format_ns(self.ts_ns)} ({self.ts_ns} ns)"


def _seq(text: str) -> Point:
    return Point(seq=_nonnegative(text))


def _ns(text: str) -> Point:
    return Point(ts_ns=_nonnegative(text))


def _bare(text: str) -> Point:
    value = _nonnegative(text)
    return Point(ts_ns=value) if value >= TIME_NS_MIN else Point(seq=value)


def _iso(text: str) -> Point:
    return Point(ts_ns=parse_iso_ns(text))


# How point text is read, first match wins: (test, parser, what it means).
POINT_FORMS: tuple[tuple[Callable[[str], bool], Callable[[str], Point], str], ...] = (
    (lambda t: t.startswith("seq:"), lambda t: _seq(t[4:]), "seq:N  the state after record N"),
    (lambda t: t.startswith(("ns:", "ts:")), lambda t: _ns(t[3:]), "ns:N   at N nanoseconds since the epoch"),
    (lambda t: _plain_digits(t), _bare, f"N      a seq below {TIME_NS_MIN}, nanoseconds from there on"),
    (lambda t: "-" in t[1:] or "T" in t, _iso, "ISO-8601 (UTC unless an offset is given), e.g. 2023-11-14T22:13:20.5Z"),
)


def parse_point(text: str) -> Point:
    """Read a seq or a time (see POINT_FORMS). Raises PointError.

    >>> parse_point("1200"), parse_point("seq:5").seq, parse_point("ns:7").ts_ns
    (Point(seq=1200, ts_ns=None), 5, 7)
    >>> parse_point("1970-01-01T00:00:01.000000002Z").ts_ns
    1000000002
    """
    text = text.strip()
    if not text or len(text) > POINT_TEXT_BYTES_MAX:
        raise PointError(f"{text[:POINT_TEXT_BYTES_MAX]!r}: expected a seq or a time")
    for test, parser, _ in POINT_FORMS:
        if test(text):
            return parser(text)
    raise PointError(f"{text!r}: expected a seq (1200, seq:1200) or a time (ISO-8601, ns:1700000000000000000)")


def _plain_digits(text: str) -> bool:
    """ASCII digits only, at most 20 of them (int() accepts other scripts' digits)."""
    return 0 < len(text) <= 20 and text.isascii() and text.isdigit()


def _nonnegative(text: str) -> int:
    if not _plain_digits(text):
        raise PointError(f"{text!r}: expected a non-negative integer")
    return int(text)


def parse_iso_ns(text: str) -> int:
    """ISO-8601 to nanoseconds since the epoch, keeping all nine fraction digits."""
    fraction_ns = 0
    match = _FRACTION.search(text)
    if match:
        digits = match.group(1)
        fraction_ns = int(digits.ljust(9, "0"))
        text = text[: match.start()] + text[match.end() :]
    try:
        moment = datetime.fromisoformat(text.replace("z", "Z"))
    except ValueError:
        raise PointError(f"{text!r}: not an ISO-8601 time") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    delta = moment - EPOCH
    seconds = delta.days * 86_400 + delta.seconds
    return seconds * NS_PER_S + delta.microseconds * 1_000 + fraction_ns


def format_ns(ts_ns: int | None) -> str | None:
    """Nanoseconds since the epoch as ISO-8601 UTC with nine fraction digits.

    >>> format_ns(1_700_000_000_123_456_789)
    '2023-11-14T22:13:20.123456789Z'
    """
    if ts_ns is None:
        return None
    seconds, fraction = divmod(ts_ns, NS_PER_S)
    moment = EPOCH + timedelta(seconds=seconds)
    return f"{moment:%Y-%m-%dT%H:%M:%S}.{fraction:09d}Z"


def state_at(
    data_dir: Path | str,
    point: Point | None = None,
    *,
    earliest: bool = False,
    use_snapshots: bool = True,
    on_events=None,
    notify: Callable[[str], None] | None = None,
) -> Recovered:
    """The state after `point` (default: the end of the log), rebuilt
    read-only from the nearest usable snapshot at or before it plus replay,
    falling back to earlier snapshots and genesis. Raises RecoveryError,
    JournalCorrupt, ReplayError."""
    data_dir = Path(data_dir)
    point = point or Point()
    return recover(
        wal_view(data_dir / "wal"),
        snapshot_dir(data_dir) if use_snapshots else None,
        to_seq=point.seq,
        to_ts=point.ts_ns,
        earliest=earliest,
        on_events=on_events,
        notify=notify,
    )
