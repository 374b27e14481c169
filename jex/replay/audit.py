"""The audit index: an LMDB projection of the log (room: jex.replay).

`<data_dir>/audit/` holds, for every command the log holds, what happened
(its events, compact) and lookups from who/what to when:

    db        key                        value
    cmds      seq                        [ts_ns, command type, account, client_id, target order id, events]
    order     order id                   seqs of events naming it           (dupsort)
    client    account \\0 client_id       seqs of accepted/rejected naming it (dupsort)
    account   account                    seqs of events naming it or its orders (dupsort)
    trades    symbol                     seqs of its trades                 (dupsort)
    time      ts_ns, seq                 -                                  (time -> seq)
    owner     order id                   [account, client_id] (from `accepted`)
    by_client account \\0 client_id       order id
    instruments symbol                   instrument config (to print lots and ticks)
    meta      version; position = [seq, chain value, first seq covered, [segment, offset] of record seq]

The index is maintained behind the journal, in batches: the indexer reads
the records after the position it recorded (seq + chain value), re-derives
their events by replaying them on an engine (restored from the nearest
snapshot at or before its position), and commits the rows together with the
new position in one LMDB transaction. Queries catch the index up first. It
is never trusted over the log: when the log does not hold the recorded
position with the recorded chain value (another history, a repaired tail, a
prune past it), the index is rebuilt from scratch — from genesis, or on a
pruned log from the oldest usable snapshot (the index then covers what the
log still holds: `first`).

Which events a query returns is decided by relations written as tables
(ORDER_FIELDS, CLIENT_FIELDS, ACCOUNT_FIELDS): the index stores, per key,
the seqs where some event relates to it, and a query re-applies the same
relation to the events of those seqs, so a page holds exactly the events
that relate. Pages are ordered by (seq, event index) and resume from a
cursor "SEQ:INDEX".

Catch-up costs a state restore plus replay of the new records (the engine
is rebuilt in every process); a query on a caught-up index costs two small
reads of the WAL (the recorded record's header, the bytes after it) plus
the LMDB reads of one page.
"""

from __future__ import annotations

import fcntl
import heapq
import itertools
import os
import shutil
import struct
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Iterator

import msgspec
import xxhash

from jex.core import Codec, Engine, decode_command
from jex.core import commands as C
from jex.core import events as E
from jex.journal import Record, RecordType
from jex.journal.limits import RECORD_HEADER_BYTES, SEGMENT_HEADER_BYTES
from jex.journal.errors import SegmentHeaderError
from jex.journal.record import RecordCursor, RecordError, decode_header, record_bytes
from jex.journal.segment import SegmentHeader, list_segments
from jex.journal.storage import OsStorage
from jex.replay.recover import RecoveryError, WalView, open_start
from jex.replay.timetravel import Point, format_ns
from jex.snapshots import list_snapshots, snapshot_dir
from jex.snapshots import store

AUDIT_DIR_NAME = "audit"
STATES_DIR_NAME = "states"  # the indexer's own engine snapshots, to resume without a long replay
INDEX_VERSION = 1
MAP_BYTES = 256 << 30  # LMDB map (virtual; the file grows as it fills)
COMMIT_COMMANDS = 50_000  # commands per write transaction while indexing
STATE_SAVE_COMMANDS_MIN = 200_000  # a catch-up this long leaves an engine state behind for the next one
PAGE_LIMIT_DEFAULT = 100
PAGE_LIMIT_MAX = 10_000
KEY_BYTES_MAX = 500  # LMDB keys are at most 511 bytes; longer keys are hashed (queries re-check exactly)
TYPES_MAX = 16  # event types in one --type filter

_U64 = struct.Struct(">Q")
_PAIR = struct.Struct(">QQ")
_encoder = msgspec.msgpack.Encoder()
_decoder = msgspec.msgpack.Decoder()
_instrument_decoder = msgspec.msgpack.Decoder(C.Instrument)

EVENT_CLASSES: dict[str, type] = {cls.__struct_config__.tag: cls for cls in E.Event.__args__}
TAG_OF = {cls: tag for tag, cls in EVENT_CLASSES.items()}
EVENT_TYPES = frozenset(EVENT_CLASSES)
COMMAND_TYPES = {
    C.Instrument: "instrument", C.NewOrder: "order", C.Cancel: "cancel", C.Replace: "replace", C.Oco: "oco",
    C.Bracket: "bracket", C.Conditional: "conditional", C.Auction: "auction", C.Clock: "clock",
}  # fmt: skip

