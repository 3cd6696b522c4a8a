"""Kernel-regime tools: spectra, kernel drift, kernel regression and the linearised gradient-descent dynamics."""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch
from torch import Tensor

from softdiff.studies.ntk.empirical import ntk_as_matrix


@dataclass
class Spectrum:
    """Eigen-summary of a symmetric PSD kernel matrix."""

    eigenvalues: Tensor          # ascending
    lambda_min: float
    lambda_max: float
    condition_number: float      # lambda_max / lambda_min (inf when lambda_min <= 0)
    effective_rank: float        # exp(entropy of eigenvalues / trace) (Roy & Vetterli)
    alignment: float | None = None  # <K, y y^T>_F / (||K||_F ||y||^2) when a target is given

    def as_dict(self) -> dict:
        out = {k: v for k, v in self.__dict__.items() if k != "eigenvalues"}
        out["eigenvalues"] = self.eigenvalues.tolist()
        return out


def _square_matrix(K: Tensor) -> Tensor:
    if K.ndim == 4:
        K = ntk_as_matrix(K)
    if K.ndim != 2 or K.shape[0] != K.shape[1]:
        raise ValueError(f"expected a square kernel matrix (or a full (n, n, o, o) kernel), got {tuple(K.shape)}")
    return K


def spectrum(K: Tensor, y: Tensor | None = None) -> Spectrum:
    """Eigenvalues, extremes, condition number, effective rank and (with ``y``) kernel-target alignment."""
    K = _square_matrix(K)
    evals = torch.linalg.eigvalsh(0.5 * (K + K.T))
    lo, hi = float(evals[0]), float(evals[-1])
    p = evals.clamp(min=0) / evals.clamp(min=0).sum()
    entropy = -float(torch.where(p > 0, p * torch.log(p), torch.zeros_like(p)).sum())
    alignment = None
    if y is not None:
        y = y.reshape(-1).to(K.dtype)
        if y.numel() != K.shape[0]:
            raise ValueError(f"target has {y.numel()} entries but the kernel is {tuple(K.shape)}")
        alignment = float(y @ K @ y / (torch.linalg.norm(K) * (y @ y)))
    return Spectrum(evals, lo, hi, hi / lo if lo > 0 else math.inf, math.exp(entropy), alignment)


def kernel_drift(K_t: Tensor, K_0: Tensor) -> float:
    """Relative drift ``||K_t - K_0||_F / ||K_0||_F``."""
    if K_t.shape != K_0.shape:
        raise ValueError(f"kernels have different shapes {tuple(K_t.shape)} and {tuple(K_0.shape)}")
    return float(torch.linalg.norm(K_t - K_0) / torch.linalg.norm(K_0))


# ---------------------------------------------------------------------------------- kernel-regime predictions
def kernel_regression(K_train: Tensor, K_test_train: Tensor, y: Tensor, ridge: float = 0.0) -> Tensor:
    """Kernel ridge prediction ``K_test_train (K_train + ridge I)^{-1} y`` (y: (N,) or (N, k))."""
    K_train = _square_matrix(K_train)
    if K_test_train.shape[-1] != K_train.shape[0] or y.shape[0] != K_train.shape[0]:
        raise ValueError(f"shapes do not match: K_train {tuple(K_train.shape)}, K_test_train "
                         f"{tuple(K_test_train.shape)}, y {tuple(y.shape)}")
    if ridge < 0:
        raise ValueError(f"ridge={ridge} must be non-negative")
    eye = torch.eye(K_train.shape[0], dtype=K_train.dtype)
    return K_test_train @ torch.linalg.solve(K_train + ridge * eye, y.to(K_train.dtype))


def gd_dynamics(K: Tensor, y: Tensor, f0: Tensor, lr: float, t: int | Sequence[int],
                kernel_scale: float = 1.0) -> Tensor:
    """Linearised GD residuals ``r(t) = (I - lr*kernel_scale*K)^t (f0 - y)``, shape ``(len(t), N)`` (or ``(N,)``).

    For a two-layer net pass ``K = H`` and ``kernel_scale = ntk_scale(model)`` (``eta*m*H`` for softmax);
    for a raw Gram ``J J^T`` keep ``kernel_scale = 1``. Vectors are flattened in the kernel's row order.
    """
    K = _square_matrix(K)
    r0 = (f0 - y).reshape(-1).to(K.dtype)
    if r0.numel() != K.shape[0]:
        raise ValueError(f"residual has {r0.numel()} entries but the kernel is {tuple(K.shape)}")
    scalar = isinstance(t, (int, np.integer))
    steps = torch.as_tensor([t] if scalar else list(t), dtype=K.dtype)
    if (steps < 0).any():
        raise ValueError("steps t must be non-negative")
    evals, evecs = torch.linalg.eigh(0.5 * (K + K.T))
    factor = (1.0 - lr * kernel_scale * evals)[None] ** steps[:, None]   # (T, N) per eigen-direction
    out = (factor * (evecs.T @ r0)[None]) @ evecs.T
    return out[0] if scalar else out


def max_stable_lr(K: Tensor, kernel_scale: float = 1.0) -> float:
    """Largest step for which linearised GD does not diverge: ``2 / (kernel_scale * lambda_max(K))``."""
    return 2.0 / (kernel_scale * spectrum(K).lambda_max)


