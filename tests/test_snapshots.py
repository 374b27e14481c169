"""Snapshots: the file format and its decoder, recovery from snapshots
(spec/journal.md behaviours 15, 16, 17, 22), background snapshots in a
forked child, and crashes at every step of writing and pruning (real
SIGKILLed child processes and the fault-injecting storage)."""

from __future__ import annotations

import os
import random
import shutil
import signal
import struct
import subprocess
import sys
import textwrap
from pathlib import Path

import msgspec
import pytest
import xxhash
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from jex import killpoints
from jex.core import Codec, Engine
from jex.core.state import export_state
from jex.journal.faultfs import FaultStorage, PowerCut
from jex.journal.scan import Decision, verify
from jex.journal.segment import list_segments
from jex.journal.storage import OsStorage
from jex.node.exchange import Exchange
from jex.replay.recover import RecoveryError, recover, wal_view
from jex.replay.verify import verify_replay
from jex.snapshots import REASONS, SnapshotError, list_snapshots, snapshot_dir
from jex.snapshots import store
from jex.snapshots.format import HEADER_BYTES, SnapshotHeader, decode_header, file_name
from jex.workload import mixed_flow

ROOT = Path(__file__).resolve().parents[1]
SEGMENT = 16 * 1024  # small segments: many of them, so pruning has work to do


def flow(seed: int, count: int) -> list[dict]:
    return list(mixed_flow(seed, count, with_ts=True))


def open_node(path: Path, **options) -> Exchange:
    options.setdefault("backend", "pwrite")
    options.setdefault("clock", "input")
    options.setdefault("snapshot_every", 0)
    options.setdefault("segment_bytes", SEGMENT)
    return Exchange.open(path, **options)


def submit(node: Exchange, commands: list[dict]) -> None:
    for result in node.submit_many(commands):
        assert result.error is None, result.error


def genesis_digest(data_dir: Path, to_seq: int | None = None) -> str:
    return recover(wal_view(data_dir / "wal"), None, to_seq=to_seq).engine.digest()


def build(path: Path, seed: int = 1, parts: int = 3, count: int = 1500, *, prune_wal: bool = True) -> str:
    """A data directory with a snapshot after each part; returns the live digest."""
    commands = flow(seed, count)
    step = len(commands) // parts
    with open_node(path, prune_wal=prune_wal) as node:
        for i in range(parts):
            submit(node, commands[i * step : (i + 1) * step if i < parts - 1 else None])
            node.snapshot()
        return node.digest()


def snapshot_paths(data_dir: Path) -> list[Path]:
    return [s.path for s in list_snapshots(snapshot_dir(data_dir)).snapshots]


# --- the format and its decoder ---------------------------------------------------------------


def test_write_then_load_gives_the_same_engine_and_behaviour(tmp_path):
    commands = flow(7, 1200)
    with open_node(tmp_path) as node:
        submit(node, commands[:800])
        info = node.snapshot()
        live = node.engine
        path = Path(info["path"])
        loaded = store.load(path)
        assert loaded.engine.digest() == live.digest() == info["digest"]
        assert loaded.header.seq == node.journal.last_seq and loaded.header.chain == node.journal.chain
        assert msgspec.msgpack.encode(export_state(loaded.engine)) == msgspec.msgpack.encode(export_state(live))
        # The restored engine behaves exactly like the live one from here on.
        codec = Codec.for_engine(loaded.engine)
        seq = node.journal.last_seq
        for raw in commands[800:]:
            command, ts = codec.command(raw)
            seq += 1
            assert loaded.engine.apply(command, seq, ts) == live.apply(command, seq, ts)
    assert path.name == file_name(info["seq"]) and path.stat().st_size == info["bytes"]


def test_header_fields_are_checked_in_order(tmp_path):
    good = _snapshot_bytes(tmp_path)
    header = decode_header(good, file_bytes=len(good))
    assert isinstance(header, SnapshotHeader)
    cases = {
        "short_file": good[:HEADER_BYTES - 1],
        "bad_magic": b"X" + good[1:],
        "header_checksum": good[:20] + bytes([good[20] ^ 1]) + good[21:],
        "unknown_version": _rehead(good, version=2),
        "unknown_flags": _rehead(good, flags=1),
        "bad_padding": _rehead(good, padding=b"\x01"),
        "body_too_large": _rehead(good, body_len=1 << 62),
        "size_mismatch": good + b"\0",
    }
    for reason, data in cases.items():
        with pytest.raises(SnapshotError) as caught:
            decode_header(data, file_bytes=len(data))
        assert caught.value.reason == reason, reason
        assert "\n" not in str(caught.value)