# Relations: which events are about which order, client id, account, symbol.
# An event is about order X if X is in one of these fields ...
ORDER_FIELDS: dict[str, tuple[str, ...]] = {
    "accepted": ("order_id",),
    "trade": ("maker_order_id", "taker_order_id"),
    "cancelled": ("order_id",),
    "triggered": ("order_id",),
    "amended": ("order_id",),
    "prevented": ("taker_order_id", "maker_order_id"),
}
# ... or if it is one of these and its command (a cancel or replace) named X by order id.
TARGETED_TYPES = frozenset({"rejected"})
# An event is about (account, client_id) if it carries both in these fields.
CLIENT_FIELDS: dict[str, tuple[str, str]] = {"accepted": ("account", "client_id"), "rejected": ("account", "client_id")}
# An event is about account A if A is in one of these fields, or owns an order the event is about.
ACCOUNT_FIELDS: dict[str, tuple[str, ...]] = {"accepted": ("account",), "rejected": ("account",), "trade": ("buyer", "seller")}
TRADE_TYPES = frozenset({"trade"})

_DBS = ("meta", "cmds", "order", "client", "account", "trades", "time", "owner", "by_client", "instruments")
_DUPSORT = frozenset({"order", "client", "account", "trades"})


class AuditError(Exception):
    """The audit index cannot answer (bad query, unusable index). One line."""


# --------------------------------------------------------------- relations


@dataclass(frozen=True)
class CommandInfo:
    ts_ns: int
    type: str
    account: str | None
    client_id: str | None
    target: int | None  # order id a cancel/replace named


def command_info(command, ts_ns: int) -> CommandInfo:
    target = getattr(command, "order_id", None) if isinstance(command, (C.Cancel, C.Replace)) else None
    return CommandInfo(ts_ns, COMMAND_TYPES[type(command)], getattr(command, "account", None),
                       getattr(command, "client_id", None), target)


def orders_of(event, info: CommandInfo) -> set[int]:
    tag = TAG_OF[type(event)]
    out = {getattr(event, f) for f in ORDER_FIELDS.get(tag, ())}
    if tag in TARGETED_TYPES and info.target is not None:
        out.add(info.target)
    return out


def clients_of(event) -> set[tuple[str, str]]:
    fields = CLIENT_FIELDS.get(TAG_OF[type(event)])
    if fields is None:
        return set()
    account, client_id = (getattr(event, f) for f in fields)
    return set() if account is None or client_id is None else {(account, client_id)}


def accounts_of(event, owner: Callable[[int], str | None]) -> set[str]:
    tag = TAG_OF[type(event)]
    out = {getattr(event, f) for f in ACCOUNT_FIELDS.get(tag, ())}
    for name in ORDER_FIELDS.get(tag, ()):
        account = owner(getattr(event, name))
        if account is not None:
            out.add(account)
    out.discard(None)
    return out


# ------------------------------------------------------------------ keys


def _u64(value: int) -> bytes:
    return _U64.pack(value)


def _text_key(*parts: str) -> bytes:
    key = "\0".join(parts).encode()
    return key if len(key) <= KEY_BYTES_MAX else b"#" + xxhash.xxh3_128_digest(key)


def _compact(event) -> list:
    return [TAG_OF[type(event)], *msgspec.structs.astuple(event)]


def _expand(row: list):
    return EVENT_CLASSES[row[0]](*row[1:])


# ------------------------------------------------------------------- index


@dataclass
class Position:
    """Where the index stands in the log: the last record indexed."""

    seq: int
    chain: bytes
    first: int  # the first seq the index covers (1, or after a pruned start)
    hint: list | None  # [segment file name, record offset] of record `seq`, to check it in O(1)


@dataclass
class CatchUp:
    """What bringing the index up to date did."""

    rebuilt: bool = False
    reason: str = ""
    start: str = ""
    commands: int = 0
    seconds: float = 0.0
    position: Position | None = None


