"""The mypyc-compiled core against the pure-Python core.

``make fast`` compiles the engine modules of jex/core (jex/native.py lists
them) with mypyc. The compiled classes trust the type annotations at run
time, so the core must type-check clean, and the compiled core must give
byte-identical events and the same digests as the pure one. These tests:

* type-check jex/core with mypy (what mypyc compiles from);
* build the compiled core into a scratch copy of the package (a real
  mypyc + gcc build, about half a minute) and run the golden market-rule
  tables, the state tests and the seeded reference-engine streams against
  it in a child process with ``JEX_CORE=compiled``;
* replay the same workloads through both cores and compare every event's
  bytes and the final digests;
* check the ``JEX_CORE`` switch (pure / compiled / stale fallback).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import jex.native as native
from jex.bench import workloads

ROOT = Path(__file__).resolve().parents[1]
BUILD_TIMEOUT_S = 600
mypyc = pytest.importorskip("mypyc.build", reason="mypy (with mypyc) is in the dev extra")


def test_core_type_checks_clean_for_mypyc():
    done = subprocess.run(
        [sys.executable, "-m", "mypy", "--config-file", str(ROOT / "pyproject.toml")],
        cwd=ROOT, capture_output=True, text=True, timeout=BUILD_TIMEOUT_S,
    )
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.fixture(scope="module")
def compiled_copy(tmp_path_factory) -> Path:
    """A scratch copy of the package (and the tests) with the core compiled in place."""
    if shutil.which("gcc") is None and shutil.which("cc") is None:
        pytest.skip("no C compiler")
    root = tmp_path_factory.mktemp("compiled")
    shutil.copytree(ROOT / "jex", root / "jex", ignore=shutil.ignore_patterns("*.so", "__pycache__"))
    shutil.copytree(ROOT / "tests", root / "tests", ignore=shutil.ignore_patterns("__pycache__", ".hypothesis"))
    for name in ("setup.py", "pyproject.toml"):
        shutil.copy2(ROOT / name, root / name)
    if (ROOT / "data").is_dir():
        shutil.copytree(ROOT / "data", root / "data")
    env = dict(os.environ, JEX_COMPILE="1")
    done = subprocess.run(
        [sys.executable, "setup.py", "build_ext", "--inplace"],
        cwd=root, env=env, capture_output=True, text=True, timeout=BUILD_TIMEOUT_S,
    )
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]
    for group in native.GROUPS:
        directory = root.joinpath(*group.package.split("."))
        built = sorted(p.name.split(".")[0] for p in directory.glob("*.so"))
        assert set(group.modules) <= set(built), (group.package, built)
    return root


def _child(root: Path, code: str, core: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(root), JEX_CORE=core)
    lobster = workloads.find_lobster_file()
    if lobster is not None:
        env[workloads.AMZN_FILE_ENV] = str(lobster)
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        cwd=root, env=env, capture_output=True, text=True, timeout=BUILD_TIMEOUT_S,
    )


def test_switch_reports_what_runs(compiled_copy):
    code = """
        import jex.native as n, jex.core.engine as e, jex.journal.record as r
        print(n.kind(), e.__file__.rsplit('.', 1)[-1], n.kind(n.JOURNAL), r.__file__.rsplit('.', 1)[-1])
    """
    compiled = _child(compiled_copy, code, "compiled")
    pure = _child(compiled_copy, code, "pure")
    assert compiled.stdout.split() == ["compiled", "so", "compiled", "so"], compiled.stderr
    assert pure.stdout.split() == ["pure", "py", "pure", "py"], pure.stderr
    bad = _child(compiled_copy, "import jex", "fast")
    assert bad.returncode != 0 and "JEX_CORE='fast'" in bad.stderr


def test_a_stale_compiled_core_falls_back_to_pure(compiled_copy, tmp_path):
    copy = tmp_path / "stale"
    shutil.copytree(compiled_copy / "jex", copy / "jex")
    source = copy / "jex" / "core" / "engine.py"
    source.write_text(source.read_text())  # newer than its compiled module
    code = "import jex.native as n; print(n.kind())"
    auto = _child(copy, code, "auto")
    assert auto.stdout.strip() == "pure" and "stale" in auto.stderr
    forced = _child(copy, code, "compiled")
    assert forced.returncode != 0 and "stale" in forced.stderr


def test_a_stale_compiled_journal_falls_back_to_pure_alone(compiled_copy, tmp_path):
    copy = tmp_path / "stale"
    shutil.copytree(compiled_copy / "jex", copy / "jex")
    source = copy / "jex" / "journal" / "record.py"
    source.write_text(source.read_text())  # newer than its compiled module
    code = "import jex.native as n; print(n.kind(), n.kind(n.JOURNAL))"
    auto = _child(copy, code, "auto")
    assert auto.stdout.split() == ["compiled", "pure"] and "jex.journal is stale" in auto.stderr
    forced = _child(copy, code, "compiled")
    assert forced.returncode != 0 and "stale" in forced.stderr


# Every event of every command, encoded, plus the final digest: for the
# synthetic workloads (with stops), the AMZN slice and a contingent stream.
_TRANSCRIPT = """
    import sys, xxhash
    from jex.bench import workloads
    from jex.core.codec import Codec
    from jex.core.engine import Engine
    from jex.core.events import encode_events
    import jex.native as n
    assert n.kind() == sys.argv[1], n.kind()
    runs = [workloads.std(3, 6000, stops=300), workloads.exchange_core(4, 6000)]
    amzn = workloads.find_lobster_file()
    if amzn is not None:
        runs.append(workloads.amzn(amzn, limit=4000))
    for w in runs:
        engine = Engine()
        codec = Codec.for_engine(engine)
        h = xxhash.xxh3_128()
        for i, d in enumerate(w.dicts):
            command, _ = codec.command(d)
            h.update(encode_events(engine.apply(command, i + 1, w.ts[i])))
        engine.check_invariants()
        print(w.name, h.hexdigest(), engine.digest())
