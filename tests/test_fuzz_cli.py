"""Fuzz the ``jex`` command line (DESIGN §5; spec/journal.md behaviour 20).

The standard: every run ends with an exit code in {0, 1, 2, 3}; bad usage
or bad input is exit 2 with one-line diagnostics and never a traceback;
the catch-all "internal error" (an untyped exception that reached
``jex.cli.main``) never shows; a run that exits 2 changes nothing it did not
acknowledge; every run finishes in bounded time.

* ``jex submit FILE`` with files mixing good commands and malformed lines:
  exit 2, nothing submitted, one ``line N:`` diagnostic per bad line (up to
  20), the summary line, no traceback.
* argv lists built from the real subcommand names (everything except the
  long-running or process-spawning ``serve``, ``conformance serve``,
  ``demo``, ``drill`` and ``bench``) with random options and values, run
  in-process through ``jex.cli.main.run`` on a copy of a small data
  directory. Every diagnostic line on stderr starts with ``jex``.

Scale with ``JEX_FUZZ_EXAMPLES`` (a multiplier; docs/fuzzing.md).
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, note, settings
from hypothesis import strategies as st

from jex.cli.main import run
from jex.core.codec import decode_wire
from jex.core import CommandError
from jex.workload import mixed_flow

FUZZ_SCALE = max(1, int(os.environ.get("JEX_FUZZ_EXAMPLES", "1") or 1))
# CI (JEX_FUZZ_EXAMPLES unset) runs a fixed set of examples, so a red build always reproduces;
# any JEX_FUZZ_EXAMPLES, even 1, explores fresh random examples (docs/fuzzing.md).
DERANDOMIZE = "JEX_FUZZ_EXAMPLES" not in os.environ
RUN_SECONDS_MAX = 30  # one CLI run on a tiny data directory; far above what any takes


def examples(count: int) -> int:
    return count * FUZZ_SCALE


def fuzz_settings(count: int) -> settings:
    return settings(max_examples=examples(count), deadline=None, suppress_health_check=list(HealthCheck),
                    derandomize=DERANDOMIZE)


# --- running the CLI in-process, captured and time-bounded --------------------------------------------


class Hang(Exception):
    pass


def _alarm(signum, frame):  # noqa: ANN001
    raise Hang(f"a CLI run took longer than {RUN_SECONDS_MAX} s")


def jex(data_dir: Path, argv: list[str], stdin: bytes = b"") -> tuple[int, str, str]:
    """run(["--data-dir", data_dir, *argv]) with stdin/stdout/stderr captured."""
    out, err = io.BytesIO(), io.BytesIO()
    fake_out = io.TextIOWrapper(out, encoding="utf-8", errors="backslashreplace", write_through=True)
    fake_err = io.TextIOWrapper(err, encoding="utf-8", errors="backslashreplace", write_through=True)
    fake_in = io.TextIOWrapper(io.BytesIO(stdin), encoding="utf-8")
    saved = sys.stdin, sys.stdout, sys.stderr
    previous = signal.signal(signal.SIGALRM, _alarm)
    signal.setitimer(signal.ITIMER_REAL, RUN_SECONDS_MAX)
    try:
        sys.stdin, sys.stdout, sys.stderr = fake_in, fake_out, fake_err
        code = run(["--data-dir", str(data_dir), *argv])
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
        sys.stdin, sys.stdout, sys.stderr = saved
    return code, out.getvalue().decode("utf-8", "replace"), err.getvalue().decode("utf-8", "replace")


def durable_files(data_dir: Path) -> dict[str, str]:
    """Hashes of what a refused run must not change: WAL segments and snapshots."""
    out = {}
    for pattern in ("wal/*.wal", "snapshots/*.snap"):
        for path in sorted(data_dir.glob(pattern)):
            out[str(path.relative_to(data_dir))] = hashlib.sha256(path.read_bytes()).hexdigest()
    return out


def last_seq(data_dir: Path) -> int:
    from jex.journal import verify

    return verify(data_dir / "wal").last_seq


# Defects already reported (each has a strict xfail below): the "internal
# error" lines they print. The argv fuzz steps around exactly these so it
# keeps hunting; delete an entry when its xfail turns into an XPASS failure.
KNOWN_INTERNAL_ERRORS: dict = {}  # every defect it once listed is fixed


def known_internal_error(err: str) -> str | None:
    for name, pattern in KNOWN_INTERNAL_ERRORS.items():
        if pattern.search(err):
            return name
    return None


def check_contract(code: int, out: str, err: str, argv: list[str] | None = None) -> None:
    assert code in (0, 1, 2, 3), (code, err)
    assert "Traceback" not in err and "Traceback" not in out, err
    assert "internal error" not in err, err
    if code == 2:  # a diagnostic on stderr, or the help of a command given no arguments
        assert err.strip() or "Usage:" in out, "exit 2 without a diagnostic"
    stray = [line for line in err.split("\n") if line.strip() and not line.startswith("jex")]
    if stray and argv is not None and any("\n" in a or "\r" in a for a in argv):
        return  # known defect: diagnostics echo a value verbatim, line breaks included (strict xfail below)
    assert not stray, f"a diagnostic spilled over more than one line: {err!r}"


# --- the data directory every argv runs against (copied per run) ---------------------------------------

FLOW = list(mixed_flow(11, 120))


@pytest.fixture(scope="module")
def template(tmp_path_factory) -> Path:
    from jex.node.exchange import Exchange

    root = tmp_path_factory.mktemp("cli-template")
    with Exchange.open(root / "data", backend="pwrite", snapshot_every=0, segment_bytes=16 * 1024) as node:
        for raw in FLOW[:80]:
            node.submit(raw)
        node.snapshot()
        for raw in FLOW[80:]:
            node.submit(raw)
    files = root / "files"
    files.mkdir()
    (files / "good.jsonl").write_text("".join(json.dumps(c) + "\n" for c in FLOW[:5]))
    (files / "bad.jsonl").write_text('{"type":"order","oops":1}\nnot json\n')
    (files / "empty.jsonl").write_text("")
    (files / "binary.bin").write_bytes(bytes(range(256)) * 4)
    (files / "lobster.csv").write_text("34200.0,1,1,100,1000000,1\n34200.1,3,1,100,1000000,1\nx,y\n")
    (files / "dir").mkdir()
    return root


def fresh_copy(template: Path, tmp_path_factory) -> Path:
    target = tmp_path_factory.mktemp("cli-run") / "data"
    shutil.copytree(template / "data", target, ignore=shutil.ignore_patterns("*.tmp", "lock"))
    return target


# --- argv strategy ------------------------------------------------------------------------------------

SUBCOMMANDS = [
    ["submit"], ["submit", "order"], ["submit", "cancel"], ["submit", "replace"], ["submit", "instrument"],
    ["submit", "oco"], ["submit", "bracket"], ["submit", "conditional"], ["submit", "auction"], ["submit", "clock"],
    ["cancel"], ["book"], ["orders"], ["trades"], ["stats"], ["replay"],
    ["journal"], ["journal", "verify"], ["journal", "stat"], ["journal", "repair"],
    ["snapshot"], ["snapshot", "list"],
    ["audit"], ["audit", "order"], ["audit", "account"], ["audit", "trades"], ["audit", "range"], ["audit", "reindex"],
    ["audit", "stat"], ["keys"], ["keys", "add"], ["keys", "list"], ["keys", "revoke"],
    ["import"], ["import", "lobster"], ["conformance"], ["nosuchcommand"], [],
]
OPTIONS = [
    "--account", "--client-id", "--order-id", "--symbol", "--side", "--kind", "--qty", "--price", "--trigger",
    "--tif", "--expire-at", "--post-only", "--stp", "--ts", "--tick", "--lot", "--legs", "--entry", "--when",
    "--take-profit", "--stop-loss", "--action", "--reference-price", "--trail-amount", "--trail-percent",
    "--at", "--depth", "--limit", "--to", "--verify", "--from-genesis", "--from-snapshot", "--final-batch",
    "--deep", "--prune", "--no-prune", "--since", "--until", "--type", "--cursor", "--admin", "--strict",
    "--date", "--backend", "--clock", "--keep-going", "--results", "--batch", "--progress", "--no-progress",
    "--check-invariants", "--segment-bytes", "--json", "-h", "--help", "--matching", "--vpin-window",
]
SEQ_POINTS = ["1", "0", "5", "seq:3", "seq:0", "ns:1", "ns:0", "ts:5", "9" * 30, "seq:" + "9" * 30,
              "2023-11-14T22:13:20.5Z", "1970-01-01", "2023-13-45T99:99:99Z", "T", "-", "seq:", "ns:-1",
              "²", "seq:٣", "1:2", "0:0", "99999999999999999999999:0", "nan", ""]
VALUES = SEQ_POINTS + [
    "JEX", "PRO", "NOPE", "A", "acct1", "c11-3", "buy", "sell", "limit", "market", "stop", "GTC", "IOC", "GTD",
    "100.00", "100.001", "-1", "0", "1e3", "10000000000000000000000", "true", "false", "maybe",
    "pwrite", "auto", "input", "live", "trade,accepted", "bogus,trade", "[", "{}", '{"all":[]}',
    '[{"side":"buy","kind":"limit","qty":"1","price":"1"},{"side":"sell","kind":"limit","qty":"1","price":"2"}]',
    "--", "-", "-x", "a" * 200, "\u202e", "é", "9" * 5000, "9" * 5000 + ":0", "X\nY", "a\r", "\n",
]
FILES = ["good.jsonl", "bad.jsonl", "empty.jsonl", "binary.bin", "lobster.csv", "dir", "missing.jsonl"]


def flag_args(command: dict) -> list[str]:
    """A contract command as `jex submit TYPE --field value ...` arguments."""
    argv = ["submit", command["type"]]
    for key, value in command.items():
        if key == "type":
            continue
        argv.append("--" + key.replace("_", "-"))
        argv.append(json.dumps(value) if isinstance(value, (dict, list)) else str(value).lower()
                    if isinstance(value, bool) else str(value))
    return argv


hostile = st.one_of(st.sampled_from(VALUES), st.text(max_size=12).filter(lambda t: "\x00" not in t))
points = st.one_of(st.sampled_from(SEQ_POINTS), st.integers(-5, 400).map(str), hostile)
symbols = st.one_of(st.sampled_from(["JEX", "PRO", "NOPE"]), hostile)
accounts = st.one_of(st.sampled_from([f"acct{i}" for i in range(4)]), hostile)
small_ints = st.one_of(st.integers(-2, 300).map(str), hostile)
backends = st.sampled_from(["pwrite", "pwrite", "auto"])  # unknown names: a known defect (xfail below)

# Per command path: the options it takes, each with its value strategy (None: a flag).
READ_COMMON = {"--since": points, "--until": points, "--type": st.sampled_from(["trade", "accepted,trade", "x"]),
               "--limit": small_ints, "--cursor": st.one_of(st.sampled_from(["1:0", "5:2", "0:0", "x"]), hostile)}
GRAMMAR: dict[tuple[str, ...], tuple[list, dict]] = {
    ("cancel",): ([], {"--account": accounts, "--client-id": hostile, "--order-id": small_ints,
                       "--backend": backends}),
    ("book",): ([symbols], {"--depth": small_ints, "--at": points}),
    ("orders",): ([], {"--account": accounts, "--symbol": symbols, "--at": points}),
    ("trades",): ([symbols], {"--limit": small_ints}),
    ("stats",): ([symbols], {"--at": points}),
    ("replay",): ([], {"--from-genesis": None, "--from-snapshot": None, "--to": points, "--verify": None}),
    ("journal", "verify"): ([], {}),
    ("journal", "stat"): ([], {}),
    ("journal", "repair"): ([], {"--final-batch": None}),
    ("snapshot",): ([], {"--backend": backends, "--prune": None, "--no-prune": None}),
    ("snapshot", "list"): ([], {"--deep": None}),
    ("audit", "order"): ([small_ints], {"--client-id": hostile, "--account": accounts, **READ_COMMON}),
    ("audit", "account"): ([accounts], READ_COMMON),
    ("audit", "trades"): ([symbols], READ_COMMON),
    ("audit", "range"): ([points, points], READ_COMMON),
    ("audit", "reindex"): ([], {}),
    ("audit", "stat"): ([], {}),
    ("keys", "add"): ([accounts], {"--admin": None}),
    ("keys", "list"): ([], {}),
    ("keys", "revoke"): ([hostile], {}),
    ("import", "lobster"): ([st.sampled_from(["@lobster.csv", "@binary.bin", "@empty.jsonl", "@dir"])],
                            {"--symbol": symbols, "--date": st.sampled_from(["2021-04-12", "2021-02-30", "x"]),
                             "--limit": small_ints, "--strict": None, "--backend": backends,
                             "--no-progress": None}),
    ("submit",): ([st.sampled_from(["@" + f for f in FILES] + ["-"])],
                  {"--clock": st.sampled_from(["live", "input", "bogus"]), "--backend": backends,
                   "--keep-going": None, "--results": None, "--no-progress": None,
                   "--batch": st.sampled_from(["1", "7", "4096", "0", "5000"]), "--check-invariants": None}),
}


@st.composite
def argvs(draw) -> tuple[list[str], bytes]:
    """Mostly well-formed invocations of real commands with hostile values,
    sometimes mangled further (options dropped, swapped, invented)."""
    argv = ["--json"] if draw(st.booleans()) else []
    if draw(st.integers(0, 3)) == 0:
        command = dict(draw(st.sampled_from(FLOW)))
        for key in draw(st.lists(st.sampled_from(sorted(command)), max_size=2)):
            if key != "type":
                command[key] = draw(st.one_of(hostile, st.sampled_from(VALUES)))
        argv += flag_args(command)
    else:
        path = draw(st.sampled_from(sorted(GRAMMAR)))
        positionals, options = GRAMMAR[path]
        argv += list(path)
        argv += [draw(p) for p in positionals]
        for name in draw(st.lists(st.sampled_from(sorted(options)), max_size=4, unique=True)) if options else []:
            argv.append(name)
            if options[name] is not None:
                argv.append(draw(options[name]))
    for _ in range(draw(st.integers(0, 2)) if draw(st.integers(0, 2)) == 0 else 0):
        roll = draw(st.integers(0, 3))
        if roll == 0 and len(argv) > 1:
            del argv[draw(st.integers(0, len(argv) - 1))]
        elif roll == 1:
            argv.insert(draw(st.integers(0, len(argv))), draw(st.sampled_from(OPTIONS)))
        elif roll == 2:
            argv.insert(draw(st.integers(0, len(argv))), draw(hostile))
        else:
            argv = draw(st.sampled_from(SUBCOMMANDS)) + argv[len(argv) // 2:]
    stdin = draw(st.sampled_from([b"", b"not json\n", json.dumps(FLOW[0]).encode() + b"\n"]))
    return argv, stdin


def resolve(argv: list[str], files: Path) -> list[str]:
    return [str(files / a[1:]) if a.startswith("@") else a for a in argv]


# --- hypothesis: argv fuzz ----------------------------------------------------------------------------

# Words the CLI must never be steered to: the long-running or process-spawning commands
# (`serve`, `conformance serve`, `demo`, `drill`, `bench`). An argv holding one is skipped.
EXCLUDED = frozenset({"serve", "demo", "drill", "bench"})


def test_argv_fuzz(template, tmp_path_factory, monkeypatch):
    monkeypatch.chdir(tmp_path_factory.mktemp("cli-cwd"))
    monkeypatch.delenv("JEX_DATA_DIR", raising=False)
    seen = {"codes": {}, "known": {}}

    @fuzz_settings(120)
    @given(argvs())
    def one(case):
        argv, stdin = case
        argv = resolve(argv, template / "files")
        note(f"argv={argv!r} stdin={stdin!r}")
        if EXCLUDED.intersection(argv) or any(a.startswith(("--data-dir", "-d")) for a in argv):
            return  # never a long-running command, never another data directory
        data_dir = fresh_copy(template, tmp_path_factory)
        try:
            check_one(data_dir, argv, stdin)
        finally:
            shutil.rmtree(data_dir.parent, ignore_errors=True)

    def check_one(data_dir: Path, argv: list[str], stdin: bytes) -> None:
        before, seq_before = durable_files(data_dir), last_seq(data_dir)
        code, out, err = jex(data_dir, argv, stdin)
        seen["codes"][code] = seen["codes"].get(code, 0) + 1
        known = known_internal_error(err)
        if known is not None:
            seen["known"][known] = seen["known"].get(known, 0) + 1
            assert durable_files(data_dir) == before
            return
        check_contract(code, out, err, argv)
        assert code != 3, f"integrity failure on a clean data directory: {argv} {err}"
        if code == 2 and "--keep-going" not in argv:
            acked = re.search(r"(\d+) acknowledged before it", err)
            if acked is None:
                assert durable_files(data_dir) == before, f"exit 2 changed the data directory: {argv}"
            else:
                assert last_seq(data_dir) == seq_before + int(acked.group(1))

    one()
    print(f"argv fuzz: exit codes {seen['codes']}, known defects hit {seen['known']}")
    assert seen["codes"].get(2, 0) > 0, seen


# --- hypothesis: submit FILE with malformed lines changes nothing ---------------------------------------

good_lines = st.sampled_from(FLOW).map(lambda c: json.dumps(c).encode())
bad_lines = st.one_of(
    st.sampled_from([b"not json", b"{", b"[]", b"{}", b'{"type":"order"}', b'{"type":"nope"}', b"null", b"\"x\"",
                     b'{"type":"order","oops":1}', b'{"type":"clock","ts":"1"}', b'{"type":"clock"} trailing',
                     b'{"type":"cancel","account":1}', b"\x00", b"{\"type\":\"clock\"}\x00"]),
    st.builds(lambda c, key, v: json.dumps({**c, key: v}).encode(), st.sampled_from(FLOW),
              st.sampled_from(["type", "qty", "side", "legs", "kind", "bogus_field"]),
              st.one_of(st.none(), st.integers(), st.lists(st.integers(), max_size=2), st.just({}))),
    st.binary(min_size=1, max_size=40).filter(lambda b: b"\n" not in b),
)
filler_lines = st.sampled_from([b"", b"   ", b"# a comment", b"#", b"\r"])


def structurally_bad(line: bytes) -> bool | None:
    """True if decode_wire refuses the line, False if it takes it, None for a known defect."""
    stripped = line.strip()
    if not stripped or stripped.startswith(b"#"):
        return False
    try:
        decode_wire(stripped)
    except CommandError:
        return True
    except (UnicodeDecodeError, RecursionError):
        return None
    return False


@st.composite
def command_files(draw) -> list[bytes]:
    lines = draw(st.lists(st.one_of(good_lines, bad_lines, filler_lines), min_size=0, max_size=30))
    lines.insert(draw(st.integers(0, len(lines))), draw(bad_lines))
    return lines


def test_submit_file_with_malformed_lines_changes_nothing(template, tmp_path_factory):
    data_dir = fresh_copy(template, tmp_path_factory)
    before = durable_files(data_dir)
    work = tmp_path_factory.mktemp("submit-files")

    @fuzz_settings(80)
    @given(command_files(), st.sampled_from(["\n", "\r\n"]), st.booleans(), st.lists(st.sampled_from(
        ["--keep-going", "--no-progress", "--results", "--clock=input", "--batch=1"]), max_size=3, unique=True))
    def one(lines, newline, as_json, options):
        note(f"lines={lines!r} newline={newline!r} options={options!r}")
        verdicts = [structurally_bad(line) for line in lines]
        if None in verdicts or not any(verdicts):
            return  # a line hitting a known defect (strict xfails below), or no malformed line after all
        path = work / "flow.jsonl"
        path.write_bytes(b"".join(line + newline.encode() for line in lines))
        code, out, err = jex(data_dir, ["--json"] * as_json + ["submit", str(path), *options])
        check_contract(code, out, err)
        assert code == 2
        bad = [n for n, v in enumerate(verdicts, 1) if v]
        diag = [line for line in err.splitlines() if line]
        reported = [int(m.group(1)) for m in (re.match(r"jex: bad input: line (\d+): \$", d) for d in diag) if m]
        assert reported == bad[:20], (reported, bad)
        more = 1 if len(bad) > 20 else 0
        assert len(diag) == len(reported) + more + 1, diag  # one line per bad line (<= 20), "... more", summary
        commands = sum(1 for line in lines if line.strip() and not line.strip().startswith(b"#"))
        assert diag[-1] == f"jex: nothing submitted ({len(bad)} malformed of {commands} commands)", diag
        assert out == ""
        assert durable_files(data_dir) == before

    one()


def test_submit_file_through_the_real_console_script(template, tmp_path_factory):
    """One run of the installed `jex` binary: the in-process runs above stand for it."""
    data_dir = fresh_copy(template, tmp_path_factory)
    before = durable_files(data_dir)
    flow = tmp_path_factory.mktemp("script") / "flow.jsonl"
    flow.write_bytes(json.dumps(FLOW[0]).encode() + b"\n{\"type\":\"order\",\"qty\":[1]}\n\xff\n")
    jex_bin = Path(sys.executable).with_name("jex")
    proc = subprocess.run([str(jex_bin), "--data-dir", str(data_dir), "submit", str(flow)], capture_output=True,
                          timeout=120)
    err = proc.stderr.decode()
    assert proc.returncode == 2, err
    assert "Traceback" not in err and "internal error" not in err
    assert [l.split(":")[1].strip() for l in err.splitlines()[:2]] == ["bad input", "bad input"]
    assert "line 2" in err and "line 3" in err and "nothing submitted (2 malformed of 3 commands)" in err
    assert durable_files(data_dir) == before


# --- defects found by this fuzzer (strict xfail) -------------------------------------------------------

DEEP_LINE = (b'{"type":"conditional","account":"a","client_id":"c","when":' + b'{"a":' * 3000 + b"1" + b"}" * 3000
             + b',"order":{"side":"buy","kind":"limit","qty":"1"}}')



def test_submit_file_with_invalid_utf8_in_a_string_is_bad_input(template, tmp_path_factory):
    data_dir = fresh_copy(template, tmp_path_factory)
    path = tmp_path_factory.mktemp("utf8") / "flow.jsonl"
    path.write_bytes(b'{"type":"\xac"}\n')
    code, out, err = jex(data_dir, ["submit", str(path)])
    check_contract(code, out, err)
    assert code == 2 and "line 1" in err



def test_submit_file_with_deeply_nested_json_is_bad_input(template, tmp_path_factory):
    data_dir = fresh_copy(template, tmp_path_factory)
    path = tmp_path_factory.mktemp("deep") / "flow.jsonl"
    path.write_bytes(DEEP_LINE + b"\n")
    code, out, err = jex(data_dir, ["submit", str(path)])
    check_contract(code, out, err)
    assert code == 2



def test_off_grid_value_with_newline_is_a_one_line_diagnostic(template, tmp_path_factory):
    data_dir = fresh_copy(template, tmp_path_factory)
    code, out, err = jex(data_dir, ["submit", "order", "--account", "A", "--client-id", "nl1", "--symbol", "JEX",
                                    "--side", "buy", "--kind", "limit", "--qty", "1", "--price", "1.001\n"])
    assert code == 2
    assert len(err.strip().splitlines()) == 1, err


@pytest.mark.parametrize("argv", [["book", "JEX", "--at", "²"], ["replay", "--to", "seq:²"],
                                  ["audit", "range", "1", "²"], ["audit", "trades", "JEX", "--cursor", "²:0"]])
def test_unicode_digit_points_are_bad_usage(template, tmp_path_factory, argv):
    code, out, err = jex(fresh_copy(template, tmp_path_factory), argv)
    check_contract(code, out, err)
    assert code == 2



def test_audit_order_id_out_of_range_is_bad_usage(template, tmp_path_factory):
    code, out, err = jex(fresh_copy(template, tmp_path_factory), ["audit", "order", "9" * 23])
    check_contract(code, out, err)
    assert code == 2



def test_unknown_backend_name_is_bad_usage(template, tmp_path_factory):
    data_dir = fresh_copy(template, tmp_path_factory)
    code, out, err = jex(data_dir, ["cancel", "--account", "A", "--client-id", "x", "--backend", "bogus"])
    check_contract(code, out, err)
    assert code == 2



def test_bad_segment_bytes_is_bad_usage(template, tmp_path_factory):
    data_dir = fresh_copy(template, tmp_path_factory)
    code, out, err = jex(data_dir, ["submit", "clock", "--segment-bytes", "5"])
    check_contract(code, out, err)
    assert code == 2


@pytest.mark.parametrize("argv", [["audit", "account", ""], ["audit", "trades", ""]])
def test_audit_empty_name_is_bad_usage(template, tmp_path_factory, argv):
    code, out, err = jex(fresh_copy(template, tmp_path_factory), argv)
    check_contract(code, out, err)
    assert code in (0, 2)



def test_cursor_with_a_huge_number_is_bad_usage(template, tmp_path_factory):
    code, out, err = jex(fresh_copy(template, tmp_path_factory), ["audit", "trades", "JEX", "--cursor", "9" * 5000 + ":0"])
    check_contract(code, out, err)
    assert code == 2


@pytest.mark.parametrize("argv", [
    ["book", "X\nY"], ["stats", "X\nY"], ["trades", "X\nY"], ["keys", "revoke", "a\nb"],
    ["audit", "trades", "JEX", "--type", "x\ny"],
    ["submit", "order", "--account", "A", "--client-id", "c", "--symbol", "X\nY", "--side", "buy", "--kind", "limit",
     "--qty", "1", "--price", "1"],
], ids=["book", "stats", "trades", "keys_revoke", "audit_type", "submit_symbol"])
def test_diagnostics_echoing_a_line_break_stay_one_line(template, tmp_path_factory, argv):
    code, out, err = jex(fresh_copy(template, tmp_path_factory), argv)
    assert code == 2
    check_contract(code, out, err)
