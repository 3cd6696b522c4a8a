"""Softmax regression (docs/theory.md 2): the problem, its closed-form derivatives, and Newton-type solvers.

``L(x) = 1/2 ||softmax(Ax) - b||^2 + 1/2 ||diag(w) A x||^2``. Everything is torch (CPU or GPU, float32/64).
The approximate-Newton constants (``C``, ``eps0``, ``delta``) and the ``||B|| <= 16`` bound are [recalled] in
docs/theory.md: they are parameters here, never assumptions.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

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


@dataclass
class Result:
    x: Tensor
    converged: bool
    iterations: int
    method: str
    history: list[dict] = field(default_factory=list)  # per iteration: loss, grad_norm, step, time, rows_kept
    message: str = ""


def _solve_psd(H: Tensor, g: Tensor) -> Tensor:
    """``H^{-1} g`` by Cholesky, with growing damping if ``H`` is not positive definite."""
    eye = torch.eye(H.shape[0], dtype=H.dtype, device=H.device)
    damping = 0.0
    scale = H.diagonal().abs().max().clamp_min(1e-30).item()
    for _ in range(30):
        L, info = torch.linalg.cholesky_ex(H + damping * eye)
        if info.item() == 0:
            return torch.cholesky_solve(g[:, None], L).squeeze(1)
        damping = max(2 * damping, 1e-10 * scale)
    return torch.linalg.lstsq(H, g[:, None]).solution.squeeze(1)


def _armijo(problem: SoftmaxRegression, z: Tensor, Ad: Tensor, loss: Tensor, slope: Tensor,
            c: float = 1e-4, shrink: float = 0.5, max_halvings: int = 30) -> float:
    """Backtracking from the unit step along ``d`` (logits ``z = A x``, ``Ad = A d``, ``slope = g . d``);
    0 when ``d`` gives no sufficient decrease."""
    if slope >= 0:
        return 0.0
    t = 1.0
    for _ in range(max_halvings):
        if problem.loss_from_logits(z + t * Ad) <= loss + c * t * slope:
            return t
        t *= shrink
    return 0.0


def _descent_step(problem: SoftmaxRegression, x: Tensor, z: Tensor, loss: Tensor, g: Tensor,
                  direction: Tensor) -> Tensor:
    """A Newton-type step with a line search; if it fails, a Cauchy (steepest-descent) step with one."""
    Ad = problem.A @ direction
    slope = (g * direction).sum()
    if slope < 0 and -slope <= 1e3 * torch.finfo(loss.dtype).eps * loss.abs():
        # The predicted decrease is below the loss's float resolution, so Armijo cannot judge the step:
        # accept it when it shrinks the gradient (the local model is accurate this close to the optimum).
        if torch.linalg.norm(problem.grad_from_logits(z + Ad)) < torch.linalg.norm(g):
            return direction
    t = _armijo(problem, z, Ad, loss, slope)
    if t > 0:
        return t * direction
    curvature = (g * problem.hvp(x, g)).sum()
    length = (g * g).sum() / curvature if curvature > 0 else 1.0 / torch.linalg.norm(g)
    t = _armijo(problem, z, -length * (problem.A @ g), loss, -length * (g * g).sum())
    return -t * length * g


def _modified_newton_direction(H: Tensor, g: Tensor) -> Tensor:
    """``-|H|^{-1} g`` with eigenvalues replaced by their absolute values (floored): a descent direction
    also where the loss is not convex (far from the optimum of a peaked instance)."""
    evals, evecs = torch.linalg.eigh(H)
    floor = evals.abs().max().clamp_min(1e-300) * 1e-10
    return -evecs @ ((evecs.T @ g) / evals.abs().clamp_min(floor))


def _cg(hvp, g: Tensor, tol: float, max_iter: int) -> tuple[Tensor, bool]:
    """Truncated conjugate gradients for ``H p = -g``; stops at negative curvature (Newton-CG).

    Returns the direction and whether negative curvature was met."""
    p = torch.zeros_like(g)
    r = -g.clone()
    d = r.clone()
    rr = (r * r).sum()
    for _ in range(max_iter):
        Hd = hvp(d)
        curvature = (d * Hd).sum()
        if curvature <= 0:
            if p.abs().sum() > 0:
                return p, True
            # Negative curvature at once: a unit-length step along it (the line search shortens it); a step
            # of length ||g|| along -g crawls when the gradient is small in a non-convex region.
            return d / torch.linalg.norm(d), True
        alpha = rr / curvature
        p = p + alpha * d
        r = r - alpha * Hd
        rr_new = (r * r).sum()
        if rr_new.sqrt() <= tol:
            break
        d = r + (rr_new / rr) * d
        rr = rr_new
    return p, False


METHODS = ("auto", "gd", "newton", "approx_newton", "newton_cg", "lbfgs")


def solve(problem: SoftmaxRegression, method: str = "auto", x0: Tensor | None = None, tol: float = 1e-10,
          atol: float = 0.0, max_iter: int | None = None, seed: int | None = None, eps0: float = 0.3,
          C: float = 1.0, delta: float = 0.01, sketch: bool | None = None, B_bound: float = 16.0,
          line_search: bool = False, on_degenerate: str = "raise") -> Result:
    """Minimise the problem; stop when ``||g|| <= max(tol * ||g(x0)||, atol)``.

    ``approx_newton`` is the paper's method: unit steps ``x <- x - H~^{-1} g`` with ``H~`` the leverage-score
    sample of ``sqrt(D) A`` (keep row i with ``p_i = min(1, C sigma_i log(d/delta) / eps0^2)``, reweight by
    ``1/p_i``) plus the exact rank-2 term; the paper proves convergence from a good start only, and
    ``line_search=True`` adds a backtracking safeguard for other starts. ``newton`` uses the exact Hessian with
    absolute eigenvalues (a descent direction where the loss is not convex) and a backtracking line search.
    ``auto`` runs Newton-CG (a few Hessian-vector products per step: cheapest where the loss is convex) and,
    for ``d <= 2000``, switches to that exact Newton for good at the first negative curvature CG meets (where
    Newton-CG crawls); ``Result.method`` then reads ``newton_cg->newton``. ``lbfgs`` is scipy's L-BFGS-B
    (CPU, float64).
    """
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; choose one of: {', '.join(METHODS)}")
    if on_degenerate not in ("raise", "warn"):
        raise ValueError(f"on_degenerate={on_degenerate!r}; choose raise or warn")
    n, d = problem.shape
    switch_on_negative_curvature = method == "auto" and d <= 2000
    if method == "auto":
        method = "newton_cg"
    message = ""
    z = problem.degenerate_direction()
    if z is not None:
        message = ("degenerate problem: 1_n is in the range of A and w = 0, so the loss is flat along z with "
                   "A z = 1_n and the minimiser is not unique; add regularisation (w > 0)")
        if on_degenerate == "raise":
            raise DegenerateProblemError(message + ".")
    x = torch.zeros(d, dtype=problem.A.dtype, device=problem.A.device) if x0 is None else x0.clone().to(problem.A)
    max_iter = max_iter or {"gd": 100_000, "lbfgs": 5_000, "newton_cg": 500}.get(method, 200)
    gen = torch.Generator().manual_seed(seed if seed is not None else 0)
    z = problem.A @ x
    loss, g = problem.loss_from_logits(z), problem.grad_from_logits(z)
    target = max(tol * torch.linalg.norm(g).item(), atol)
    history: list[dict] = []
    start = time.perf_counter()

    def record(loss: Tensor, g: Tensor, step: float, rows: int | None) -> bool:
        gn = torch.linalg.norm(g).item()
        history.append({"loss": loss.item(), "grad_norm": gn, "step": step,
                        "time": time.perf_counter() - start, "rows_kept": rows})
        return gn <= target or not math.isfinite(gn)

    if record(loss, g, 0.0, None):
        return Result(x, True, 0, method, history, message)
    if method == "lbfgs":
        return _lbfgs(problem, x, target, max_iter, history, start, message)
    lr = 1.0 / smoothness_bound(problem, B_bound) if method == "gd" else None
    for it in range(1, max_iter + 1):
        rows = None
        if method == "gd":
            step_vec = -lr * g
        elif method in ("newton", "newton_cg->newton"):  # newton, or auto after its switch
            step_vec = _descent_step(problem, x, z, loss, g, _modified_newton_direction(problem.hessian(x), g))
        elif method == "newton_cg":
            gn = torch.linalg.norm(g)
            direction, negative = _cg(problem.hvp_operator(x), g, min(0.5, gn.sqrt().item()) * gn.item(), 10 * d)
            if negative and switch_on_negative_curvature:
                method = "newton_cg->newton"
                direction = _modified_newton_direction(problem.hessian(x), g)
            step_vec = _descent_step(problem, x, z, loss, g, direction)
        else:  # approx_newton: the paper's unit step with the sparsified Hessian
            H, rows = _sparsified_hessian(problem, x, eps0, C, delta, sketch, gen)
            if line_search:
                step_vec = _descent_step(problem, x, z, loss, g, _modified_newton_direction(H, g))
            else:
                step_vec = -_solve_psd(H, g)
        x = x + step_vec
        z = problem.A @ x  # recomputed, not updated, so that rounding does not accumulate over iterations
        loss, g = problem.loss_from_logits(z), problem.grad_from_logits(z)
        if record(loss, g, torch.linalg.norm(step_vec).item(), rows):
            gn = history[-1]["grad_norm"]
            if not math.isfinite(gn):
                return Result(x, False, it, method, history, "diverged (non-finite gradient)")
            return Result(x, True, it, method, history, message)
    return Result(x, False, max_iter, method, history, message or f"no convergence in {max_iter} iterations")


def _sparsified_hessian(problem: SoftmaxRegression, x: Tensor, eps0: float, C: float, delta: float,
                        sketch: bool | None, gen: torch.Generator) -> tuple[Tensor, int]:
    """``A_S^T diag(D_S / p_S) A_S + (A^T U) S (A^T U)^T`` with rows sampled by leverage scores of sqrt|D| A."""
    n, d = problem.shape
    D, U, S = problem.hessian_parts(x)
    M = D.abs().sqrt()[:, None] * problem.A
    sigma = leverage_scores(M, sketch, gen)
    p = (C * sigma * math.log(max(d, 2) / delta) / eps0**2).clamp(max=1.0)
    keep = torch.rand(n, generator=gen, dtype=p.dtype).to(p.device) < p
    A_s = problem.A[keep]
    AU = problem.A.T @ U
    H = (A_s.T * (D[keep] / p[keep])) @ A_s + AU @ S @ AU.T
    return H, int(keep.sum().item())


def _lbfgs(problem: SoftmaxRegression, x: Tensor, target: float, max_iter: int, history: list[dict],
           start: float, message: str) -> Result:
    """scipy.optimize's L-BFGS-B on the problem (float64 NumPy on the CPU), one record per iteration."""
    import numpy as np
    from scipy.optimize import minimize

    dtype, device = problem.A.dtype, problem.A.device
    as_t = lambda z: torch.from_numpy(z).to(dtype=dtype, device=device)  # noqa: E731
    prev = [x.detach().cpu().double().numpy()]

    def callback(xk):
        xt = as_t(xk)
        history.append({"loss": problem.loss(xt).item(), "grad_norm": torch.linalg.norm(problem.grad(xt)).item(),
                        "step": float(np.linalg.norm(xk - prev[0])), "time": time.perf_counter() - start,
                        "rows_kept": None})
        prev[0] = xk.copy()
        if history[-1]["grad_norm"] <= target:
            raise StopIteration

    try:
        minimize(lambda z: problem.loss(as_t(z)).item(), prev[0],
                 jac=lambda z: problem.grad(as_t(z)).double().cpu().numpy(), method="L-BFGS-B",
                 callback=callback, options={"gtol": 0.0, "ftol": 0.0, "maxiter": max_iter, "maxcor": 20})
    except StopIteration:
        pass
    x_final = as_t(prev[0])
    ok = history[-1]["grad_norm"] <= target
    note = message or ("" if ok else f"stopped at ||g|| = {history[-1]['grad_norm']:.2e} after "
                       f"{len(history) - 1} iterations (line search at float precision, or max_iter)")
    return Result(x_final, ok, len(history) - 1, "lbfgs", history, note)
