"""Training noise-level densities: which timesteps (diffusion) or times (flow) a training batch sees.

``uniform``: every timestep / time equally often (the DDPM default). ``lognormal``: the noise level
``sigma_ve = sigma / alpha`` (the variance-exploding noise of the same process) has ``log sigma_ve ~ N(mean, std)``,
EDM's density (Karras et al. 2022: mean -1.2, std 1.2). For the rectified flow ``sigma_ve = t / (1 - t)``, so
the same rule is the logit-normal time density of Stable Diffusion 3 (Esser et al. 2024: mean 0, std 1);
``logit_normal`` names it with those defaults.
"""
from __future__ import annotations

import torch
from torch import Tensor

TIMESTEP_DENSITIES = ("uniform", "lognormal", "logit_normal")
DEFAULT_MEAN_STD = {"lognormal": (-1.2, 1.2), "logit_normal": (0.0, 1.0)}


def _check(density: str) -> None:
    if density not in TIMESTEP_DENSITIES:
        raise ValueError(f"unknown timestep density {density!r}; choose one of: {', '.join(TIMESTEP_DENSITIES)}")


def _log_sigma_draws(batch: int, density: str, mean: float | None, std: float | None,
                     generator: torch.Generator | None) -> Tensor:
    default_mean, default_std = DEFAULT_MEAN_STD[density]
    mean = default_mean if mean is None else mean
    std = default_std if std is None else std
    return mean + std * torch.randn(batch, generator=generator, dtype=torch.float64, device=_device(generator))


def _device(generator: torch.Generator | None) -> torch.device | None:
    """Where draws from ``generator`` land: its own device (a CUDA generator draws on the GPU), else the default."""
    return None if generator is None else generator.device


def sample_timesteps(batch: int, alphas_cumprod: Tensor, generator: torch.Generator | None = None,
                     density: str = "uniform", mean: float | None = None, std: float | None = None) -> Tensor:
    """Integer diffusion timesteps (batch,), on the generator's device, drawn from ``density`` over the discrete
    schedule."""
    _check(density)
    n = len(alphas_cumprod)
    if density == "uniform":
        return torch.randint(0, n, (batch,), generator=generator, device=_device(generator))
    ab = alphas_cumprod.double().to(_device(generator) or "cpu")
    table = 0.5 * torch.log((1 - ab) / ab)  # log sigma_ve per timestep, increasing in t
    wanted = _log_sigma_draws(batch, density, mean, std, generator)
    hi = torch.searchsorted(table, wanted).clamp(1, n - 1)
    nearer_lo = (wanted - table[hi - 1]) < (table[hi] - wanted)
    return torch.where(nearer_lo, hi - 1, hi).clamp(0, n - 1)


def shift_times(t: Tensor, shift: float) -> Tensor:
    """``shift t / (1 + (shift - 1) t)``: the time shift of diffusers' flow-matching schedulers (1: none)."""
    return t if shift == 1.0 else shift * t / (1 + (shift - 1) * t)


def sample_flow_times(batch: int, generator: torch.Generator | None = None, density: str = "uniform",
                      mean: float | None = None, std: float | None = None, shift: float = 1.0) -> Tensor:
    """Rectified-flow times in (0, 1) (batch,), on the generator's device; 1 is pure noise."""
    _check(density)
    if density == "uniform":
        t = torch.rand(batch, generator=generator, dtype=torch.float64, device=_device(generator))
    else:
        t = torch.sigmoid(_log_sigma_draws(batch, density, mean, std, generator))
    return shift_times(t, shift).float()
