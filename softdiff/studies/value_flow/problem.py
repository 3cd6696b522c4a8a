"""The two models of docs/theory.md 3.1 with hand-written batched gradients: ``beta = V s(a)`` and the tied
``beta = U s(U a)``.

With ``g = dL/dbeta``: ``dL/dV = g s^T`` and ``dL/da = J_s(a)^T V^T g``; no autograd in the loop (the tests
check both models against autograd through :func:`objective`).
"""
from __future__ import annotations

import torch
from torch import Tensor

from softdiff.studies.value_flow.losses import Loss, get_loss
from softdiff.studies.value_flow.normalisations import Normalisation, get_normalisation


# Broadcast-and-sum instead of bmm: for the tiny matrices of these protocols a bmm dispatch costs several
# times more than a fused multiply + reduction, and per-step overhead is what bounds 1e6-step runs.
def bmv(M: Tensor, x: Tensor) -> Tensor:
    """Batched matrix-vector product (B, p, q) x (B, q) -> (B, p)."""
    return (M * x.unsqueeze(-2)).sum(-1)


def vtm(x: Tensor, M: Tensor) -> Tensor:
    """Batched ``M^T x``: (B, p) x (B, p, q) -> (B, q)."""
    return (M * x.unsqueeze(-1)).sum(-2)


class ValueSoftmaxProblem:
    """``beta = V s(a)``: forward quantities and gradients, batched over a leading seed dimension."""

    tied = False

    def __init__(self, norm: Normalisation, loss: Loss, target: Tensor, design: Tensor | None):
        self.norm, self.loss, self.target, self.design = norm, loss, target, design

    def forward(self, V: Tensor, a: Tensor) -> tuple[Tensor, Tensor]:
        s = self.norm.forward(a)
        return s, bmv(V, s)

    def grads(self, V: Tensor, a: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """``(s, loss, dL/dV, dL/da)``."""
        s, beta = self.forward(V, a)
        loss = self.loss.value(beta, self.target, self.design)
        g = self.loss.grad(beta, self.target, self.design)
        grad_a = self.norm.vjp(a, s, vtm(g, V))
        return s, loss, g.unsqueeze(-1) * s.unsqueeze(-2), grad_a

    def gd_steps(self, V: Tensor, a: Tensor, lr: float, n: int) -> None:
        """``n`` in-place gradient-descent steps; the loop body is kept to a dozen small kernels."""
        norm, grad, target, design = self.norm, self.loss.grad, self.target, self.design
        for _ in range(n):
            s = norm.forward(a)
            g = grad(bmv(V, s), target, design)
            grad_a = norm.vjp(a, s, vtm(g, V))
            V.addcmul_(g.unsqueeze(-1), s.unsqueeze(-2), value=-lr)  # V -= lr g s^T in one kernel
            a.sub_(grad_a, alpha=lr)


class TiedProblem(ValueSoftmaxProblem):
    """``beta = U s(U a)`` with one shared square ``U`` (docs/theory.md 3.1, massive activations)."""

    tied = True

    def forward(self, V: Tensor, a: Tensor) -> tuple[Tensor, Tensor]:
        s = self.norm.forward(bmv(V, a))
        return s, bmv(V, s)

    def grads(self, V: Tensor, a: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        z = bmv(V, a)
        s = self.norm.forward(z)
        beta = bmv(V, s)
        loss, g = self.loss.value(beta, self.target, self.design), self.loss.grad(beta, self.target, self.design)
        h = self.norm.vjp(z, s, vtm(g, V))  # dL/dz
        grad_V = g.unsqueeze(-1) * s.unsqueeze(-2) + h.unsqueeze(-1) * a.unsqueeze(-2)
        return s, loss, grad_V, vtm(h, V)

    def gd_steps(self, V: Tensor, a: Tensor, lr: float, n: int) -> None:
        for _ in range(n):
            _, _, grad_V, grad_a = self.grads(V, a)
            V.sub_(grad_V, alpha=lr)
            a.sub_(grad_a, alpha=lr)


def make_problem(tied: bool, normalization: str, loss: str, target: Tensor, design: Tensor | None
                 ) -> ValueSoftmaxProblem:
    """The problem object of either model; ValueError for an unknown loss or normalisation."""
    cls = TiedProblem if tied else ValueSoftmaxProblem
    return cls(get_normalisation(normalization), get_loss(loss), target, design)


def objective(V: Tensor, a: Tensor, loss: str, target, normalization: str = "softmax", design=None,
              tied: bool = False) -> Tensor:
    """The loss (B,) at ``(V, a)`` built from plain differentiable tensor ops (the autograd reference)."""
    Vb = V if V.ndim == 3 else V.unsqueeze(0)
    ab = a if a.ndim == 2 else a.unsqueeze(0)
    t = torch.as_tensor(target, dtype=V.dtype).expand(Vb.shape[0], -1)
    X = None if design is None else torch.as_tensor(design, dtype=V.dtype).expand(Vb.shape[0], -1, -1)
    problem = make_problem(tied, normalization, loss, t, X)
    _, beta = problem.forward(Vb, ab)
    return problem.loss.value(beta, t, X)
