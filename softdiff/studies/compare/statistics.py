"""Statistics over seeds: mean ± std, bootstrap confidence intervals of a mean, paired differences between arms,
and the per-metric winner.

The seeds of a comparison are shared by every arm (seed k trains each activation from the same data order and
noise), so the honest test of "arm A beats arm B" is on the per-seed differences A_k - B_k, not on two separate
intervals.

The bootstrap is Hesterberg's *expanded percentile* interval: the percentile interval of the resampled means,
taken at the widened level ``alpha' = 2 Phi(-sqrt(n / (n - 1)) t_{1 - alpha/2, n-1})`` so that it keeps close to
its nominal coverage with few seeds, where the plain percentile interval is too narrow (at n = 5 and 95%, about
93% coverage against 85% on normal data). No bootstrap can do better than the sample's range: with 3 seeds the
interval is [min, max], which covers the mean of a normal population 75% of the time.
"""
from __future__ import annotations

import math
from typing import Sequence

import numpy as np
from scipy import stats

CONFIDENCE = 0.95
RESAMPLES = 10_000


def finite(values: Sequence[float | None]) -> list[float]:
    """The values that are numbers and finite (failed runs record None or NaN)."""
    return [float(v) for v in values if v is not None and math.isfinite(v)]


def expanded_level(n: int, confidence: float = CONFIDENCE) -> float:
    """The two-sided tail mass ``alpha'`` at which the expanded percentile interval reads the bootstrap."""
    alpha = 1.0 - confidence
    t = stats.t.ppf(1.0 - alpha / 2.0, n - 1)
    return float(2.0 * stats.norm.cdf(-math.sqrt(n / (n - 1)) * t))


def bootstrap_ci(values: Sequence[float | None], confidence: float = CONFIDENCE, resamples: int = RESAMPLES,
                 seed: int = 0) -> list[float]:
    """``[lo, hi]``: the expanded-percentile bootstrap interval of the mean of the finite ``values`` (NaN when
    there are none; the single value twice when there is one). Deterministic for a given ``seed``."""
    x = np.asarray(finite(values), dtype=np.float64)
    if len(x) == 0:
        return [math.nan, math.nan]
    if len(x) == 1 or np.all(x == x[0]):
        return [float(x[0]), float(x[0])]
    rng = np.random.default_rng(seed)
    means = x[rng.integers(0, len(x), size=(resamples, len(x)))].mean(axis=1)
    tail = expanded_level(len(x), confidence) / 2.0
    lo, hi = np.quantile(means, [tail, 1.0 - tail])
    return [float(lo), float(hi)]


def mean_std(values: Sequence[float | None]) -> dict[str, float]:
    """Mean, sample standard deviation (0 for one value) and count of the finite values; NaN if none."""
    x = finite(values)
    if not x:
        return {"mean": math.nan, "std": math.nan, "n": 0}
    std = float(np.std(x, ddof=1)) if len(x) > 1 else 0.0
    return {"mean": float(np.mean(x)), "std": std, "n": len(x)}


def describe(values: Sequence[float | None]) -> dict:
    """``{"mean", "std", "n", "ci95"}`` of the finite values."""
    return {**mean_std(values), "ci95": bootstrap_ci(values)}


def by_seed(runs: list[dict], activation: str, metric: str) -> dict[int, float]:
    """``{seed: value}`` of one arm's runs (NaN where a run failed or lacks the metric)."""
    out = {}
    for r in runs:
        if r["activation"] == activation:
            v = r["metrics"].get(metric)
            out[r["seed"]] = math.nan if v is None else float(v)
    return out


def summarize(runs: list[dict], activations: list[str], metrics: list[str]) -> dict[str, dict[str, dict]]:
    """``{activation: {metric: {"mean", "std", "n", "ci95"}}}`` over seeds."""
    return {act: {m: describe(list(by_seed(runs, act, m).values())) for m in metrics} for act in activations}


def ranked(summary: dict, metric: str, higher_is_better: bool) -> list[str]:
    """The activations with a finite mean of ``metric``, best first (ties keep the listed order)."""
    names = [a for a, s in summary.items() if math.isfinite(s[metric]["mean"])]
    sign = -1.0 if higher_is_better else 1.0
    return sorted(names, key=lambda a: sign * summary[a][metric]["mean"])


def paired_differences(runs: list[dict], activations: list[str], metrics: list[str], summary: dict,
                       higher_is_better: set[str]) -> dict[str, dict[str, dict]]:
    """``{activation: {metric: {"diff", "ci95", "n", "against", "clear"}}}``: the mean over shared seeds of
    ``value(activation, seed) - value(best, seed)`` and its bootstrap interval, where ``best`` is the arm with
    the best mean. ``clear`` is True when the interval excludes zero (the best arm is clearly better), None with
    fewer than two shared seeds or for the best arm itself."""
    out: dict[str, dict[str, dict]] = {a: {} for a in activations}
    for m in metrics:
        order = ranked(summary, m, m in higher_is_better)
        if not order:
            continue
        best = order[0]
        reference = by_seed(runs, best, m)
        for act in activations:
            mine = by_seed(runs, act, m)
            diffs = [mine[s] - reference[s] for s in sorted(set(mine) & set(reference))
                     if math.isfinite(mine[s]) and math.isfinite(reference[s])]
            if not diffs:
                out[act][m] = {"diff": math.nan, "ci95": [math.nan, math.nan], "n": 0, "against": best, "clear": None}
                continue
            lo, hi = bootstrap_ci(diffs)
            clear = None if act == best or len(diffs) < 2 else bool(lo > 0 or hi < 0)
            out[act][m] = {"diff": float(np.mean(diffs)), "ci95": [lo, hi], "n": len(diffs), "against": best,
                           "clear": clear}
    return out


def winners(summary: dict, metrics: list[str], higher_is_better: set[str], paired: dict | None = None
            ) -> dict[str, dict]:
    """Per metric: the best activation, the runner-up, and two verdicts on the gap between them.

    ``clear`` (the rule of record): the paired interval of runner-up minus best excludes zero. ``significant``
    (the older rule, kept as a column): ``|mean_1 - mean_2| > std_1 + std_2``. Both are None when a verdict needs
    two seeds and there are fewer.
    """
    out = {}
    for m in metrics:
        order = ranked(summary, m, m in higher_is_better)
        if not order:
            continue
        best, stats_ = order[0], summary[order[0]][m]
        entry = {"winner": best, "higher_is_better": m in higher_is_better, "runner_up": None, "gap": None,
                 "spread": None, "significant": None, "clear": None, "paired_ci95": None}
        if len(order) > 1:
            second, s2 = order[1], summary[order[1]][m]
            gap, spread = abs(stats_["mean"] - s2["mean"]), stats_["std"] + s2["std"]
            entry.update(runner_up=second, gap=gap, spread=spread,
                         significant=None if min(stats_["n"], s2["n"]) < 2 else bool(gap > spread))
            pair = (paired or {}).get(second, {}).get(m)
            if pair is not None and pair["against"] == best:
                entry.update(clear=pair["clear"], paired_ci95=pair["ci95"])
        out[m] = entry
    return out
