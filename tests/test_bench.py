"""Smoke tests of the benchmark suite (jex.bench, `jex bench`).

Tiny sizes only. They check that each piece runs, that its output has the
documented shape, and that runs are seeded and reproducible. They never
assert a timing: numbers depend on the machine and its load.
"""

from __future__ import annotations

import json

import pytest

from jex.bench import Config, run
from jex.bench import hist, inmemory, workloads
from jex.bench.inmemory import OVERALL
from jex.bench.report import figures, tables
from jex.cli.main import run as cli_run

SUMMARY_KEYS = {"count", "p50", "p95", "p99", "p999", "max", "mean"}
FIGURE_KEYS = {"section", "figure", "value", "unit", "baseline", "baseline_value", "ratio"}


def test_std_is_seeded_and_reproducible():
    a, b = workloads.std(7, 400), workloads.std(7, 400)
    assert a.dicts == b.dicts and a.digest == b.digest
    assert workloads.std(8, 400).dicts != a.dicts
    assert len(a) == len(a.dicts) == len(a.labels) == len(a.ts) == 401
    assert a.setup == 1 and a.timed == 400
    assert set(a.kinds()) <= {"passive", "cancel", "aggressive", "market"}
    assert sum(a.kinds().values()) == 400


def test_std_stops_are_setup():
    w = workloads.std(1, 100, stops=10)
    assert w.setup == 11 and w.timed == 100
    assert all(d["kind"] == "stop" for d in w.dicts[1:11])


def test_exchange_core_mix_and_prefill():
    w = workloads.exchange_core(3, 500, resting_target=50)
    assert w.setup == 51 and w.timed == 500
    assert set(w.kinds()) <= {"move", "gtc", "cancel", "ioc"}
    assert w.kinds()["move"] > w.timed // 2  # 82% of the mix
    assert workloads.exchange_core(3, 500, resting_target=50).digest == w.digest


def test_amzn_flow_converts_once():
    path = workloads.find_lobster_file()
    if path is None:
        pytest.skip("the LOBSTER AMZN file is not available")
    w = workloads.amzn(path, limit=300)
    assert w.clock == "input" and w.setup == 1
    assert w.ts == sorted(w.ts)  # simulation clock: non-decreasing
    assert set(w.kinds()) <= {"new", "cancel", "ioc", "replace"}
    assert workloads.amzn(path, limit=300).digest == w.digest


def test_histogram_summary_shape():
    s = hist.summarize([5, 1, 3, 1000, 7])
    assert set(s) == SUMMARY_KEYS and s["count"] == 5
    assert s["p50"] <= s["p99"] <= s["max"]
    assert hist.summarize([]) == {k: 0 for k in SUMMARY_KEYS}
    curve = hist.summarize_with_curve(range(1, 1001))["curve"]
    assert curve[0][0] == 0.0 and curve[-1] == (100.0, hist.histogram(range(1, 1001)).get_max_value())


def test_engine_run_shape_and_determinism():
    w = workloads.std(2, 300)
    r = inmemory.engine_run(w)
    assert r["commands"] == 300 and r["throughput_cmd_s"] > 0 and r["throughput_gc_off_cmd_s"] > 0
    assert r["throughput_restored_cmd_s"] > 0  # the restored pass reached the same digest: digest_matches
    assert r["digest_matches"] and r["digest"] == w.digest
    assert set(r["latency_ns"]) == {OVERALL, *w.kinds()}
    assert all(SUMMARY_KEYS <= set(s) for s in r["latency_ns"].values())
    assert r["latency_ns"][OVERALL]["count"] == 300
    c = inmemory.codec_run(w)
    assert c["commands"] == 300 and c["events"] > 0


