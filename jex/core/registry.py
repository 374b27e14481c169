"""The cold part of the client-id registry: packed, hash-indexed, read-only (core room).

Client ids are unique per account for all time, so the registry holds an
entry for every order and group ever accepted, not only the live ones: after
ten million commands it holds millions of entries that only a duplicate
check (or an audit's ``registered``) will ever ask about again. As Python
objects (a str key and an int per entry, in a dict per account) a restore
builds them one by one, a few hundred nanoseconds and about 100 bytes each:
seconds, and the larger part of a node's memory, at ten million.

A snapshot (state version 3) stores those entries as a ``ColdRegistry``:
columns of the entries in id order (account as an index into the
registry's own list of account names, client id as UTF-8 in one blob with
end offsets, id) plus an open-addressing hash table over them, all
little-endian byte strings of the narrowest width that holds their values.
Restoring one keeps those byte strings as they are: nothing per entry, no
copy. A value is read by indexing its bytes (``_read``: native byte reads
when compiled, no int object made, the same on a big-endian machine). The engine keeps the
live orders' entries and every entry made since the restore in its dicts
(``client_ids``, the hot part) and asks the cold part only where the dicts
miss: a new order's duplicate check, a cancel or replace by client id, and
``registered``. The two parts never hold the same key (an entry is made only
after the duplicate check has asked both).

The hash of an entry is xxh32 of the client id's UTF-8 bytes, seeded with
xxh32 of the account's: deterministic across processes and machines
(Python's own ``hash`` of a str is not), and below 2**32, so the lookup's
arithmetic stays on native integers when compiled. (FNV-1a over the str's
code points, with no encode and no call, measured 2x slower compiled.) The
table has a power-of-two number of slots, at least twice the entries (load <= 1/2), linear probing; a slot
is 0 (empty) or ``tag << entry_bits | entry + 1``, the tag being the high
bits of the hash, so a probe compares the key's bytes only when the tag
matches. Below 2**27 entries a slot is 32 bits (27 for the entry, a 5-bit
tag), else 64 (32 and 29, up to 2**31 entries; a slot stays below 2**61, a
short int compiled). The table is built by inserting the entries in id order, so equal
entries give an equal table: the export (and the state digest) is canonical.

Costs: a lookup is O(1) expected (about 2 probes at worst load): a seed
lookup, a key encode and one hash, ~1.5k instructions compiled; it runs
where the dicts miss, so on every new order of an engine restored with a
cold registry (state.restore_state keeps one cold only above
state.HOT_REGISTRY_MAX entries, 250 k; a smaller one goes into the dicts). ``build``
is O(n) (in the snapshot's child, and extending a base: O(new entries)
plus copies); wrapping the columns is O(1) in entries.
"""

from __future__ import annotations

import sys
from array import array
from itertools import accumulate
from typing import Any, Final

import xxhash


SMALL_TABLE_ENTRIES: Final = (1 << 27) - 2  # up to here a slot is 32 bits: entry + 1 in 27 bits, a 5-bit tag
MAX_ENTRIES: Final = (1 << 31) - 2  # 64-bit slots: entry + 1 in 32 bits, a 29-bit tag; tables up to 2**32
_UNSIGNED: Final = {1: "B", 2: "H", 4: "I", 8: "Q"}
_hash: Final = xxhash.xxh32_intdigest
_LITTLE_ENDIAN: Final = sys.byteorder == "little"  # the columns are little-endian on every machine
assert all(array(code).itemsize == width for width, code in _UNSIGNED.items())


def account_seed(account: str) -> int:
    """The hash seed of an account's entries."""
    return _hash(account.encode())


def table_size(n: int) -> int:
    """Slots for n entries: the least power of two >= 2n (0 for none)."""
    if n == 0:
        return 0
    size = 2
    while size < 2 * n:
        size <<= 1
    return size


def slot_layout(n: int) -> tuple[int, int, int]:
    """(slot width in bytes, entry bits, tag shift: the tag is hash >> shift)
    of a table for n entries."""
    if n <= SMALL_TABLE_ENTRIES:
        return 4, 27, 27
    return 8, 32, 3


