"""The latency plot (bench room): latency by percentile, log-log, from the
HDR curves in a suite result. matplotlib is optional (the ``bench`` extra):
``write_plot`` returns None and ``MISSING_NOTICE`` says why when it is not
installed.
"""

from __future__ import annotations

from pathlib import Path

from .inmemory import OVERALL

MISSING_NOTICE = "bench: no PNG: matplotlib is not installed (pip install 'jex[bench]')"
PLOT_FILE_NAME = "bench-latency.png"
FIGURE_INCHES = (13.0, 5.0)
FIGURE_DPI = 110


def available() -> bool:
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return False
    return True


def _x(percentile: float) -> float:
    """Position on the "nines" axis: 1 / (1 - p), so 90% -> 10, 99.9% -> 1000."""
    return 1.0 / max(1.0 - percentile / 100.0, 1e-7)


def _draw(ax, curves: list[tuple[str, list]], title: str) -> None:
    for label, curve in curves:
        if not curve:
            continue
        # The max (percentile 100) is drawn one step past the last percentile.
        xs = [_x(p) for p, _ in curve[:-1]] + [_x(curve[-2][0]) * 2 if len(curve) > 1 else 1.0]
        ax.plot(xs, [max(v, 1) / 1000.0 for _, v in curve], marker=".", label=label)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xticks([1, 10, 100, 1000, 10_000, 100_000, 1_000_000])
    ax.set_xticklabels(["0%", "90%", "99%", "99.9%", "99.99%", "99.999%", "99.9999%"])
    ax.set_xlabel("percentile")
    ax.set_ylabel("latency (µs)")
    ax.set_title(title, fontsize=10)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)


def write_plot(result: dict, out_dir: Path) -> Path | None:
    """Write ``bench-latency.png`` into ``out_dir``; None without matplotlib
    or without any latency curve."""
    if not available():
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    engine_curves = [(name, e["latency_ns"][OVERALL].get("curve", []))
                     for name, e in result.get("engine", {}).items()]
    ack = result.get("ack", {})
    ack_curves = [(f"{a['backend']} @ {int(rate):,}/s", a["ack_ns"].get("curve", []))
                  for rate, by_backend in ack.get("rates", {}).items() for a in by_backend.values()]
    panels = [(c, t) for c, t in ((engine_curves, "Engine.apply, per command"),
                                  (ack_curves, f"durable ack, enqueue -> release ({ack.get('workload', '')})"))
              if any(curve for _, curve in c)]
    if not panels:
        return None
    fig, axes = plt.subplots(1, len(panels), figsize=FIGURE_INCHES, squeeze=False)
    for ax, (curves, title) in zip(axes[0], panels):
        _draw(ax, curves, title)
    meta = result.get("meta", {})
    fig.suptitle(f"jex bench — seed {meta.get('config', {}).get('seed')}, {meta.get('cpus')} cpus, "
                 f"load {meta.get('load_avg_1m')}", fontsize=11)
    fig.tight_layout()
    path = Path(out_dir) / PLOT_FILE_NAME
    fig.savefig(path, dpi=FIGURE_DPI)
    plt.close(fig)
    return path

