"""Noise schedules (diffusers), prediction objectives and the sampling loop.

The names below load on first use (PEP 562), so that importing one module of this package (the sampling loop,
the objectives) does not bring diffusers."""
from importlib import import_module

_EXPORTS = {
    "softdiff.diffusion.objectives": ("predict_x0", "score_from_output", "training_target"),
    "softdiff.diffusion.sampling": ("sample",),
    "softdiff.diffusion.schedulers": ("SCHEDULERS", "make_scheduler", "ou_betas", "training_scheduler_config"),
}
_MODULE_OF = {name: module for module, names in _EXPORTS.items() for name in names}


def __getattr__(name: str):
    if name in _MODULE_OF:
        return getattr(import_module(_MODULE_OF[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = sorted(_MODULE_OF)
