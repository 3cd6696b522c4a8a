"""Closed-form NTKs of two-layer softmax / relu / exp networks (W-only, normalised to have a width limit;
the conventions are in the package docstring)."""
from __future__ import annotations

import torch
from torch import Tensor

from softdiff.nets.activations import exp_act
from softdiff.nets.two_layer import TwoLayerNet


def ntk_scale(model: TwoLayerNet) -> float:
    """``kappa`` with ``H = J J^T / kappa``: the width ``m`` for softmax, 1 for relu / exp (see module doc)."""
    _check_two_layer(model)
    return float(model.width) if model.activation == "softmax" else 1.0


def _check_two_layer(model, activation: str | None = None) -> None:
    if not isinstance(model, TwoLayerNet):
        raise ValueError(f"the closed-form NTK needs a TwoLayerNet network, got {type(model).__name__}; "
                         "use empirical_ntk for other modules")
    if activation is not None and model.activation != activation:
        raise ValueError(f"this closed form is for activation={activation!r} but the network has "
                         f"activation={model.activation!r}; use two_layer_ntk to dispatch on it")


def _check_inputs(model: TwoLayerNet, x: Tensor, name: str) -> None:
    if x.ndim != 2 or x.shape[1] != model.d_in:
        raise ValueError(f"{name} must have shape (n, d_in={model.d_in}), got {tuple(x.shape)}")


def _coefficients(model: TwoLayerNet, x: Tensor, W: Tensor, A: Tensor, chunk: slice,
                  softmax_probs: Tensor | None, centre: Tensor | None) -> Tensor:
    """``c[l, i, r]`` with ``dF_l(x_i)/dw_r = output_scale * c[l, i, r] * x_i`` for the neurons in ``chunk``."""
    a = A[:, None, chunk]                                              # (d_out, 1, c)
    if model.activation == "softmax":
        # J_S^T a_l restricted to the chunk (the centring <a_l, S(x)> is global, hence precomputed).
        return softmax_probs[None, :, chunk] * (a - centre.T[..., None])
    z = x @ W[:, chunk]
    slope = (z > 0).to(z.dtype) if model.activation == "relu" else exp_act(z)
    return a * slope[None]


def two_layer_ntk(model: TwoLayerNet, x: Tensor, x2: Tensor | None = None, chunk_size: int = 4096,
                  dtype: torch.dtype | None = None) -> Tensor:
    """Closed-form W-only NTK ``J J^T / kappa`` of a two-layer net, ``(n*d_out, n2*d_out)`` output-major."""
    _check_two_layer(model)
    _check_inputs(model, x, "x")
    if x2 is not None:
        _check_inputs(model, x2, "x2")
    if chunk_size < 1:
        raise ValueError(f"chunk_size={chunk_size} must be a positive number of neurons")
    dtype = dtype or model.W.dtype
    W, A = model.W.detach().to(dtype), model.A.detach().to(dtype)
    xs = [x.detach().to(dtype)] + ([x2.detach().to(dtype)] if x2 is not None else [])
    probs, centres = [None] * len(xs), [None] * len(xs)
    if model.activation == "softmax":
        probs = [torch.softmax(xi @ W, dim=-1) for xi in xs]           # log-sum-exp inside softmax
        centres = [s @ A.T for s in probs]                                # <a_l, S(x_i)>: (n, d_out)
    n1, n2, d_out = xs[0].shape[0], xs[-1].shape[0], A.shape[0]
    gram = torch.zeros(d_out * n1, d_out * n2, dtype=dtype)
    for start in range(0, model.width, chunk_size):
        part = slice(start, min(start + chunk_size, model.width))
        c1 = _coefficients(model, xs[0], W, A, part, probs[0], centres[0]).reshape(d_out * n1, -1)
        if x2 is not None:
            c2 = _coefficients(model, xs[1], W, A, part, probs[1], centres[1]).reshape(d_out * n2, -1)
            gram.addmm_(c1, c2.T)
            continue
        for l in range(d_out):
            # Symmetric Gram: only the row blocks' upper part (columns from block l on), about half the flops.
            rows = slice(l * n1, (l + 1) * n1)
            gram[rows, l * n1:].addmm_(c1[rows], c1[l * n1:].T)
    if x2 is None:
        for l1 in range(d_out):                                            # mirror the skipped lower blocks
            for l2 in range(l1 + 1, d_out):
                gram[l2 * n1:(l2 + 1) * n1, l1 * n1:(l1 + 1) * n1] = gram[l1 * n1:(l1 + 1) * n1,
                                                                          l2 * n1:(l2 + 1) * n1].T
    scale = model.output_scale ** 2 / ntk_scale(model)  # output_scale is applied once, to the Gram matrix
    gram *= (xs[0] @ xs[-1].T).repeat(d_out, d_out).mul_(scale)            # x_i^T x_j, shared by all blocks
    return gram


def two_layer_softmax_ntk(model: TwoLayerNet, x: Tensor, x2: Tensor | None = None, chunk_size: int = 4096,
                          dtype: torch.dtype | None = None) -> Tensor:
    """docs/theory.md 1.4: ``H = J J^T / m`` of ``F = m A softmax(W^T x)``, ``(n*d_out, n2*d_out)`` output-major."""
    _check_two_layer(model, "softmax")
    return two_layer_ntk(model, x, x2, chunk_size, dtype)


def two_layer_relu_ntk(model: TwoLayerNet, x: Tensor, x2: Tensor | None = None, chunk_size: int = 4096,
                       dtype: torch.dtype | None = None) -> Tensor:
    """``H = J J^T`` of ``F = A relu(W^T x) / sqrt(m)`` (W only), output-major like the softmax kernel."""
    _check_two_layer(model, "relu")
    return two_layer_ntk(model, x, x2, chunk_size, dtype)


def two_layer_exp_ntk(model: TwoLayerNet, x: Tensor, x2: Tensor | None = None, chunk_size: int = 4096,
                      dtype: torch.dtype | None = None) -> Tensor:
    """``H = J J^T`` of ``F = A exp(W^T x) / sqrt(m)`` (W only), output-major like the softmax kernel."""
    _check_two_layer(model, "exp")
    return two_layer_ntk(model, x, x2, chunk_size, dtype)


