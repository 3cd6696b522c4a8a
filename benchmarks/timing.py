"""Shared by the benchmark scripts (each run as ``python benchmarks/bench_*.py``, so this folder is on the path)."""
from __future__ import annotations

import logging
import statistics

import torch

logging.getLogger("torch.utils.cpp_extension").setLevel(logging.ERROR)  # its import notes a missing CUDA runtime
from torch.utils.benchmark import Timer  # noqa: E402


def median_time(fn, repeats: int) -> tuple[float, object]:
    """Median wall time of ``fn()`` over ``repeats`` calls, and its last result. torch's Timer synchronises CUDA
    around each call and keeps the current thread count (it would otherwise time with one thread)."""
    result: dict = {}
    timer = Timer("result['out'] = fn()", globals={"fn": fn, "result": result}, num_threads=torch.get_num_threads())
    times = [timer.timeit(1).median for _ in range(repeats)]
    return statistics.median(times), result["out"]
