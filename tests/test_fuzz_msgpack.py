"""Fuzz the in-log command encoding: ``jex.core.decode_command`` and replay of
logged payloads (spec/journal.md behaviour 20).

The standard: ``decode_command`` raises msgspec errors only
(``DecodeError``/``ValidationError``); a record whose framing verifies but
whose payload does not decode stops replay with ``ReplayError`` naming its
seq (``jex replay`` and every read: exit 3, one line); the node refuses to
start on such a log (exit 3) and changes nothing. A payload that decodes
(whatever its values) is applied or refused by the engine as a business
outcome, never a crash.

Scale with ``JEX_FUZZ_EXAMPLES`` (a multiplier; docs/fuzzing.md).
"""

from __future__ import annotations

import os
import random
from pathlib import Path

import msgspec
import pytest
from cli_capture import run_cli
from hypothesis import HealthCheck, given, note, settings
from hypothesis import strategies as st

from jex.core import Codec, Engine, decode_command, encode_command
from jex.core import commands as C
from jex.journal import Journal
from jex.journal.damage import file_hashes
from jex.journal.record import Record, RecordType
from jex.replay.rebuild import ReplayError, rebuild, replay_records
from jex.workload import mixed_flow

FUZZ_SCALE = max(1, int(os.environ.get("JEX_FUZZ_EXAMPLES", "1") or 1))
# CI (JEX_FUZZ_EXAMPLES unset) runs a fixed set of examples, so a red build always reproduces;
# any JEX_FUZZ_EXAMPLES, even 1, explores fresh random examples (docs/fuzzing.md).
DERANDOMIZE = "JEX_FUZZ_EXAMPLES" not in os.environ
FUZZ_SEED = int(os.environ.get("JEX_FUZZ_SEED", "20240601"))
DECODE_ERRORS = (msgspec.DecodeError, msgspec.ValidationError)


def examples(count: int) -> int:
    return count * FUZZ_SCALE


def fuzz_settings(count: int) -> settings:
    return settings(max_examples=examples(count), deadline=None, suppress_health_check=list(HealthCheck),
                    derandomize=DERANDOMIZE)


def logged_flow(count: int = 150) -> list[tuple[int, bytes]]:
    """(ts, payload) of real commands as the node logs them."""
    engine = Engine()
    codec = Codec.for_engine(engine)
    out = []
    for seq, raw in enumerate(mixed_flow(5, count, with_ts=True), 1):
        command, ts = codec.command(raw)
        engine.apply(command, seq, ts)
        out.append((ts, encode_command(command)))
    return out


LOGGED = logged_flow()
PAYLOADS = [p for _, p in LOGGED]


def known_defect(error: BaseException) -> str | None:
    """Known defects (strict xfails below) the general fuzz steps around."""
    return None  # all the defects it once named are fixed


def decodes(payload: bytes):
    """The decoded command, or None if decode_command refuses it with a msgspec error."""
    try:
        return decode_command(payload)
    except DECODE_ERRORS:
        return None


def check_decoder(payload: bytes) -> None:
    try:
        command = decode_command(payload)
    except DECODE_ERRORS as error:
        assert str(error)
        return
    except Exception as error:
        if known_defect(error) is None:
            raise
        return
    assert isinstance(command, C.Command.__args__)
    assert decode_command(encode_command(command)) == command


# --- decode_command ---------------------------------------------------------------------------------

msgpack_values = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(-(2**64), 2**64 - 1), st.floats(), st.text(max_size=12),
              st.binary(max_size=12)),
    lambda inner: st.one_of(st.lists(inner, max_size=6), st.dictionaries(st.text(max_size=6), inner, max_size=3)),
    max_leaves=16,
)


def _encodable(value) -> bytes | None:
    try:
        return msgspec.msgpack.encode(value)
    except (OverflowError, TypeError, ValueError):
        return None


@fuzz_settings(400)
@given(st.binary(max_size=200))
def test_random_bytes_give_msgspec_errors_only(payload):
    check_decoder(payload)


@fuzz_settings(200)
@given(st.integers(0, 12), st.lists(msgpack_values, max_size=16))
def test_tagged_arrays_with_random_fields_give_msgspec_errors_only(tag, fields):
    """What a command looks like on disk: [tag, field, ...] with random values."""
    payload = _encodable([tag, *fields])
    if payload is not None:
        check_decoder(payload)


@fuzz_settings(300)
@given(st.sampled_from(PAYLOADS), st.lists(st.tuples(st.integers(0, 3), st.integers(0, 10_000), st.integers(0, 255)),
                                           min_size=1, max_size=4))
