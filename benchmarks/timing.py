"""Shared by the benchmark scripts (each run as ``python benchmarks/bench_*.py``, so this folder is on the path)."""
from __future__ import annotations

import statistics
import time


def median_time(fn, repeats: int) -> tuple[float, object]:
    """Median wall time of ``fn()`` over ``repeats`` calls, and its last result."""
    times, out = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times), out
