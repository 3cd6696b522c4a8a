"""Prediction targets, conversions between them, and loss weightings, in one place.

Every forward process here is ``x_t = alpha x0 + sigma noise``: the variance-preserving diffusions
(``alpha^2 + sigma^2 = 1``) and the rectified flow (``alpha = 1 - t``, ``sigma = t``). What the network
outputs is its prediction type: ``epsilon`` (the noise), ``sample`` (x0), ``v_prediction``
(``alpha noise - sigma x0``) or ``flow`` (the velocity ``noise - x0`` of the straight path).
"""
from __future__ import annotations

import torch
from torch import Tensor

PREDICTION_TYPES = ("epsilon", "sample", "v_prediction", "flow")
LOSS_WEIGHTINGS = ("none", "min_snr", "edm")


def append_dims(x: Tensor, ndim: int) -> Tensor:
    """Append trailing singleton dims to ``x`` until it has ``ndim`` dims (broadcast over any data shape)."""
    return x.reshape(*x.shape, *([1] * (ndim - x.dim())))


def alpha_sigma(alphas_cumprod: Tensor, timesteps: Tensor, ndim: int) -> tuple[Tensor, Tensor]:
    """``sqrt(alpha_bar_t)`` and ``sqrt(1 - alpha_bar_t)`` broadcastable against data of ``ndim`` dims."""
    ab = alphas_cumprod.to(timesteps.device)[timesteps.long()]
    return append_dims(ab.sqrt(), ndim), append_dims((1 - ab).sqrt(), ndim)


def _unknown(prediction_type: str) -> ValueError:
    return ValueError(f"unknown prediction_type {prediction_type!r}; choose one of: {', '.join(PREDICTION_TYPES)}")


def training_target(prediction_type: str, x0: Tensor, noise: Tensor, alpha: Tensor, sigma: Tensor) -> Tensor:
    """What the network is trained to output for ``x_t = alpha x0 + sigma noise``."""
    if prediction_type == "epsilon":
        return noise
    if prediction_type == "sample":
        return x0
    if prediction_type == "v_prediction":
        return alpha * noise - sigma * x0
    if prediction_type == "flow":
        return noise - x0
    raise _unknown(prediction_type)


def predict_x0(prediction_type: str, output: Tensor, x_t: Tensor, alpha: Tensor, sigma: Tensor) -> Tensor:
    """The x0 estimate implied by a network output."""
    if prediction_type == "epsilon":
        return (x_t - sigma * output) / alpha
    if prediction_type == "sample":
        return output
    if prediction_type == "v_prediction":  # uses alpha^2 + sigma^2 = 1
        return alpha * x_t - sigma * output
    if prediction_type == "flow":  # uses alpha + sigma = 1
        return x_t - sigma * output
    raise _unknown(prediction_type)


def score_from_output(prediction_type: str, output: Tensor, x_t: Tensor, alpha: Tensor, sigma: Tensor) -> Tensor:
    """``grad log p_t(x_t) = (alpha x0_hat - x_t) / sigma^2`` (the x0-parameterised score)."""
    x0 = predict_x0(prediction_type, output, x_t, alpha, sigma)
    return (alpha * x0 - x_t) / sigma**2


def x0_error_factor(prediction_type: str, alpha: Tensor, sigma: Tensor) -> Tensor:
    """``c`` with ``||output - target||^2 = c ||x0_hat - x0||^2``: how the native loss weighs the x0 error.

    epsilon: SNR = alpha^2 / sigma^2; sample: 1; v_prediction and flow: 1 / sigma^2.
    """
    if prediction_type == "epsilon":
        return alpha**2 / sigma**2
    if prediction_type == "sample":
        return torch.ones_like(alpha)
    if prediction_type in ("v_prediction", "flow"):
        return 1 / sigma**2
    raise _unknown(prediction_type)


def loss_weight(weighting: str, prediction_type: str, alpha: Tensor, sigma: Tensor, min_snr_gamma: float = 5.0,
                sigma_data: float = 0.5) -> Tensor:
    """Per-example weight of the native MSE so that the loss weighs the x0 error by the named rule.

    ``none``: the native MSE as it is (weight 1). ``min_snr`` (Hang et al. 2023): x0 error weighted by
    ``min(SNR, gamma)``. ``edm`` (Karras et al. 2022): x0 error weighted by
    ``(sigma_ve^2 + sigma_data^2) / (sigma_ve sigma_data)^2 = SNR + 1 / sigma_data^2`` with
    ``sigma_ve = sigma / alpha``, the noise level of the same process in variance-exploding coordinates.
    """
    if weighting == "none":
        return torch.ones_like(alpha)
    snr = alpha**2 / sigma**2
    if weighting == "min_snr":
        wanted = snr.clamp(max=min_snr_gamma)
    elif weighting == "edm":
        wanted = snr + 1 / sigma_data**2
    else:
        raise ValueError(f"unknown loss weighting {weighting!r}; choose one of: {', '.join(LOSS_WEIGHTINGS)}")
    return wanted / x0_error_factor(prediction_type, alpha, sigma)


def diffusion_loss(output: Tensor, target: Tensor, weight: Tensor | None = None) -> Tensor:
    """(Weighted) mean squared error per example (shape (B,)), averaged over data dimensions."""
    loss = (output.float() - target.float()).pow(2).flatten(1).mean(dim=1)
    return loss if weight is None else loss * weight.flatten().float()
