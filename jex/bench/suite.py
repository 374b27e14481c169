"""The benchmark suite: one run, every section, one result object (bench room).

``run_suite(Config)`` builds the workloads once, then runs the sections in
this order, each measuring its figure *and* the baseline it is compared
with in the same run (these 2-core machines are noisy; a ratio of two
figures measured minutes apart means little):

=========  =======================================  ==========================================
section    figure                                   baseline (ratio = figure / baseline)
=========  =======================================  ==========================================
engine     Engine.apply throughput, per-kind        the same pass with the GC disabled, alternated;
           latency (HDR: p50 p95 p99 p99.9 max)     per kind: the overall p50
durable    submit_many throughput, io_uring and     in-memory engine+codec on the same dicts,
           pwrite (bulk batching, JSON dicts)       interleaved round by round; uring/pwrite
ack        enqueue -> durable release at fixed      the other backend at the same load
           offered loads (Gateway, paced producer)
replay     rebuild() of a durable run's log         in-memory engine throughput
recovery   Exchange.open -> first new command       replay of the same log
snapshot   fork pause, child write, load, recovery  replay / recovery from genesis of the
           from the snapshot at N resting orders    same log
=========  =======================================  ==========================================

Seeded: workloads come from ``Config.seed``; the in-memory engine digests
are a function of the seed alone (checked against the generator's shadow
engine), and recorded in the result.
"""

from __future__ import annotations

import os
import platform
import shutil
import statistics
import subprocess
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import jex.native as native

from . import durable, inmemory, workloads
from .workloads import WORKLOAD_NAMES, Workload

SECTIONS = ("engine", "durable", "ack", "replay", "recovery", "snapshot")
BACKENDS = ("pwrite", "uring")

QUICK = dict(commands=10_000, amzn_rows=5_000, rounds=1, ack_rates=(1_000, 10_000), ack_seconds=0.5,
             resting=10_000)
DEFAULT = dict(commands=100_000, amzn_rows=None, rounds=2, ack_rates=(1_000, 10_000), ack_seconds=2.0,
               resting=100_000)
FULL_RESTING = 1_000_000  # --full-snapshot: the 1 M resting orders (several minutes)

Progress = Callable[[str], None]


@dataclass
class Config:
    """What one suite run does. ``preset`` fills sizes from QUICK or DEFAULT."""

    out: Path
    seed: int = 1
    quick: bool = False
    workloads: tuple[str, ...] = WORKLOAD_NAMES
    sections: tuple[str, ...] = SECTIONS
    backends: tuple[str, ...] = BACKENDS
    commands: int = DEFAULT["commands"]  # timed commands per synthetic workload
    amzn_rows: int | None = DEFAULT["amzn_rows"]  # LOBSTER rows read (None: the whole file)
    rounds: int = DEFAULT["rounds"]  # interleaved durable rounds; figures are medians
    ack_rates: tuple[int, ...] = DEFAULT["ack_rates"]  # offered loads, cmd/s
    ack_seconds: float = DEFAULT["ack_seconds"]  # offered time per load and backend
    resting: int = DEFAULT["resting"]  # resting orders of the snapshot section
    work_dir: Path | None = None  # where data directories go (default: under out)
    keep: bool = False  # keep the data directories
    plot: bool = True

    @classmethod
    def preset(cls, out: Path, *, quick: bool = False, **overrides) -> Config:
        sizes = dict(QUICK if quick else DEFAULT)
        sizes.update({k: v for k, v in overrides.items() if v is not None})
        return cls(out=Path(out), quick=quick, **sizes)


def _quiet(_: str) -> None:
    pass


