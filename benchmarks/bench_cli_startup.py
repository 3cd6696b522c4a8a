"""How fast the commands answer ``--help`` and a one-line config error, against ``python -c "import torch"``.

Each call is a fresh process (the console script ``softdiff``, ``python train.py``), run from an empty folder
with ``PYTHONPATH`` set to ``--repo`` (default: this repository), so the same script measures another checkout.
Rounds interleave all commands; the table gives each command's median wall time, its peak RSS and its ratio to
the median of ``import torch`` in the same run.

    OMP_NUM_THREADS=1 python benchmarks/bench_cli_startup.py --repeats 5
    OMP_NUM_THREADS=1 python benchmarks/bench_cli_startup.py --repeats 5 --repo /path/to/other/checkout
"""
from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def commands(repo: Path) -> list[tuple[str, list[str], int]]:
    """(label, argv, expected exit code) of every measured call."""
    script = shutil.which("softdiff", path=str(Path(sys.executable).parent))
    softdiff = [script] if script else [sys.executable, "-m", "softdiff.cli"]
    py = sys.executable
    return [
        ('python -c "import torch"', [py, "-c", "import torch"], 0),
        ("softdiff train --help", [*softdiff, "train", "--help"], 0),
        ("python train.py --help", [py, str(repo / "train.py"), "--help"], 0),
        ("softdiff train model.activation=swish2", [*softdiff, "train", "model.activation=swish2"], 2),
        ("python train.py train.stepz=5", [py, str(repo / "train.py"), "train.stepz=5"], 2),
        ("softdiff train train.steps=many", [*softdiff, "train", "train.steps=many"], 2),
        ("softdiff sample --help", [*softdiff, "sample", "--help"], 0),
        ("softdiff sample RUN scheduler=nope", [*softdiff, "sample", "RUN", "scheduler=nope"], 2),
        ("softdiff eval --help", [*softdiff, "eval", "--help"], 0),
        ("softdiff compare --help", [*softdiff, "compare", "--help"], 0),
    ]


def run_once(argv: list[str], env: dict, cwd: str) -> tuple[float, float, int]:
    """Wall seconds, peak RSS (MB) and exit code of one call."""
    start = time.perf_counter()
    proc = subprocess.Popen(argv, env=env, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    _, status, usage = os.wait4(proc.pid, 0)
    seconds = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    return seconds, usage.ru_maxrss / 1024, proc.returncode


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeats", type=int, default=5, help="rounds (each runs every command once)")
    p.add_argument("--repo", type=Path, default=ROOT, help="the checkout whose softdiff is measured")
    args = p.parse_args(argv)
    repo = args.repo.resolve()
    env = {**os.environ, "PYTHONPATH": str(repo)}
    table = commands(repo)
    times: dict[str, list[float]] = {label: [] for label, _, _ in table}
    rss: dict[str, list[float]] = {label: [] for label, _, _ in table}
    with tempfile.TemporaryDirectory() as cwd:
        for _ in range(args.repeats):
            for label, call, expected in table:
                seconds, peak, code = run_once(call, env, cwd)
                if code != expected:
                    print(f"warning: {label} exited {code}, expected {expected}", file=sys.stderr)
                times[label].append(seconds)
                rss[label].append(peak)
    base = statistics.median(times[table[0][0]])
    print(f"repo: {repo}; {args.repeats} rounds; medians")
    print("| command | wall (s) | peak RSS (MB) | / import torch |")
    print("| --- | --- | --- | --- |")
    for label, _, _ in table:
        median = statistics.median(times[label])
        print(f"| `{label}` | {median:.2f} | {statistics.median(rss[label]):.0f} | {median / base:.2f}x |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