def test_suite_tiny_run_writes_one_object(tmp_path):
    config = Config.preset(tmp_path / "out", quick=True, commands=200, amzn_rows=200, ack_rates=(500,),
                           ack_seconds=0.1, resting=200)
    notes: list[str] = []
    result = run(config, progress=notes.append)
    assert notes  # progress went somewhere
    on_disk = json.loads((tmp_path / "out" / "bench.json").read_text())
    assert on_disk["figures"] == result["figures"]
    for section in ("meta", "workloads", "engine", "durable", "replay", "recovery", "ack", "snapshot", "figures"):
        assert section in result, section
    assert result["figures"] and all(set(row) == FIGURE_KEYS for row in result["figures"])
    ran = [name for name, w in result["workloads"].items() if "skipped" not in w]
    for name in ran:
        d = result["durable"][name]
        assert d["in_memory"]["commands"] == result["workloads"][name]["commands"]
        for backend in result["meta"]["backends"]:
            assert d[backend]["refused"] == 0
            assert d[backend]["commands"] == d["in_memory"]["commands"]
        assert result["recovery"][name]["start"] == "genesis"
        assert result["replay"][name]["commands"] == result["workloads"][name]["commands"] + \
            result["workloads"][name]["setup"]
    for by_backend in result["ack"]["rates"].values():
        for a in by_backend.values():
            assert a["refused"] == 0 and SUMMARY_KEYS <= set(a["ack_ns"])
            # The device floor: the journal alone on the same backend, timed in the same run.
            assert a["device"]["backend"] == a["backend"] and a["device"]["commits"] > 0
            assert SUMMARY_KEYS <= set(a["device"]["commit_ns"]) and a["device"]["commit_ns"]["p50"] > 0
    snap = result["snapshot"]
    if "skipped" not in snap:
        assert snap["resting_live"] == 200 and snap["recovery_snapshot"]["start"].startswith("snapshot")
    assert len(tables(result)) >= 2
    if result["plot"] is not None:
        assert (tmp_path / "out" / "bench-latency.png").stat().st_size > 0


def test_figures_pair_every_value_with_a_baseline():
    result = {
        "meta": {"core": "compiled"},
        "engine": {"std": {"throughput_cmd_s": 100, "throughput_gc_off_cmd_s": 125,
                           "other_core": {"core": "pure", "throughput_cmd_s": 40}}},
        "durable": {"std": {"in_memory": {"throughput_cmd_s": 50},
                            "pwrite": {"throughput_cmd_s": 40, "backend": "pwrite"},
                            "uring": {"throughput_cmd_s": 45, "backend": "uring-direct"}}},
    }
    rows = {row["figure"]: row for row in figures(result)}
    assert rows["std: Engine.apply (compiled core)"]["ratio"] == 0.8
    assert rows["std: compiled / pure core"]["ratio"] == 2.5
    assert rows["std: durable uring-direct"]["ratio"] == 0.9
    assert rows["std: uring / pwrite"]["ratio"] == 1.125


def test_ack_figures_stand_on_the_device_floor():
    def ack(p99_ms, device_ms, backend):
        return {"backend": backend, "ack_ns": {"p50": 1, "p99": int(p99_ms * 1e6)},
                "device": {"backend": backend, "commits": 9, "commit_ns": {"p50": 1, "p99": int(device_ms * 1e6)}}}

    result = {"meta": {"core": "pure"},
              "ack": {"workload": "std", "rates": {"10000": {"pwrite": ack(2.0, 0.5, "pwrite"),
                                                             "uring": ack(1.0, 0.25, "uring-direct")}}}}
    rows = {row["figure"]: row for row in figures(result)}
    assert rows["std @ 10,000/s: ack p99 pwrite"]["baseline"] == "device commit p99"
    assert rows["std @ 10,000/s: ack p99 pwrite"]["ratio"] == 4.0
    assert rows["std @ 10,000/s: ack p99 uring-direct"]["ratio"] == 4.0
    assert rows["std @ 10,000/s: ack p99 uring / pwrite"]["ratio"] == 0.5


def test_cli_json_is_one_object(tmp_path, capsys):
    code = cli_run(["bench", "--json", "--section", "engine", "--workload", "std", "--commands", "100",
                    "--seed", "5", "--out", str(tmp_path), "--no-plot"])
    assert code == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 1
    result = json.loads(lines[0])
    assert result["meta"]["config"]["seed"] == 5 and result["plot"] is None
    assert result["engine"]["std"]["digest"] == workloads.std(5, 100).digest
    assert set(result) >= {"meta", "workloads", "engine", "figures"}


def test_cli_rejects_unknown_workload(tmp_path):
    assert cli_run(["bench", "--workload", "nope", "--out", str(tmp_path)]) == 2