def test_mutated_logged_commands_give_msgspec_errors_only(payload, edits):
    data = bytearray(payload)
    for op, at, byte in edits:
        at %= len(data) + 1
        if op == 0 and at < len(data):
            data[at] = byte
        elif op == 1:
            data[at:at] = bytes([byte])
        elif op == 2 and at < len(data):
            del data[at]
        else:
            del data[at:]
    note(f"payload={bytes(data)!r}")
    check_decoder(bytes(data))


def test_seeded_truncations_and_bit_flips_of_every_logged_command():
    rng = random.Random(FUZZ_SEED)
    for payload in PAYLOADS:
        for cut in range(len(payload)):
            check_decoder(payload[:cut])
        for _ in range(examples(30)):
            data = bytearray(payload)
            data[rng.randrange(len(data))] ^= 1 << rng.randrange(8)
            check_decoder(bytes(data))
    for _ in range(examples(3000)):
        check_decoder(rng.randbytes(rng.randrange(1, 120)))


@pytest.mark.parametrize("header", [b"\xdc\xff\xff", b"\xdd\xff\xff\xff\xff", b"\xde\xff\xff", b"\xdf\xff\xff\xff\xff",
                                    b"\xc6\xff\xff\xff\xff", b"\xdb\xff\xff\xff\xff", b"\x97\x02\xdb\xff\xff\xff\xff"])
def test_forged_container_lengths_are_refused_without_allocating(header):
    """A 4-byte length claiming 4 G elements: refused on the bytes present, no allocation."""
    import tracemalloc

    tracemalloc.start()
    try:
        with pytest.raises(DECODE_ERRORS):
            decode_command(header + b"\x01" * 16)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 1 << 20


# --- replay of logged payloads --------------------------------------------------------------------------


def records_with(bad_at: int, bad_payload: bytes) -> list[Record]:
    """The logged flow with record `bad_at` (1-based) replaced by `bad_payload`."""
    out = []
    for seq, (ts, payload) in enumerate(LOGGED, 1):
        out.append(Record(seq, ts, RecordType.COMMAND, bad_payload if seq == bad_at else payload, b"\0" * 16))
    return out


