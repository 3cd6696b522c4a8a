"""The forward process of a training config: ``x_t = alpha x0 + sigma noise`` at the model's timesteps.

Diffusions use the discrete schedule's ``alphas_cumprod`` and integer timesteps; the rectified flow uses
``alpha = 1 - t``, ``sigma = t`` and passes ``t * num_train_timesteps`` to the model, as diffusers'
flow-matching schedulers do when sampling. ``ForwardProcess(config)`` builds the one of the two that a saved
scheduler config describes.
"""
from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from softdiff.diffusion.continuous import DiscreteVP, FlowProcess
from softdiff.diffusion.objectives import alpha_sigma, append_dims
from softdiff.diffusion.schedulers import config_prediction_type, is_flow_config, make_scheduler
from softdiff.diffusion.timesteps import sample_flow_times, sample_timesteps

# Flow times are kept off t = 0, where sigma = 0 and the velocity target carries no information.
MIN_FLOW_TIME = 1e-5


class ForwardProcess:
    """Noising, timestep draws and the prediction type for one training scheduler config.

    ``ForwardProcess(config)`` returns a :class:`DiscreteDiffusion` or a :class:`RectifiedFlow`, whichever the
    config describes, so that callers holding only a saved config need not tell them apart.
    """

    is_flow = False
    sampler_name = "ddpm"  # the diffusers scheduler saved beside a model to describe the process

    def __new__(cls, scheduler_config: dict[str, Any]):
        if cls is ForwardProcess:
            cls = RectifiedFlow if is_flow_config(scheduler_config) else DiscreteDiffusion
        return super().__new__(cls)

    def __init__(self, scheduler_config: dict[str, Any]):
        self.config = dict(scheduler_config)
        self.prediction_type = config_prediction_type(self.config)
        self.num_train_timesteps = int(self.config.get("num_train_timesteps", 1000))

    def scheduler(self):
        """The diffusers scheduler that describes this process (saved beside a trained model)."""
        return make_scheduler(self.sampler_name, self.config)

    def draw_timesteps(self, batch: int, generator: torch.Generator | None = None, density: str = "uniform",
                       mean: float | None = None, std: float | None = None) -> Tensor:
        """Model timesteps (batch,) on the generator's device (the CPU without one)."""
        raise NotImplementedError

    def mid_timesteps(self, batch: int) -> Tensor:
        """The middle of the timestep range (for probes at a medium noise level)."""
        raise NotImplementedError

    def alpha_sigma(self, timesteps: Tensor, ndim: int) -> tuple[Tensor, Tensor]:
        """``alpha`` and ``sigma`` at model timesteps, broadcastable against data of ``ndim`` dims."""
        raise NotImplementedError

    def add_noise(self, x0: Tensor, noise: Tensor, timesteps: Tensor) -> Tensor:
        alpha, sigma = self.alpha_sigma(timesteps, x0.dim())
        return alpha * x0 + sigma * noise

    def continuous(self):
        """The same process in continuous model time, for the probability-flow ODE (the likelihood)."""
        raise NotImplementedError


class DiscreteDiffusion(ForwardProcess):
    """A variance-preserving diffusion on diffusers' discrete schedule: integer timesteps, ``alphas_cumprod``."""

    def __init__(self, scheduler_config: dict[str, Any]):
        super().__init__(scheduler_config)
        self.alphas_cumprod = make_scheduler("ddpm", self.config).alphas_cumprod
        self._tables = {self.alphas_cumprod.device: self.alphas_cumprod}

    def draw_timesteps(self, batch, generator=None, density="uniform", mean=None, std=None):
        table = self._table_on(generator.device if generator is not None else self.alphas_cumprod.device)
        return sample_timesteps(batch, table, generator, density, mean, std)

    def _table_on(self, device: torch.device) -> Tensor:
        """``alphas_cumprod`` on ``device``, copied to an accelerator once, not at every step."""
        if device not in self._tables:
            self._tables[device] = self.alphas_cumprod.to(device)
        return self._tables[device]

    def mid_timesteps(self, batch: int) -> Tensor:
        return torch.full((batch,), self.num_train_timesteps // 2)

    def continuous(self) -> DiscreteVP:
        """Fractional timesteps, ``log alpha_bar`` linear between the tabulated values."""
        return DiscreteVP(self.alphas_cumprod)

    def alpha_sigma(self, timesteps: Tensor, ndim: int) -> tuple[Tensor, Tensor]:
        return alpha_sigma(self._table_on(timesteps.device), timesteps, ndim)


class RectifiedFlow(ForwardProcess):
    """``x_t = (1 - t) x0 + t noise`` with ``t`` in (0, 1), ``t * num_train_timesteps`` as the model's timestep."""

    is_flow = True
    sampler_name = "euler"
    alphas_cumprod = None  # no discrete schedule

    def __init__(self, scheduler_config: dict[str, Any]):
        super().__init__(scheduler_config)
        self.shift = float(self.config.get("shift", 1.0))

    def draw_timesteps(self, batch, generator=None, density="uniform", mean=None, std=None):
        t = sample_flow_times(batch, generator, density, mean, std, self.shift).clamp(min=MIN_FLOW_TIME)
        return t * self.num_train_timesteps

    def mid_timesteps(self, batch: int) -> Tensor:
        return torch.full((batch,), self.num_train_timesteps / 2)

    def continuous(self) -> FlowProcess:
        return FlowProcess(self.num_train_timesteps)

    def alpha_sigma(self, timesteps: Tensor, ndim: int) -> tuple[Tensor, Tensor]:
        t = append_dims(timesteps.float() / self.num_train_timesteps, ndim)
        return 1 - t, t
