"""Evaluation: sample distances with noise floors, exact mixture scores, PF-ODE likelihood, FID/KID features."""
from softdiff.evaluation.likelihood import (
    DiscreteVP,
    FlowProcess,
    LinearVP,
    OUProcess,
    VPProcess,
    bits_per_dim,
    log_likelihood,
    model_field_fn,
    model_score_fn,
    process_from_scheduler_config,
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

__all__ = ["DiscreteVP", "FlowProcess", "LinearVP", "OUProcess", "SAMPLE_METRICS", "VPProcess", "bits_per_dim",
           "get_sample_metric", "log_likelihood", "mixture_log_likelihood", "mmd_rbf", "model_field_fn",
           "model_score_fn", "noise_floor", "process_from_scheduler_config", "score_error", "sliced_wasserstein", "wasserstein2"]
