"""The losses of the value-softmax protocols, batched over seeds: value and gradient in ``beta`` (docs/theory.md 3.1)."""
from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor

from softdiff.errors import lookup


class Loss:
    """``value(beta, target, X) -> (B,)`` and ``grad(beta, target, X) -> dL/dbeta (B, D)``."""

    def __init__(self, value: Callable[..., Tensor], grad: Callable[..., Tensor]):
        self.value, self.grad = value, grad


def _bdot(x: Tensor, y: Tensor) -> Tensor:
    return (x * y).sum(-1)


def _design_residual(beta: Tensor, y: Tensor, X: Tensor) -> Tensor:
    return y - (X * beta.unsqueeze(-2)).sum(-1)  # y - X beta, (B, n)


def _kl(beta: Tensor, p: Tensor, X=None) -> Tensor:
    # Reported as KL(p* || softmax(beta)) = cross-entropy - H(p*): same gradient, and 0 at the optimum.
    return (torch.xlogy(p, p) - p * torch.log_softmax(beta, -1)).sum(-1)


LOSSES: dict[str, Loss] = {
    "logistic": Loss(lambda beta, b, X=None: torch.nn.functional.softplus(-_bdot(beta, b)),
                     lambda beta, b, X=None: torch.sigmoid(_bdot(beta, b).neg_()).unsqueeze_(-1).mul(b).neg_()),
    "square": Loss(lambda beta, b, X=None: 0.5 * (beta - b).square().sum(-1), lambda beta, b, X=None: beta - b),
    "design_square": Loss(lambda beta, y, X: _design_residual(beta, y, X).square().sum(-1),
                          lambda beta, y, X: -2 * (X * _design_residual(beta, y, X).unsqueeze(-1)).sum(-2)),
    "cross_entropy": Loss(_kl, lambda beta, p, X=None: torch.softmax(beta, -1) - p),
}


def get_loss(name: str) -> Loss:
    """The loss called ``name``; ValueError listing the names if unknown."""
    return lookup(LOSSES, "loss", name)


def reference_direction(loss: str, target: Tensor, design: Tensor | None) -> Tensor:
    """The direction the values are projected on: ``beta*``; ``X^T y`` (design_square); ``p* - 1/k`` (cross_entropy)."""
    if loss == "design_square":
        return (design * target.unsqueeze(-1)).sum(-2)
    if loss == "cross_entropy":
        return target - 1.0 / target.shape[-1]
    return target
