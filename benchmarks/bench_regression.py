"""Seconds to tolerance of the softmax-regression solvers vs scipy.optimize on the same instances.

    python benchmarks/bench_regression.py [--quick] [--tol 1e-10] [--repeats 3]

Instances: b = softmax(A x_true), the logit std of A x_true as the peakedness knob (max b from ~1/n to
~0.6-0.75), regularisation w from 1e-2 (flat b) to 1e-4 (peaky b), Gaussian and sparse A, at
(n, d) = (2000, 50), (20000, 100), (200000, 50) and a sparse (20000, 100); --quick drops n = 200000.
Everyone starts at x0 = 0 and stops at ||g(x)|| <= tol ||g(x0)||; scipy's L-BFGS-B, BFGS and trust-ncg run in
the same process on the same instances. Prints two markdown tables: every run, then one line per instance
with softdiff's `auto` choice, its best method, and the fastest scipy method that reached the tolerance.
"""
from __future__ import annotations

import argparse
import statistics

import torch

from softdiff.studies.softmax_regression.study import make_instance, run_ours, run_scipy

OURS = ("auto", "newton", "newton_cg", "approx_newton+ls")
SCIPY = ("L-BFGS-B", "BFGS", "trust-ncg")
PEAKEDNESS = ((1.0, 1e-2), (5.0, 1e-4))  # (logit std, w)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="skip the n = 200000 instances")
    p.add_argument("--tol", type=float, default=1e-10)
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args()
    torch.set_num_threads(1)  # one thread for everyone: scipy's own work is single-threaded NumPy
    sizes = [(2000, 50, "gaussian"), (20000, 100, "gaussian"), (20000, 100, "sparse")]
    if not args.quick:
        sizes.append((200000, 50, "gaussian"))
    print(f"tol={args.tol} (relative, from x0 = 0), median seconds of {args.repeats} repeats, one thread\n")
    print("| n | d | A | logit std | max b | w | method | reached | iterations | seconds | final ‖g‖/‖g0‖ |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    summary = []
    for n, d, kind in sizes:
        for scale, w in PEAKEDNESS:
            problem, info = make_instance(n, d, kind, scale, w, seed=0)
            runs: dict[str, list[dict]] = {}
            for _ in range(args.repeats):
                for m in OURS:
                    runs.setdefault(m, []).append(run_ours(problem, m, args.tol, 0))
                for m in SCIPY:
                    r = run_scipy(problem, m, args.tol)
                    runs.setdefault(r["method"], []).append(r)
            label = f"| {n} | {d} | {kind} | {scale} | {info['max_b']:.3f} | {w:g} |"
            rows = {}
            for name, rs in runs.items():
                sec = statistics.median(r["seconds"] for r in rs)
                ok = all(r["converged"] for r in rs)
                rows[name] = (ok, sec)
                rel = rs[0]["final_grad_norm"] / rs[0]["grad_norms"][0]
                print(f"{label} {name} | {ok} | {rs[0]['iterations']} | {sec:.3f} | {rel:.0e} |", flush=True)
            summary.append((label, rows))
    print("\n| n | d | A | logit std | max b | w | softdiff auto: reached, s | best softdiff method, s "
          "| fastest scipy that reached, s | speed-up of best softdiff over it |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for label, rows in summary:
        ours = {m: rows[m] for m in OURS if rows[m][0]}
        scipy = {m: rows[m] for m in rows if m.startswith("scipy") and rows[m][0]}
        best = min(ours, key=lambda m: ours[m][1]) if ours else None
        fastest = min(scipy, key=lambda m: scipy[m][1]) if scipy else None
        auto_ok, auto_s = rows["auto"]
        speedup = f"{scipy[fastest][1] / ours[best][1]:.1f}x" if best and fastest else "-"
        print(f"{label} {auto_ok}, {auto_s:.3f} | {f'{best}, {ours[best][1]:.3f}' if best else 'none'} | "
              f"{f'{fastest}, {scipy[fastest][1]:.3f}' if fastest else 'none reached'} | {speedup} |")


if __name__ == "__main__":
    main()
