"""The maps ``a -> s`` of the value-softmax model and their Jacobian-transpose products (docs/theory.md 3.2, E2).

Every ratio map ``s = phi(a) / (sum phi(a) + eps)`` has ``J^T u = phi'(a) / n o (u - <s, u>)``; softmax is the
case ``w = s`` (:func:`softdiff.nets.activations.softmax_vjp`), the unnormalised sigmoid is elementwise.
``relu_norm`` is :func:`softdiff.nets.activations.relu_normalize`, the same map attention uses.
"""
from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor

from softdiff.errors import lookup
from softdiff.nets.activations import EPS, relu_normalize, softmax_vjp


class Normalisation:
    """A map ``a -> s`` and its Jacobian-transpose product ``vjp(a, s, u) = J_s(a)^T u``."""

    def __init__(self, forward: Callable[[Tensor], Tensor], vjp: Callable[[Tensor, Tensor, Tensor], Tensor]):
        self.forward, self.vjp = forward, vjp


def _ratio(phi: Callable[[Tensor], Tensor], dphi: Callable[[Tensor], Tensor],
           forward: Callable[[Tensor], Tensor] | None = None) -> Normalisation:
    """``s = phi(z) / (sum phi(z) + eps)``, whose ``J^T u = phi'(z) / n o (u - <s, u>)``."""

    def ratio(a: Tensor) -> Tensor:
        p = phi(a)
        return p / (p.sum(-1, keepdim=True) + EPS)

    def vjp(a: Tensor, s: Tensor, u: Tensor) -> Tensor:
        weight = dphi(a) / (phi(a).sum(-1, keepdim=True) + EPS)
        return weight * (u - (s * u).sum(-1, keepdim=True))

    return Normalisation(forward or ratio, vjp)


NORMALISATIONS: dict[str, Normalisation] = {
    "softmax": Normalisation(lambda a: torch.softmax(a, -1), lambda a, s, u: softmax_vjp(s, u)),
    "l1": _ratio(torch.abs, torch.sign),
    "sum": _ratio(lambda z: z, torch.ones_like),
    "l2": _ratio(torch.square, lambda z: 2 * z),
    "relu_norm": _ratio(torch.relu, lambda z: (z > 0).to(z.dtype), forward=relu_normalize),
    "sigmoid": Normalisation(torch.sigmoid, lambda a, s, u: s * (1 - s) * u),
}


def get_normalisation(name: str) -> Normalisation:
    """The normalisation called ``name``; ValueError listing the names if unknown."""
    return lookup(NORMALISATIONS, "normalization", name)
