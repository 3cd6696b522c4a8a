"""Prediction targets and conversions between epsilon, x0 ("sample") and v, in one place."""
from __future__ import annotations

import torch
from torch import Tensor


def append_dims(x: Tensor, ndim: int) -> Tensor:
    """Append trailing singleton dims to ``x`` until it has ``ndim`` dims (broadcast over any data shape)."""
    return x.reshape(*x.shape, *([1] * (ndim - x.dim())))


def alpha_sigma(alphas_cumprod: Tensor, timesteps: Tensor, ndim: int) -> tuple[Tensor, Tensor]:
    """``sqrt(alpha_bar_t)`` and ``sqrt(1 - alpha_bar_t)`` broadcastable against data of ``ndim`` dims."""
    ab = alphas_cumprod.to(timesteps.device)[timesteps.long()]
    return append_dims(ab.sqrt(), ndim), append_dims((1 - ab).sqrt(), ndim)


def training_target(prediction_type: str, x0: Tensor, noise: Tensor, alpha: Tensor, sigma: Tensor) -> Tensor:
    """What the network is trained to output for ``x_t = alpha x0 + sigma noise``."""
    if prediction_type == "epsilon":
        return noise
    if prediction_type == "sample":
        return x0
    if prediction_type == "v_prediction":
        return alpha * noise - sigma * x0
    raise ValueError(f"unknown prediction_type {prediction_type!r}; choose one of: epsilon, sample, v_prediction")


def predict_x0(prediction_type: str, output: Tensor, x_t: Tensor, alpha: Tensor, sigma: Tensor) -> Tensor:
    """The x0 estimate implied by a network output."""
    if prediction_type == "epsilon":
        return (x_t - sigma * output) / alpha
    if prediction_type == "sample":
        return output
    if prediction_type == "v_prediction":
        return alpha * x_t - sigma * output
    raise ValueError(f"unknown prediction_type {prediction_type!r}; choose one of: epsilon, sample, v_prediction")


def score_from_output(prediction_type: str, output: Tensor, x_t: Tensor, alpha: Tensor, sigma: Tensor) -> Tensor:
    """``grad log p_t(x_t) = (alpha x0_hat - x_t) / sigma^2`` (THEORY.md 1.5's x0-parameterised score)."""
    x0 = predict_x0(prediction_type, output, x_t, alpha, sigma)
    return (alpha * x0 - x_t) / sigma**2


def diffusion_loss(prediction_type: str, output: Tensor, target: Tensor) -> Tensor:
    """Mean squared error per example (shape (B,)), averaged over data dimensions."""
    return (output.float() - target.float()).pow(2).flatten(1).mean(dim=1)


def sample_timesteps(batch: int, num_train_timesteps: int, generator: torch.Generator | None,
                     device) -> Tensor:
    """Uniform integer timesteps (the discretised ``t ~ U[T0, T]`` of THEORY.md 1.5 for the OU betas)."""
    return torch.randint(0, num_train_timesteps, (batch,), generator=generator, device=device)