def run_suite(config: Config, progress: Progress = _quiet) -> dict:
    """Run every selected section; return the result object (see
    docs/benchmarks.md for its shape). Writes nothing but data directories
    (removed unless ``keep``)."""
    started = time.perf_counter()
    config.out.mkdir(parents=True, exist_ok=True)
    root = Path(tempfile.mkdtemp(prefix="jex-bench-", dir=config.work_dir or config.out))
    backends, notices = _usable_backends(config.backends)
    for line in notices:
        progress(line)
    result: dict = {"meta": _meta(config, root, backends, notices)}
    try:
        built = _build_workloads(config, progress, result)
        sections = set(config.sections)
        if "engine" in sections or "replay" in sections or "durable" in sections:
            result["engine"] = {}
            for w in built:
                progress(f"engine: {w.name} ({w.timed:,} commands, throughput and latency passes)")
                result["engine"][w.name] = inmemory.engine_run(w, config.rounds)
            other_core = inmemory.other_core() if "engine" in sections else None
            if other_core is not None:
                for w in built:
                    progress(f"engine: {w.name} on the {other_core} core (child process)")
                    other = inmemory.other_core_run(other_core, w.name, config.seed, config.commands,
                                                    config.amzn_rows, max(config.rounds, 3))
                    other["digest_matches"] = other.pop("digest") == result["engine"][w.name]["digest"]
                    result["engine"][w.name]["other_core"] = other
        logs: dict[str, Path] = {}
        if sections & {"durable", "replay", "recovery"}:
            result["durable"] = {w.name: _durable(w, config, backends, root, logs, progress) for w in built}
        if "replay" in sections or "recovery" in sections:
            result["replay"] = {}
            for w in built:
                progress(f"replay: {w.name}")
                result["replay"][w.name] = durable.replay_run(logs[w.name])
        if "recovery" in sections:
            result["recovery"] = {}
            for w in built:
                progress(f"recovery: {w.name}")
                result["recovery"][w.name] = durable.recovery_run(logs[w.name], w, backends[-1], "bench-probe")
        if "ack" in sections:
            result["ack"] = _ack(built, config, backends, root, progress)
        if "snapshot" in sections:
            result["snapshot"] = _snapshot(config, backends, root, progress)
    finally:
        if config.keep:
            progress(f"data directories kept under {root}")
        else:
            shutil.rmtree(root, ignore_errors=True)
    result["meta"]["seconds"] = round(time.perf_counter() - started, 1)
    return result


def _build_workloads(config: Config, progress: Progress, result: dict) -> list[Workload]:
    built = []
    result["workloads"] = {}
    for name in config.workloads:
        t = time.perf_counter()
        progress(f"workload: building {name}")
        w = workloads.build(name, config.seed, config.commands, amzn_rows=config.amzn_rows)
        if w is None:
            progress(f"bench: workload {name} skipped: {workloads.AMZN_FILE_NAME} not found "
                     f"(set {workloads.AMZN_FILE_ENV})")
            result["workloads"][name] = {"skipped": f"{workloads.AMZN_FILE_NAME} not found"}
            continue
        result["workloads"][name] = {
            "commands": w.timed, "setup": w.setup, "clock": w.clock, "kinds": w.kinds(),
            "digest": w.digest, "source": w.source or f"seed {config.seed}",
            "build_s": round(time.perf_counter() - t, 2),
        }
        built.append(w)
    return built


def _durable(w: Workload, config: Config, backends: list[str], root: Path, logs: dict, progress: Progress) -> dict:
    """``rounds`` interleaved rounds of [in-memory engine+codec, each backend];
    medians. The last round's log of the last backend is kept for replay."""
    runs: dict[str, list[dict]] = {"in_memory": [], **{b: [] for b in backends}}
    for round_no in range(config.rounds):
        progress(f"durable: {w.name} round {round_no + 1}/{config.rounds}: in-memory engine+codec, "
                 + ", ".join(backends))
        runs["in_memory"].append(inmemory.codec_run(w))
        for backend in backends:
            directory = root / f"durable-{w.name}-{backend}-{round_no}"
            runs[backend].append(durable.throughput_run(w, backend, directory))
            last = round_no == config.rounds - 1 and backend == backends[-1]
            if last:
                logs[w.name] = directory
            else:
                shutil.rmtree(directory, ignore_errors=True)
    out: dict = {}
    for key, items in runs.items():
        out[key] = {
            "throughput_cmd_s": round(statistics.median(r["throughput_cmd_s"] for r in items)),
            "rounds_cmd_s": [r["throughput_cmd_s"] for r in items],
            "commands": items[-1]["commands"],
        }
        if key != "in_memory":
            out[key]["backend"] = items[-1]["backend"]
            out[key]["refused"] = sum(r["refused"] for r in items)
            out[key]["journal"] = items[-1]["journal"]
    return out


