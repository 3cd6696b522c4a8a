"""Activation registry shared by every block, plus the softmax vector-Jacobian product.

Every activation acts on the last dimension (the hidden units). Normalised ones (``softmax``,
``relu_norm`` = :func:`scaled_relu_normalize`) are multiplied by the number of units ``m`` so that each unit is O(1) as width grows
(``m * softmax(z)_r = exp(z_r) / mean_s exp(z_s)``, docs/theory.md 1.1); the others are elementwise.
"""
from __future__ import annotations

import math
from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from softdiff.errors import lookup

EPS = 1e-10  # added to the denominator of every ``phi(z) / sum phi(z)`` map (docs/theory.md 3.2, E2)


def softmax_vjp(s: Tensor, g: Tensor, dim: int = -1) -> Tensor:
    """``J_S(z)^T g = s * (g - <s, g>)`` for ``s = softmax(z)`` along ``dim`` (the one primitive of docs/theory.md)."""
    return s * (g - (s * g).sum(dim=dim, keepdim=True))


def scaled_softmax(z: Tensor) -> Tensor:
    """``m * softmax(z)`` over the last dim: mean 1 over units, O(1) at any width."""
    return torch.softmax(z, dim=-1) * z.shape[-1]


def relu_normalize(z: Tensor) -> Tensor:
    """``relu(z) / sum relu(z)`` over the last dim: a point of the simplex (0 where every entry is <= 0)."""
    r = F.relu(z)
    return r / (r.sum(dim=-1, keepdim=True) + EPS)


def scaled_relu_normalize(z: Tensor) -> Tensor:
    """``m * relu_normalize(z)``: scaled like ``scaled_softmax``, mean 1 over units when any unit is active."""
    return relu_normalize(z) * z.shape[-1]


def exp_clamp(dtype: torch.dtype) -> float:
    """Where ``exp_act`` clamps its input in ``dtype``: 60 in float32 / bfloat16 / float64 (e^60 ~ 1e26 leaves room to
    sum many units), and 3 below the overflow point in narrower types (float16 overflows above ~11.09)."""
    return min(60.0, math.log(torch.finfo(dtype).max) - 3.0)


def exp_act(z: Tensor) -> Tensor:
    """Unnormalised ``exp(z)`` (the exp network of the theory); clamped per dtype (``exp_clamp``) to stay finite."""
    return torch.exp(z.clamp(max=exp_clamp(z.dtype)))


ACTIVATIONS: dict[str, Callable[[Tensor], Tensor]] = {
    "softmax": scaled_softmax,
    "relu": F.relu,
    "exp": exp_act,
    "gelu": F.gelu,
    "silu": F.silu,
    "sigmoid": torch.sigmoid,
    "tanh": torch.tanh,
    "relu_norm": scaled_relu_normalize,
    "identity": lambda z: z,
}


def get_activation(name: str) -> Callable[[Tensor], Tensor]:
    """The activation function called ``name``; ValueError listing the names if unknown."""
    return lookup(ACTIVATIONS, "activation", name)


class Activation(nn.Module):
    """Module wrapper around a registry activation, so it prints and hooks like any layer."""

    def __init__(self, name: str):
        super().__init__()
        self.name = name
        self.fn = get_activation(name)

    def forward(self, z: Tensor) -> Tensor:
        return self.fn(z)

    def extra_repr(self) -> str:
        return self.name
