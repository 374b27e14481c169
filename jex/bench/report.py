"""Turning a suite result into figures, tables and JSON (bench room).

``figures(result)`` flattens the result into rows of (section, figure,
value, unit, baseline, baseline value, ratio): every figure next to the
baseline it was measured with in the same run. The JSON output carries
them under ``"figures"``; ``tables`` renders them, plus the latency
percentiles, as rich tables.
"""

from __future__ import annotations

from rich.table import Table

from .inmemory import OVERALL

NS_PER_US = 1_000
NS_PER_MS = 1_000_000


def _ratio(value: float | None, baseline: float | None) -> float | None:
    if value is None or not baseline:
        return None
    return round(value / baseline, 3)


def _row(section: str, figure: str, value, unit: str, baseline: str | None, baseline_value) -> dict:
    return {"section": section, "figure": figure, "value": value, "unit": unit, "baseline": baseline,
            "baseline_value": baseline_value, "ratio": _ratio(value, baseline_value)}


def figures(result: dict) -> list[dict]:
    """Every headline figure with its same-run baseline and the ratio."""
    rows: list[dict] = []
    engine = result.get("engine", {})
    for name, e in engine.items():
        core = result.get("meta", {}).get("core", "pure")
        rows.append(_row("engine", f"{name}: Engine.apply ({core} core)", e["throughput_cmd_s"], "cmd/s",
                         "same pass, GC disabled", e["throughput_gc_off_cmd_s"]))
        if "throughput_restored_cmd_s" in e:
            rows.append(_row("engine", f"{name}: 2nd half, after a restore (cold registry)",
                             e["throughput_restored_cmd_s"], "cmd/s", "2nd half, no restore",
                             e["throughput_second_half_cmd_s"]))
        other = e.get("other_core")
        if other is not None:
            rows.append(_row("engine", f"{name}: {core} / {other['core']} core", e["throughput_cmd_s"], "cmd/s",
                             f"{other['core']} core (child)", other["throughput_cmd_s"]))
    for name, d in result.get("durable", {}).items():
        mem = d["in_memory"]["throughput_cmd_s"]
        if name in engine:
            rows.append(_row("durable", f"{name}: in-memory engine+codec", mem, "cmd/s", "Engine.apply alone",
                             engine[name]["throughput_cmd_s"]))
        for backend in ("pwrite", "uring"):
            if backend in d:
                rows.append(_row("durable", f"{name}: durable {d[backend]['backend']}", d[backend]["throughput_cmd_s"],
                                 "cmd/s", "in-memory engine+codec", mem))
        if "pwrite" in d and "uring" in d:
            rows.append(_row("durable", f"{name}: uring / pwrite", d["uring"]["throughput_cmd_s"], "cmd/s",
                             "pwrite", d["pwrite"]["throughput_cmd_s"]))
    for name, r in result.get("replay", {}).items():
        base = engine.get(name, {}).get("throughput_cmd_s")
        read_path = " (compiled journal)" if r.get("read_path") == "compiled" else ""
        rows.append(_row("replay", f"{name}: rebuild(){read_path}", r["throughput_cmd_s"], "cmd/s",
                         "Engine.apply alone", base))
    for name, r in result.get("recovery", {}).items():
        base = result.get("replay", {}).get(name, {}).get("seconds")
        rows.append(_row("recovery", f"{name}: open -> first command durable", r["to_first_command_s"], "s",
                         "rebuild() of the same log", base))
    ack = result.get("ack", {})
    for rate, by_backend in ack.get("rates", {}).items():
        for backend, a in by_backend.items():
            label = f"{ack['workload']} @ {int(rate):,}/s: ack p99 {a['backend']}"
            device = a.get("device")
            if device is not None:
                rows.append(_row("ack", label, a["ack_ns"]["p99"] / NS_PER_MS, "ms", "device commit p99",
                                 device["commit_ns"]["p99"] / NS_PER_MS))
            else:
                rows.append(_row("ack", label, a["ack_ns"]["p99"] / NS_PER_MS, "ms", "ack p50",
                                 a["ack_ns"]["p50"] / NS_PER_MS))
        if "uring" in by_backend and "pwrite" in by_backend:
            rows.append(_row("ack", f"{ack['workload']} @ {int(rate):,}/s: ack p99 uring / pwrite",
                             by_backend["uring"]["ack_ns"]["p99"] / NS_PER_MS, "ms", "pwrite p99",
                             by_backend["pwrite"]["ack_ns"]["p99"] / NS_PER_MS))
    snap = result.get("snapshot", {})
    if snap and "skipped" not in snap:
        n = f"{snap['resting_orders']:,} resting"
        replay_s = snap["replay"]["seconds"]
        rows.append(_row("snapshot", f"{n}: fork pause", snap["fork_pause_s"] * 1000, "ms", "child's whole snapshot",
                         snap["child"]["alive_s"] * 1000))
        rows.append(_row("snapshot", f"{n}: snapshot write (child)", snap["child"]["alive_s"], "s",
                         "rebuild() of the same log", replay_s))
        rows.append(_row("snapshot", f"{n}: snapshot load", snap["load"]["seconds"], "s",
                         "rebuild() of the same log", replay_s))
        if "load_recovery" in snap:
            rows.append(_row("snapshot", f"{n}: snapshot load as recovery does (no digest)",
                             snap["load_recovery"]["seconds"], "s", "snapshot load", snap["load"]["seconds"]))
        rows.append(_row("snapshot", f"{n}: recovery from snapshot", snap["recovery_snapshot"]["to_first_command_s"],
                         "s", "recovery from genesis", snap["recovery_genesis"]["to_first_command_s"]))
    return rows


