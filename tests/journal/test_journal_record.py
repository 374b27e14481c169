"""Record framing: round trips, every RecordError reason, bounds before
allocation, and decoder fuzz (spec failure behaviour 20)."""

from __future__ import annotations

import random
import struct
import time
import tracemalloc

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from xxhash import xxh3_128_digest

from jex.journal.damage import forge_record
from jex.journal.errors import RECORD_REASONS, RecordError
from jex.journal.limits import PAYLOAD_BYTES_MAX, RECORD_HEADER_BYTES
from jex.journal.record import (
    HEADER_BODY,
    MAGIC,
    VERSION,
    ZERO_CHAIN,
    CommandSink,
    RecordCursor,
    RecordType,
    decode_record,
    encode_batch,
    encode_one,
    encode_records,
    find_validating_header,
    header_validates,
    padded_len,
    type_byte,
)

NONCE = 0x1234_5678_9ABC_DEF0


def encode(payloads, *, first_seq=1, parent=ZERO_CHAIN, nonce=NONCE, ts0=100):
    entries = [(first_seq + i, ts0 + i, p) for i, p in enumerate(payloads)]
    return encode_batch(entries, parent=parent, nonce=nonce, expect_seq=first_seq, ts_floor=0)


def decode_all(buffer, count, *, first_seq=1, parent=ZERO_CHAIN, nonce=NONCE):
    records, offset = [], 0
    for i in range(count):
        record, offset = decode_record(bytes(buffer), offset, nonce=nonce, seq=first_seq + i, parent=parent)
        parent = record.chain
        records.append(record)
    return records, offset


def test_batch_round_trip_with_every_padding_length():
    payloads = [bytes([i]) * i for i in range(0, 20)]
    buffer, chain, last_ts = encode(payloads)
    assert len(buffer) == sum(RECORD_HEADER_BYTES + padded_len(len(p)) for p in payloads)
    records, end = decode_all(buffer, len(payloads))
    assert end == len(buffer)
    assert [r.payload for r in records] == payloads
    assert [r.seq for r in records] == list(range(1, 21))
    assert records[-1].chain == chain and last_ts == 119
    assert all(r.type == RecordType.COMMAND for r in records)


def test_chain_links_each_record_to_the_previous_header_checksum():
    buffer, _, _ = encode([b"a", b"b", b"c"])
    records, _ = decode_all(buffer, 3)
    first, second, _ = records
    assert bytes(buffer[RECORD_HEADER_BYTES + 8 + 32 : RECORD_HEADER_BYTES + 8 + 48]) == first.chain
    assert second.chain == bytes(buffer[RECORD_HEADER_BYTES + 8 : RECORD_HEADER_BYTES + 8 + 16])


def test_batches_continue_the_chain():
    first, chain, _ = encode([b"x", b"y"])
    second, chain2, _ = encode([b"z"], first_seq=3, parent=chain)
    records, _ = decode_all(first + second, 3)
    assert records[-1].chain == chain2


@pytest.mark.parametrize(
    "entries, message",
    [
        ([(2, 1, b"")], "not the next seq"),
        ([(1, 5, b""), (3, 6, b"")], "not the next seq"),
        ([(1, 5, b""), (2, 4, b"")], "before"),
        ([(1, 1, bytes(PAYLOAD_BYTES_MAX + 1))], "exceeds"),
        ([], "empty"),
    ],
)
def test_encode_rejects_bad_entries(entries, message):
    with pytest.raises(ValueError, match=message):
        encode_batch(entries, parent=ZERO_CHAIN, nonce=NONCE, expect_seq=1, ts_floor=0)


def test_encode_rejects_timestamp_before_floor():
    with pytest.raises(ValueError, match="before"):
        encode_batch([(1, 5, b"")], parent=ZERO_CHAIN, nonce=NONCE, expect_seq=1, ts_floor=6)


def _good():
    return bytearray(encode([b"payload-0123"])[0])


def _mutated(mutate):
    buffer = _good()
    mutate(buffer)
    return bytes(buffer)


