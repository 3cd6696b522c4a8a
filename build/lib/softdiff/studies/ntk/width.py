"""Monte Carlo convergence of the empirical NTK to its infinite-width limit."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np
import torch
from torch import Tensor, nn

from softdiff.studies.ntk.closed_form import two_layer_ntk


@dataclass
class WidthConvergence:
    """Monte-Carlo kernels per width and their distance to the widest mean kernel (the K_inf estimate)."""

    widths: list[int]
    mean_kernels: list[Tensor]
    relative_error: list[float]          # mean over inits of ||K_m - K_inf||_F / ||K_inf||_F
    relative_error_of_mean: list[float]  # ||E K_m - K_inf||_F / ||K_inf||_F
    k_inf: Tensor = field(repr=False)


def monte_carlo_ntk(make_model: Callable[[int, int], nn.Module], x: Tensor, widths: Sequence[int], n_inits: int,
                    kernel_fn: Callable[[nn.Module, Tensor], Tensor] = two_layer_ntk,
                    k_inf: Tensor | None = None, seed: int = 0) -> WidthConvergence:
    """Average ``kernel_fn(make_model(width, seed_k), x)`` over ``n_inits`` inits at each width.

    ``K_inf`` is ``k_inf`` if given, else the mean kernel at the largest width (an estimate: say so in reports).
    """
    if n_inits < 1 or not widths:
        raise ValueError("monte_carlo_ntk needs n_inits >= 1 and at least one width")
    kernels = {w: [kernel_fn(make_model(w, seed + k), x) for k in range(n_inits)] for w in widths}
    means = [torch.stack(kernels[w]).mean(0) for w in widths]
    ref = means[int(np.argmax(widths))] if k_inf is None else k_inf
    norm = torch.linalg.norm(ref)
    errors = [float(np.mean([float(torch.linalg.norm(k - ref) / norm) for k in kernels[w]])) for w in widths]
    errors_mean = [float(torch.linalg.norm(mk - ref) / norm) for mk in means]
    return WidthConvergence(list(widths), means, errors, errors_mean, ref)


