"""API keys: issue, store hashed, verify (api room).

A key is ``jex_<key_id>_<secret>``: ``key_id`` (12 hex digits) names the
record, ``secret`` is 32 random bytes (urlsafe base64). Only a salted
SHA-256 of the secret is stored, in ``<data_dir>/keys.json``; the key text
is printed once, when it is made. A fast hash is enough here because the
secret is 256 random bits (nothing to brute-force, unlike a password), and
it keeps verification at about a microsecond per request. Comparison is
constant-time (``hmac.compare_digest``).

The file is rewritten atomically (tmp file, fsync, rename, directory fsync)
under an flock of ``keys.lock``, so concurrent ``jex keys`` commands never
lose an update and a crash leaves either the old or the new file. The
server re-reads the file when it changes (checked at most once per
``KEYS_RELOAD_INTERVAL_S``), so keys added or revoked while it runs take
effect within that interval, without a restart.
"""

from __future__ import annotations

import base64
import fcntl
import hashlib
import hmac
import os
import secrets
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import msgspec

from jex.core.codec import ID_CHARS_MAX

KEYS_FILE_NAME = "keys.json"
KEYS_LOCK_NAME = "keys.lock"
KEYS_FORMAT_VERSION = 1
KEY_SECRET_BYTES = 32  # random bytes in a key's secret
KEY_ID_BYTES = 6  # random bytes in a key id (12 hex digits)
KEY_SALT_BYTES = 16
KEY_TEXT_CHARS_MAX = 128  # longer Authorization values are refused without hashing
KEYS_FILE_BYTES_MAX = 16 * 1024 * 1024  # refuse to parse a larger keys.json
KEYS_RELOAD_INTERVAL_S = 1.0  # how often the server checks keys.json for changes
KEY_PREFIX = "jex"


class KeyStoreError(Exception):
    """A keys.json problem or a bad key request. ``str()`` is one line."""


class KeyRecord(msgspec.Struct, forbid_unknown_fields=True):
    key_id: str
    account: str
    admin: bool
    salt: str  # hex
    sha256: str  # hex of sha256(salt || secret)
    created_at: str
    revoked_at: str | None = None


class KeysFile(msgspec.Struct, forbid_unknown_fields=True):
    version: int
    keys: list[KeyRecord]


@dataclass(frozen=True, slots=True)
class Principal:
    """Who a request speaks for."""

    key_id: str
    account: str
    admin: bool


_encoder = msgspec.json.Encoder(order="deterministic")
_decoder = msgspec.json.Decoder(KeysFile)


def check_account(account: str) -> None:
    """Accounts follow the command contract's id rules (1..64 printable chars)."""
    if not account or len(account) > ID_CHARS_MAX or not account.isprintable() or account != account.strip():
        raise KeyStoreError(f"account must be 1..{ID_CHARS_MAX} printable characters without surrounding spaces")


def _digest(salt: bytes, secret: str) -> str:
    return hashlib.sha256(salt + secret.encode()).hexdigest()


def _now_text() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def split_key(text: str) -> tuple[str, str] | None:
    """``jex_<key_id>_<secret>`` -> (key_id, secret), or None if malformed."""
    if len(text) > KEY_TEXT_CHARS_MAX:
        return None
    prefix, sep, rest = text.partition("_")
    key_id, sep2, secret = rest.partition("_")
    if prefix != KEY_PREFIX or not sep or not sep2 or len(key_id) != 2 * KEY_ID_BYTES or not secret:
        return None
    return key_id, secret