def test_body_damage_is_refused_before_decoding(tmp_path):
    good = _snapshot_bytes(tmp_path)
    path = tmp_path / file_name(5)
    flipped = bytearray(good)
    flipped[HEADER_BYTES + 100] ^= 0x10
    path.write_bytes(bytes(flipped))
    with pytest.raises(SnapshotError, match="body_checksum"):
        store.load(path)
    # A checksummed body that msgpack refuses, one that decodes to a shape restore refuses, and a
    # real state with a wrong-typed seq (the pure core's restore takes it and the seq check must
    # not crash; the compiled core's typed restore refuses it already).
    state = msgspec.msgpack.decode(good[HEADER_BYTES:])
    state[2] = "x"
    cases = ((b"\xc1" * 40, {"undecodable_body"}), (msgspec.msgpack.encode([1, 2, 3]), {"state_rejected"}),
             (msgspec.msgpack.encode(state), {"seq_mismatch", "state_rejected"}))
    for body, reasons in cases:
        path.write_bytes(_with_body(good, body))
        with pytest.raises(SnapshotError) as caught:
            store.load(path)
        assert caught.value.reason in reasons


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_decoder_fuzz_gives_typed_errors_only(tmp_path_factory, data):
    """Random bytes, 0xFF headers, truncations and bit flips of a valid file:
    SnapshotError with a known reason, never anything else."""
    base = tmp_path_factory.getbasetemp() / "fuzz"
    base.mkdir(exist_ok=True)
    good = _fuzz_seed(base)
    kind = data.draw(st.sampled_from(["random", "ff_header", "truncate", "flip", "valid_header_random_body"]))
    if kind == "random":
        blob = data.draw(st.binary(max_size=600))
    elif kind == "ff_header":
        blob = b"\xff" * HEADER_BYTES + data.draw(st.binary(max_size=200))
    elif kind == "truncate":
        blob = good[: data.draw(st.integers(0, len(good) - 1))]
    elif kind == "flip":
        blob = bytearray(good)
        at = data.draw(st.integers(0, len(good) - 1))
        blob[at] ^= 1 << data.draw(st.integers(0, 7))
        blob = bytes(blob)
    else:
        blob = _with_body(good, data.draw(st.binary(min_size=0, max_size=300)))
    path = base / file_name(5)
    path.write_bytes(blob)
    try:
        store.load(path)
    except SnapshotError as error:
        assert error.reason in REASONS
        assert "\n" not in str(error)
    else:
        assert blob == good


_FUZZ_SEED: dict[str, bytes] = {}


def _fuzz_seed(base: Path) -> bytes:
    if "good" not in _FUZZ_SEED:
        _FUZZ_SEED["good"] = _snapshot_bytes(base / "seed")
    return _FUZZ_SEED["good"]


def _snapshot_bytes(tmp_path: Path) -> bytes:
    """A real snapshot file image (small engine) renamed to seq 5."""
    engine = Engine()
    codec = Codec.for_engine(engine)
    for seq, raw in enumerate(flow(3, 60), 1):
        command, ts = codec.command(raw)
        engine.apply(command, seq, ts)
    image = store.encode(engine, seq=engine.seq, chain=b"\x07" * 16, ts_ns=engine.ts)
    header = SnapshotHeader(5, engine.ts, b"\x07" * 16, image.header.digest, image.header.body_len,
                            image.header.body_checksum)
    return header.encode() + image.body


_HEAD = struct.Struct("<8sHHIQQ16s16sQ16s")


def _rehead(good: bytes, *, version=None, flags=None, body_len=None, padding=b"") -> bytes:
    """Re-encode a header with one field changed and a valid checksum."""
    fields = list(_HEAD.unpack_from(good))
    if version is not None:
        fields[1] = version
    if flags is not None:
        fields[2] = flags
    if body_len is not None:
        fields[8] = body_len
    head = _HEAD.pack(*fields)
    body = head + padding + bytes(HEADER_BYTES - 16 - len(head) - len(padding))
    return body + xxhash.xxh3_128_digest(body) + good[HEADER_BYTES:]


