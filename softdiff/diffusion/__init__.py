"""Noise schedules (diffusers), the training objective (``Objective``: process, time density, target, weighting,
loss), prediction conversions and the sampling loop.

The names below load on first use (PEP 562), so that importing one module of this package (the sampling loop,
the objectives) does not bring diffusers."""
from softdiff.lazy_exports import lazy_exports

_EXPORTS = {
    "softdiff.diffusion.objective": ("NoisedBatch", "Objective"),
    "softdiff.diffusion.objectives": ("predict_x0", "score_from_output", "training_target"),
    "softdiff.diffusion.process": ("DiscreteDiffusion", "ForwardProcess", "RectifiedFlow"),
    "softdiff.diffusion.sampling": ("sample",),
    "softdiff.diffusion.schedulers": ("SCHEDULERS", "make_scheduler", "ou_betas", "training_scheduler_config"),
}
__getattr__, __all__ = lazy_exports(__name__, _EXPORTS)