# reason -> bytes that must fail with exactly that reason at offset 0
CASES = {
    "short_record": lambda: bytes(_good()[:40]),
    "bad_magic": lambda: _mutated(lambda b: b.__setitem__(78, 0)),
    "header_checksum": lambda: _mutated(lambda b: b.__setitem__(50, b[50] ^ 1)),
    "unknown_version": lambda: forge_record(1, 1, b"x", parent=ZERO_CHAIN, nonce=NONCE, version=9),
    "unknown_type": lambda: forge_record(1, 1, b"x", parent=ZERO_CHAIN, nonce=NONCE, record_type=77),
    "payload_len_too_large": lambda: forge_record(
        1, 1, b"x", parent=ZERO_CHAIN, nonce=NONCE, payload_len=PAYLOAD_BYTES_MAX + 1
    ),
    "body_checksum": lambda: _mutated(lambda b: b.__setitem__(RECORD_HEADER_BYTES + 1, 0)),
    "bad_padding": lambda: _mutated(lambda b: b.__setitem__(len(b) - 1, 7)),
    "foreign_nonce": lambda: forge_record(1, 1, b"x", parent=ZERO_CHAIN, nonce=NONCE + 1),
    "seq_gap": lambda: forge_record(2, 1, b"x", parent=ZERO_CHAIN, nonce=NONCE),
    "chain_break": lambda: forge_record(1, 1, b"x", parent=b"\1" * 16, nonce=NONCE),
    "seal_with_payload": lambda: forge_record(
        1, 1, b"x", parent=ZERO_CHAIN, nonce=NONCE, record_type=RecordType.SEAL
    ),
}


def test_every_reason_has_a_case():
    assert set(CASES) == set(RECORD_REASONS)


@pytest.mark.parametrize("reason", sorted(CASES))
def test_decoder_names_the_failed_check(reason):
    data = CASES[reason]()
    with pytest.raises(RecordError) as caught:
        decode_record(data, 0, nonce=NONCE, seq=1, parent=ZERO_CHAIN)
    assert caught.value.reason == reason
    assert caught.value.offset == 0
    assert "\n" not in str(caught.value)


@pytest.mark.parametrize("reason", sorted(CASES))
def test_cursor_stops_with_the_same_reason(reason):
    data = CASES[reason]()
    cursor = RecordCursor(data, 0, len(data), nonce=NONCE, seq=1, parent=ZERO_CHAIN, ts_ns=0)
    assert list(cursor) == []
    error = cursor.stop_error()
    assert error is not None and error.reason == reason


def test_payload_len_is_bounded_before_any_allocation():
    """A header claiming 4 GiB of payload (with a valid checksum) is refused
    without allocating anything near that size (behaviour 9)."""
    data = forge_record(1, 1, b"", parent=ZERO_CHAIN, nonce=NONCE, payload_len=0xFFFF_FFFF) + bytes(4096)
    tracemalloc.start()
    try:
        with pytest.raises(RecordError) as caught:
            decode_record(data, 0, nonce=NONCE, seq=1, parent=ZERO_CHAIN)
        cursor = RecordCursor(data, 0, len(data), nonce=NONCE, seq=1, parent=ZERO_CHAIN, ts_ns=0)
        assert list(cursor) == []
        assert cursor.stop_error().reason == "payload_len_too_large"
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert caught.value.reason == "payload_len_too_large"
    assert peak < 256 * 1024


def test_cursor_walks_what_decode_record_decodes_and_stops_cleanly_at_zeros():
    rng = random.Random(5)
    payloads = [rng.randbytes(rng.randrange(0, 300)) for _ in range(200)]
    buffer, chain, _ = encode(payloads)
    data = bytes(buffer) + bytes(RECORD_HEADER_BYTES * 2)
    expected, _ = decode_all(buffer, len(payloads))
    cursor = RecordCursor(data, 0, len(data), nonce=NONCE, seq=1, parent=ZERO_CHAIN, ts_ns=0)
    assert list(cursor) == expected
    assert (cursor.offset, cursor.seq, cursor.parent, cursor.count) == (len(buffer), 201, chain, 200)
    assert cursor.stop_error() is None


