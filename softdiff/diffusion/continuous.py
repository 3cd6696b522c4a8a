"""Forward processes in continuous time, for the probability-flow ODE (:mod:`softdiff.evaluation.likelihood`).

A VP process ``x_t = alpha(t) x_0 + sigma(t) eps`` with ``alpha^2 + sigma^2 = 1`` and ``beta(t) = -d log alpha^2 / dt``
has the ODE field ``f(x, t) = -beta(t) (x + score(x, t)) / 2``; the rectified flow ``x_s = (1 - s) x_0 + s eps`` has
``dx/ds = v(x, s)``, the velocity its model predicts. A trained model's process gives its own continuous view
(``softdiff.diffusion.process.ForwardProcess(config).continuous()``); the others are the textbook processes.
"""
from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor

from softdiff.diffusion.schedulers import make_scheduler

ScoreFn = Callable[[Tensor, Tensor], Tensor]  # (x, t) -> the process's field: a score (VP) or a velocity (flow)


class VPProcess:
    """A variance-preserving forward process given by ``log alpha_bar(t) = log alpha(t)^2`` on ``[t_min, t_max]``."""

    def __init__(self, t_min: float, t_max: float):
        if not t_min < t_max:
            raise ValueError(f"need t_min < t_max, got t_min={t_min}, t_max={t_max}")
        self.t_min, self.t_max = float(t_min), float(t_max)

    def log_alpha_bar(self, t: Tensor) -> Tensor:
        raise NotImplementedError

    def beta(self, t: Tensor) -> Tensor:
        raise NotImplementedError

    def alpha_sigma(self, t: Tensor) -> tuple[Tensor, Tensor]:
        """``alpha(t) = sqrt(alpha_bar)`` and ``sigma(t) = sqrt(1 - alpha_bar)``."""
        ab = torch.exp(self.log_alpha_bar(t))
        return ab.sqrt(), (1 - ab).sqrt()

    def drift(self, score_fn: ScoreFn) -> ScoreFn:
        """The probability-flow ODE's right-hand side ``-beta (x + score) / 2`` for a score function."""

        def f(x: Tensor, t: Tensor) -> Tensor:
            half_beta = 0.5 * self.beta(t).reshape(-1, *([1] * (x.dim() - 1)))
            return -half_beta * (x + score_fn(x, t))

        return f


class LinearVP(VPProcess):
    """The VP-SDE with ``beta(t) = beta_min + t (beta_max - beta_min)`` on ``[t_min, 1]`` (Song et al. 2021)."""

    def __init__(self, beta_min: float = 0.1, beta_max: float = 20.0, t_min: float = 1e-5, t_max: float = 1.0):
        super().__init__(t_min, t_max)
        self.beta_min, self.beta_max = beta_min, beta_max

    def log_alpha_bar(self, t: Tensor) -> Tensor:
        return -(self.beta_min * t + 0.5 * (self.beta_max - self.beta_min) * t**2)

    def beta(self, t: Tensor) -> Tensor:
        return self.beta_min + t * (self.beta_max - self.beta_min)


class OUProcess(VPProcess):
    """docs/theory.md 1.5: ``dX = -X dt + sqrt(2) dB``, i.e. constant ``beta = 2``, ``alpha = e^{-t}``."""

    def __init__(self, t_min: float = 0.01, t_max: float = 3.0):
        super().__init__(t_min, t_max)

    def log_alpha_bar(self, t: Tensor) -> Tensor:
        return -2.0 * t

    def beta(self, t: Tensor) -> Tensor:
        return torch.full_like(t, 2.0)


class DiscreteVP(VPProcess):
    """A diffusers schedule as a continuous process: time is the (fractional) timestep index ``0..N-1`` and
    ``log alpha_bar`` is linear between the ``N`` tabulated values (so ``beta`` is piecewise constant)."""

    def __init__(self, alphas_cumprod: Tensor):
        table = torch.as_tensor(alphas_cumprod, dtype=torch.float64)
        super().__init__(0.0, float(len(table) - 1))
        self.table = torch.log(table)

    @classmethod
    def from_scheduler_config(cls, config: dict) -> "DiscreteVP":
        """The forward process a softdiff model was trained with (its saved scheduler config)."""
        return cls(make_scheduler("ddpm", config).alphas_cumprod)

    def _segment(self, t: Tensor) -> tuple[Tensor, Tensor]:
        k = t.detach().to(torch.float64).clamp(0, len(self.table) - 1 - 1e-9)
        i = k.floor().long()
        return i, k - i

    def log_alpha_bar(self, t: Tensor) -> Tensor:
        i, frac = self._segment(t)
        return (self.table[i] + frac * (self.table[i + 1] - self.table[i])).to(t.dtype)

    def beta(self, t: Tensor) -> Tensor:
        i, _ = self._segment(t)
        return (self.table[i] - self.table[i + 1]).to(t.dtype)


class FlowProcess:
    """The rectified flow ``x = (1 - s) x_0 + s eps`` in model time ``t = s * num_train_timesteps`` on
    ``[t_min, num_train_timesteps]``; its ODE field is the model's velocity (``dx/dt = v / num_train_timesteps``)."""

    def __init__(self, num_train_timesteps: int = 1000, t_min: float = 1.0):
        if not 0 < t_min < num_train_timesteps:
            raise ValueError(f"need 0 < t_min < {num_train_timesteps}, got t_min={t_min}")
        self.num_train_timesteps, self.t_min, self.t_max = num_train_timesteps, float(t_min), float(num_train_timesteps)

    def alpha_sigma(self, t: Tensor) -> tuple[Tensor, Tensor]:
        s = t / self.num_train_timesteps
        return 1 - s, s

    def drift(self, velocity_fn: ScoreFn) -> ScoreFn:
        return lambda x, t: velocity_fn(x, t) / self.num_train_timesteps
