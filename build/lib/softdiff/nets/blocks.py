"""Residual two-layer block with a pluggable activation: ``x + V act(W norm(x) + cond)``."""
from __future__ import annotations

from torch import Tensor, nn

from softdiff.nets.activations import Activation


class TwoLayerMLP(nn.Module):
    """``V act(W x + U cond)`` with ``m = dim * width_mult`` hidden units; ``V`` starts at zero by default."""

    def __init__(self, dim: int, activation: str = "softmax", width_mult: int = 4, cond_dim: int = 0,
                 dropout: float = 0.0, zero_init_output: bool = True):
        super().__init__()
        hidden = dim * width_mult
        self.inp = nn.Linear(dim, hidden)
        self.cond = nn.Linear(cond_dim, hidden, bias=False) if cond_dim else None
        self.act = Activation(activation)
        self.dropout = nn.Dropout(dropout)
        self.out = nn.Linear(hidden, dim)
        if zero_init_output:  # residual blocks start as the identity (stable deep stacks)
            nn.init.zeros_(self.out.weight)
            nn.init.zeros_(self.out.bias)

    def forward(self, x: Tensor, cond: Tensor | None = None) -> Tensor:
        h = self.inp(x)
        if self.cond is not None and cond is not None:
            c = self.cond(cond)
            h = h + c.reshape(c.shape[0], *([1] * (h.dim() - 2)), c.shape[-1])
        return self.out(self.dropout(self.act(h)))


class TwoLayerBlock(nn.Module):
    """Pre-norm residual block ``x + V act(W norm(x) + U cond)`` over the last dimension.

    ``dim``: channels of the residual stream; ``width_mult``: hidden units per channel (m = dim * width_mult);
    ``cond_dim``: size of the conditioning vector added before the activation (0 for none).
    """

    def __init__(self, dim: int, activation: str = "softmax", width_mult: int = 4, cond_dim: int = 0,
                 dropout: float = 0.0, norm: bool = True):
        super().__init__()
        self.norm = nn.LayerNorm(dim) if norm else nn.Identity()
        self.mlp = TwoLayerMLP(dim, activation, width_mult, cond_dim, dropout)

    def forward(self, x: Tensor, cond: Tensor | None = None) -> Tensor:
        return x + self.mlp(self.norm(x), cond)