def test_cursor_stops_after_a_seal():
    seal, seal_chain = encode_one(1, 5, b"", parent=ZERO_CHAIN, nonce=NONCE, record_type=RecordType.SEAL)
    after, _, _ = encode([b"late"], first_seq=2, parent=seal_chain)
    data = bytes(seal + after)
    cursor = RecordCursor(data, 0, len(data), nonce=NONCE, seq=1, parent=ZERO_CHAIN, ts_ns=0)
    assert [r.type for r in cursor] == [RecordType.SEAL]
    assert cursor.sealed and cursor.offset == len(seal)


def test_find_validating_header_only_accepts_aligned_records_of_this_nonce():
    record = forge_record(9, 1, b"abc", parent=ZERO_CHAIN, nonce=NONCE)
    data = bytes(64) + record + bytes(64)
    assert header_validates(data, 64, NONCE)
    assert find_validating_header(data, 0, len(data), NONCE) == 64
    assert find_validating_header(data, 0, len(data), NONCE + 1) is None
    assert find_validating_header(data, 72, len(data), NONCE) is None
    misaligned = bytes(68) + record
    assert find_validating_header(misaligned, 0, len(misaligned), NONCE) is None


# --- fuzz (behaviour 20): typed errors only, never a crash or a hang ----------------


def _decode_anything(data: bytes) -> None:
    try:
        decode_record(data, 0, nonce=NONCE, seq=1, parent=ZERO_CHAIN)
    except RecordError as error:
        assert error.reason in RECORD_REASONS
    cursor = RecordCursor(data, 0, len(data) - len(data) % 8, nonce=NONCE, seq=1, parent=ZERO_CHAIN, ts_ns=0)
    for _ in cursor:
        pass
    error = cursor.stop_error()
    assert error is None or error.reason in RECORD_REASONS


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(min_size=0, max_size=600))
def test_fuzz_random_bytes(data):
    _decode_anything(data)


@settings(max_examples=300, deadline=None)
@given(st.integers(0, 200), st.integers(0, 7), st.binary(min_size=1, max_size=8))
def test_fuzz_mutations_of_valid_records(position, bit, splice):
    buffer = bytearray(encode([b"alpha", b"beta" * 10, b""])[0])
    position %= len(buffer)
    buffer[position] ^= 1 << bit
    buffer[position : position + len(splice)] = splice
    _decode_anything(bytes(buffer))


@pytest.mark.parametrize("fill", [0xFF, 0x00, 0xAA])
def test_fuzz_filled_headers_and_short_files(fill):
    for length in range(0, 200, 7):
        _decode_anything(bytes([fill]) * length)


def test_fuzz_many_random_buffers_quickly():
    rng = random.Random(20)
    started = time.monotonic()
    for _ in range(3000):
        _decode_anything(rng.randbytes(rng.randrange(0, 400)))
    assert time.monotonic() - started < 10


