"""The two-layer network of docs/theory.md 1.1 and its ReLU / exp comparison networks."""
from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from softdiff.nets.activations import exp_act

TWO_LAYER_ACTIVATIONS = ("softmax", "relu", "exp")


class TwoLayerNet(nn.Module):
    """``F(x) = m * A softmax(W^T x)`` with trained ``W`` (d_in, m) and fixed +-1 signs ``A`` (d_out, m).

    Scalings (each chosen so the output is O(1) at init and the NTK has a width limit):
      * ``softmax``: ``F = m * A softmax(W^T x)`` exactly as docs/theory.md 1.1 (``m * S_r`` is O(1)).
      * ``relu``: ``F = A relu(W^T x) / sqrt(m)`` (the standard NTK parameterisation of Du et al.).
      * ``exp``: ``F = A exp(W^T x) / sqrt(m)`` (the same parameterisation with exp units).
    ``coupled=True`` pairs neurons (equal ``w``, opposite ``a``) so that ``F = 0`` at init; it needs even width.
    """

    def __init__(self, d_in: int, d_out: int, width: int, sigma: float = 1.0, coupled: bool = True,
                 train_output: bool = False, activation: str = "softmax", seed: int | None = None):
        super().__init__()
        if activation not in TWO_LAYER_ACTIVATIONS:
            raise ValueError(f"unknown activation {activation!r}; choose one of: {', '.join(TWO_LAYER_ACTIVATIONS)}")
        if coupled and width % 2:
            raise ValueError(f"width={width} must be even for the coupled initialisation (or pass coupled=False)")
        self.d_in, self.d_out, self.width, self.sigma = d_in, d_out, width, sigma
        self.coupled, self.activation = coupled, activation
        gen = torch.Generator().manual_seed(seed) if seed is not None else None
        half = width // 2 if coupled else width
        W = torch.randn(d_in, half, generator=gen) * sigma
        A = (torch.randint(0, 2, (d_out, half), generator=gen) * 2 - 1).to(W.dtype)
        if coupled:
            W, A = torch.cat([W, W], dim=1), torch.cat([A, -A], dim=1)
        self.W = nn.Parameter(W)
        if train_output:
            self.A = nn.Parameter(A)
        else:
            self.register_buffer("A", A)

    def hidden(self, x: Tensor) -> Tensor:
        """Hidden units: ``softmax(W^T x)`` (a point of the simplex), ``relu(W^T x)`` or ``exp(W^T x)``."""
        return self._activate(x @ self.W)

    def _activate(self, z: Tensor) -> Tensor:
        if self.activation == "softmax":
            return torch.softmax(z, dim=-1)
        if self.activation == "relu":
            return torch.relu(z)
        return exp_act(z)

    @property
    def output_scale(self) -> float:
        """The constant in front of ``A hidden(x)``: ``m`` for softmax, ``1/sqrt(m)`` for relu / exp."""
        return float(self.width) if self.activation == "softmax" else 1.0 / math.sqrt(self.width)

    def forward(self, x: Tensor) -> Tensor:
        # At least float32 whatever autocast or the weights' dtype: F = m A softmax(W^T x) is O(1) only through the
        # cancellation of m terms of size ~1 (exactly 0 at the coupled init), which bf16's 8 mantissa bits cannot
        # resolve (rms 0.8 instead of 0 at m = 4,096 under bf16 autocast).
        dtype = torch.promote_types(x.dtype, torch.float32)
        with torch.autocast(x.device.type, enabled=False):
            z = x.to(dtype) @ self.W.to(dtype)
            return (self.output_scale * (self._activate(z) @ self.A.to(dtype).T)).to(x.dtype)

    def grad_W(self, x: Tensor) -> Tensor:
        """Closed-form ``dF_l(x_i)/dw_r`` as a tensor of shape ``(n, d_out, d_in, m)`` (docs/theory.md 1.2)."""
        z = x @ self.W
        if self.activation == "softmax":
            s = torch.softmax(z, dim=-1)                                    # (n, m)
            centred = self.A[None] - (s @ self.A.T)[..., None]              # a_{l,r} - <a_l, S(x)>
            coeff = s[:, None, :] * centred                                 # (n, d_out, m)
        else:
            slope = (z > 0).to(z.dtype) if self.activation == "relu" else exp_act(z)
            coeff = self.A[None] * slope[:, None, :]
        return torch.einsum("nlr,nd->nldr", self.output_scale * coeff, x)

    def extra_repr(self) -> str:
        return (f"d_in={self.d_in}, d_out={self.d_out}, width={self.width}, activation={self.activation}, "
                f"sigma={self.sigma}, coupled={self.coupled}")


# The theory's name for the network (docs/theory.md 1.1), kept for code that knows it by that name.
TwoLayerSoftmax = TwoLayerNet
