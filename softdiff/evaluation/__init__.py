"""Evaluation: sample distances with noise floors, exact mixture scores, PF-ODE likelihood, FID/KID features."""
from softdiff.evaluation.likelihood import (
    DiscreteVP,
    LinearVP,
    OUProcess,
    VPProcess,
    bits_per_dim,
    log_likelihood,
    model_score_fn,
)
from softdiff.evaluation.metrics import (
    SAMPLE_METRICS,
    get_sample_metric,
    mixture_log_likelihood,
    mmd_rbf,
    noise_floor,
    score_error,
    sliced_wasserstein,
    wasserstein2,
)

__all__ = ["DiscreteVP", "LinearVP", "OUProcess", "SAMPLE_METRICS", "VPProcess", "bits_per_dim",
           "get_sample_metric", "log_likelihood", "mixture_log_likelihood", "mmd_rbf", "model_score_fn",
           "noise_floor", "score_error", "sliced_wasserstein", "wasserstein2"]