"""


def test_compiled_and_pure_cores_give_identical_events_and_digests(compiled_copy):
    pure = _child(compiled_copy, _TRANSCRIPT.replace("sys.argv[1]", "'pure'"), "pure")
    compiled = _child(compiled_copy, _TRANSCRIPT.replace("sys.argv[1]", "'compiled'"), "compiled")
    assert pure.returncode == 0, pure.stderr[-3000:]
    assert compiled.returncode == 0, compiled.stderr[-3000:]
    assert len(pure.stdout.splitlines()) >= 2
    assert compiled.stdout == pure.stdout


def test_market_rule_tables_oracle_and_codec_fuzz_pass_on_the_compiled_core(compiled_copy):
    env = dict(os.environ, PYTHONPATH=str(compiled_copy), JEX_CORE="compiled")
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider",
         "tests/test_golden.py", "tests/test_state.py", "tests/test_fuzz_codec.py",
         "tests/test_reference_oracle.py", "tests/test_reference_oracle_contingent.py"],
        cwd=compiled_copy, env=env, capture_output=True, text=True, timeout=BUILD_TIMEOUT_S * 2,
    )
    assert done.returncode == 0, done.stdout[-6000:] + done.stderr[-3000:]


# The read path (journal.record compiled): a log of several segments, clean
# and damaged in every way the scanner tells apart; per case the scan's
# verdict and problem, rebuild()'s digest and stats (or its error), every
# record a two-pass read yields (or its error), and a recovery from a
# snapshot taken a third of the way in (the snapshot's record taken first,
# then the tail walked fused; or its error). Paths are printed relative to
# the scratch directory.
_READ_PATH = """
    import shutil, sys, tempfile, xxhash
    from pathlib import Path
    from jex.journal import damage
    from jex.journal.limits import RECORD_HEADER_BYTES
    from jex.journal.record import RecordType
    from jex.journal.scan import read_records, scan
    from jex.replay.rebuild import rebuild
    from jex.replay.recover import recover, wal_view
    from jex.snapshots import snapshot_dir, store
    import jex.native as n
    assert n.kind(n.JOURNAL) == sys.argv[1], n.kind(n.JOURNAL)
    root = Path(tempfile.mkdtemp())
    base = Path(BASE_DIR)  # written once by the test: segment nonces are random
    records = damage.locate_all(base / "wal")
    mid, last = records[len(records) // 2], records[-1]
    sealed = next(r for r in records if r.type == RecordType.SEAL)
    snap_at = next(r for r in records[len(records) // 3 :] if r.type == RecordType.COMMAND and r.payload_len > 8)
    (snap_record,) = read_records(base / "wal", snap_at.seq, to_seq=snap_at.seq)
    snap_engine, _ = rebuild(base, to_seq=snap_at.seq)
    store.take(root / "snapshots", snap_engine, seq=snap_at.seq, chain=snap_record.chain, ts_ns=snap_record.ts_ns)
    cases = {
        "clean": lambda wal: None,
        "payload_bit": lambda wal: damage.flip_bit(wal / mid.path.name, mid.offset + 100),
        "header_bit": lambda wal: damage.flip_bit(wal / mid.path.name, mid.offset + 50),
        "payload_len_bit": lambda wal: damage.flip_bit(wal / mid.path.name, mid.offset + 75, 7),
        "padding": lambda wal: damage.write_at(wal / mid.path.name, mid.offset + mid.length - 1, b"x"),
        "last_cut": lambda wal: damage.zero_range(wal / last.path.name, last.offset + 40, last.length - 40),
        "last_bit": lambda wal: damage.flip_bit(wal / last.path.name, last.offset + 90),
        "tail_garbage": lambda wal: damage.write_at(wal / last.path.name, last.offset + last.length, b"junk" * 4),
        "seal_bit": lambda wal: damage.flip_bit(wal / sealed.path.name, sealed.offset + 20),
        "duplicate": lambda wal: damage.write_at(wal / mid.path.name, mid.offset + mid.length,
                                                 damage.read_at(wal / mid.path.name, mid.offset, mid.length)),
        "snapshot_record_bit": lambda wal: damage.flip_bit(wal / snap_at.path.name,
                                                           snap_at.offset + RECORD_HEADER_BYTES + 3),
        "after_snapshot_bit": lambda wal: damage.flip_bit(wal / snap_at.path.name,
                                                          snap_at.offset + snap_at.length + RECORD_HEADER_BYTES),
    }
    def show(value):
        return str(value).replace(str(root), "<root>")
    for name, hurt in cases.items():
        data = root / name
        shutil.copytree(base, data)
        hurt(data / "wal")
        report = scan(data / "wal")
        print(name, report.decision.name, report.rows, show(report.problem), report.last_seq)
        try:
            engine, stats = rebuild(data, hash_events=True)
            print("  rebuild", engine.digest(), stats.records, stats.commands, stats.events, stats.last_seq,
                  stats.last_ts, sorted(stats.kinds.items()), stats.events_digest)
        except Exception as error:
            print("  rebuild", type(error).__name__, show(error))
        h = xxhash.xxh3_128()
        try:
            for record in read_records(data / "wal"):
                h.update(repr(tuple(record)).encode())
            print("  read", h.hexdigest())
        except Exception as error:
            print("  read", type(error).__name__, show(error))
        shutil.copytree(root / "snapshots", snapshot_dir(data))
        try:
            got = recover(wal_view(data / "wal"), snapshot_dir(data), hash_events=True)
            s = got.stats
            print("  recover", got.start.name, got.engine.digest(), s.records, s.commands, s.events, s.last_seq,
                  s.last_ts, sorted(s.kinds.items()), s.events_digest, show(got.notices))
        except Exception as error:
            print("  recover", type(error).__name__, show(error))
    shutil.rmtree(root)
"""


def test_compiled_and_pure_read_paths_give_identical_records_verdicts_and_errors(compiled_copy, tmp_path):
    from jex.node.exchange import Exchange
    from jex.workload import mixed_flow

    base = tmp_path / "base"
    with Exchange.open(base, backend="pwrite", clock="input", segment_bytes=64 * 1024, snapshot_every=0) as node:
        for result in node.submit_many(mixed_flow(5, 1500, with_ts=True)):
            assert result.error is None
    script = _READ_PATH.replace("BASE_DIR", repr(str(base)))
    pure = _child(compiled_copy, script.replace("sys.argv[1]", "'pure'"), "pure")
    compiled = _child(compiled_copy, script.replace("sys.argv[1]", "'compiled'"), "compiled")
    assert pure.returncode == 0, pure.stderr[-3000:]
    assert compiled.returncode == 0, compiled.stderr[-3000:]
    lines = pure.stdout.splitlines()
    assert len(lines) == 48 and "CORRUPT" in pure.stdout and "TORN" in pure.stdout, pure.stdout
    assert pure.stdout.count("recover snapshot") >= 4, pure.stdout
    assert compiled.stdout == pure.stdout


def test_journal_tests_pass_on_the_compiled_read_path(compiled_copy):
    env = dict(os.environ, PYTHONPATH=str(compiled_copy), JEX_CORE="compiled")
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider",
         "tests/journal/test_journal_record.py", "tests/journal/test_journal_reader.py",
         "tests/journal/test_journal_scan_table.py", "tests/test_replay.py"],
        cwd=compiled_copy, env=env, capture_output=True, text=True, timeout=BUILD_TIMEOUT_S * 2,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-6000:] + done.stderr[-3000:]