class AuditIndex:
    """The LMDB environment of one data directory. Use as a context manager."""

    def __init__(self, data_dir: Path | str) -> None:
        try:
            import lmdb
        except ImportError as error:  # pragma: no cover - lmdb is a dependency
            raise AuditError(f"the audit index needs the lmdb package: {error}") from None
        self._lmdb = lmdb
        self.data_dir = Path(data_dir)
        self.directory = self.data_dir / AUDIT_DIR_NAME
        self.wal_dir = self.data_dir / "wal"
        self.log = WalView(self.wal_dir)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.env = self._open_env()
        self._owner_cache: dict[int, tuple[str, str]] = {}

    def _open_env(self):
        lmdb = self._lmdb
        try:
            env = lmdb.open(str(self.directory / "index"), map_size=MAP_BYTES, max_dbs=len(_DBS) + 2, subdir=True)
        except lmdb.Error as error:
            raise AuditError(f"audit index {self.directory}: {error}") from None
        self.dbs = {name: env.open_db(name.encode(), dupsort=name in _DUPSORT, dupfixed=name in _DUPSORT) for name in _DBS}
        return env

    def close(self) -> None:
        self.env.close()

    def __enter__(self) -> AuditIndex:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # ------------------------------------------------------------ position

    def position(self) -> Position | None:
        with self.env.begin() as txn:
            meta = self.dbs["meta"]
            if txn.get(b"version", db=meta) != _u64(INDEX_VERSION):
                return None
            raw = txn.get(b"position", db=meta)
            return None if raw is None else Position(*_decoder.decode(raw))

    def _put_position(self, txn, position: Position) -> None:
        meta = self.dbs["meta"]
        txn.put(b"version", _u64(INDEX_VERSION), db=meta)
        txn.put(b"position", _encoder.encode([position.seq, position.chain, position.first, position.hint]), db=meta)

    # ------------------------------------------------------------- catch up

    def catch_up(self, *, rebuild: bool = False, notify: Callable[[str], None] | None = None) -> CatchUp:
        """Bring the index level with the log (or rebuild it). Serialized
        across processes by a file lock. Raises JournalCorrupt, RecoveryError."""
        started = time.perf_counter()
        with open(self.directory / "indexer.lock", "a+") as lock_file:
            fcntl.flock(lock_file.fileno(), fcntl.LOCK_EX)
            result = self._catch_up_locked(rebuild, notify)
        result.seconds = time.perf_counter() - started
        return result

    def _catch_up_locked(self, rebuild: bool, notify) -> CatchUp:
        position = self.position()
        reason = "asked to" if rebuild else "no index yet" if position is None else self._mismatch(position)
        if reason:
            if position is not None and notify is not None:
                notify(f"jex: audit index rebuilt: {reason}")
            return self._rebuild(reason)
        if not self._has_more(position):
            return CatchUp(position=position)
        records = self.log.records(position.seq + 1)
        first = next(records, None)
        if first is None:
            if position.hint is None and position.seq > 0:
                position = self._with_hint(position)
            return CatchUp(position=position)
        return self._extend(position, itertools.chain([first], records))

    def _with_hint(self, position: Position) -> Position:
        record = next(self.log.records(position.seq, position.seq), None)
        if record is None:
            return position
        position = Position(position.seq, position.chain, position.first, self._locate(record))
        with self.env.begin(write=True) as txn:
            self._put_position(txn, position)
        return position

    def _mismatch(self, position: Position) -> str:
        """Why the log does not hold the recorded position ('' if it does)."""
        if position.seq == 0:
            return ""
        if position.hint is not None and self._hint_matches(position):
            return ""
        if position.seq < self.log.first_seq:
            return f"the log was pruned past its position (seq {position.seq})"
        record = next(self.log.records(position.seq, position.seq), None)
        if record is None:
            return f"the log ends before its position (seq {position.seq})"
        if record.chain != position.chain:
            return f"the log's chain value at seq {position.seq} differs (another history)"
        return ""

    def _hint_matches(self, position: Position) -> bool:
        name, offset = position.hint
        header = self._read_header(self.wal_dir / name, offset)
        return header is not None and header.seq == position.seq and header.header_checksum == position.chain

    @staticmethod
    def _read_header(path: Path, offset: int):
        try:
            with open(path, "rb") as f:
                data = os.pread(f.fileno(), RECORD_HEADER_BYTES, offset)
            return decode_header(data, 0)
        except (OSError, RecordError):
            return None

    def _has_more(self, position: Position) -> bool:
        """False only when the log surely holds nothing after the position:
        zeros after the recorded record, in the last segment. O(1)."""
        if position.hint is None:
            return True
        name, offset = position.hint
        header = self._read_header(self.wal_dir / name, offset)
        if header is None:
            return True
        after = offset + record_bytes(header.payload_len)
        try:
            with open(self.wal_dir / name, "rb") as f:
                if any(os.pread(f.fileno(), RECORD_HEADER_BYTES, after)):
                    return True
        except OSError:
            return True
        segments = list_segments(OsStorage(), self.wal_dir).segments
        return not segments or segments[-1].path.name != name

    def _rebuild(self, reason: str) -> CatchUp:
        with self.env.begin(write=True) as txn:
            for db in self.dbs.values():
                txn.drop(db, delete=False)
        shutil.rmtree(self.directory / STATES_DIR_NAME, ignore_errors=True)
        self._owner_cache.clear()
        if not self.wal_dir.is_dir() or not list_segments(OsStorage(), self.wal_dir).segments:
            empty = Position(0, bytes(16), 1, None)
            with self.env.begin(write=True) as txn:
                self._put_position(txn, empty)
            return CatchUp(True, reason, "genesis", 0, position=empty)
        engine, start, tail, _ = open_start(self.log, snapshot_dir(self.data_dir), earliest=True)
        first = start.seq + 1
        position = Position(start.seq, start.header.chain if start.header else bytes(16), first, None)
        with self.env.begin(write=True) as txn:
            self._seed(txn, engine)
            self._put_position(txn, position)
        commands, position = self._index(engine, tail, position)
        return CatchUp(True, reason, start.name, commands, position=position)

    def _extend(self, position: Position, records: Iterator[Record]) -> CatchUp:
        """Restore an engine at the position (nearest snapshot or indexer
        state at or before it + replay), then index `records` (what follows)."""
        directories = [snapshot_dir(self.data_dir), self.directory / STATES_DIR_NAME]
        try:
            engine, start, tail, _ = open_start(self.log, directories, to_seq=position.seq)
        except RecoveryError as error:  # no way to reach the position any more: start over
            return self._rebuild(f"cannot restore the state at seq {position.seq}: {error}")
        for record in tail:
            if record.type == RecordType.COMMAND:
                engine.apply(decode_command(record.payload), record.seq, record.ts_ns)
        commands, new_position = self._index(engine, records, position)
        return CatchUp(False, "", start.name, commands, position=new_position)

    def _seed(self, txn, engine: Engine) -> None:
        """A start after genesis: owners and instruments known before it."""
        owner, by_client, instruments = self.dbs["owner"], self.dbs["by_client"], self.dbs["instruments"]
        for account, client_id, order_id in engine.registry():
            txn.put(_u64(order_id), _encoder.encode([account, client_id]), db=owner)
            txn.put(_text_key(account, client_id), _u64(order_id), db=by_client)
        for symbol, inst in engine.instruments.items():
            txn.put(symbol.encode(), msgspec.msgpack.encode(inst.config), db=instruments)

    def _index(self, engine: Engine, records: Iterable[Record], position: Position) -> tuple[int, Position]:
        """Replay and index `records` (which follow `position`), committing
        the rows and the new position every COMMIT_COMMANDS commands."""
        first = position.first
        commands = pending = 0
        last: Record | None = None
        txn = self.env.begin(write=True)
        try:
            for record in records:
                last = record
                if record.type == RecordType.COMMAND:
                    command = decode_command(record.payload)
                    events = engine.apply(command, record.seq, record.ts_ns)
                    self._put(txn, engine, record.seq, command_info(command, record.ts_ns), events)
                    commands += 1
                    pending += 1
                if pending >= COMMIT_COMMANDS:
                    position = Position(last.seq, last.chain, first, None)
                    self._put_position(txn, position)
                    txn.commit()
                    txn = self.env.begin(write=True)
                    pending = 0
            if last is not None:
                position = Position(last.seq, last.chain, first, self._locate(last))
                self._put_position(txn, position)
            txn.commit()
        except BaseException:
            txn.abort()
            raise
        if commands >= STATE_SAVE_COMMANDS_MIN and last is not None:
            self._save_state(engine, last)
        return commands, position

    def _put(self, txn, engine: Engine, seq: int, info: CommandInfo, events: list) -> None:
        dbs = self.dbs
        seq_key = _u64(seq)
        keys: set[tuple[str, bytes]] = set()
        for event in events:
            tag = TAG_OF[type(event)]
            if tag == "accepted":
                self._owner_cache[event.order_id] = (event.account, event.client_id)
                txn.put(_u64(event.order_id), _encoder.encode([event.account, event.client_id]), db=dbs["owner"])
                txn.put(_text_key(event.account, event.client_id), _u64(event.order_id), db=dbs["by_client"],
                        overwrite=False)
            elif tag == "instrument":
                config = engine.instruments[event.symbol].config
                txn.put(event.symbol.encode(), msgspec.msgpack.encode(config), db=dbs["instruments"])
            for order_id in orders_of(event, info):
                keys.add(("order", _u64(order_id)))
            for account, client_id in clients_of(event):
                keys.add(("client", _text_key(account, client_id)))
            for account in accounts_of(event, lambda o: self._owner(txn, o)):
                keys.add(("account", _text_key(account)))
            if tag in TRADE_TYPES:
                keys.add(("trades", _text_key(event.symbol)))
        for name, key in keys:
            txn.put(key, seq_key, db=dbs[name])
        row = [info.ts_ns, info.type, info.account, info.client_id, info.target, [_compact(e) for e in events]]
        txn.put(seq_key, _encoder.encode(row), db=dbs["cmds"])
        txn.put(_PAIR.pack(info.ts_ns, seq), b"", db=dbs["time"])

    def _owner(self, txn, order_id: int) -> str | None:
        cached = self._owner_cache.get(order_id)
        if cached is None:
            raw = txn.get(_u64(order_id), db=self.dbs["owner"])
            if raw is None:
                return None
            cached = self._owner_cache[order_id] = tuple(_decoder.decode(raw))
        return cached[0]

    def _locate(self, record: Record) -> list | None:
        """[segment name, offset] of `record`, so later queries check the
        position with one small read. Walks the segment that holds it."""
        segments = [s for s in list_segments(OsStorage(), self.wal_dir).segments if s.first_seq <= record.seq]
        if not segments:
            return None
        path = segments[-1].path
        try:
            data = path.read_bytes()
            header = SegmentHeader.decode(data[:SEGMENT_HEADER_BYTES], name=path.name)
        except (OSError, SegmentHeaderError):  # no hint: the next query walks instead
            return None
        cursor = RecordCursor(data, SEGMENT_HEADER_BYTES, len(data), nonce=header.nonce, seq=header.first_seq,
                              parent=header.prev_chain, ts_ns=0)
        offset = SEGMENT_HEADER_BYTES
        for found in cursor:
            if found.seq == record.seq:
                return [path.name, offset] if found.chain == record.chain else None
            offset += record_bytes(len(found.payload))
        return None

    def _save_state(self, engine: Engine, last: Record) -> None:
        """Leave the indexer's engine behind (snapshot format), so the next
        catch-up restores it instead of replaying from an older snapshot."""
        directory = self.directory / STATES_DIR_NAME
        try:
            store.take(directory, engine, seq=last.seq, chain=last.chain, ts_ns=last.ts_ns)
            older = [s.path for s in list_snapshots(directory).snapshots if s.seq != last.seq]
            store.delete(older, directory)
        except OSError:
            pass  # an optimisation only

    # --------------------------------------------------------------- queries

    def seq_at_time(self, ts_ns: int, *, after: bool) -> int | None:
        """The first seq with ts >= ts_ns (after=True), or the last seq with
        ts <= ts_ns (after=False); None if there is none."""
        with self.env.begin() as txn:
            cursor = txn.cursor(db=self.dbs["time"])
            if after:
                if not cursor.set_range(_PAIR.pack(ts_ns, 0)):
                    return None
                return _PAIR.unpack(cursor.key())[1]
            if ts_ns >= (1 << 64) - 1 or not cursor.set_range(_PAIR.pack(ts_ns + 1, 0)):
                if not cursor.last():
                    return None
                ts, seq = _PAIR.unpack(cursor.key())
                return seq if ts <= ts_ns else None
            if not cursor.prev():
                return None
            return _PAIR.unpack(cursor.key())[1]

    def resolve(self, point: Point | None, *, after: bool) -> int | None:
        if point is None:
            return None
        if point.seq is not None:
            return point.seq
        seq = self.seq_at_time(point.ts_ns, after=after)
        return seq if seq is not None else ((1 << 63) if after else 0)

    def order_by_client(self, account: str, client_id: str) -> int | None:
        with self.env.begin() as txn:
            raw = txn.get(_text_key(account, client_id), db=self.dbs["by_client"])
        return None if raw is None else _U64.unpack(raw)[0]

    def query(self, selector: Selector, page: PageRequest) -> Page:
        """One page of the events `selector` relates to, in (seq, index) order."""
        with self.env.begin() as txn:
            return _Query(self, txn, selector, page).run()


