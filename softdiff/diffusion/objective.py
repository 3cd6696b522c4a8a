"""What training minimises, in one object: the forward process, the time density, the prediction target, the
loss weighting, the noising and the loss, for diffusions and the rectified flow alike (the idea of k-diffusion's
``Denoiser`` and EDM2's loss class).

``Objective.from_config(cfg.diffusion)`` is the one place where a training config becomes a forward process:
training, the likelihood and the comparison floors all take theirs from it, so they cannot disagree.
"""
from __future__ import annotations

from typing import Any, NamedTuple

import torch
from torch import Tensor

from softdiff.diffusion.objectives import diffusion_loss, loss_weight, training_target
from softdiff.diffusion.process import ForwardProcess
from softdiff.diffusion.schedulers import training_scheduler_config


class NoisedBatch(NamedTuple):
    """A training batch once noised: the network's input, what it should output, and each example's weight."""

    x_t: Tensor
    target: Tensor
    weight: Tensor


class Objective:
    """A forward process (from its scheduler config) plus how training samples and weighs it.

    ``timestep_density`` / ``density_mean`` / ``density_std``: which noise levels a batch sees
    (:mod:`softdiff.diffusion.timesteps`); ``loss_weighting`` / ``min_snr_gamma`` / ``sigma_data``: how the x0
    error is weighed (:func:`softdiff.diffusion.objectives.loss_weight`). A model folder keeps only the process:
    an objective rebuilt from a saved scheduler config has the default density and weighting.
    """

    def __init__(self, scheduler_config: dict[str, Any], timestep_density: str = "uniform",
                 density_mean: float | None = None, density_std: float | None = None, loss_weighting: str = "none",
                 min_snr_gamma: float = 5.0, sigma_data: float = 0.5):
        self.process = ForwardProcess(scheduler_config)
        self.timestep_density, self.density_mean, self.density_std = timestep_density, density_mean, density_std
        self.loss_weighting, self.min_snr_gamma, self.sigma_data = loss_weighting, min_snr_gamma, sigma_data

    @classmethod
    def from_config(cls, diffusion) -> "Objective":
        """The objective a training config's ``diffusion`` section describes."""
        d = diffusion
        prediction_type = "flow" if d.objective == "flow" else d.prediction_type
        scheduler_config = training_scheduler_config(d.beta_schedule, prediction_type, d.num_train_timesteps,
                                                     d.ou_t_min, d.ou_t_max, d.flow_shift)
        return cls(scheduler_config, d.timestep_density, d.density_mean, d.density_std, d.loss_weighting,
                   d.min_snr_gamma, d.sigma_data)

    @property
    def scheduler_config(self) -> dict[str, Any]:
        """The forward process as a diffusers scheduler config (saved beside a trained model)."""
        return dict(self.process.config)

    @property
    def prediction_type(self) -> str:
        return self.process.prediction_type

    def draw_timesteps(self, batch: int, generator: torch.Generator | None = None) -> Tensor:
        """Model timesteps (batch,) from the time density, on the generator's device."""
        return self.process.draw_timesteps(batch, generator, self.timestep_density, self.density_mean,
                                           self.density_std)

    def add_noise(self, x0: Tensor, noise: Tensor, timesteps: Tensor) -> Tensor:
        return self.process.add_noise(x0, noise, timesteps)

    def noised(self, x0: Tensor, noise: Tensor, timesteps: Tensor) -> NoisedBatch:
        """``x_t``, the prediction target and the loss weight of clean data ``x0`` noised by ``noise`` at
        ``timesteps``."""
        alpha, sigma = self.process.alpha_sigma(timesteps, x0.dim())
        x_t = alpha * x0 + sigma * noise
        target = training_target(self.prediction_type, x0, noise, alpha, sigma)
        weight = loss_weight(self.loss_weighting, self.prediction_type, alpha, sigma, self.min_snr_gamma,
                             self.sigma_data)
        return NoisedBatch(x_t, target, weight)

    def loss(self, output: Tensor, target: Tensor, weight: Tensor | None = None) -> Tensor:
        """The weighted squared error per example (shape (B,)); the training loss is its mean."""
        return diffusion_loss(output, target, weight)
