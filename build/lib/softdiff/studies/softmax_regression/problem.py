"""Softmax regression (docs/theory.md 2): the problem, its closed-form derivatives, its convexity certificate
and leverage scores.

``L(x) = 1/2 ||softmax(Ax) - b||^2 + 1/2 ||diag(w) A x||^2``. Everything is torch (CPU or GPU, float32/64).
The approximate-Newton constants (``C``, ``eps0``, ``delta``) and the ``||B|| <= 16`` bound are [recalled] in
docs/theory.md: they are parameters here, never assumptions.
"""
from __future__ import annotations

import math

import torch
from torch import Tensor

from softdiff.errors import SoftdiffError
from softdiff.nets.activations import softmax_vjp


class DegenerateProblemError(SoftdiffError):
    """The unregularised problem is flat along a direction (``1_n`` in the range of ``A``)."""


class SoftmaxRegression:
    """The problem ``(A, b, w)``: loss, gradient, Hessian (closed form and diagonal + rank-2 split), HVP."""

    def __init__(self, A: Tensor, b: Tensor, w: Tensor | None = None):
        A, b = torch.as_tensor(A), torch.as_tensor(b)
        if A.dim() != 2:
            raise ValueError(f"A must be a 2-D (n, d) matrix, got shape {tuple(A.shape)}")
        if not torch.is_floating_point(A):
            A = A.double()
        n, d = A.shape
        if b.shape != (n,):
            raise ValueError(f"b must have shape ({n},) to match A ({n}, {d}), got {tuple(b.shape)}")
        w = torch.zeros(n, dtype=A.dtype, device=A.device) if w is None else torch.as_tensor(w)
        if w.dim() == 0:
            w = w.expand(n).clone()
        if w.shape != (n,):
            raise ValueError(f"w must be a scalar or have shape ({n},), got {tuple(w.shape)}")
        for name, t in (("A", A), ("b", b), ("w", w)):
            if not torch.isfinite(t).all():
                raise ValueError(f"{name} contains NaN or infinite entries")
        if (w < 0).any():
            raise ValueError("w must be non-negative (it holds regularisation weights)")
        self.A = A
        self.b = b.to(A.dtype).to(A.device)
        self.w2 = (w.to(A.dtype).to(A.device)) ** 2

    @property
    def shape(self) -> tuple[int, int]:
        return tuple(self.A.shape)

    def f(self, x: Tensor) -> Tensor:
        return torch.softmax(self.A @ x, dim=0)

    def loss(self, x: Tensor) -> Tensor:
        return self.loss_from_logits(self.A @ x)

    def grad(self, x: Tensor) -> Tensor:
        """``A^T ((diag(f) - f f^T) c + w^2 o Ax)``."""
        return self.grad_from_logits(self.A @ x)

    # The solvers keep the logits ``z = A x``: a line search along ``d`` then needs ``A d`` once, not one
    # pass over ``A`` per trial step.
    def loss_from_logits(self, z: Tensor) -> Tensor:
        return 0.5 * ((torch.softmax(z, 0) - self.b) ** 2).sum() + 0.5 * (self.w2 * z**2).sum()

    def grad_from_logits(self, z: Tensor) -> Tensor:
        f = torch.softmax(z, 0)
        return self.A.T @ (softmax_vjp(f, f - self.b, dim=0) + self.w2 * z)

    def hessian_parts(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """``(D, U, S)`` with ``hess = A^T (diag(D) + U S U^T) A``: ``D = B_diag + w^2``, ``U = [f, q]`` (n, 2)."""
        f = self.f(x)
        q = (2 * f - self.b) * f
        D = (f * (self.b - f)).sum() * f + q + self.w2
        alpha = ((3 * f - 2 * self.b) * f).sum()
        S = torch.stack([torch.stack([alpha, -torch.ones_like(alpha)]),
                         torch.stack([-torch.ones_like(alpha), torch.zeros_like(alpha)])])
        return D, torch.stack([f, q], dim=1), S

    def B(self, x: Tensor) -> Tensor:
        """docs/theory.md's ``B(x)`` term by term (the long form, an independent check of the split)."""
        f, b = self.f(x), self.b
        bf = b * f
        ff = f * f
        return (((3 * f - 2 * b) * f).sum() * torch.outer(f, f) + (f * (b - f)).sum() * torch.diag(f)
                + torch.diag((2 * f - b) * f) + torch.outer(bf, f) + torch.outer(f, bf)
                - 2 * torch.outer(ff, f) - 2 * torch.outer(f, ff))

    def hessian(self, x: Tensor) -> Tensor:
        """The exact Hessian from the split: ``A^T diag(D) A + (A^T U) S (A^T U)^T``, O(n d^2)."""
        D, U, S = self.hessian_parts(x)
        AU = self.A.T @ U
        return (self.A.T * D) @ self.A + AU @ S @ AU.T

    def hessian_full(self, x: Tensor) -> Tensor:
        """The Hessian from the long form of ``B`` (O(n^2 d); for checks on small problems)."""
        return self.A.T @ (self.B(x) + torch.diag(self.w2)) @ self.A

    def hvp(self, x: Tensor, v: Tensor) -> Tensor:
        """``hess(x) v`` without forming the Hessian: two passes over ``A``, O(n d)."""
        return self.hvp_operator(x)(v)

    def hvp_operator(self, x: Tensor):
        """``v -> hess(x) v`` with the Hessian parts at ``x`` computed once (for CG's many products)."""
        D, U, S = self.hessian_parts(x)

        def apply(v: Tensor) -> Tensor:
            Av = self.A @ v
            return self.A.T @ (D * Av + U @ (S @ (U.T @ Av)))

        return apply

    def degenerate_direction(self, rtol: float = 1e-8) -> Tensor | None:
        """``z`` with ``A z = 1_n`` when that exists and ``w = 0`` (the loss is then flat along ``z``)."""
        if (self.w2 > 0).any():
            return None
        ones = torch.ones(self.A.shape[0], 1, dtype=self.A.dtype, device=self.A.device)
        z = torch.linalg.lstsq(self.A.cpu(), ones.cpu()).solution.to(self.A.device)
        residual = torch.linalg.norm(self.A @ z - ones) / math.sqrt(self.A.shape[0])
        return z.squeeze(1) if residual < rtol else None


def convexity_certificate(problem: SoftmaxRegression, B_bound: float = 16.0, x: Tensor | None = None) -> dict:
    """docs/theory.md 2's condition ``min w_i^2 >= ||B|| + l / sigma_min(A)^2``, computed for the instance.

    ``B_bound`` bounds ``||B(x)||`` over all ``x`` (16 when ``||b||_2 <= 1``: [recalled]); the certified
    strong-convexity modulus is ``l = sigma_min(A)^2 (min w^2 - B_bound)``. With ``x``, the exact local
    ``||B(x)||`` and the smallest Hessian eigenvalue at ``x`` are reported too.
    """
    sigma_min = torch.linalg.svdvals(problem.A).min().item()
    min_w2 = problem.w2.min().item()
    report = {"min_w2": min_w2, "B_bound": B_bound, "sigma_min_A": sigma_min,
              "b_norm": torch.linalg.norm(problem.b).item(), "l": sigma_min**2 * (min_w2 - B_bound)}
    report["certified_strongly_convex"] = report["l"] > 0
    if x is not None:
        report["B_norm_at_x"] = _B_norm(problem, x)
        report["hessian_lambda_min_at_x"] = torch.linalg.eigvalsh(problem.hessian(x)).min().item()
    return report


def _B_norm(problem: SoftmaxRegression, x: Tensor) -> float:
    """``||B(x)||_2`` from the diagonal + rank-2 split (Lanczos on an O(n) matvec; dense for small n)."""
    D, U, S = problem.hessian_parts(x)
    Bd = (D - problem.w2).double().cpu()
    U, S = U.double().cpu(), S.double().cpu()
    n = Bd.shape[0]
    if n <= 500:
        return torch.linalg.matrix_norm(torch.diag(Bd) + U @ S @ U.T, ord=2).item()
    from scipy.sparse.linalg import LinearOperator, eigsh

    matvec = lambda v: (Bd * torch.from_numpy(v) + U @ (S @ (U.T @ torch.from_numpy(v)))).numpy()  # noqa: E731
    op = LinearOperator((n, n), matvec=matvec, dtype="float64")
    return float(abs(eigsh(op, k=1, which="LM", return_eigenvectors=False)[0]))


def smoothness_bound(problem: SoftmaxRegression, B_bound: float = 16.0) -> float:
    """``L = ||A||_2^2 (B_bound + max w^2)``: a gradient-Lipschitz bound for the fixed GD step."""
    return torch.linalg.matrix_norm(problem.A, ord=2).item() ** 2 * (B_bound + problem.w2.max().item())


def leverage_scores(M: Tensor, sketch: bool | None = None, generator: torch.Generator | None = None,
                    sketch_factor: int = 10) -> Tensor:
    """Leverage scores of the rows of ``M`` (n, d): exact by QR, or sketched for large d.

    The sketch is a CountSketch (each row added, with a random sign, to one of ``sketch_factor * d`` buckets:
    O(nnz(M)), unlike a dense Gaussian sketch's O(n d k)), then a JL projection of ``M R^{-1}`` with
    ``O(log n)`` columns; the estimates are within a constant factor of the exact scores, which is what
    leverage-score sampling needs.
    """
    n, d = M.shape
    if sketch is None:
        sketch = d > 200
    if not sketch:
        Q = torch.linalg.qr(M).Q
        return (Q**2).sum(1)
    k = min(n, sketch_factor * d)
    bucket = torch.randint(k, (n,), generator=generator).to(M.device)
    sign = (torch.randint(2, (n,), generator=generator) * 2 - 1).to(M.dtype).to(M.device)
    SM = torch.zeros(k, d, dtype=M.dtype, device=M.device).index_add_(0, bucket, M * sign[:, None])
    R = torch.linalg.qr(SM, mode="r").R
    r = max(8, int(math.ceil(4 * math.log(n))))
    G = torch.randn(d, r, generator=generator, dtype=M.dtype).to(M.device) / math.sqrt(r)
    return ((M @ torch.linalg.solve_triangular(R, G, upper=True)) ** 2).sum(1)
