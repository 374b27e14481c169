"""Latency histograms for the benchmarks (bench room).

A thin layer over HdrHistogram (the ``hdrhistogram`` package, module
``hdrh``): values are nanoseconds, tracked from 1 ns to
``LATENCY_NS_MAX`` with ``SIGNIFICANT_DIGITS`` significant digits (so a
reported percentile is within 0.1% of the true value).

Recording a value into ``hdrh`` costs ~2 µs of pure Python, so timed loops
never call it: they append raw ``perf_counter_ns`` differences to a list,
and ``histogram`` folds equal values together (``Counter``) before
recording each distinct value once with its count.
"""

from __future__ import annotations

from collections import Counter
from typing import Iterable

from hdrh.histogram import HdrHistogram

LATENCY_NS_MIN = 1
LATENCY_NS_MAX = 600 * 1_000_000_000  # 10 minutes; larger values are clamped (and counted)
SIGNIFICANT_DIGITS = 3
PERCENTILES = (("p50", 50.0), ("p95", 95.0), ("p99", 99.0), ("p999", 99.9))
PLOT_PERCENTILE_TICKS_MAX = 6  # the plot's x axis goes out to 99.9999%


def histogram(values_ns: Iterable[int]) -> HdrHistogram:
    """An HDR histogram of ``values_ns`` (non-positive values count as 1 ns)."""
    hist = HdrHistogram(LATENCY_NS_MIN, LATENCY_NS_MAX, SIGNIFICANT_DIGITS)
    record = hist.record_value
    for value, count in Counter(values_ns).items():
        record(min(max(value, LATENCY_NS_MIN), LATENCY_NS_MAX), count)
    return hist


def summary(hist: HdrHistogram) -> dict:
    """``{"count", "p50", "p95", "p99", "p999", "max", "mean"}``, all in ns
    (count excepted); zeros for an empty histogram."""
    count = hist.get_total_count()
    out: dict = {"count": count}
    for name, percentile in PERCENTILES:
        out[name] = hist.get_value_at_percentile(percentile) if count else 0
    out["max"] = hist.get_max_value() if count else 0
    out["mean"] = round(hist.get_mean_value()) if count else 0
    return out


def summarize(values_ns: Iterable[int]) -> dict:
    """``summary(histogram(values_ns))``."""
    return summary(histogram(values_ns))


def summarize_with_curve(values_ns: Iterable[int]) -> dict:
    """``summarize`` plus ``"curve"``: the ``percentile_curve`` points (for the plot)."""
    hist = histogram(values_ns)
    return {**summary(hist), "curve": percentile_curve(hist)}


def percentile_curve(hist: HdrHistogram) -> list[tuple[float, int]]:
    """(percentile, value ns) points for a latency-by-percentile plot, at
    percentiles 0, 50, 75, 87.5, ... (halving the remainder each step) while
    the histogram holds enough values to resolve them (and at most
    ``PLOT_PERCENTILE_TICKS_MAX`` nines), then the max at 100."""
    count = hist.get_total_count()
    if count == 0:
        return []
    points = []
    remaining = 100.0
    floor = max(10.0 ** (2 - PLOT_PERCENTILE_TICKS_MAX), 100.0 / count)
    percentile = 0.0
    while remaining >= floor:
        points.append((percentile, hist.get_value_at_percentile(percentile)))
        remaining /= 2
        percentile = 100.0 - remaining
    points.append((100.0, hist.get_max_value()))
    return points
