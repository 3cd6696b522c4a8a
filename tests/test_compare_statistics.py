"""Bootstrap intervals, paired differences and winners of a comparison, against hand-computed values and
simulated seeds."""
import math

import numpy as np
import pytest

from softdiff.studies.compare.statistics import (
    bootstrap_ci,
    expanded_level,
    paired_differences,
    summarize,
    winners,
)


@pytest.mark.parametrize("n,dist", [(10, "normal"), (20, "normal"), (5, "normal"), (20, "exponential")])
def test_bootstrap_interval_covers_the_true_mean_at_about_its_nominal_rate(n, dist):
    rng = np.random.default_rng(123 + n)
    trials, covered = 200, 0
    for i in range(trials):
        x = rng.normal(3.0, 2.0, n) if dist == "normal" else rng.exponential(3.0, n)
        lo, hi = bootstrap_ci(x, resamples=4000, seed=i)
        covered += lo <= 3.0 <= hi
    floor = {"normal": 0.9 if n >= 10 else 0.87, "exponential": 0.86}[dist]  # skewed data undercover a little
    assert floor <= covered / trials <= 0.995


def test_plain_percentile_would_undercover_where_the_expanded_one_does_not():
    # The widened level: at n = 5 the interval reads the bootstrap at ~0.1% / 99.9%, not 2.5% / 97.5%.
    assert expanded_level(5) == pytest.approx(0.0019, abs=2e-4)
    assert expanded_level(10) == pytest.approx(0.017, abs=2e-3)
    assert expanded_level(1000) == pytest.approx(0.05, abs=1e-3)  # large n: the plain percentile interval


def test_bootstrap_edge_cases_and_determinism():
    assert bootstrap_ci([1.0, 5.0, 2.0]) == [1.0, 5.0]       # 3 seeds: the interval is the seeds' range
    assert bootstrap_ci([2.5]) == [2.5, 2.5] and bootstrap_ci([4.0, 4.0, 4.0]) == [4.0, 4.0]
    assert all(math.isnan(v) for v in bootstrap_ci([None, math.nan]))
    x = np.random.default_rng(0).normal(size=8)
    assert bootstrap_ci(x, seed=7) == bootstrap_ci(x, seed=7)
    lo, hi = bootstrap_ci(x)
    assert lo < x.mean() < hi and x.min() <= lo and hi <= x.max()
    assert bootstrap_ci([1.0, math.nan, 2.0, None, 3.0]) == [1.0, 3.0]  # failed seeds are left out


def _runs(table: dict[str, dict[int, float]], metric: str = "w2") -> list[dict]:
    return [{"activation": act, "seed": seed, "metrics": {metric: value}}
            for act, values in table.items() for seed, value in values.items()]


def test_paired_differences_equal_hand_computed_values():
    runs = _runs({"softmax": {0: 1.0, 1: 1.5, 2: 1.2},
                  "relu": {0: 1.4, 1: 1.6, 2: 2.0},      # worse on every seed: diffs 0.4, 0.1, 0.8
                  "gelu": {0: 0.9, 1: 1.9, 2: 1.3}})     # mixed: diffs -0.1, 0.4, 0.1
    acts = ["softmax", "relu", "gelu"]
    summary = summarize(runs, acts, ["w2"])
    assert summary["relu"]["w2"]["mean"] == pytest.approx(5.0 / 3) and summary["relu"]["w2"]["ci95"] == pytest.approx([1.4, 2.0])
    paired = paired_differences(runs, acts, ["w2"], summary, set())
    assert paired["softmax"]["w2"] == {"diff": 0.0, "ci95": [0.0, 0.0], "n": 3, "against": "softmax", "clear": None}
    relu, gelu = paired["relu"]["w2"], paired["gelu"]["w2"]
    assert relu["diff"] == pytest.approx((0.4 + 0.1 + 0.8) / 3) and relu["ci95"] == pytest.approx([0.1, 0.8])
    assert relu["clear"] is True and relu["against"] == "softmax"
    assert gelu["diff"] == pytest.approx(0.4 / 3) and gelu["ci95"] == pytest.approx([-0.1, 0.4])
    assert gelu["clear"] is False
    w = winners(summary, ["w2"], set(), paired)["w2"]
    assert (w["winner"], w["runner_up"]) == ("softmax", "gelu") and w["clear"] is False
    assert w["paired_ci95"] == pytest.approx([-0.1, 0.4])
    assert w["significant"] is False  # the older rule: gap 0.0667 < std + std


def test_paired_differences_use_only_shared_finite_seeds_and_respect_higher_is_better():
    runs = _runs({"softmax": {0: 0.90, 1: 0.95, 2: math.nan, 3: 0.92},
                  "relu": {0: 0.80, 1: 0.85, 2: 0.99}}, metric="confidence")
    acts = ["softmax", "relu"]
    summary = summarize(runs, acts, ["confidence"])
    paired = paired_differences(runs, acts, ["confidence"], summary, {"confidence"})
    # relu's mean 0.88 < softmax's 0.923 (higher is better): softmax is best; seed 2 (NaN) and 3 (relu lacks it)
    # drop out, leaving diffs -0.10 and -0.10.
    p = paired["relu"]["confidence"]
    assert p["against"] == "softmax" and p["n"] == 2 and p["diff"] == pytest.approx(-0.10)
    assert p["ci95"] == pytest.approx([-0.10, -0.10]) and p["clear"] is True
    w = winners(summary, ["confidence"], {"confidence"}, paired)["confidence"]
    assert w["winner"] == "softmax" and w["clear"] is True


def test_one_seed_gives_no_verdict():
    runs = _runs({"softmax": {0: 1.0}, "relu": {0: 2.0}})
    summary = summarize(runs, ["softmax", "relu"], ["w2"])
    paired = paired_differences(runs, ["softmax", "relu"], ["w2"], summary, set())
    assert paired["relu"]["w2"]["clear"] is None and paired["relu"]["w2"]["diff"] == 1.0
    assert winners(summary, ["w2"], set(), paired)["w2"]["clear"] is None
