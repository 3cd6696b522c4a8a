"""Per-arm tuning: each activation trains every trial setting on a short budget, is scored on a validation
metric (held-out reference points, its own sampling seed), and keeps its best setting for the final runs."""
from __future__ import annotations

import math
from dataclasses import replace

from softdiff.evaluation.run_eval import EvalSettings

VALIDATION_SEED = 2_000_003  # reference points of the selection metric: apart from the final evaluation's


def validation_settings(eval_settings: EvalSettings, tune, metric: str) -> EvalSettings:
    """The evaluation of a trial: only the selection metric, on a reference drawn apart from the final one
    (fresh true points for 2-D sets, another half of the images for image sets), sampled with its own seed."""
    return replace(eval_settings, metrics=[metric], seed=tune.sampling_seed, reference_seed=VALIDATION_SEED,
                   every=0, num_samples=tune.num_samples or eval_settings.num_samples)


def trial_name(settings: dict) -> str:
    """A trial's folder name, from its settings alone (so adding a value to the grid keeps the other trials'
    folders), e.g. ``train.lr=0.003,model.sigma=0.1``."""
    return ",".join(f"{key}={value}" for key, value in settings.items()) or "shared"


def trial_score(records: list[dict], metric: str) -> float:
    """A trial's score: the mean of the metric over its seeds; NaN if any seed failed or is not finite (a setting
    that diverges on one seed is not a safe pick)."""
    values = [r["metrics"].get(metric) for r in records]
    if not values or any(v is None or not math.isfinite(v) for v in values):
        return math.nan
    return sum(values) / len(values)


def select_best(scores: list[float], higher_is_better: bool) -> int | None:
    """The index of the best finite score; exact ties go to the trial listed first. None if none is finite."""
    finite = [(i, s) for i, s in enumerate(scores) if s is not None and math.isfinite(s)]
    if not finite:
        return None
    sign = -1.0 if higher_is_better else 1.0
    return min(finite, key=lambda item: (sign * item[1], item[0]))[0]