# ----------------------------------------------------------------- queries


@dataclass(frozen=True)
class Selector:
    """What a query asks about. Exactly one of the shapes:
    order (order_id and/or client), account, trades (symbol), range."""

    kind: str  # "order" | "account" | "trades" | "range"
    order_id: int | None = None
    client: tuple[str, str] | None = None
    account: str | None = None
    symbol: str | None = None


@dataclass(frozen=True)
class PageRequest:
    since_seq: int | None = None
    until_seq: int | None = None
    types: frozenset[str] | None = None
    cursor: tuple[int, int] | None = None
    limit: int = PAGE_LIMIT_DEFAULT


@dataclass
class Page:
    rows: list[dict] = field(default_factory=list)
    next_cursor: str | None = None


def parse_cursor(text: str) -> tuple[int, int]:
    seq, sep, index = text.partition(":")
    if not sep or not all(0 < len(p) <= 20 and p.isascii() and p.isdigit() for p in (seq, index)):
        raise AuditError(f"cursor {text!r}: expected SEQ:INDEX as printed at the end of a page")
    return int(seq), int(index)


def parse_types(values: Iterable[str]) -> frozenset[str] | None:
    names = {name.strip() for value in values for name in value.split(",") if name.strip()}
    if not names:
        return None
    if len(names) > TYPES_MAX:
        raise AuditError(f"--type: at most {TYPES_MAX} event types")
    unknown = names - EVENT_TYPES
    if unknown:
        raise AuditError(f"--type: unknown event type(s) {', '.join(sorted(unknown))}; known: {', '.join(sorted(EVENT_TYPES))}")
    return frozenset(names)