undecodable = st.one_of(st.binary(max_size=80), st.sampled_from(PAYLOADS).map(lambda p: p[: len(p) // 2]),
                        st.builds(lambda v: _encodable(v) or b"\xc1", msgpack_values)).filter(
    lambda p: decodes_or_known(p) is None)


def decodes_or_known(payload: bytes):
    try:
        return decode_command(payload)
    except DECODE_ERRORS:
        return None
    except Exception as error:  # a known defect: not an "undecodable" case for this test
        assert known_defect(error), error
        return "known"


@fuzz_settings(200)
@given(undecodable, st.integers(1, len(LOGGED)))
def test_replay_stops_at_an_undecodable_payload_with_a_replay_error(payload, bad_at):
    engine = Engine()
    with pytest.raises(ReplayError) as caught:
        replay_records(engine, records_with(bad_at, payload))
    assert caught.value.seq == bad_at
    assert "\n" not in str(caught.value) and f"seq {bad_at}" in str(caught.value)
    assert engine.seq == bad_at - 1  # everything before it applied, nothing after


# Decodable payloads with arbitrary values: the engine decides (events), never crashes.
ints = st.one_of(st.integers(-3, 12), st.sampled_from([2**63 - 1, -(2**63), 2**64 - 1, 10**15, 0]))
opt_ints = st.one_of(st.none(), ints)
names = st.one_of(st.sampled_from(["JEX", "PRO", "acct1", "c5-3", ""]), st.text(max_size=6))
orders = st.builds(C.NewOrder, names, names, names, ints, ints, ints, opt_ints, opt_ints, opt_ints, opt_ints, opt_ints,
                   ints, opt_ints, st.booleans(), ints)
leaves = st.builds(C.Leaf, names, ints, ints, ints)
conditions = st.recursive(leaves, lambda inner: st.one_of(
    st.builds(C.All, st.lists(inner, max_size=3).map(tuple)), st.builds(C.Any_, st.lists(inner, max_size=3).map(tuple))),
    max_leaves=6)
decoded_commands = st.one_of(
    st.builds(C.Instrument, names, st.sampled_from(["0.01", "1", "0", "-1", "x", "0.5"]),
              st.sampled_from(["1", "10", "0", "y"]), ints, ints, st.booleans(), ints, ints, ints, ints, ints,
              st.booleans(), ints, ints, ints),
    orders,
    st.builds(C.Cancel, names, st.one_of(st.none(), names), opt_ints),
    st.builds(C.Replace, names, st.one_of(st.none(), names), opt_ints, opt_ints, opt_ints),
    st.builds(C.Oco, names, names, names, st.tuples(orders, orders), opt_ints),
    st.builds(C.Bracket, names, names, names, orders, ints, ints, opt_ints, ints),
    st.builds(C.Conditional, names, names, conditions, orders),
    st.builds(C.Auction, names, ints, opt_ints),
    st.just(C.Clock()),
)


@fuzz_settings(150)
@given(st.lists(decoded_commands, min_size=1, max_size=6), st.integers(0, len(LOGGED)))
def test_decodable_payloads_with_arbitrary_values_replay_without_crashing(commands, prefix):
    records = [Record(seq, ts, RecordType.COMMAND, payload, b"\0" * 16)
               for seq, (ts, payload) in enumerate(LOGGED[:prefix], 1)]
    ts = LOGGED[prefix - 1][0] if prefix else 1
    for command in commands:
        records.append(Record(len(records) + 1, ts, RecordType.COMMAND, encode_command(command), b"\0" * 16))
    note(f"commands={commands!r}")
    engine = Engine()
    try:
        replay_records(engine, records, check_invariants=True)
    except ReplayError:
        pass


# --- the same through a real journal, the CLI and the node -------------------------------------------------


def write_log(wal_dir: Path, payloads: list[tuple[int, bytes]]) -> None:
    with Journal.open(wal_dir, backend="pwrite", segment_bytes=64 * 1024, prepare_ahead=False) as journal:
        for at in range(0, len(payloads), 8):  # batches of 8: fewer syncs
            seq = journal.next_seq
            journal.append([(seq + i, ts, p) for i, (ts, p) in enumerate(payloads[at : at + 8])])


def cli(data_dir: Path, *argv: str) -> tuple[int, str, str]:
    return run_cli(data_dir, *argv)


@fuzz_settings(15)
@given(undecodable, st.integers(1, 40))
def test_cli_and_node_refuse_a_log_with_an_undecodable_payload(tmp_path_factory, payload, bad_at):
    data_dir = tmp_path_factory.mktemp("undecodable")
    flow = [(ts, payload if seq == bad_at else p) for seq, (ts, p) in enumerate(LOGGED[:40], 1)]
    write_log(data_dir / "wal", flow)
    with pytest.raises(ReplayError):
        rebuild(data_dir)
    before = wal_hashes(data_dir)
    for argv in (["replay"], ["book", "JEX"], ["--json", "replay", "--verify"], ["submit", "clock"]):
        code, out, err = cli(data_dir, *argv)
        assert code == 3, (argv, code, err)
        lines = err.strip().splitlines()
        assert len(lines) == 1 and "Traceback" not in err, err
        assert f"seq {bad_at}" in lines[0] and "integrity failure" in lines[0], lines
    assert wal_hashes(data_dir) == before


def wal_hashes(data_dir: Path) -> dict[str, str]:
    """Segment hashes. (A refused node start leaves the preparer's zero-filled
    `<segid>.tmp` behind; readers ignore it and the next open deletes it.)"""
    return {k: v for k, v in file_hashes(data_dir / "wal").items() if k.endswith(".wal")}


# --- defects found by this fuzzer (strict xfail) ---------------------------------------------------------

LEAF = msgspec.msgpack.encode([20, "JEX", 0, 0, 1])
ORDER = msgspec.msgpack.encode([2, "a", "o", "JEX", 0, 0, 1, 100])
DEEP_CONDITIONAL = b"\x95\x07\xa1a\xa1c" + b"\x92\x15\x91" * 5000 + LEAF + ORDER  # All(All(...(Leaf))) 5000 deep
BAD_UTF8 = b"\x92\x03\xa1\xac"  # Cancel(account=<the byte 0xAC, not UTF-8>)



def test_deeply_nested_condition_is_a_decode_error():
    with pytest.raises(DECODE_ERRORS):
        decode_command(DEEP_CONDITIONAL)



def test_invalid_utf8_string_is_a_decode_error():
    with pytest.raises(DECODE_ERRORS):
        decode_command(BAD_UTF8)


@pytest.mark.parametrize("payload", [BAD_UTF8, DEEP_CONDITIONAL], ids=["bad_utf8", "deep"])
def test_replay_of_known_bad_payloads_is_an_integrity_failure(tmp_path, payload):
    write_log(tmp_path / "wal", [(ts, payload if seq == 3 else p) for seq, (ts, p) in enumerate(LOGGED[:5], 1)])
    code, out, err = cli(tmp_path, "replay")
    assert code == 3, err
    assert "seq 3" in err and "internal error" not in err
