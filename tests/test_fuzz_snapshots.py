"""Fuzz snapshot files (jex/snapshots/format.py, store.py) and the recovery
that falls back past bad ones (spec/journal.md behaviours 16 and 20).

The standard: ``decode_header``, ``read_header``, ``verify`` and ``load`` raise
``SnapshotError`` (a known reason, one line) and nothing else, whatever the
file holds: random bytes, truncations, flipped or forged header fields
(checksums right, values wrong), forged body lengths, bodies whose checksum
is right but whose content is hostile, non-regular files. Recovery never
crashes on a bad snapshot: it falls back to the previous one, then to
genesis, with the same state (digest) as a genesis replay; with the log
pruned and no usable snapshot it refuses with ``RecoveryError`` (exit 3).

tests/test_snapshots.py already fuzzes ``load`` with random/flipped images
(150 examples); this adds forged fields, checksummed hostile bodies, the
listing CLI and recovery. Scale with ``JEX_FUZZ_EXAMPLES`` (docs/fuzzing.md).
"""

from __future__ import annotations

import copy
import os
import random
import shutil
import struct
from pathlib import Path

import msgspec
import pytest
from cli_capture import run_cli
import xxhash
from hypothesis import HealthCheck, assume, given, note, settings
from hypothesis import strategies as st

from jex.core import Codec, Engine
from jex.core.state import STATE_VERSION, export_state
from jex.snapshots import REASONS, SnapshotError, list_snapshots, snapshot_dir, store
from jex.snapshots.format import BODY_BYTES_MAX, HEADER_BYTES, MAGIC, SnapshotHeader, decode_header, file_name
from jex.workload import mixed_flow

FUZZ_SCALE = max(1, int(os.environ.get("JEX_FUZZ_EXAMPLES", "1") or 1))
# CI (JEX_FUZZ_EXAMPLES unset) runs a fixed set of examples, so a red build always reproduces;
# any JEX_FUZZ_EXAMPLES, even 1, explores fresh random examples (docs/fuzzing.md).
DERANDOMIZE = "JEX_FUZZ_EXAMPLES" not in os.environ
FUZZ_SEED = int(os.environ.get("JEX_FUZZ_SEED", "20240601"))
_FIELDS = struct.Struct("<8sHHIQQ16s16sQ16s")


def examples(count: int) -> int:
    return count * FUZZ_SCALE


def fuzz_settings(count: int) -> settings:
    return settings(max_examples=examples(count), deadline=None, suppress_health_check=list(HealthCheck),
                    derandomize=DERANDOMIZE)


def check_error(error: SnapshotError) -> None:
    assert error.reason in REASONS, error.reason
    assert "\n" not in str(error) and "\r" not in str(error), repr(str(error))


# --- a real snapshot image ------------------------------------------------------------------------


def small_engine() -> Engine:
    engine = Engine()
    codec = Codec.for_engine(engine)
    for seq, raw in enumerate(mixed_flow(3, 120, with_ts=True), 1):
        command, ts = codec.command(raw)
        engine.apply(command, seq, ts)
    return engine


ENGINE = small_engine()
STATE = export_state(ENGINE)
CHAIN = b"\x07" * 16


def image(state=STATE, *, seq=None, digest_hex=None) -> bytes:
    """A snapshot image (header + body) of `state` with every checksum right."""
    body = msgspec.msgpack.encode(state)
    header = SnapshotHeader(seq or ENGINE.seq, ENGINE.ts, CHAIN, bytes.fromhex(digest_hex or ENGINE.digest()),
                            len(body), xxhash.xxh3_128_digest(body))
    return header.encode() + body


GOOD = image()


def forge_header(*, magic=MAGIC, version=1, flags=0, state_version=STATE_VERSION, seq=None, ts_ns=0, chain=CHAIN,
                 digest=b"\0" * 16, body_len=0, body_checksum=b"\0" * 16, padding=b"") -> bytes:
    head = _FIELDS.pack(magic, version, flags, state_version, ENGINE.seq if seq is None else seq, ts_ns, chain, digest,
                        body_len, body_checksum) + padding
    body = head + bytes(HEADER_BYTES - 16 - len(head))
    return body + xxhash.xxh3_128_digest(body)