def _width(largest: int) -> int:
    """The narrowest unsigned width (1, 2, 4, 8 bytes) holding 0..largest."""
    for width in (1, 2, 4):
        if largest < 1 << (8 * width):
            return width
    return 8


def _read(data: bytes, at: int, width: int) -> int:
    """The unsigned little-endian integer of ``width`` bytes at ``at``."""
    value = 0
    shift = 0
    for k in range(at, at + width):
        value |= data[k] << shift
        shift += 8
    return value


def _column(blob: Any, width: Any, n: int, what: str) -> tuple[bytes, int]:
    if type(blob) is not bytes or width not in _UNSIGNED:
        raise ValueError(f"cold registry {what}: not a packed column")
    if len(blob) != n * width:
        raise ValueError(f"cold registry {what} of {len(blob)} bytes, expected {n} of {width}")
    return blob, width


def build(accounts: list[str], client_ids: list[str], ids: list[int], base: ColdRegistry | None = None) -> list:
    """The columns of a cold registry of the given entries, in id order:
    ``[n, names, widths, accounts, blob, ends, ids, slots]``: the distinct
    account names in order of first use, the byte widths of the four packed
    columns, then little-endian byte strings: the account of each entry (an
    index into names), the client ids' UTF-8 and their end offsets, the ids,
    the table's slots.

    With ``base``, the entries follow base's (all ids above its last) and
    the result is that of building base's entries and these together: base's
    table is copied and only the new entries inserted, unless it must grow
    (its size depends on n only: it doubles, so over a run of snapshots each
    entry is inserted O(1) times amortized). Deterministic: equal entries
    give equal columns. O(n) (C loops but for the entries inserted)."""
    n = len(client_ids)
    if len(accounts) != n or len(ids) != n:
        raise ValueError(f"registry columns of {len(accounts)}, {n} and {len(ids)} entries")
    if base is not None and base.count == 0:
        base = None
    first = 0 if base is None else base.count
    total = first + n
    if total > MAX_ENTRIES:
        raise ValueError(f"{total} registry entries: more than a cold registry holds")
    names: list[str] = [] if base is None else list(base.names)
    index = {name: i for i, name in enumerate(names)}
    account_index: list[int] = []
    for account in accounts:
        a = index.get(account)
        if a is None:
            a = index[account] = len(names)
            names.append(account)
        account_index.append(a)
    keys = [client_id.encode() for client_id in client_ids]
    lengths = list(map(len, keys))
    start_at = 0 if base is None else len(base.blob)
    end = start_at + sum(lengths)
    widths = [_width(len(names) - 1) if names else 1, _width(end),
              _width(ids[-1] if n else base.last_id if base is not None else 0), slot_layout(total)[0]]
    account_column = _extended(base.accounts, base.widths[0], widths[0]) if base is not None else array(_UNSIGNED[widths[0]])
    account_column.extend(account_index)
    ends = _extended(base.ends, base.widths[1], widths[1]) if base is not None else array(_UNSIGNED[widths[1]])
    ends.extend(accumulate(lengths, initial=start_at))
    ends.pop(first)  # accumulate's initial value: the previous end
    id_column = _extended(base.ids, base.widths[2], widths[2]) if base is not None else array(_UNSIGNED[widths[2]])
    id_column.extend(ids)
    blob = b"".join(keys) if base is None else b"".join([base.blob, *keys])
    size = table_size(total)
    slot_width, entry_bits, tag_shift = slot_layout(total)
    seeds = [account_seed(name) for name in names]
    if base is not None and base.mask + 1 == size and base.slot_width == slot_width:
        slots = _extended(base.slots, slot_width, slot_width)
        _insert(slots, size - 1, entry_bits, tag_shift, seeds, account_index, keys, first)
    else:
        slots = array(_UNSIGNED[slot_width], bytes(slot_width * size))
        if base is not None:  # the table grows: base's entries again, then the new ones
            _insert(slots, size - 1, entry_bits, tag_shift, seeds, _base_accounts(base), _base_keys(base), 0)
        _insert(slots, size - 1, entry_bits, tag_shift, seeds, account_index, keys, first)
    return [total, names, widths, _le_bytes(account_column), blob, _le_bytes(ends), _le_bytes(id_column),
            _le_bytes(slots)]


