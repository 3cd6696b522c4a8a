"""Solvers of softmax regression (docs/theory.md 2): gradient descent, Newton, approximate Newton with leverage-score
sparsification, Newton-CG and L-BFGS, behind one ``solve``. The approximate-Newton constants are parameters."""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import torch
from torch import Tensor

from softdiff.studies.softmax_regression.problem import (DegenerateProblemError, SoftmaxRegression, leverage_scores,
                                                        smoothness_bound)


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