class KeyStore:
    """The keys file of one data directory (read-modify-write under a lock)."""

    def __init__(self, data_dir: Path | str) -> None:
        self.data_dir = Path(data_dir)
        self.path = self.data_dir / KEYS_FILE_NAME

    def load(self) -> list[KeyRecord]:
        """Every record, revoked ones included; [] when there is no file."""
        try:
            with open(self.path, "rb") as f:
                raw = f.read(KEYS_FILE_BYTES_MAX + 1)
        except FileNotFoundError:
            return []
        if len(raw) > KEYS_FILE_BYTES_MAX:
            raise KeyStoreError(f"{self.path}: larger than {KEYS_FILE_BYTES_MAX} bytes")
        try:
            parsed = _decoder.decode(raw)
        except msgspec.MsgspecError as exc:
            raise KeyStoreError(f"{self.path}: unreadable ({' '.join(str(exc).split())})") from None
        except (UnicodeError, RecursionError) as exc:
            raise KeyStoreError(f"{self.path}: unreadable ({type(exc).__name__})") from None
        if parsed.version != KEYS_FORMAT_VERSION:
            raise KeyStoreError(f"{self.path}: unknown format version {parsed.version}")
        for record in parsed.keys:
            try:
                bytes.fromhex(record.salt)
                bytes.fromhex(record.sha256)
            except ValueError:
                raise KeyStoreError(f"{self.path}: key {record.key_id[:32]!r} has a malformed salt or digest") from None
        return parsed.keys

    def add(self, account: str, admin: bool = False) -> tuple[KeyRecord, str]:
        """Make a key for ``account``; returns (record, key text). The text
        is not stored anywhere: the caller shows it once."""
        check_account(account)
        secret = base64.urlsafe_b64encode(secrets.token_bytes(KEY_SECRET_BYTES)).decode().rstrip("=")
        salt = secrets.token_bytes(KEY_SALT_BYTES)
        with self._locked():
            records = self.load()
            taken = {r.key_id for r in records}
            key_id = secrets.token_hex(KEY_ID_BYTES)
            while key_id in taken:
                key_id = secrets.token_hex(KEY_ID_BYTES)
            record = KeyRecord(key_id, account, admin, salt.hex(), _digest(salt, secret), _now_text())
            self._write([*records, record])
        return record, f"{KEY_PREFIX}_{key_id}_{secret}"

    def revoke(self, key_id: str) -> KeyRecord:
        """Mark a key revoked (kept in the file so ids are never reused)."""
        with self._locked():
            records = self.load()
            for i, record in enumerate(records):
                if record.key_id == key_id:
                    if record.revoked_at is not None:
                        raise KeyStoreError(f"key {key_id} is already revoked")
                    records[i] = msgspec.structs.replace(record, revoked_at=_now_text())
                    self._write(records)
                    return records[i]
        raise KeyStoreError(f"no key with id {key_id}")

    def _write(self, records: list[KeyRecord]) -> None:
        data = _encoder.encode(KeysFile(KEYS_FORMAT_VERSION, records)) + b"\n"
        tmp = self.path.with_name(f".{KEYS_FILE_NAME}.{os.getpid()}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.rename(tmp, self.path)
        dir_fd = os.open(self.data_dir, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)

    def _locked(self):
        self.data_dir.mkdir(parents=True, exist_ok=True)
        return _FileLock(self.data_dir / KEYS_LOCK_NAME)


class _FileLock:
    """A blocking flock held for one read-modify-write of keys.json."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.fd = -1

    def __enter__(self) -> _FileLock:
        self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        fcntl.flock(self.fd, fcntl.LOCK_EX)
        return self

    def __exit__(self, *exc) -> None:
        os.close(self.fd)  # closing drops the flock


class KeyRing:
    """The server's view of the keys: verify a key text, reload on change."""

    def __init__(self, store: KeyStore, reload_interval_s: float = KEYS_RELOAD_INTERVAL_S) -> None:
        self.store = store
        self.reload_interval_s = reload_interval_s
        self._active: dict[str, KeyRecord] = {}
        self._stamp: tuple | None = None
        self._checked = float("-inf")
        self._reload()

    @property
    def count(self) -> int:
        return len(self._active)

    def authenticate(self, text: str) -> Principal | None:
        """The principal of a valid, unrevoked key; None otherwise."""
        self._maybe_reload()
        parts = split_key(text)
        if parts is None:
            return None
        key_id, secret = parts
        record = self._active.get(key_id)
        if record is None:
            return None
        expected = record.sha256
        if not hmac.compare_digest(_digest(bytes.fromhex(record.salt), secret), expected):
            return None
        return Principal(record.key_id, record.account, record.admin)

    def _maybe_reload(self) -> None:
        now = time.monotonic()
        if now - self._checked < self.reload_interval_s:
            return
        self._checked = now
        if self._file_stamp() != self._stamp:
            try:
                self._reload()
            except KeyStoreError as exc:  # keep the last good keys; an operator is editing or broke the file
                print(f"jex serve: keeping previous keys: {exc}", file=sys.stderr, flush=True)

    def _file_stamp(self) -> tuple | None:
        try:
            st = os.stat(self.store.path)
        except FileNotFoundError:
            return None
        return (st.st_ino, st.st_mtime_ns, st.st_size)

    def _reload(self) -> None:
        stamp = self._file_stamp()
        records = self.store.load()
        self._active = {r.key_id: r for r in records if r.revoked_at is None}
        self._stamp = stamp
        self._checked = time.monotonic()