def _with_body(good: bytes, body: bytes) -> bytes:
    """A valid header (checksums right) around another body."""
    header = decode_header(good, file_bytes=len(good))
    fixed = SnapshotHeader(header.seq, header.ts_ns, header.chain, header.digest, len(body),
                           xxhash.xxh3_128_digest(body))
    return fixed.encode() + body


# --- recovery: behaviours 16 and 22 -------------------------------------------------------------


def test_corrupt_newest_snapshot_falls_back_to_the_previous_with_the_same_state(tmp_path, capfd):
    live = build(tmp_path, prune_wal=False)
    older, newest = snapshot_paths(tmp_path)
    data = bytearray(newest.read_bytes())
    data[len(data) // 2] ^= 0x40
    newest.write_bytes(bytes(data))
    with open_node(tmp_path) as node:
        assert node.recovered_from.path == older
        assert node.digest() == live == genesis_digest(tmp_path)
        assert [n for n in node.recovery_notices if "body_checksum" in n]
    assert "body_checksum" in capfd.readouterr().err


def test_snapshot_of_another_history_is_refused(tmp_path):
    """A snapshot whose chain value is not the WAL's at its seq: refused."""
    build(tmp_path / "a", seed=1, prune_wal=False)
    live = build(tmp_path / "b", seed=2, prune_wal=False)
    foreign = snapshot_paths(tmp_path / "a")[0]  # a seq that log b holds too
    for path in snapshot_paths(tmp_path / "b"):
        path.unlink()
    shutil.copy(foreign, snapshot_dir(tmp_path / "b") / foreign.name)
    result = recover(wal_view(tmp_path / "b" / "wal"), snapshot_dir(tmp_path / "b"))
    assert result.start.path is None and result.engine.digest() == live
    assert len(result.notices) == 1 and "chain_mismatch" in result.notices[0]


def test_digest_mismatch_and_seq_past_the_log_are_refused(tmp_path):
    live = build(tmp_path, prune_wal=False)
    older, newest = snapshot_paths(tmp_path)
    header = store.read_header(newest)
    body = newest.read_bytes()[HEADER_BYTES:]
    lying = SnapshotHeader(header.seq, header.ts_ns, header.chain, b"\x01" * 16, header.body_len, header.body_checksum)
    newest.write_bytes(lying.encode() + body)
    beyond = SnapshotHeader(header.seq + 10_000, header.ts_ns, header.chain, header.digest, header.body_len,
                            header.body_checksum)
    (snapshot_dir(tmp_path) / file_name(beyond.seq)).write_bytes(beyond.encode() + body)
    result = recover(wal_view(tmp_path / "wal"), snapshot_dir(tmp_path))
    assert result.start.path == older and result.engine.digest() == live
    reasons = [n for n in result.notices]
    assert "not_in_log" in reasons[0] and "digest_mismatch" in reasons[1]


def test_pruned_log_without_a_usable_snapshot_refuses_to_start(tmp_path):
    build(tmp_path)
    first = list_segments(OsStorage(), tmp_path / "wal").segments[0].first_seq
    assert first > 1, "the build must have pruned"
    for path in snapshot_paths(tmp_path):
        path.write_bytes(b"garbage")
    with pytest.raises(RecoveryError, match=f"starts at seq {first}"):
        open_node(tmp_path)
    assert sorted(p.name for p in snapshot_dir(tmp_path).iterdir()) == sorted(p.name for p in snapshot_paths(tmp_path))


def test_replay_from_genesis_and_from_each_snapshot_is_identical(tmp_path):
    """Behaviour 22: same digests and same event streams, whatever the start."""
    live = build(tmp_path, parts=4, prune_wal=False)
    report = verify_replay(tmp_path)
    assert report.ok, report.as_dict()
    assert report.start == "genesis" and len(report.snapshots) == 2
    assert set(report.digests.values()) == {live}
    for row in report.snapshots:
        assert row["header_digest"] == row["reference_digest"] == genesis_digest(tmp_path, row["seq"])
        assert row["tail_events"] == row["reference_events"]
    # The same check must be able to fail: a snapshot made from another state.
    newest = snapshot_paths(tmp_path)[-1]
    header = store.read_header(newest)
    other = Engine()
    image = store.encode(other, seq=header.seq, chain=header.chain, ts_ns=header.ts_ns)
    newest.write_bytes(image.header.encode() + image.body)
    bad = verify_replay(tmp_path)
    assert not bad.ok and not bad.snapshots[-1]["ok"]


def test_replay_verify_compares_a_state_version_1_snapshot_with_its_own_digest(tmp_path):
    """`replay --verify` states the reference digest at a snapshot's seq the
    way that snapshot's header does: the version 1 hash for a version 1 file."""
    live = build(tmp_path, parts=4, prune_wal=False)
    older, newest = snapshot_paths(tmp_path)
    v1_digest = _rewrite_as_state_version_1(older)
    report = verify_replay(tmp_path)
    assert report.ok, report.as_dict()
    assert set(report.digests.values()) == {live}
    rows = {row["seq"]: row for row in report.snapshots}
    assert rows[store.read_header(older).seq]["reference_digest"] == v1_digest
    assert rows[store.read_header(newest).seq]["reference_digest"] == store.read_header(newest).digest_hex


def test_recovery_trusts_the_body_checksum_not_a_second_digest(tmp_path, monkeypatch):
    """Recovery does not recompute Engine.digest() of the restored state
    (store.load(check_digest=False)): the header's digest must equal the
    verified body checksum instead. Verification (store.load's default,
    `replay --verify`) still recomputes it."""
    live = build(tmp_path, prune_wal=False)
    newest = snapshot_paths(tmp_path)[-1]
    header = store.read_header(newest)
    assert header.digest == header.body_checksum  # the digest is the hash of the exported state: the body
    computed = []
    original = Engine.digest
    monkeypatch.setattr(Engine, "digest", lambda self: computed.append(1) or original(self))
    result = recover(wal_view(tmp_path / "wal"), snapshot_dir(tmp_path))
    assert result.start.path == newest and not computed
    assert store.load(newest).engine is not None and computed
    monkeypatch.undo()
    assert result.engine.digest() == live


def _rewrite_as_state_version_1(path: Path) -> str:
    return _rewrite_as_older_state(path, 1)


def _rewrite_as_older_state(path: Path, version: int) -> str:
    """Rewrite a snapshot as an earlier build wrote it (state version 1: a
    row per order; 2: the registry as columns of strings, restored into
    dicts); returns its digest (that version's)."""
    from jex.core.state import export_state
    from jex.snapshots import legacy

    header = store.read_header(path)
    engine = store.load(path).engine
    body = msgspec.msgpack.encode(legacy.export_v1(engine) if version == 1 else export_state(engine, version))
    digest = xxhash.xxh3_128_digest(body)
    assert digest.hex() == store.state_digest(engine, version) != engine.digest()
    old = SnapshotHeader(header.seq, header.ts_ns, header.chain, digest, len(body), digest, state_version=version)
    path.write_bytes(old.encode() + body)
    return digest.hex()


@pytest.mark.parametrize("version", [1, 2])
def test_older_state_versions_still_start_a_pruned_node(tmp_path, version):
    """A node upgraded over a log pruned up to snapshots of state version 1
    (one msgpack row per order; snapshots/legacy.py) or 2 (the registry as
    strings) restores from them, checked against their own digest; a version
    this build does not know is refused (unknown_state_version) and recovery
    falls back."""
    live = build(tmp_path)
    assert list_segments(OsStorage(), tmp_path / "wal").segments[0].first_seq > 1, "the build must have pruned"
    older, newest = snapshot_paths(tmp_path)
    for path in (older, newest):
        old_digest = _rewrite_as_older_state(path, version)
        loaded = store.load(path)  # that version's digest recomputed from the restored engine
        assert loaded.header.state_version == version and loaded.header.digest_hex == old_digest
    with open_node(tmp_path) as node:
        assert node.recovered_from.path == newest and not node.recovery_notices
        assert node.digest() == live
        node.engine.check_invariants()
    header = store.read_header(newest)
    body = newest.read_bytes()[HEADER_BYTES:]
    future = SnapshotHeader(header.seq, header.ts_ns, header.chain, header.digest, header.body_len,
                            header.body_checksum, state_version=99)
    newest.write_bytes(future.encode() + body)
    with pytest.raises(SnapshotError) as caught:
        store.load(newest)
    assert caught.value.reason == "unknown_state_version"
    with open_node(tmp_path) as node:
        assert node.recovered_from.path == older and node.digest() == live
        assert [n for n in node.recovery_notices if "unknown_state_version" in n]


def test_a_verifying_load_proves_a_cold_registry_kept_as_stored(tmp_path, monkeypatch):
    """A cold registry is kept as the file stores it, so re-exporting it
    proves nothing: a verifying load (check_digest, what `jex replay
    --verify` and `jex snapshot list --deep` use) rebuilds its columns from
    its entries and refuses a table that is not theirs; recovery's fast load
    does not look (the body checksum guards against accidents)."""
    from jex.core import state

    monkeypatch.setattr(state, "HOT_REGISTRY_MAX", 0)
    build(tmp_path, prune_wal=False)
    newest = snapshot_paths(tmp_path)[-1]
    assert store.load(newest).engine.cold_registry is not None
    header = store.read_header(newest)
    data = msgspec.msgpack.decode(newest.read_bytes()[HEADER_BYTES:])
    slots = bytearray(data[8][7])
    width = data[8][2][3]
    occupied = [at for at in range(0, len(slots), width) if any(slots[at : at + width])]
    first, second = occupied[0], occupied[1]
    slots[first : first + width], slots[second : second + width] = slots[second : second + width], slots[first : first + width]
    data[8][7] = bytes(slots)  # two entries swapped: a shape restore accepts, lookups that go wrong
    body = msgspec.msgpack.encode(data)
    checksum = xxhash.xxh3_128_digest(body)
    forged = SnapshotHeader(header.seq, header.ts_ns, header.chain, checksum, len(body), checksum,
                            state_version=header.state_version)
    newest.write_bytes(forged.encode() + body)
    with pytest.raises(SnapshotError) as caught:
        store.load(newest)
    assert caught.value.reason == "state_rejected" and "cold registry" in str(caught.value)
    assert store.load(newest, check_digest=False).engine.cold_registry is not None


def _log_with_a_tail_after_the_newest_snapshot(path: Path) -> tuple[int, int, str]:
    """Snapshots at two seqs, then more commands; (older seq, newest seq, live digest)."""
    commands = flow(5, 1800)
    with open_node(path, prune_wal=False) as node:
        submit(node, commands[:600])
        node.snapshot()
        submit(node, commands[600:1200])
        node.snapshot()
        submit(node, commands[1200:])
        live = node.digest()
    older, newest = (s.seq for s in list_snapshots(snapshot_dir(path)).snapshots)
    return older, newest, live


def test_opening_refuses_damage_after_the_newest_snapshot(tmp_path):
    """Opening verifies the log from the newest snapshot's record on
    (Journal.open(verify_from=...)): damage there is refused as it always
    was, naming file, offset, seq and reason, and nothing is changed."""
    from jex.journal import damage
    from jex.journal.errors import JournalCorrupt

    _, newest, _ = _log_with_a_tail_after_the_newest_snapshot(tmp_path)
    records = [r for r in damage.locate_all(tmp_path / "wal") if r.type == 1]
    for victim in (next(r for r in records if r.seq > newest), records[len(records) - 40]):
        root = tmp_path / f"copy-{victim.seq}"
        shutil.copytree(tmp_path, root, ignore=shutil.ignore_patterns("LOCK", "copy-*"))
        path = root / "wal" / victim.path.name
        damage.flip_bit(path, victim.payload_offset + 1)
        full = verify(root / "wal")
        assert full.decision is Decision.CORRUPT and full.problem.seq == victim.seq
        before = damage.file_hashes(root / "wal")
        with pytest.raises(JournalCorrupt) as caught:
            open_node(root)
        assert (caught.value.seq, caught.value.offset, caught.value.reason) == (
            victim.seq, victim.offset, full.row)  # fmt: skip
        assert caught.value.path.name == victim.path.name and "body_checksum" in str(caught.value)
        assert damage.file_hashes(root / "wal") == before


def test_opening_from_a_snapshot_does_not_read_the_records_before_it(tmp_path):
    """What opening does not verify, stated: the records before the newest
    snapshot's (only their segments' headers). Damage there does not stop a
    node that does not need them; `jex journal verify` still refuses the
    log, and every read that reaches the damage refuses it too."""
    from jex.journal import damage
    from jex.journal.errors import JournalCorrupt

    older, newest, live = _log_with_a_tail_after_the_newest_snapshot(tmp_path)
    victim = next(r for r in damage.locate_all(tmp_path / "wal") if r.type == 1 and 10 < r.seq < older)
    damage.flip_bit(victim.path, victim.payload_offset + 1)
    assert verify(tmp_path / "wal").decision is Decision.CORRUPT
    with open_node(tmp_path) as node:
        assert node.recovered_from.seq == newest and node.digest() == live
        assert node.journal.report.verified_from_seq == newest
        with pytest.raises(JournalCorrupt) as caught:
            list(node.journal.records(1))
        assert caught.value.seq == victim.seq
    with pytest.raises(JournalCorrupt):
        genesis_digest(tmp_path)


# --- retention and pruning -----------------------------------------------------------------------


def test_keeps_two_snapshots_and_prunes_only_whole_segments_before_the_older(tmp_path):
    live = build(tmp_path, parts=4)
    kept = [store.read_header(p).seq for p in snapshot_paths(tmp_path)]
    assert len(kept) == 2
    segments = list_segments(OsStorage(), tmp_path / "wal").segments
    assert segments[0].first_seq <= kept[0] < segments[1].first_seq, "the segment holding the older snapshot's seq stays"
    assert verify(tmp_path / "wal").decision is Decision.CLEAN
    with open_node(tmp_path) as node:
        assert node.recovered_from.seq == kept[1] and node.digest() == live
    assert verify_replay(tmp_path).ok


# --- background snapshots --------------------------------------------------------------------


def test_background_snapshots_fork_reap_and_recover(tmp_path):
    """A snapshot falls due every 700 seqs and forks at the next boundary,
    unless the previous child (or the heap compactor) is still busy: then it
    waits for a later boundary. The flow is submitted in parts with the
    child reaped between them, so that each part starts one (how many would
    overlap otherwise depends on the machine's speed)."""
    commands = flow(4, 3000)
    with open_node(tmp_path, snapshot_every=700, snapshot_mode="fork", hugepages=False) as node:
        for start in range(0, len(commands), 750):
            submit(node, commands[start : start + 750])
            node.wait_snapshot()
        live, last = node.digest(), node.journal.last_seq
    assert node.snapshot_failures == 0 and len(node.snapshot_pauses) >= 3
    assert all(0 < pause < 1.0 for pause in node.snapshot_pauses)
    kept = snapshot_paths(tmp_path)
    assert len(kept) == 2 and not list(snapshot_dir(tmp_path).glob("*.tmp"))
    with open_node(tmp_path) as node:
        assert node.recovered_from.path == kept[-1]
        assert node.digest() == live and node.journal.last_seq == last
    # Each snapshot was taken at a boundary: its digest is the reference replay's at its seq.
    report = verify_replay(tmp_path)
    assert report.ok, report.as_dict()


def test_snapshot_refuses_an_empty_log_and_needs_a_boundary(tmp_path):
    with open_node(tmp_path, batch_records_max=50) as node:
        with pytest.raises(ValueError, match="empty"):
            node.snapshot()
        results = node.submit_many(flow(2, 200))
        next(results)  # the first batch is released after the second was matched
        assert node.engine.seq > node.journal.last_seq
        with pytest.raises(RuntimeError, match="boundary"):
            node.snapshot()
        for _ in results:
            pass
        assert node.snapshot()["seq"] == node.journal.last_seq


# --- crashes: behaviours 15 and 17 ------------------------------------------------------------

CHILD = """
    import sys
    from jex.node.exchange import Exchange
    from jex.workload import mixed_flow
    data, mode, every = sys.argv[1], sys.argv[2], int(sys.argv[3])
    flow = list(mixed_flow(5, 2100, with_ts=True))
    with Exchange.open(data, backend="pwrite", clock="input", segment_bytes=16384, snapshot_every=every,
                       snapshot_mode=mode) as node:
        for part in range(3):
            for result in node.submit_many(flow[part * 700:(part + 1) * 700]):
                pass
            print("STATE", node.digest(), node.journal.last_seq, flush=True)
            if mode == "inline":
                node.snapshot()
        print("FAILURES", node.snapshot_failures, flush=True)
    print("DONE", flush=True)
"""


def run_child(data: Path, mode: str, killpoint: str | None, every: int = 0):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop(killpoints.ENV_VAR, None)
    if killpoint:
        env[killpoints.ENV_VAR] = killpoint
    child = subprocess.run([sys.executable, "-c", textwrap.dedent(CHILD), str(data), mode, str(every)],
                           cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    states = [line.split()[1:] for line in child.stdout.splitlines() if line.startswith("STATE")]
    return child, states


# Kill points of one snapshot + retention, and which snapshot recovery must then use.
CRASH_STEPS = [
    ("snapshot_tmp_written:3", "previous"),
    ("mid_snapshot:3", "previous"),
    ("snapshot_renamed:3", "newest"),
    ("snapshot_durable:3", "newest"),
    ("mid_prune:1", "newest"),
    ("mid_prune:2", "newest"),
]


@pytest.mark.parametrize("killpoint,used", CRASH_STEPS, ids=[k for k, _ in CRASH_STEPS])
def test_sigkill_at_each_snapshot_step_recovers_the_same_state(tmp_path, killpoint, used):
    child, states = run_child(tmp_path, "inline", killpoint)
    assert child.returncode == -signal.SIGKILL, child.stderr
    digest, seq = states[-1]
    with open_node(tmp_path) as node:
        assert node.digest() == digest and node.journal.last_seq == int(seq)
        assert node.journal.report.row == "clean_end"
        snaps = [s.seq for s in list_snapshots(snapshot_dir(tmp_path)).snapshots]
        assert node.recovered_from.seq == (snaps[-1] if used == "newest" else max(s for s in snaps if s < int(seq)))
        if used == "newest":
            assert node.recovered_from.seq == int(seq)
    assert not list(snapshot_dir(tmp_path).glob("*.tmp")), "orphans are removed on open"
    assert verify(tmp_path / "wal").decision is Decision.CLEAN
    assert verify_replay(tmp_path).ok


def test_sigkilled_background_child_leaves_the_node_running(tmp_path):
    child, states = run_child(tmp_path, "fork", "mid_snapshot", every=500)
    assert child.returncode == 0, child.stderr
    failures = int(next(line for line in child.stdout.splitlines() if line.startswith("FAILURES")).split()[1])
    assert failures >= 2 and "killed by signal 9" in child.stderr
    assert not list(snapshot_dir(tmp_path).glob("*.snap"))
    digest, seq = states[-1]
    with open_node(tmp_path) as node:
        assert node.recovered_from.path is None and node.digest() == digest
    assert not list(snapshot_dir(tmp_path).glob("*.tmp"))


def test_power_loss_at_every_step_of_snapshot_and_prune_leaves_no_gap(tmp_path):
    """Cut power before each file operation of a snapshot + retention (fault
    storage keeps only what was synced): the log stays gapless and the state
    recovers to the live state every time."""
    base = tmp_path / "base"
    live = build(base, parts=2)
    # After the instruments (the base has them), later in time than the base.
    extra = list(mixed_flow(9, 150, with_ts=True, start_ts=1_800_000_000 * 10**9))[2:]
    probe = tmp_path / "probe"
    shutil.copytree(base, probe)
    storage = FaultStorage(probe)
    with open_node(probe, storage=storage) as node:
        submit(node, extra)
        before = storage.op_count
        node.snapshot()
        total_ops = storage.op_count - before
    assert total_ops > 8
    fired = 0
    for cut in range(total_ops):
        work = tmp_path / f"cut{cut}"
        shutil.copytree(base, work)
        storage = FaultStorage(work)
        node = open_node(work, storage=storage)
        submit(node, extra)
        # Seqs depend on where batches (and so segment rollovers) fell: take
        # this run's own live digest.
        expected = node.digest()
        storage.cut_power_after(cut)
        try:
            node.snapshot()  # this run may need fewer operations than the probe (rollovers moved)
        except PowerCut:
            fired += 1
        storage.power_loss("drop_unsynced", random.Random(cut))
        node._lock.release()
        with open_node(work) as recovered:
            assert recovered.digest() == expected, cut
            assert recovered.journal.report.row == "clean_end"
        shutil.rmtree(work)
    assert fired >= total_ops - 4, (fired, total_ops)
    assert live != expected, "the extra commands changed the state"
