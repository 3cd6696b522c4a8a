"""Noise schedules (diffusers), prediction objectives and the sampling loop."""
from softdiff.diffusion.objectives import predict_x0, score_from_output, training_target
from softdiff.diffusion.sampling import sample
from softdiff.diffusion.schedulers import SCHEDULERS, make_scheduler, ou_betas, training_scheduler_config

__all__ = ["SCHEDULERS", "make_scheduler", "ou_betas", "predict_x0", "sample", "score_from_output",
           "training_scheduler_config", "training_target"]