def _extended(blob: bytes, width: int, new_width: int) -> array:
    """A packed column as an array of ``new_width`` (>= width) to extend. O(n) in C."""
    packed = array(_UNSIGNED[width])
    packed.frombytes(blob)
    if not _LITTLE_ENDIAN:
        packed.byteswap()
    return packed if width == new_width else array(_UNSIGNED[new_width], packed)


def _le_bytes(packed: array) -> bytes:
    if not _LITTLE_ENDIAN:
        packed.byteswap()
    return packed.tobytes()


def _base_accounts(base: ColdRegistry) -> list[int]:
    return _extended(base.accounts, base.widths[0], base.widths[0]).tolist()


def _base_keys(base: ColdRegistry) -> list[bytes]:
    ends = _extended(base.ends, base.widths[1], base.widths[1]).tolist()
    blob = base.blob
    return [blob[a:b] for a, b in zip([0, *ends[:-1]], ends)]


def _insert(slots: array, mask: int, entry_bits: int, tag_shift: int, seeds: list[int], accounts: list[int],
            keys: list[bytes], first: int) -> None:
    """Enter ``keys`` (with their ``accounts``) as entries first, first+1,
    ... into the table (linear probing, in entry order)."""
    e = first
    for p in range(len(keys)):
        h: int = _hash(keys[p], seeds[accounts[p]])
        slot: int = h & mask
        while slots[slot] != 0:
            slot = (slot + 1) & mask
        e += 1
        slots[slot] = ((h >> tag_shift) << entry_bits) | e