@given(st.lists(st.binary(max_size=90), min_size=1, max_size=20), st.integers(0, 2**40), st.integers(1, 2**40))
@settings(max_examples=60, suppress_health_check=[HealthCheck.too_slow])
def test_encode_records_is_encode_batch_in_columns(payloads, ts0, first_seq):
    """The node's columnar form frames exactly the bytes of (seq, ts, payload) entries."""
    from jex.journal.record import encode_records

    stamps = [ts0 + i // 3 for i in range(len(payloads))]
    entries = [(first_seq + i, ts, p) for i, (ts, p) in enumerate(zip(stamps, payloads))]
    expected = encode_batch(entries, parent=ZERO_CHAIN, nonce=NONCE, expect_seq=first_seq, ts_floor=ts0)
    assert encode_records(first_seq, stamps, payloads, parent=ZERO_CHAIN, nonce=NONCE, ts_floor=ts0) == expected


def test_encode_records_rejects_what_encode_batch_rejects():
    from jex.journal.record import encode_records

    with pytest.raises(ValueError, match="empty"):
        encode_records(1, [], [], parent=ZERO_CHAIN, nonce=NONCE, ts_floor=0)
    with pytest.raises(ValueError, match="timestamps for"):
        encode_records(1, [1], [b"a", b"b"], parent=ZERO_CHAIN, nonce=NONCE, ts_floor=0)
    with pytest.raises(ValueError, match="seq 2: timestamp 4 is before 5"):
        encode_records(1, [5, 4], [b"a", b"b"], parent=ZERO_CHAIN, nonce=NONCE, ts_floor=0)
    with pytest.raises(ValueError, match="exceeds"):
        encode_records(1, [1], [bytes(PAYLOAD_BYTES_MAX + 1)], parent=ZERO_CHAIN, nonce=NONCE, ts_floor=0)
    with pytest.raises(ValueError, match="seq"):
        encode_records(2**64, [1], [b"a"], parent=ZERO_CHAIN, nonce=NONCE, ts_floor=0)



# --- encode_records against a reference encoder ---------------------------------------
#
# encode_records packs what is constant in a batch once and keeps the stamps
# as objects; the reference below frames every field of every record with
# HEADER_BODY, straight from the spec (and is what the encoder did before),
# so the two must agree on every byte and on every error.

U64_MAX = 2**64 - 1


def _reference_encode(first_seq, stamps, payloads, *, parent, nonce, ts_floor, record_type=RecordType.COMMAND,
                      version=VERSION):  # fmt: skip
    if not payloads:
        raise ValueError("empty batch")
    if len(stamps) != len(payloads):
        raise ValueError(f"{len(stamps)} timestamps for {len(payloads)} payloads")
    parts, ts_last, last_seq = [], ts_floor, first_seq + len(payloads) - 1
    for seq, (ts_ns, payload) in enumerate(zip(stamps, payloads), first_seq):
        n = len(payload)
        if ts_ns < ts_last:
            raise ValueError(f"seq {seq}: timestamp {ts_ns} is before {ts_last}")
        if n > PAYLOAD_BYTES_MAX:
            raise ValueError(f"seq {seq}: payload of {n} bytes exceeds {PAYLOAD_BYTES_MAX}")
        kind = type_byte(record_type, version, batch_end=seq == last_seq)
        try:
            body = HEADER_BODY.pack(xxh3_128_digest(payload), parent, seq, nonce, ts_ns, n, kind, version, MAGIC)
        except struct.error as error:
            raise ValueError(f"seq {seq}, timestamp {ts_ns}: {error}") from None
        parent = xxh3_128_digest(body)
        parts += [parent, body, payload, bytes(padded_len(n) - n)]
        ts_last = ts_ns
    return bytearray(b"".join(parts)), parent, ts_last


def _outcome(encode, *args, **kwargs):
    """The result, or the exception's type and message."""
    try:
        return encode(*args, **kwargs)
    except (ValueError, OverflowError, TypeError) as error:
        return type(error).__name__, str(error)


_EDGE_SEQS = (0, 1, 2, 2**30, 2**62, 2**63, U64_MAX - 40, U64_MAX - 3, U64_MAX)
_EDGE_STAMPS = (0, 1, 2**30 - 1, 2**31, 2**62 - 1, 2**62, 2**63, U64_MAX - 1, U64_MAX)
_EDGE_NONCES = (0, 1, 2**30, 2**63 + 12345, U64_MAX)


def _random_batch(rng):
    """A batch with edge values mixed in: seqs and stamps near 0 and near
    2**64 - 1, stamps equal to the floor, empty and 8-aligned payloads, and
    now and then a stamp that goes back or one past u64."""
    count = rng.choice((1, 1, 2, 3, rng.randrange(1, 40)))
    first_seq = rng.choice(_EDGE_SEQS) if rng.random() < 0.6 else rng.randrange(1, 2**64)
    floor = rng.choice(_EDGE_STAMPS) if rng.random() < 0.6 else rng.randrange(0, 2**64)
    stamps, ts = [], floor
    for _ in range(count):
        ts = rng.choice((ts, ts, ts + 1, ts + rng.randrange(1, 2**20), rng.choice(_EDGE_STAMPS), U64_MAX))
        if rng.random() < 0.02:
            ts = ts - 1 if ts else -1  # back, or below zero
        if rng.random() < 0.01:
            ts = 2**64 + rng.randrange(3)
        stamps.append(ts)
    payloads = [rng.randbytes(rng.choice((0, 0, 1, 7, 8, 9, 15, 16, 29, 64, 200, 257))) for _ in range(count)]
    parent = rng.choice((ZERO_CHAIN, rng.randbytes(16)))
    nonce = rng.choice(_EDGE_NONCES) if rng.random() < 0.5 else rng.randrange(2**64)
    return first_seq, stamps, payloads, dict(parent=parent, nonce=nonce, ts_floor=floor)


def test_encode_records_is_the_reference_encoder_on_random_batches_with_edge_values():
    rng = random.Random(8)
    outcomes = set()
    for _ in range(3000):
        first_seq, stamps, payloads, kwargs = _random_batch(rng)
        expected = _outcome(_reference_encode, first_seq, stamps, payloads, **kwargs)
        assert _outcome(encode_records, first_seq, stamps, payloads, **kwargs) == expected, (first_seq, stamps, kwargs)
        outcomes.add(expected[0] if isinstance(expected[0], str) else "ok")
        if not isinstance(expected[0], str):
            assert expected[2] == stamps[-1]
    assert outcomes == {"ok", "ValueError"}  # both outcomes are exercised


@pytest.mark.parametrize("record_type", sorted(RecordType))
@pytest.mark.parametrize("version", [1, 2])
def test_encode_records_frames_every_type_and_version_as_the_reference(record_type, version):
    stamps, payloads = [5, 5, 6], [b"", b"abc", bytes(8)]
    kwargs = dict(parent=ZERO_CHAIN, nonce=NONCE, ts_floor=5, record_type=record_type, version=version)
    assert encode_records(7, stamps, payloads, **kwargs) == _reference_encode(7, stamps, payloads, **kwargs)


def test_encode_records_frames_maximal_payloads_as_the_reference():
    payloads = [bytes(PAYLOAD_BYTES_MAX), b"x" * (PAYLOAD_BYTES_MAX - 1)]
    for first_seq, floor in ((1, 0), (U64_MAX - 1, U64_MAX)):
        stamps = [floor, floor]
        expected = _reference_encode(first_seq, stamps, payloads, parent=ZERO_CHAIN, nonce=U64_MAX, ts_floor=floor)
        got = encode_records(first_seq, stamps, payloads, parent=ZERO_CHAIN, nonce=U64_MAX, ts_floor=floor)
        assert got == expected
        decoded, _ = decode_all(got[0], 2, first_seq=first_seq, nonce=U64_MAX)
        assert [r.payload for r in decoded] == payloads


@pytest.mark.parametrize(
    "first_seq, stamps, payloads, floor, nonce",
    [
        (1, [5, 4], [b"a", b"b"], 0, NONCE),  # a timestamp going back
        (1, [3], [b"a"], 4, NONCE),  # before the floor
        (1, [4, 4], [b"a", bytes(PAYLOAD_BYTES_MAX + 1)], 4, NONCE),  # payload too large
        (1, [2**64], [b"a"], 0, NONCE),  # timestamp past u64
        (1, [-1], [b"a"], -2, NONCE),  # timestamp below zero
        (U64_MAX, [1, 2], [b"a", b"b"], 0, NONCE),  # the second seq past u64
        (2**64, [1], [b"a"], 0, NONCE),  # seq past u64
        (-1, [1], [b"a"], 0, NONCE),  # seq below zero
        (1, [1], [b"a"], 0, 2**64),  # nonce past u64: raised by the first record
        (1, [1], [b"a"], 0, -1),  # nonce below zero
        (2**64, [1], [b"a"], 0, 2**64),  # seq and nonce both: the seq's error, as packed in field order
        (1, [0], [bytes(PAYLOAD_BYTES_MAX + 1)], 0, 2**64),  # a bad nonce, but the payload is refused first
        (1, [5, 4], [b"a", b"b"], 6, 2**64),  # a bad nonce, but the first stamp is refused first
        (1, [], [], 0, NONCE),
        (1, [1], [b"a", b"b"], 0, NONCE),
    ],
)
def test_encode_records_raises_what_the_reference_raises(first_seq, stamps, payloads, floor, nonce):
    kwargs = dict(parent=ZERO_CHAIN, nonce=nonce, ts_floor=floor)
    expected = _outcome(_reference_encode, first_seq, stamps, payloads, **kwargs)
    assert isinstance(expected[0], str) and expected[0] == "ValueError"
    assert _outcome(encode_records, first_seq, stamps, payloads, **kwargs) == expected


# --- the fused walk (RecordCursor.apply_commands) against iterating --------------------

_CURSOR_STATE = ("offset", "seq", "parent", "ts_ns", "sealed", "count",
                 "batch_offset", "batch_seq", "batch_parent", "batch_ts_ns")  # fmt: skip


class _Undecodable(Exception):
    pass


class _Refused(Exception):
    pass


def _sink(to_seq=1 << 64, *, refuse=None):
    """A CommandSink whose "decode" is the payload itself (or refuses one
    payload) and whose "apply" records what it was handed."""
    applied = []

    def decode(payload):
        if payload == refuse:
            raise _Undecodable(payload)
        return payload

    def apply(command, seq, ts_ns):
        applied.append((seq, ts_ns, command))
        return [command] * (seq % 3)

    def undecodable(seq, error):
        raise _Refused(f"undecodable seq {seq}") from None

    sink = CommandSink(decode, apply, to_seq=to_seq, after=None, decode_errors=(_Undecodable,), undecodable=undecodable)
    return sink, applied


def _walk_both(data, to_seq=1 << 64):
    iterated = RecordCursor(data, 0, len(data) - len(data) % 8, nonce=NONCE, seq=1, parent=ZERO_CHAIN, ts_ns=0)
    records = list(iterated)
    fused = RecordCursor(data, 0, len(data) - len(data) % 8, nonce=NONCE, seq=1, parent=ZERO_CHAIN, ts_ns=0)
    sink, applied = _sink(to_seq)
    fused.apply_commands(sink)
    for name in _CURSOR_STATE:
        assert getattr(fused, name) == getattr(iterated, name), name
    error_iterated, error_fused = iterated.stop_error(), fused.stop_error()
    assert (error_iterated is None) == (error_fused is None)
    if error_iterated is not None:
        assert (error_fused.reason, error_fused.offset) == (error_iterated.reason, error_iterated.offset)
    wanted = [r for r in records if r.seq <= to_seq]
    commands = [(r.seq, r.ts_ns, r.payload) for r in wanted if r.type == RecordType.COMMAND]
    assert applied == commands
    assert (sink.commands, sink.others) == (len(commands), len(wanted) - len(commands))
    assert sink.events == sum(seq % 3 for seq, _, _ in commands)
    assert sink.done == any(r.seq > to_seq for r in records)
    if wanted:
        assert (sink.last_seq, sink.last_ts) == (wanted[-1].seq, wanted[-1].ts_ns)
    return records, error_iterated


def _batches_and_a_seal() -> bytes:
    """Three batches of commands with every padding length, a CHECKPOINT
    and a SEAL, then zeros."""
    rng = random.Random(11)
    data, parent, seq, ts = bytearray(), ZERO_CHAIN, 1, 0
    for size in (5, 1, 4):
        entries = [(seq + i, ts + i, rng.randbytes(rng.randrange(0, 40))) for i in range(size)]
        buffer, parent, ts = encode_batch(entries, parent=parent, nonce=NONCE, expect_seq=seq, ts_floor=ts)
        data += buffer
        seq += size
    for kind, payload in ((RecordType.CHECKPOINT, bytes(16)), (RecordType.SEAL, b"")):
        buffer, parent = encode_one(seq, ts, payload, parent=parent, nonce=NONCE, record_type=kind)
        data += buffer
        seq += 1
    return bytes(data) + bytes(RECORD_HEADER_BYTES * 2)


def test_fused_walk_matches_iterating_on_a_clean_buffer_and_up_to_every_seq():
    data = _batches_and_a_seal()
    records, error = _walk_both(data)
    assert error is None and len(records) == 12 and records[-1].type == RecordType.SEAL
    for to_seq in range(0, 13):
        _walk_both(data, to_seq)


def test_fused_walk_stops_where_iterating_stops_after_any_damage():
    """Every bit flipped in turn (one bit per byte, rotating), every byte
    zeroed: the fused walk applies exactly the records iterating yields,
    stops at the same offset for the same reason and leaves the same
    state (chain, seq, batch) behind."""
    data = _batches_and_a_seal()
    end = len(data) - 2 * RECORD_HEADER_BYTES
    for at in range(end):
        flipped = bytearray(data)
        flipped[at] ^= 1 << (at % 8)
        _walk_both(bytes(flipped))
        zeroed = bytearray(data)
        zeroed[at] = 0
        _walk_both(bytes(zeroed))
    for cut in range(0, end, 8):  # cut off anywhere: the rest is zeros
        _walk_both(data[:cut] + bytes(len(data) - cut))


def test_fused_walk_reports_an_undecodable_payload_with_its_seq_and_stops_there():
    buffer, _, _ = encode([b"a", b"bad", b"c"])
    cursor = RecordCursor(bytes(buffer), 0, len(buffer), nonce=NONCE, seq=1, parent=ZERO_CHAIN, ts_ns=0)
    sink, applied = _sink(refuse=b"bad")
    with pytest.raises(_Refused) as caught:
        cursor.apply_commands(sink)
    assert "undecodable seq 2" in str(caught.value)
    assert [seq for seq, _, _ in applied] == [1]
    assert (cursor.seq, sink.last_seq, sink.commands) == (2, 2, 1)


def test_walks_accept_exactly_the_type_version_and_magic_that_decode_header_accepts():
    """The walks look the type byte, version and magic up in one table
    (record._CODES_BY_TVM); decode_header checks them one by one. Every
    type byte under versions 0..3 and three magics: a walk takes the record
    exactly when decode_header does, with its type and its batch end."""
    from jex.journal.record import MAGIC, decode_header

    for magic in (MAGIC, MAGIC ^ 0x100, 0):
        for version in range(4):
            for raw_type in range(256):
                data = forge_record(1, 7, b"", parent=ZERO_CHAIN, nonce=NONCE, version=version, magic=magic,
                                    raw_type=raw_type) + bytes(RECORD_HEADER_BYTES)  # fmt: skip
                try:
                    header = decode_header(data, 0)
                except RecordError:
                    header = None
                iterated = RecordCursor(data, 0, len(data), nonce=NONCE, seq=1, parent=ZERO_CHAIN, ts_ns=0)
                records = list(iterated)
                fused = RecordCursor(data, 0, len(data), nonce=NONCE, seq=1, parent=ZERO_CHAIN, ts_ns=0)
                sink, _ = _sink()
                fused.apply_commands(sink)
                case = (magic, version, raw_type)
                if header is None:
                    assert records == [] and fused.seq == 1 and fused.stop_error() is not None, case
                    continue
                assert [r.type for r in records] == [header.type] and fused.seq == 2, case
                for cursor in (iterated, fused):
                    assert (cursor.batch_offset == RECORD_HEADER_BYTES) == header.batch_end, case
                    assert cursor.sealed == (header.type == RecordType.SEAL), case