def load_anything(path: Path) -> None:
    """Every entry point on one file: SnapshotError only (or success)."""
    for entry in (store.read_header, store.verify, store.load):
        try:
            entry(path)
        except SnapshotError as error:
            check_error(error)


def known_defect(error: BaseException) -> str | None:
    return None  # the defect it once named (TypeError from a wrong-typed body) is fixed


# --- header decoding ------------------------------------------------------------------------------------

u64 = st.one_of(st.integers(0, 2**64 - 1), st.sampled_from([0, 1, ENGINE.seq, 2**63, 2**64 - 1]))
forged_headers = st.builds(
    lambda **kw: forge_header(**kw),
    magic=st.sampled_from([MAGIC, MAGIC, b"JEXSNAP\1", b"\xff" * 8]),
    version=st.sampled_from([1, 1, 0, 2, 0xFFFF]),
    flags=st.sampled_from([0, 0, 1, 0x8000]),
    state_version=st.integers(0, 2**32 - 1),
    seq=u64, ts_ns=u64,
    body_len=st.one_of(u64, st.sampled_from([BODY_BYTES_MAX, BODY_BYTES_MAX + 1, len(GOOD) - HEADER_BYTES])),
    padding=st.sampled_from([b"", b"", b"\x01"]),
)


@fuzz_settings(300)
@given(st.one_of(st.binary(max_size=HEADER_BYTES + 16), forged_headers,
                 st.builds(lambda at, bit: GOOD[:at] + bytes([GOOD[at] ^ (1 << bit)]) + GOOD[at + 1: HEADER_BYTES],
                           st.integers(0, HEADER_BYTES - 1), st.integers(0, 7))),
       st.one_of(st.none(), st.integers(0, 2**64)),
       st.one_of(st.none(), st.sampled_from([file_name(ENGINE.seq), file_name(1), "snap-zz.snap", "x", ""])))
def test_header_decoder_gives_snapshot_errors_only(data, file_bytes, name):
    try:
        header = decode_header(data, path=name, file_bytes=file_bytes)
    except SnapshotError as error:
        check_error(error)
        return
    assert header.body_len <= BODY_BYTES_MAX
    assert file_bytes is None or file_bytes == HEADER_BYTES + header.body_len


# --- files -----------------------------------------------------------------------------------------------


@st.composite
def damaged_images(draw) -> bytes:
    kind = draw(st.sampled_from(["truncate", "flip", "splice", "forged_header", "forged_body_len", "append",
                                 "header_only", "random"]))
    if kind == "truncate":
        return GOOD[: draw(st.integers(0, len(GOOD) - 1))]
    if kind == "flip":
        data = bytearray(GOOD)
        for _ in range(draw(st.integers(1, 3))):
            at = draw(st.integers(0, len(GOOD) - 1))
            data[at] ^= 1 << draw(st.integers(0, 7))
        return bytes(data)
    if kind == "splice":
        at = draw(st.integers(0, len(GOOD)))
        blob = draw(st.binary(min_size=1, max_size=64))
        return GOOD[:at] + blob + GOOD[at + len(blob):]
    if kind == "forged_header":
        return draw(forged_headers) + GOOD[HEADER_BYTES:]
    if kind == "forged_body_len":  # right checksums for the header, a body length that lies
        header = decode_header(GOOD)
        body_len = draw(st.one_of(st.integers(0, 2**64 - 1), st.integers(0, len(GOOD))))
        return forge_header(seq=header.seq, ts_ns=header.ts_ns, digest=header.digest, body_len=body_len,
                            body_checksum=header.body_checksum) + GOOD[HEADER_BYTES:]
    if kind == "append":
        return GOOD + draw(st.binary(min_size=1, max_size=64))
    if kind == "header_only":
        return GOOD[:HEADER_BYTES]
    return draw(st.binary(max_size=400))