class ColdRegistry:
    """Read-only ``(account, client_id) -> id`` entries, packed (see the module)."""

    __slots__ = ("count", "names", "widths", "accounts", "blob", "ends", "ids", "slots", "slot_width", "mask",
                 "entry_bits", "entry_mask", "tag_shift", "seeds", "columns")

    def __init__(self, columns: list) -> None:
        """Wrap the columns ``build`` made (as a snapshot stores them).
        Raises ValueError (or TypeError) on columns of the wrong shape.
        O(1) in entries but for checking the account names: the column
        bytes are kept as they are."""
        if not isinstance(columns, list) or len(columns) != 8:
            raise ValueError("cold registry of the wrong shape")
        n, names, widths, accounts, blob, ends, ids, slots = columns
        if type(n) is not int or not 0 <= n <= MAX_ENTRIES or type(blob) is not bytes or type(names) is not list:
            raise ValueError("cold registry of the wrong shape")
        if not all(type(name) is str for name in names):
            raise ValueError("cold registry account names must be strings")
        if type(widths) is not list or len(widths) != 4:
            raise ValueError("cold registry widths of the wrong shape")
        slot_width, entry_bits, tag_shift = slot_layout(n)
        if widths[3] != slot_width:
            raise ValueError(f"cold registry of {n} entries with {widths[3]!r}-byte slots")
        size = table_size(n)
        self.count: int = n
        self.names: list[str] = names
        self.accounts, account_width = _column(accounts, widths[0], n, "accounts")
        self.blob: bytes = blob
        self.ends, end_width = _column(ends, widths[1], n, "ends")
        self.ids, id_width = _column(ids, widths[2], n, "ids")
        self.slots, _ = _column(slots, slot_width, size, "table")
        self.widths: list[int] = [account_width, end_width, id_width, slot_width]
        self.slot_width: int = slot_width
        self.mask: int = size - 1
        self.entry_bits: int = entry_bits
        self.entry_mask: int = (1 << entry_bits) - 1
        self.tag_shift: int = tag_shift
        if n and self._end(n - 1) != len(blob):
            raise ValueError("cold registry client ids do not fill their blob")
        self.seeds: dict[str, Any] = {}
        self.columns = columns  # an export with no new entries writes these again

    def __len__(self) -> int:
        return self.count

    def _end(self, e: int) -> int:
        return _read(self.ends, e * self.widths[1], self.widths[1])

    def _id(self, e: int) -> int:
        return _read(self.ids, e * self.widths[2], self.widths[2])

    def _account(self, e: int) -> int:
        return _read(self.accounts, e * self.widths[0], self.widths[0])

    @property
    def last_id(self) -> int:
        """The highest id held (-1 when empty)."""
        return self._id(self.count - 1) if self.count else -1

    def get(self, account: str, client_id: str) -> Any:
        """The id registered under ``(account, client_id)``, or None. O(1)
        expected: one hash, ~2 probes, a byte compare on a tag match."""
        if self.count == 0:
            return None
        seed: Any = self.seeds.get(account)  # kept boxed: it goes straight back into a call
        if seed is None:
            seed = self.seeds[account] = account_seed(account)
        key = client_id.encode()
        h: int = _hash(key, seed)
        mask = self.mask
        slot = h & mask
        tag = h >> self.tag_shift
        entry_bits = self.entry_bits
        small = self.slot_width == 4
        slots = self.slots
        for _ in range(mask + 1):
            if small:
                at = slot * 4
                value = slots[at] | slots[at + 1] << 8 | slots[at + 2] << 16 | slots[at + 3] << 24
            else:
                value = _read(slots, slot * 8, 8)
            if value == 0:
                return None
            if value >> entry_bits == tag:
                e = (value & self.entry_mask) - 1
                if self._key_is(e, account, key):
                    return self._id(e)
            slot = (slot + 1) & mask
        return None

    def account_of(self, order_id: int) -> str | None:
        """The account an id was registered under, or None. O(log n): the
        ids are in ascending order (binary search)."""
        low, high = 0, self.count
        while low < high:
            middle = (low + high) // 2
            if self._id(middle) < order_id:
                low = middle + 1
            else:
                high = middle
        if low < self.count and self._id(low) == order_id:
            a = self._account(low)
            if a < len(self.names):
                return self.names[a]
        return None

    def _key_is(self, e: int, account: str, key: bytes) -> bool:
        """Entry e is (account, key); False for an entry index or account
        index out of range (a damaged table answers "not here", never raises)."""
        if not 0 <= e < self.count:
            return False
        a = self._account(e)
        if a >= len(self.names) or self.names[a] != account:
            return False
        start = self._end(e - 1) if e else 0
        return self.blob[start : self._end(e)] == key

    def check(self) -> None:
        """Prove the columns are exactly what ``build`` makes of the entries
        they hold (ids ascending, no key twice, the table and every width
        canonical). Raises ValueError otherwise. O(n): for the verifying
        loads (``store.load(check_digest=True)``: ``jex replay --verify``,
        ``jex snapshot list --deep``), where a restore that keeps the bytes
        as they are would otherwise re-export them unproven."""
        rows = self.entries()
        ids = [order_id for _, _, order_id in rows]
        for p in range(1, len(ids)):
            if ids[p] <= ids[p - 1]:
                raise ValueError(f"cold registry ids not ascending at entry {p}")
        if len({(account, client_id) for account, client_id, _ in rows}) != len(rows):
            raise ValueError("cold registry holds a key twice")
        rebuilt = build([a for a, _, _ in rows], [c for _, c, _ in rows], ids)
        if rebuilt != list(self.columns):
            raise ValueError("cold registry columns are not what their entries build")

    def entries(self) -> list[tuple[str, str, int]]:
        """Every ``(account, client_id, id)``, in id order. O(n). Raises
        ValueError on an account index out of range or bytes that are not UTF-8."""
        names, blob = self.names, self.blob
        rows: list[tuple[str, str, int]] = []
        start = 0
        try:
            for e in range(self.count):
                end = self._end(e)
                rows.append((names[self._account(e)], blob[start:end].decode(), self._id(e)))
                start = end
        except (IndexError, UnicodeDecodeError) as exc:
            raise ValueError(f"cold registry entry {len(rows)}: {exc}") from None
        return rows