def _value(value, unit: str) -> str:
    if value is None:
        return "-"
    if unit == "cmd/s":
        return f"{value:,.0f} cmd/s"
    if unit == "s":
        return f"{value:,.3f} s"
    if unit == "ms":
        return f"{value:,.2f} ms"
    return f"{value} {unit}"


def _ns(value: int) -> str:
    if value >= 10 * NS_PER_MS:
        return f"{value / NS_PER_MS:,.0f} ms"
    if value >= NS_PER_MS:
        return f"{value / NS_PER_MS:.2f} ms"
    if value >= 10 * NS_PER_US:
        return f"{value / NS_PER_US:.0f} µs"
    return f"{value / NS_PER_US:.1f} µs"


def figures_table(rows: list[dict], meta: dict) -> Table:
    title = (f"jex bench (seed {meta['config']['seed']}{', quick' if meta['config']['quick'] else ''}) — "
             f"{meta['cpus']} cpus, load {meta['load_avg_1m']}, {meta['filesystem']}, {meta['seconds']} s")
    table = Table(title=title, title_justify="left")
    for name, justify in (("section", "left"), ("figure", "left"), ("value", "right"),
                          ("baseline (same run)", "left"), ("baseline value", "right"), ("ratio", "right")):
        table.add_column(name, justify=justify)
    for row in rows:
        ratio = "-" if row["ratio"] is None else f"{row['ratio']:.2f}×"
        table.add_row(row["section"], row["figure"], _value(row["value"], row["unit"]), row["baseline"] or "",
                      _value(row["baseline_value"], row["unit"]), ratio)
    return table


def engine_latency_table(result: dict) -> Table | None:
    engine = result.get("engine")
    if not engine:
        return None
    table = Table(title="Engine.apply latency per command (HDR histogram, perf_counter_ns around each apply)",
                  title_justify="left")
    for name in ("workload", "kind", "count", "p50", "p95", "p99", "p99.9", "max", "p50 ÷ all p50"):
        table.add_column(name, justify="left" if name in ("workload", "kind") else "right")
    for workload, e in engine.items():
        overall = e["latency_ns"][OVERALL]
        for kind, s in e["latency_ns"].items():
            ratio = s["p50"] / overall["p50"] if overall["p50"] else 0
            table.add_row(workload if kind == OVERALL else "", kind, f"{s['count']:,}", _ns(s["p50"]), _ns(s["p95"]),
                          _ns(s["p99"]), _ns(s["p999"]), _ns(s["max"]), f"{ratio:.2f}×")
    return table


def ack_table(result: dict) -> Table | None:
    ack = result.get("ack")
    if not ack or not ack.get("rates"):
        return None
    table = Table(title=f"durable acknowledgement latency, enqueue -> durable release ({ack['workload']} flow "
                        "through jex.node.gateway, paced producer)", title_justify="left")
    for name in ("offered", "backend", "achieved", "p50", "p99", "p99.9", "max", "p99 from schedule",
                 "records/batch", "device p50", "device p99", "p99 ÷ device p99", "p99 ÷ pwrite p99"):
        table.add_column(name, justify="left" if name in ("backend",) else "right")
    for rate, by_backend in ack["rates"].items():
        pwrite_p99 = by_backend.get("pwrite", {}).get("ack_ns", {}).get("p99")
        for backend, a in by_backend.items():
            s = a["ack_ns"]
            achieved = f"{a['achieved_cmd_s']:,}/s" + (" (saturated)" if a["saturated"] else "")
            ratio = f"{s['p99'] / pwrite_p99:.2f}×" if pwrite_p99 else "-"
            device = a.get("device", {}).get("commit_ns")
            floor = (_ns(device["p50"]), _ns(device["p99"]), f"{s['p99'] / device['p99']:.2f}×") if device else ("-",) * 3
            table.add_row(f"{int(rate):,}/s", a["backend"], achieved, _ns(s["p50"]), _ns(s["p99"]), _ns(s["p999"]),
                          _ns(s["max"]), _ns(a["ack_from_schedule_ns"]["p99"]),
                          f"{a['journal']['records_per_batch_mean']}", *floor, ratio)
    return table


def tables(result: dict) -> list[Table]:
    """The figures table, then the engine and acknowledgement latency tables."""
    out = [figures_table(result["figures"], result["meta"])]
    for table in (engine_latency_table(result), ack_table(result)):
        if table is not None:
            out.append(table)
    return out
