"""Evaluation: sample distances with noise floors, exact mixture scores, PF-ODE likelihood, FID/KID features.

The names below load on first use (PEP 562), so that ``softdiff eval --help`` and its config errors do not wait
for torch and scipy."""
from importlib import import_module

_EXPORTS = {
    "softdiff.evaluation.likelihood": ("DiscreteVP", "FlowProcess", "LinearVP", "OUProcess", "VPProcess",
                                       "bits_per_dim", "log_likelihood", "model_field_fn", "model_score_fn",
                                       "process_from_scheduler_config"),
    "softdiff.evaluation.metrics": ("SAMPLE_METRICS", "get_sample_metric", "mixture_log_likelihood", "mmd_rbf",
                                    "noise_floor", "score_error", "sliced_wasserstein", "wasserstein2"),
}
_MODULE_OF = {name: module for module, names in _EXPORTS.items() for name in names}


def __getattr__(name: str):
    if name in _MODULE_OF:
        return getattr(import_module(_MODULE_OF[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = sorted(_MODULE_OF)