class _Query:
    def __init__(self, index: AuditIndex, txn, selector: Selector, page: PageRequest) -> None:
        if not 1 <= page.limit <= PAGE_LIMIT_MAX:
            raise AuditError(f"--limit must be in 1..{PAGE_LIMIT_MAX}")
        self.index, self.txn, self.selector, self.page = index, txn, selector, page
        self.dbs = index.dbs
        self._owners: dict[int, str | None] = {}
        self.codec = Codec(self._instruments())

    def _instruments(self) -> dict:
        out = {}
        for key, raw in self.txn.cursor(db=self.dbs["instruments"]):
            out[key.decode()] = _InstrumentView(_instrument_decoder.decode(raw))
        return out

    def run(self) -> Page:
        page = self.page
        low = max(page.since_seq or 0, page.cursor[0] if page.cursor else 0)
        high = page.until_seq if page.until_seq is not None else (1 << 63)
        if low > high:
            return Page()
        relates = self._relation()
        result = Page()
        for seq in self._seqs(low, high):
            raw = self.txn.get(_u64(seq), db=self.dbs["cmds"])
            if raw is None:
                continue
            ts_ns, ctype, account, client_id, target, events = _decoder.decode(raw)
            info = CommandInfo(ts_ns, ctype, account, client_id, target)
            skip = page.cursor[1] if page.cursor and seq == page.cursor[0] else 0
            for number, compact in enumerate(events):
                if number < skip or (page.types is not None and compact[0] not in page.types):
                    continue
                event = _expand(compact)
                if not relates(event, info):
                    continue
                if len(result.rows) == page.limit:
                    result.next_cursor = f"{seq}:{number}"
                    return result
                result.rows.append(self._row(seq, number, event, info))
        return result

    def _relation(self) -> Callable:
        s = self.selector
        if s.kind == "range":
            return lambda event, info: True
        if s.kind == "trades":
            return lambda event, info: TAG_OF[type(event)] in TRADE_TYPES and event.symbol == s.symbol
        if s.kind == "account":
            return lambda event, info: s.account in accounts_of(event, self._owner)
        order_id, client = self._order_keys()
        return lambda event, info: (order_id is not None and order_id in orders_of(event, info)) or (
            client is not None and client in clients_of(event))

    def _order_keys(self) -> tuple[int | None, tuple[str, str] | None]:
        """An order query is about an order id and its client id: either given."""
        s = self.selector
        order_id, client = s.order_id, s.client
        if order_id is None and client is not None:
            raw = self.txn.get(_text_key(*client), db=self.dbs["by_client"])
            order_id = None if raw is None else _U64.unpack(raw)[0]
        if client is None and order_id is not None:
            raw = self.txn.get(_u64(order_id), db=self.dbs["owner"])
            client = None if raw is None else tuple(_decoder.decode(raw))
        return order_id, client

    def _seqs(self, low: int, high: int) -> Iterator[int]:
        s = self.selector
        if s.kind == "range":
            cursor = self.txn.cursor(db=self.dbs["cmds"])
            if not cursor.set_range(_u64(low)):
                return
            for key in cursor.iternext(keys=True, values=False):
                seq = _U64.unpack(key)[0]
                if seq > high:
                    return
                yield seq
            return
        if s.kind == "trades":
            sources = [("trades", _text_key(s.symbol))]
        elif s.kind == "account":
            sources = [("account", _text_key(s.account))]
        else:
            order_id, client = self._order_keys()
            sources = ([("order", _u64(order_id))] if order_id is not None else []) + (
                [("client", _text_key(*client))] if client is not None else [])
        streams = [self._dups(name, key, low, high) for name, key in sources]
        previous = None
        for seq in heapq.merge(*streams):
            if seq != previous:
                yield seq
                previous = seq

    def _dups(self, name: str, key: bytes, low: int, high: int) -> Iterator[int]:
        cursor = self.txn.cursor(db=self.dbs[name])
        if not cursor.set_range_dup(key, _u64(low)):
            return
        for value in cursor.iternext_dup(keys=False):
            seq = _U64.unpack(value)[0]
            if seq > high:
                return
            yield seq

    def _owner(self, order_id: int) -> str | None:
        if order_id not in self._owners:
            raw = self.txn.get(_u64(order_id), db=self.dbs["owner"])
            self._owners[order_id] = None if raw is None else _decoder.decode(raw)[0]
        return self._owners[order_id]

    def _row(self, seq: int, number: int, event, info: CommandInfo) -> dict:
        row = self.codec.event(event)
        row["index"] = number
        row["ts"] = format_ns(info.ts_ns)
        row["ts_ns"] = info.ts_ns
        row["command"] = {"type": info.type, "account": info.account, "client_id": info.client_id}
        if info.target is not None:
            row["command"]["order_id"] = info.target
        return row


