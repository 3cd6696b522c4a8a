"""Evaluation: sample distances with noise floors, exact mixture scores, PF-ODE likelihood, FID/KID features.

The names below load on first use (PEP 562), so that ``softdiff eval --help`` and its config errors do not wait
for torch and scipy."""
from softdiff.lazy_exports import lazy_exports

_EXPORTS = {
    "softdiff.evaluation.likelihood": ("DiscreteVP", "FlowProcess", "LinearVP", "OUProcess", "VPProcess",
                                       "bits_per_dim", "log_likelihood", "model_field_fn", "model_score_fn",
                                       "process_from_scheduler_config"),
    "softdiff.evaluation.metrics": ("SAMPLE_METRICS", "get_sample_metric", "mixture_log_likelihood", "mmd_rbf",
                                    "noise_floor", "score_error", "sliced_wasserstein", "wasserstein2"),
}
__getattr__, __all__ = lazy_exports(__name__, _EXPORTS)
