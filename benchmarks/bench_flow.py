"""E1 gradient descent: softdiff's batched torch loop vs a straightforward NumPy loop (seed by seed), same run.

    PYTHONPATH=. python benchmarks/bench_flow.py [--steps 20000] [--baseline-steps 2000] [--repeats 3]

Prints seed-steps per second (median over repeats) for 1 and 64 seeds and the ratio to the NumPy loop; the
NumPy loop is timed on fewer steps (its cost per seed-step does not depend on the horizon) and its final
state is checked against softdiff's after the same number of steps. The last columns time the whole E1
horizon (t = 1e6 steps x lr 0.1) as the gradient-flow ODE (``method="flow"``, torchdiffeq dopri5) and give
its final mean max share (GD after 1e6 steps: 0.975 over 8 seeds, docs/gradient_flow.md).
"""
from __future__ import annotations

import argparse

import numpy as np
import torch

from softdiff.studies.value_flow.integrate import value_softmax_flow
from softdiff.studies.value_flow.presets import preset_cases
from timing import median_time  # benchmarks/timing.py: this folder is on the path when run as a script


def numpy_gd(V0: np.ndarray, a0: np.ndarray, beta: np.ndarray, lr: float, steps: int) -> tuple[np.ndarray, np.ndarray]:
    """The E1 updates written plainly in NumPy, one seed after another (the baseline)."""
    V_out, a_out = np.empty_like(V0), np.empty_like(a0)
    for k in range(V0.shape[0]):
        V, a, b = V0[k].copy(), a0[k].copy(), beta[k]
        for _ in range(steps):
            e = np.exp(a - a.max())
            s = e / e.sum()
            c = 1.0 / (1.0 + np.exp(b @ (V @ s)))  # sigmoid(-margin)
            g = -c * b
            u = V.T @ g
            a -= lr * s * (u - s @ u)
            V -= lr * np.outer(g, s)
        V_out[k], a_out[k] = V, a
    return V_out, a_out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=20_000, help="GD steps for softdiff's loop")
    parser.add_argument("--baseline-steps", type=int, default=2_000, help="GD steps for the NumPy loop")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 64])
    args = parser.parse_args()
    torch.set_num_threads(1)
    print(f"E1 (D = N = 8, logistic, lr 0.1), float64 CPU, 1 thread; medians over {args.repeats} repeats\n")
    head = f"{'seeds':>5}  {'softdiff seed-steps/s':>22}  {'NumPy loop seed-steps/s':>24}  {'ratio':>6}  " \
           f"{'1e6 steps (s, softdiff)':>23}  {'max |a - a_numpy|':>17}  {'flow to t=1e5 (s)':>17}  " \
           f"{'max share flow':>14}"
    print(head)
    print("-" * len(head))
    for seeds in args.seeds:
        case = preset_cases("E1", num_seeds=seeds, seed=0)[0].kwargs
        V0, beta, lr = case["V0"], case["target"], case["lr"]
        a0 = torch.zeros(seeds, 8, dtype=torch.float64)
        t_ours, _ = median_time(lambda: value_softmax_flow(V0, a0, "logistic", beta, lr=lr, steps=args.steps,
                                                   record_every=args.steps), args.repeats)
        t_np, (_, a_np) = median_time(lambda: numpy_gd(V0.numpy(), a0.numpy(), beta.numpy(), lr, args.baseline_steps),
                                args.repeats)
        check = value_softmax_flow(V0, a0, "logistic", beta, lr=lr, steps=args.baseline_steps,
                                   record_every=args.baseline_steps)
        err = float(np.abs(check.a_final.numpy() - a_np).max())
        t_flow, flow = median_time(lambda: value_softmax_flow(V0, a0, "logistic", beta, method="flow", t_max=1e6 * lr),
                             args.repeats)
        ours, base = seeds * args.steps / t_ours, seeds * args.baseline_steps / t_np
        print(f"{seeds:>5}  {ours:>22,.0f}  {base:>24,.0f}  {ours / base:>6.1f}  "
              f"{1e6 * t_ours / args.steps:>23.1f}  {err:>17.1e}  {t_flow:>17.2f}  "
              f"{float(flow.max_share[-1].mean()):>14.3f}")


if __name__ == "__main__":
    main()
