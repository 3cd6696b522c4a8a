"""The forward process of a training config: ``x_t = alpha x0 + sigma noise`` at the model's timesteps.

Diffusions use the discrete schedule's ``alphas_cumprod`` and integer timesteps; the rectified flow uses
``alpha = 1 - t``, ``sigma = t`` and passes ``t * num_train_timesteps`` to the model, as diffusers'
flow-matching schedulers do when sampling.
"""
from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from softdiff.diffusion.objectives import alpha_sigma, append_dims
from softdiff.diffusion.schedulers import config_prediction_type, is_flow_config, make_scheduler
from softdiff.diffusion.timesteps import sample_flow_times, sample_timesteps

# Flow times are kept off t = 0, where sigma = 0 and the velocity target carries no information.
MIN_FLOW_TIME = 1e-5


class ForwardProcess:
    """Noising, timestep draws and the prediction type for one training scheduler config."""

    def __init__(self, scheduler_config: dict[str, Any]):
        self.config = dict(scheduler_config)
        self.is_flow = is_flow_config(self.config)
        self.prediction_type = config_prediction_type(self.config)
        self.num_train_timesteps = int(self.config.get("num_train_timesteps", 1000))
        self.shift = float(self.config.get("shift", 1.0))
        self.alphas_cumprod = None if self.is_flow else make_scheduler("ddpm", self.config).alphas_cumprod

    def scheduler(self):
        """The diffusers scheduler that describes this process (saved beside a trained model)."""
        return make_scheduler("euler" if self.is_flow else "ddpm", self.config)

    def draw_timesteps(self, batch: int, generator: torch.Generator | None = None, density: str = "uniform",
                       mean: float | None = None, std: float | None = None) -> Tensor:
        """Model timesteps (batch,) on the CPU: integers for diffusions, ``t * num_train_timesteps`` for flows."""
        if self.is_flow:
            t = sample_flow_times(batch, generator, density, mean, std, self.shift).clamp(min=MIN_FLOW_TIME)
            return t * self.num_train_timesteps
        return sample_timesteps(batch, self.alphas_cumprod, generator, density, mean, std)

    def mid_timesteps(self, batch: int) -> Tensor:
        """The middle of the timestep range (for probes at a medium noise level)."""
        if self.is_flow:
            return torch.full((batch,), self.num_train_timesteps / 2)
        return torch.full((batch,), self.num_train_timesteps // 2)

    def alpha_sigma(self, timesteps: Tensor, ndim: int) -> tuple[Tensor, Tensor]:
        """``alpha`` and ``sigma`` at model timesteps, broadcastable against data of ``ndim`` dims."""
        if self.is_flow:
            t = append_dims(timesteps.float() / self.num_train_timesteps, ndim)
            return 1 - t, t
        return alpha_sigma(self.alphas_cumprod, timesteps, ndim)

    def add_noise(self, x0: Tensor, noise: Tensor, timesteps: Tensor) -> Tensor:
        alpha, sigma = self.alpha_sigma(timesteps, x0.dim())
        return alpha * x0 + sigma * noise
