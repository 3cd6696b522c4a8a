"""Seconds to tolerance of the softmax-regression solvers vs scipy's L-BFGS-B on the same instances.

    python benchmarks/bench_regression.py [--full] [--tol 1e-8] [--repeats 3]

Instances: b = softmax(A x_true) with the logit std of A x_true as the peakedness knob (max b from ~1/n to
~0.7), weak regularisation w, Gaussian and sparse A. Default sizes (2000, 50) and (20000, 100); --full adds
(200000, 50) (minutes on a 2-core CPU).
"""
from __future__ import annotations

import argparse
import statistics

from softdiff.diagnostics.regress_cli import make_instance, run_ours, run_scipy

METHODS = ("newton", "approx_newton+ls", "newton_cg")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--full", action="store_true")
    p.add_argument("--tol", type=float, default=1e-8)
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args()
    sizes = [(2000, 50, "gaussian"), (20000, 100, "gaussian"), (20000, 100, "sparse")]
    if args.full:
        sizes.append((200000, 50, "gaussian"))
    print(f"tol={args.tol} repeats={args.repeats} (median seconds; 'reached' = ||g|| <= tol ||g0||)")
    print("| n | d | A | logit std | max b | w | method | iterations | seconds | reached | final ‖g‖/‖g0‖ "
          "| time ratio to scipy L-BFGS-B |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for n, d, kind in sizes:
        for scale, w in ((1.0, 1e-2), (5.0, 1e-4)):
            problem, info = make_instance(n, d, kind, scale, w, seed=0)
            rows = {}
            for _ in range(args.repeats):
                for m in ("scipy", *METHODS):
                    r = run_scipy(problem, "L-BFGS-B", args.tol) if m == "scipy" else run_ours(problem, m, args.tol, 0)
                    rows.setdefault(r["method"], []).append(r)
            base = statistics.median(r["seconds"] for r in rows["scipy L-BFGS-B"])
            for name, runs in rows.items():
                sec = statistics.median(r["seconds"] for r in runs)
                ok = all(r["converged"] for r in runs)
                print(f"| {n} | {d} | {kind} | {scale} | {info['max_b']:.3f} | {w:g} | {name} | "
                      f"{runs[0]['iterations']} | {sec:.3f} | {ok} | "
                      f"{runs[0]['final_grad_norm'] / runs[0]['grad_norms'][0]:.0e} | {sec / base:.2f} |", flush=True)


if __name__ == "__main__":
    main()