def test_damaged_snapshot_files_give_snapshot_errors_only(tmp_path):
    @fuzz_settings(250)
    @given(damaged_images())
    def one(data):
        path = tmp_path / file_name(ENGINE.seq)
        path.write_bytes(data)
        load_anything(path)

    one()


def test_seeded_truncation_at_every_length_and_every_header_bit(tmp_path):
    path = tmp_path / file_name(ENGINE.seq)
    rng = random.Random(FUZZ_SEED)
    lengths = list(range(0, HEADER_BYTES + 2)) + [rng.randrange(len(GOOD)) for _ in range(examples(40))]
    for length in lengths:
        path.write_bytes(GOOD[:length])
        with pytest.raises(SnapshotError) as caught:
            store.load(path)
        check_error(caught.value)
    for bit in range(HEADER_BYTES * 8):
        data = bytearray(GOOD)
        data[bit // 8] ^= 1 << (bit % 8)
        path.write_bytes(bytes(data))
        with pytest.raises(SnapshotError) as caught:
            store.read_header(path)
        check_error(caught.value)


def test_non_regular_files_are_unreadable_not_crashes(tmp_path):
    directory = tmp_path / file_name(5)
    directory.mkdir()
    loop = tmp_path / file_name(6)
    os.symlink(loop, loop)
    dangling = tmp_path / file_name(7)
    os.symlink(tmp_path / "nowhere", dangling)
    for path in (directory, loop, dangling, tmp_path / file_name(8)):
        for entry in (store.read_header, store.verify, store.load):
            with pytest.raises(SnapshotError) as caught:
                entry(path)
            assert caught.value.reason == "unreadable"
            check_error(caught.value)


# --- checksummed, hostile bodies --------------------------------------------------------------------------

msgpack_values = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(-(2**64), 2**64 - 1), st.floats(), st.text(max_size=8),
              st.binary(max_size=8)),
    lambda inner: st.one_of(st.lists(inner, max_size=5), st.dictionaries(st.text(max_size=4), inner, max_size=3)),
    max_leaves=20,
)


def _paths(value, prefix=()):
    yield prefix
    if isinstance(value, list):
        for i, item in enumerate(value):
            yield from _paths(item, prefix + (i,))


STATE_PATHS = list(_paths(STATE))[1:]
HOSTILE = [None, "x", -1, 0, 2**63, 2**64 - 1, [], [1], {}, 1.5, True, b"\0", [[1, 2]], "JEX"]


@st.composite
def hostile_states(draw):
    """The real exported state with one to three values replaced."""
    state = copy.deepcopy(STATE)
    for _ in range(draw(st.integers(1, 3))):
        path = draw(st.sampled_from(STATE_PATHS))
        target = state
        try:
            for key in path[:-1]:
                target = target[key]
            target[path[-1]] = draw(st.one_of(st.sampled_from(HOSTILE), msgpack_values))
        except (IndexError, TypeError, KeyError):
            pass  # an earlier edit changed the shape under this path
    return state


def _body_image(value, with_digest: bool) -> bytes | None:
    try:
        body = msgspec.msgpack.encode(value)
    except (OverflowError, TypeError, ValueError):
        return None
    digest = ENGINE.digest() if with_digest else "00" * 16
    header = SnapshotHeader(ENGINE.seq, ENGINE.ts, CHAIN, bytes.fromhex(digest), len(body), xxhash.xxh3_128_digest(body))
    return header.encode() + body


def test_checksummed_hostile_bodies_give_snapshot_errors_only(tmp_path):
    seen: dict[str, int] = {}

    @fuzz_settings(250)
    @given(st.one_of(hostile_states(), msgpack_values, st.lists(msgpack_values, max_size=8).map(
        lambda rest: [STATE_VERSION, *rest])), st.booleans())
    def one(value, with_digest):
        data = _body_image(value, with_digest)
        assume(data is not None)
        path = tmp_path / file_name(ENGINE.seq)
        path.write_bytes(data)
        try:
            store.load(path)
            seen["ok"] = seen.get("ok", 0) + 1
        except SnapshotError as error:
            check_error(error)
            seen[error.reason] = seen.get(error.reason, 0) + 1
        except Exception as error:
            defect = known_defect(error)
            if defect is None:
                raise
            seen[defect] = seen.get(defect, 0) + 1

    one()
    print(f"checksummed hostile bodies: {seen}")