class _InstrumentView:
    """What Codec reads of an instrument: its config."""

    __slots__ = ("config",)

    def __init__(self, config: C.Instrument) -> None:
        self.config = config


def open_caught_up(data_dir: Path | str, *, rebuild: bool = False,
                   notify: Callable[[str], None] | None = None) -> tuple[AuditIndex, CatchUp]:
    """Open the index of a data directory and catch it up with the log. An
    index LMDB cannot read (a damaged file) is deleted and rebuilt: it is
    only ever a projection of the log."""
    import lmdb

    for attempt in range(2):
        try:
            index = AuditIndex(data_dir)
        except AuditError:
            if attempt:
                raise
            _discard(data_dir, notify, "its LMDB environment does not open")
            continue
        try:
            return index, index.catch_up(rebuild=rebuild, notify=notify)
        except lmdb.Error as error:
            index.close()
            if attempt:
                raise AuditError(f"audit index {index.directory}: {error}") from None
            _discard(data_dir, notify, f"LMDB: {error}")
        except BaseException:
            index.close()
            raise
    raise AssertionError("unreachable")


def _discard(data_dir: Path | str, notify: Callable[[str], None] | None, why: str) -> None:
    if notify is not None:
        notify(f"jex: audit index discarded and rebuilt: {why}")
    shutil.rmtree(Path(data_dir) / AUDIT_DIR_NAME / "index", ignore_errors=True)
