"""Evaluation cost: Hutchinson vs exact divergence in the PF-ODE likelihood, and sliced vs exact W2.

Baselines: the exact divergence (one vector-Jacobian product per dimension) and the exact W2 (scipy's
linear_sum_assignment). Prints medians over repeats and ratios measured in the same run.

    PYTHONPATH=. python benchmarks/bench_evaluation.py [--repeats 3]
"""
from __future__ import annotations

import argparse

import torch

from softdiff.evaluation.likelihood import LinearVP, log_likelihood
from softdiff.evaluation.metrics import sliced_wasserstein, wasserstein2
from timing import median_time  # benchmarks/timing.py: this folder is on the path when run as a script


def mlp_score(dim: int, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    w1, w2 = torch.randn(dim + 1, 128, generator=g) / (dim + 1) ** 0.5, torch.randn(128, dim, generator=g) / 128**0.5

    def score(x, t):
        return -x + torch.tanh(torch.cat([x, t[:, None]], 1) @ w1) @ w2

    return score


def bench_likelihood(repeats: int) -> None:
    print("PF-ODE log-likelihood, batch 32, rk4 with 20 fixed steps (same NFE for both), random MLP score")
    print(f"{'dim':>5} {'exact s':>9} {'hutch s':>9} {'speedup':>8} {'mean |hutch-exact| (nats)':>26} "
          f"{'spread of exact logp':>21}")
    for dim in (2, 16, 64):
        x = torch.randn(32, dim, generator=torch.Generator().manual_seed(1))
        kw = dict(method="rk4", options={"step_size": 0.05})
        score, process = mlp_score(dim), LinearVP()
        te, exact = median_time(lambda: log_likelihood(score, process, x, divergence="exact", **kw), repeats)
        th, hutch = median_time(lambda: log_likelihood(score, process, x, divergence="hutchinson", **kw), repeats)
        err, spread = (hutch - exact).abs().mean().item(), exact.std().item()
        print(f"{dim:>5} {te:>9.3f} {th:>9.3f} {te / th:>7.1f}x {err:>26.3f} {spread:>21.3f}")


def bench_w2(repeats: int) -> None:
    print("\nW2 between two 2-D samples of size n (N(0, I) vs N((1, 1), I/4))")
    print(f"{'n':>6} {'exact W2 s':>11} {'sliced s':>9} {'speedup':>8} {'exact W2':>9} {'sliced W2':>10}")
    for n in (250, 500, 1000):
        g = torch.Generator().manual_seed(n)
        x, y = torch.randn(n, 2, generator=g), torch.randn(n, 2, generator=g) * 0.5 + 1.0
        te, w = median_time(lambda: wasserstein2(x, y), repeats)
        ts, sw = median_time(lambda: sliced_wasserstein(x, y, 256, seed=0), repeats)
        print(f"{n:>6} {te:>11.4f} {ts:>9.4f} {te / ts:>7.1f}x {w:>9.4f} {sw:>10.4f}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args()
    torch.set_num_threads(1)
    bench_likelihood(args.repeats)
    bench_w2(args.repeats)


if __name__ == "__main__":
    main()