# --- recovery falls back, never crashes --------------------------------------------------------------------


def cli(data_dir: Path, *argv: str) -> tuple[int, str, str]:
    return run_cli(data_dir, *argv)


@pytest.fixture(scope="module")
def node_dir(tmp_path_factory) -> tuple[Path, str]:
    """A data directory with two snapshots and the whole log (no pruning); its live digest."""
    from jex.node.exchange import Exchange

    root = tmp_path_factory.mktemp("snap-node") / "data"
    flow = list(mixed_flow(4, 300, with_ts=True))
    with Exchange.open(root, backend="pwrite", clock="input", snapshot_every=0, segment_bytes=16 * 1024,
                       prune_wal=False) as node:
        for part in (flow[:100], flow[100:200], flow[200:]):
            for result in node.submit_many(part):
                assert result.error is None, result.error
            node.snapshot()
        digest = node.digest()
    assert len(list_snapshots(snapshot_dir(root)).snapshots) == 2
    return root, digest


def damage_file(path: Path, kind: str, rng: random.Random) -> None:
    good = path.read_bytes()
    header = decode_header(good)
    if kind == "random":
        path.write_bytes(rng.randbytes(rng.randrange(0, 600)))
    elif kind == "truncate":
        path.write_bytes(good[: rng.randrange(len(good))])
    elif kind == "flip":
        raw = bytearray(good)
        raw[rng.randrange(len(raw))] ^= 1 << rng.randrange(8)
        path.write_bytes(bytes(raw))
    elif kind == "ff_header":
        path.write_bytes(b"\xff" * HEADER_BYTES + good[HEADER_BYTES:])
    elif kind == "wrong_chain":  # every checksum right: another history
        path.write_bytes(forge_header(seq=header.seq, ts_ns=header.ts_ns, chain=rng.randbytes(16),
                                      digest=header.digest, body_len=header.body_len,
                                      body_checksum=header.body_checksum) + good[HEADER_BYTES:])
    elif kind == "wrong_digest":
        path.write_bytes(forge_header(seq=header.seq, ts_ns=header.ts_ns, chain=header.chain, digest=rng.randbytes(16),
                                      body_len=header.body_len, body_checksum=header.body_checksum)
                         + good[HEADER_BYTES:])
    elif kind == "foreign_body":  # a checksummed body of another (valid) state, right chain
        body = good[HEADER_BYTES:]
        other = msgspec.msgpack.encode(STATE)
        path.write_bytes(forge_header(seq=header.seq, ts_ns=header.ts_ns, chain=header.chain, digest=header.digest,
                                      body_len=len(other), body_checksum=xxhash.xxh3_128_digest(other)) + other)
        assert body != other
    elif kind == "delete":
        path.unlink()


DAMAGE_KINDS = ["random", "truncate", "flip", "ff_header", "wrong_chain", "wrong_digest", "foreign_body", "delete"]


def test_recovery_falls_back_past_damaged_snapshots(node_dir, tmp_path_factory):
    from jex.node.exchange import Exchange
    from jex.replay.recover import recover, wal_view

    template, live = node_dir

    @fuzz_settings(25)
    @given(st.lists(st.sampled_from(DAMAGE_KINDS), min_size=1, max_size=2), st.integers(0, 2**32))
    def one(kinds, seed):
        note(f"kinds={kinds} seed={seed}")
        rng = random.Random(seed)
        root = tmp_path_factory.mktemp("snap-run") / "data"
        shutil.copytree(template, root, ignore=shutil.ignore_patterns("lock", "*.tmp"))
        snaps = [s.path for s in list_snapshots(snapshot_dir(root)).snapshots]
        for path, kind in zip(reversed(snaps), kinds):  # newest first
            damage_file(path, kind, rng)
        assert recover(wal_view(root / "wal"), snapshot_dir(root)).engine.digest() == live
        code, out, err = cli(root, "--json", "replay")
        assert code == 0 and "Traceback" not in err and "internal error" not in err, err
        code, out, err = cli(root, "--json", "snapshot", "list", "--deep")
        assert code in (0, 3) and "Traceback" not in err and "internal error" not in err, err
        with Exchange.open(root, backend="pwrite", clock="input", snapshot_every=0) as node:
            assert node.digest() == live
        shutil.rmtree(root.parent, ignore_errors=True)

    one()


