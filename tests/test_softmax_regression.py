import math

import numpy as np
import pytest
import torch
from scipy.optimize import minimize

from softdiff.studies.softmax_regression import (
    DegenerateProblemError, SoftmaxRegression, convexity_certificate, leverage_scores, solve,
)


def instance(n=40, d=5, scale=1.0, w=0.05, seed=0):
    g = torch.Generator().manual_seed(seed)
    A = torch.randn(n, d, generator=g, dtype=torch.float64) / math.sqrt(d)
    x_true = torch.randn(d, generator=g, dtype=torch.float64) * scale
    b = torch.softmax(A @ x_true, 0) + 0.01 * torch.rand(n, generator=g, dtype=torch.float64)
    return SoftmaxRegression(A, b, torch.full((n,), w, dtype=torch.float64))


def autograd_loss(p):
    return lambda x: 0.5 * ((torch.softmax(p.A @ x, 0) - p.b) ** 2).sum() + 0.5 * (p.w2 * (p.A @ x) ** 2).sum()


def test_gradient_and_hessians_match_autograd():
    p = instance()
    x = torch.randn(5, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    g_auto = torch.func.grad(autograd_loss(p))(x)
    H_auto = torch.func.hessian(autograd_loss(p))(x)
    assert torch.allclose(p.grad(x), g_auto, atol=1e-9)
    assert torch.allclose(p.hessian(x), H_auto, atol=1e-9)        # diagonal + rank-2 split
    assert torch.allclose(p.hessian_full(x), H_auto, atol=1e-9)   # docs/theory.md's long form of B
    v = torch.randn(5, dtype=torch.float64)
    assert torch.allclose(p.hvp(x, v), H_auto @ v, atol=1e-9)
    assert torch.allclose(p.loss(x), autograd_loss(p)(x), atol=1e-12)


def test_split_reassembles_B():
    p = instance(n=12, d=3)
    x = torch.randn(3, dtype=torch.float64)
    D, U, S = p.hessian_parts(x)
    assert torch.allclose(torch.diag(D - p.w2) + U @ S @ U.T, p.B(x), atol=1e-12)


@pytest.mark.parametrize("method", ["newton", "approx_newton", "newton_cg", "lbfgs", "gd", "auto"])
def test_every_method_reaches_scipys_minimiser(method):
    p = instance(n=60, d=4, w=0.3)
    ref = minimize(lambda x: autograd_loss(p)(torch.from_numpy(x)).item(), np.zeros(4),
                   jac=lambda x: p.grad(torch.from_numpy(x)).numpy(), method="BFGS", options={"gtol": 1e-12})
    res = solve(p, method, tol=1e-6, seed=0, max_iter=200_000 if method == "gd" else None)
    assert res.converged, res.message
    assert np.allclose(res.x.numpy(), ref.x, atol=1e-5)


def test_newton_converges_quadratically():
    p = instance(n=200, d=6, scale=2.0, w=0.01)
    res = solve(p, "newton", tol=1e-14)
    g = [h["grad_norm"] for h in res.history]
    # In the quadratic phase, g_{t+1} <= K g_t^2 with a moderate K; a linear method fails this at small g.
    tail = [(a, b) for a, b in zip(g, g[1:]) if 1e-12 < a < 1e-3]
    assert tail and all(b <= 1e3 * a * a for a, b in tail)


def test_auto_stays_hessian_free_where_the_loss_is_convex():
    p = instance(n=400, d=6, scale=1.0, w=0.1)
    assert torch.linalg.eigvalsh(p.hessian(torch.zeros(6, dtype=torch.float64))).min() > 0
    res, ref = solve(p, "auto", tol=1e-12), solve(p, "newton", tol=1e-12)
    assert res.converged and res.method == "newton_cg"
    assert torch.allclose(res.x, ref.x, atol=1e-10)


def test_approx_newton_converges_linearly_keeping_few_rows():
    p = instance(n=4000, d=10, scale=2.0, w=0.01, seed=3)
    res = solve(p, "approx_newton", tol=1e-10, eps0=0.5, seed=0)
    assert res.converged
    kept = [h["rows_kept"] for h in res.history[1:]]
    assert max(kept) < 0.5 * 4000
    g = [h["grad_norm"] for h in res.history]
    ratios = [b / a for a, b in zip(g, g[1:])]
    assert np.median(ratios) < 0.5  # each step cuts the gradient by a constant factor


def test_leverage_scores_exact_and_sketched():
    M = torch.randn(500, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    exact = leverage_scores(M, sketch=False)
    assert math.isclose(exact.sum().item(), 8.0, rel_tol=1e-10)  # they sum to the rank
    H = M @ torch.linalg.pinv(M.T @ M) @ M.T
    assert torch.allclose(exact, H.diagonal(), atol=1e-10)
    sketched = leverage_scores(M, sketch=True, generator=torch.Generator().manual_seed(0))
    # A CountSketch with 10 d buckets estimates within a constant factor (slightly high on average: the
    # inverse of the sketched Gram overestimates), which is all leverage-score sampling needs.
    ratio = sketched / exact
    assert 0.8 < ratio.median().item() < 1.5
    assert ratio.quantile(0.05).item() > 0.4 and ratio.quantile(0.95).item() < 2.5


def test_degenerate_problem_is_detected():
    A = torch.randn(30, 3, dtype=torch.float64)
    A[:, 0] = 1.0  # 1_n in the range of A
    p = SoftmaxRegression(A, torch.full((30,), 1 / 30, dtype=torch.float64))
    assert p.degenerate_direction() is not None
    with pytest.raises(DegenerateProblemError, match="1_n is in the range of A"):
        solve(p)
    regularised = SoftmaxRegression(A, p.b, torch.full((30,), 0.1, dtype=torch.float64))
    assert regularised.degenerate_direction() is None and solve(regularised).converged


def test_convexity_certificate():
    p = instance(n=50, d=4, w=5.0)
    cert = convexity_certificate(p, B_bound=16.0, x=torch.zeros(4, dtype=torch.float64))
    assert cert["certified_strongly_convex"]  # min w^2 = 25 > B_bound = 16
    assert not convexity_certificate(instance(n=50, d=4, w=1.0))["certified_strongly_convex"]
    assert cert["l"] == pytest.approx(cert["sigma_min_A"] ** 2 * (25.0 - 16.0))
    assert cert["B_norm_at_x"] <= 16.0 and cert["hessian_lambda_min_at_x"] > 0


@pytest.mark.parametrize("args,needle", [
    ((torch.randn(5, 2), torch.randn(4)), "b must have shape"),
    ((torch.randn(5), torch.randn(5)), "2-D"),
    ((torch.full((5, 2), float("nan")), torch.randn(5)), "NaN"),
    ((torch.randn(5, 2), torch.randn(5), -torch.ones(5)), "non-negative"),
])
def test_bad_input_raises(args, needle):
    with pytest.raises(ValueError, match=needle):
        SoftmaxRegression(*args)


@pytest.mark.parametrize("method", ["newton", "auto", "newton_cg"])
def test_newton_recovers_from_a_nonconvex_start(method):
    # Peaked b and weak regularisation: the Hessian at x = 0 is indefinite; a plain Newton step stalls there.
    g = torch.Generator().manual_seed(0)
    A = torch.randn(300, 8, generator=g, dtype=torch.float64) / math.sqrt(8)
    x_true = torch.randn(8, generator=g, dtype=torch.float64)
    b = torch.softmax(A @ (x_true / x_true.norm() * 5 * math.sqrt(8)), 0)
    p = SoftmaxRegression(A, b, torch.full((300,), 1e-3, dtype=torch.float64))
    assert torch.linalg.eigvalsh(p.hessian(torch.zeros(8, dtype=torch.float64))).min() < 0
    res = solve(p, method, tol=1e-8)
    assert res.converged, res.message
    if method == "auto":  # CG meets the negative curvature at x = 0 and hands over to exact Newton
        assert res.method == "newton_cg->newton"
    ref = minimize(lambda x: p.loss(torch.from_numpy(x)).item(), np.zeros(8),
                   jac=lambda x: p.grad(torch.from_numpy(x)).numpy(),
                   hessp=lambda x, v: p.hvp(torch.from_numpy(x), torch.from_numpy(v)).numpy(), method="trust-ncg",
                   options={"gtol": 1e-10})
    assert p.loss(res.x).item() <= ref.fun + 1e-10


def test_regress_command_writes_report(tmp_path, capsys):
    import json

    from softdiff.cli import main as softdiff_main

    assert softdiff_main(["regress", "--preset", "quick", "methods=[newton,approx_newton+ls]",
                          "--output-dir", str(tmp_path), "--quiet"]) == 0
    assert capsys.readouterr().out.splitlines() == [f"wrote {tmp_path / 'report.md'} and {tmp_path / 'results.json'}"]
    results = json.loads((tmp_path / "results.json").read_text())
    assert len(results) == 2 and (tmp_path / "instance-1.png").is_file()
    by_method = {r["method"]: r for r in results[0]["results"]}
    assert by_method["newton"]["converged"] and by_method["newton"]["order"] > 1.5  # quadratic
    assert {"scipy L-BFGS-B", "scipy trust-ncg"} <= set(by_method)
    assert "## Instance 1" in (tmp_path / "report.md").read_text()
    assert softdiff_main(["regress", "methods=[bogus]"]) == 2
    assert "choose one of" in capsys.readouterr().err


def test_B_norm_from_the_split_matches_dense():
    from softdiff.studies.softmax_regression.problem import _B_norm

    p = instance(n=800, d=5, scale=3.0)
    x = torch.randn(5, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    assert _B_norm(p, x) == pytest.approx(torch.linalg.matrix_norm(p.B(x), ord=2).item(), rel=1e-8)
