"""The one home of each protocol's reference outcome (docs/theory.md 3.2's re-run, other random draws).

Numbers are numbers; the few outcomes that are words (E2's endings) are words. The command prints them next to
the measured values, and docs/gradient_flow.md tabulates both.
"""
from __future__ import annotations

REFERENCES: dict[str, dict] = {
    "E1": {"max_share": {0: 0.125, 1_000: 0.21, 10_000: 0.86, 100_000: 0.95, 1_000_000: 0.97},
           "entropy": (2.08, 0.17), "loss": (0.70, 1e-5), "winner_projection": (0.09, 11.7),
           "gain_per_decade": 2.3},
    "E2": {"square": "nothing polarises before the loss reaches ~0",
           "logistic": {"softmax": "max share ~0.98", "l1": "one-hot", "l2": "one-hot", "relu_norm": "one-hot",
                        "sum": "leaves the simplex", "sigmoid": "flat, ~0.8 on every coordinate"}},
    "E3": {"max_share": (0.998, 1.000), "dominant_norm": (1.0, 6.3), "median_norm": 1.0},
    "E4": {"entropy": {1: 3.00, 2: 2.95, 3: 1.72, 4: 0.77, 5: 0.40}},
    "E5": {"kl": 3e-16, "max_share": 0.96},
}