def test_pruned_log_with_every_snapshot_damaged_refuses_with_exit_3(tmp_path):
    from jex.node.exchange import Exchange
    from jex.replay.recover import RecoveryError

    flow = list(mixed_flow(6, 400, with_ts=True))
    with Exchange.open(tmp_path, backend="pwrite", clock="input", snapshot_every=0, segment_bytes=16 * 1024) as node:
        for part in (flow[:150], flow[150:300], flow[300:]):
            for result in node.submit_many(part):
                assert result.error is None
            node.snapshot()
    assert min(int(p.name[17:33], 16) for p in (tmp_path / "wal").glob("*.wal")) > 1, "the log was not pruned"
    rng = random.Random(FUZZ_SEED)
    for path in (s.path for s in list_snapshots(snapshot_dir(tmp_path)).snapshots):
        damage_file(path, rng.choice(["random", "truncate", "flip", "wrong_chain"]), rng)
    with pytest.raises(RecoveryError):
        Exchange.open(tmp_path, backend="pwrite", clock="input", snapshot_every=0)
    for argv in (["replay"], ["book", "JEX"], ["submit", "clock", "--ts", "1"]):
        code, out, err = cli(tmp_path, *argv)
        assert code == 3, (argv, code, err)
        assert "Traceback" not in err and "internal error" not in err, err
        lines = err.strip().splitlines()  # a notice per refused snapshot, then the verdict: one line each
        assert all(line.startswith("jex: ") for line in lines), lines
        assert lines[-1].startswith("jex: integrity failure:"), lines


# --- defects found by this fuzzer (strict xfail) -------------------------------------------------------------


@pytest.mark.parametrize("edit", ["seq", "group_id", "account_string"])
def test_checksummed_body_with_wrong_types_is_a_snapshot_error(tmp_path, edit):
    # [STATE_VERSION, next_id, seq, ts, strings, instruments, orders, groups, registry]
    state = copy.deepcopy(STATE)
    if edit == "seq":
        state[2] = "x"  # engine.seq > header.seq: TypeError
    elif edit == "group_id":
        state[7][0][1] = "x"  # digest() sorts group ids: TypeError
    else:
        state[4][0] = None  # an account (the string table's first entry) that is not a string
    path = tmp_path / file_name(ENGINE.seq)
    path.write_bytes(_body_image(state, with_digest=True))
    with pytest.raises(SnapshotError):
        store.load(path)



def test_recovery_falls_back_past_a_checksummed_body_with_wrong_types(node_dir, tmp_path):
    from jex.replay.recover import recover, wal_view

    template, live = node_dir
    root = tmp_path / "data"
    shutil.copytree(template, root, ignore=shutil.ignore_patterns("lock", "*.tmp"))
    newest = list_snapshots(snapshot_dir(root)).snapshots[-1].path
    good = newest.read_bytes()
    header = decode_header(good)
    state = msgspec.msgpack.decode(good[HEADER_BYTES:])
    state[2] = "x"
    body = msgspec.msgpack.encode(state)
    newest.write_bytes(forge_header(seq=header.seq, ts_ns=header.ts_ns, chain=header.chain, digest=header.digest,
                                    body_len=len(body), body_checksum=xxhash.xxh3_128_digest(body)) + body)
    assert recover(wal_view(root / "wal"), snapshot_dir(root)).engine.digest() == live