def _ack(built: list[Workload], config: Config, backends: list[str], root: Path, progress: Progress) -> dict:
    """Acknowledgement latency on the first live-clock workload (std by default)."""
    chosen = next((w for w in built if w.clock == "live"), built[0] if built else None)
    if chosen is None:
        return {}
    out: dict = {"workload": chosen.name, "rates": {}}
    for rate in config.ack_rates:
        row = {}
        for backend in backends:
            progress(f"ack latency: {chosen.name} at {rate:,} cmd/s offered, {backend}")
            directory = root / f"ack-{rate}-{backend}"
            device = durable.device_commit_run(backend, root / f"device-{rate}-{backend}", config.ack_seconds / 2)
            shutil.rmtree(root / f"device-{rate}-{backend}", ignore_errors=True)
            row[backend] = durable.ack_latency_run(chosen, backend, directory, rate, config.ack_seconds)
            row[backend]["device"] = device
            shutil.rmtree(directory, ignore_errors=True)
        out["rates"][str(rate)] = row
    return out


def _snapshot(config: Config, backends: list[str], root: Path, progress: Progress) -> dict:
    from .snapshot import snapshot_run

    progress(f"snapshot: {config.resting:,} resting orders (build, replay, fork, load, recover)")
    data = snapshot_run(root / "snapshot", config.resting, backends[-1])
    if data is None:
        progress("bench: snapshot section skipped: benchmarks/snapshot_bench.py not found (not a source checkout)")
        return {"skipped": "benchmarks/snapshot_bench.py not found"}
    return data


def _usable_backends(wanted: tuple[str, ...]) -> tuple[list[str], list[str]]:
    from jex.journal.backends import uring_unavailable_reason

    notices = []
    usable = list(wanted)
    reason = uring_unavailable_reason()
    if reason is not None and "uring" in usable:
        usable.remove("uring")
        notices.append(f"bench: io_uring unavailable ({reason}); only pwrite is measured")
    if not usable:
        raise ValueError("no usable journal backend selected")
    return usable, notices


def _meta(config: Config, root: Path, backends: list[str], notices: list[str]) -> dict:
    import jex

    return {
        "jex": getattr(jex, "__version__", None) or _package_version(),
        "git": _git_revision(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "load_avg_1m": round(os.getloadavg()[0], 2),
        "filesystem": _filesystem(root),
        "backends": backends,
        "core": native.kind(),
        "notices": notices,
        "config": {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(config).items()},
        "started_unix": round(time.time()),
    }


def _package_version() -> str | None:
    try:
        from importlib.metadata import version

        return version("jex")
    except Exception:  # noqa: BLE001 - metadata is informative only
        return None


def _git_revision() -> str | None:
    import jex

    checkout = Path(jex.__file__).resolve().parents[1]
    if not (checkout / ".git").exists():
        return None
    try:
        done = subprocess.run(["git", "-C", str(checkout), "rev-parse", "--short", "HEAD"], capture_output=True,
                              text=True, timeout=5)
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.strip() or None


def _filesystem(path: Path) -> str | None:
    """The filesystem type holding ``path`` (from /proc/self/mounts)."""
    try:
        mounts = Path("/proc/self/mounts").read_text().splitlines()
    except OSError:
        return None
    best, kind = "", None
    resolved = str(path.resolve())
    for line in mounts:
        parts = line.split()
        if len(parts) >= 3 and (resolved == parts[1] or resolved.startswith(parts[1].rstrip("/") + "/")):
            if len(parts[1]) >= len(best):
                best, kind = parts[1], parts[2]
    return kind
