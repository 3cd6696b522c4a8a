"""``softdiff regress`` as a library: generated softmax-regression instances, every solver and scipy's on each,
the observed rates, and the report (report.md, results.json, one plot per instance)."""
from __future__ import annotations

import json
import math
import time
from functools import partial
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from softdiff.errors import ConfigError, check_at_most, check_choice, check_total
from softdiff.safe_io import check_output_dir, save_figure, write_text
from softdiff.studies.softmax_regression import SoftmaxRegression, convexity_certificate, solve

METHODS = ("auto", "newton", "approx_newton", "approx_newton+ls", "newton_cg", "lbfgs", "gd")
DEFAULT_METHODS = ("auto", "newton", "approx_newton", "approx_newton+ls", "newton_cg", "gd")  # lbfgs wraps scipy's
SCIPY = ("L-BFGS-B", "BFGS", "trust-ncg")
KINDS = ("gaussian", "sparse")
# Sizes a user can type, bounded before anything is allocated: the d x d Hessian and the n x d matrix A (float64,
# a few copies of each live at once), far above the presets.
MAX_INSTANCES, MAX_N, MAX_D, MAX_ENTRIES = 100, 10_000_000, 4096, 2**26


@dataclass
class Instance:
    """One generated problem. ``logit_std`` (the std of ``A x_true``) is the peakedness knob: max b is about 1/n
    at 1 and about 0.6-0.75 at 5 for the shipped sizes (n=2000 d=50 gives 0.009 / 0.24 / 0.71 at 1 / 3 / 5)."""

    n: int = 2000
    d: int = 50
    kind: str = "gaussian"
    logit_std: float = 1.0
    w: float = 1e-2


@dataclass
class RegressConfig:
    """Options of ``softdiff regress`` (the presets are softdiff/configs/regress/*.yaml)."""

    instances: list[Instance] = field(default_factory=lambda: [Instance()])
    methods: list[str] = field(default_factory=lambda: list(DEFAULT_METHODS))  # besides scipy's SCIPY baselines
    tol: float = 1e-8            # stop at ||g|| <= tol * ||g(0)||
    seed: int = 0                # instance i is drawn with seed + i
    output_dir: str = "runs/regress"

    def validate(self) -> None:
        if not self.instances or not self.methods:
            raise ConfigError("instances and methods must each list at least one entry.")
        for m in self.methods:
            check_choice("methods", m, METHODS)
        if len(self.instances) > MAX_INSTANCES:
            raise ConfigError(f"instances lists {len(self.instances)} instances; at most {MAX_INSTANCES}.")
        for i, inst in enumerate(self.instances):
            check_choice(f"instances[{i}].kind", inst.kind, KINDS)
            check_at_most(f"instances[{i}].n", inst.n, MAX_N)
            check_at_most(f"instances[{i}].d", inst.d, MAX_D, " (the Hessian is d x d)")
            check_total(f"instances[{i}]'s matrix A", inst.n * inst.d, MAX_ENTRIES,
                        {f"instances[{i}].n": inst.n, f"instances[{i}].d": inst.d})
            if inst.n < 2 or inst.d < 1 or not (inst.w > 0 and inst.logit_std > 0):
                raise ConfigError(f"instances[{i}] needs n >= 2, d >= 1, w > 0 and logit_std > 0 (got {inst}).")
        if not 0 < self.tol < 1:
            raise ConfigError(f"tol={self.tol} must be in (0, 1).")
        if not 0 <= self.seed < 2**32 - 16:
            raise ConfigError(f"seed={self.seed} must be in [0, 2**32 - 16).")


def make_instance(n: int, d: int, kind: str = "gaussian", scale: float = 1.0, w: float = 1e-2,
                  seed: int = 0, target: str = "realisable") -> tuple[SoftmaxRegression, dict]:
    """``A`` Gaussian (rows ~ N(0, I/d)) or sparse (10% nonzeros); ``b = softmax(A x_true)`` or a simplex point.

    ``scale`` is the standard deviation of the logits ``A x_true`` (``||x_true|| = scale sqrt(d)``).
    """
    g = torch.Generator().manual_seed(seed)
    A = torch.randn(n, d, generator=g, dtype=torch.float64) / math.sqrt(d)
    if kind == "sparse":
        A = A * (torch.rand(n, d, generator=g, dtype=torch.float64) < 0.1) * math.sqrt(10)
    elif kind != "gaussian":
        raise ConfigError(f"instance kind {kind!r} is not valid; choose gaussian or sparse.")
    x_true = torch.randn(d, generator=g, dtype=torch.float64)
    x_true = x_true / x_true.norm() * scale * math.sqrt(d)
    if target == "realisable":
        b = torch.softmax(A @ x_true, 0)
    else:
        b = torch.distributions.Dirichlet(torch.ones(n, dtype=torch.float64)).sample()
    info = {"n": n, "d": d, "kind": kind, "logit_std": scale, "w": w, "max_b": b.max().item()}
    return SoftmaxRegression(A, b, torch.full((n,), w, dtype=torch.float64)), info


def observed_rate(grad_norms: list[float]) -> dict:
    """Median ``g_{t+1}/g_t`` (linear rate) and median ``log g_{t+1} / log g_t`` (2 for quadratic)."""
    g = [x for x in grad_norms if x > 0]
    pairs = list(zip(g, g[1:]))
    ratio = float(np.median([b / a for a, b in pairs])) if pairs else math.nan
    orders = [math.log(b) / math.log(a) for a, b in pairs if a < 0.1 and b < a]
    return {"linear_ratio": ratio, "order": float(np.median(orders)) if orders else math.nan}


def run_scipy(problem: SoftmaxRegression, method: str, tol: float) -> dict:
    """scipy.optimize on the same problem (float64 NumPy), with its per-iteration gradient norms.

    Loss and gradient come from one evaluation (``jac=True``: one pass over ``A`` for the logits), and the
    callback reuses the gradient scipy just computed, and trust-ncg's Hessian products share the Hessian parts
    at each point (as softdiff's Newton-CG does), so scipy pays for nothing that softdiff does not.
    """
    from scipy.optimize import minimize  # only for the scipy baselines, not to read the config

    last: dict = {}

    def loss_and_grad(x):
        z = problem.A @ torch.from_numpy(x)
        g = problem.grad_from_logits(z).numpy()
        last.update(x=x.copy(), g=g)
        return problem.loss_from_logits(z).item(), g

    def grad_at(x):
        return last["g"] if "x" in last and np.array_equal(last["x"], x) else loss_and_grad(x)[1]

    x0 = np.zeros(problem.shape[1])
    g0 = float(np.linalg.norm(grad_at(x0)))
    norms, times = [g0], [0.0]
    start = time.perf_counter()

    def callback(xk, *args):
        norms.append(float(np.linalg.norm(grad_at(xk))))
        times.append(time.perf_counter() - start)
        if norms[-1] <= tol * g0:
            raise StopIteration  # our rule (2-norm) reached: stop here, as softdiff's solvers do

    def hessp(x, v):  # trust-ncg asks for many products at one point: build the Hessian parts once there
        if "hx" not in last or not np.array_equal(last["hx"], x):
            last.update(hx=x.copy(), hvp=problem.hvp_operator(torch.from_numpy(x)))
        return last["hvp"](torch.from_numpy(v)).numpy()

    # L-BFGS-B and BFGS test the largest gradient entry: tighten by sqrt(d) so that they never stop before
    # the 2-norm rule holds; the callback above ends the run when it does.
    options = {"gtol": tol * g0 / (1.0 if method == "trust-ncg" else math.sqrt(problem.shape[1])),
               "maxiter": 10_000}
    if method == "L-BFGS-B":
        options["ftol"] = 0.0  # only L-BFGS-B has a loss-decrease test; switch it off so gtol decides
    res = minimize(loss_and_grad, x0, jac=True, method=method, callback=callback, options=options,
                   **({"hessp": hessp} if method == "trust-ncg" else {}))
    return {"method": f"scipy {method}", "converged": bool(norms[-1] <= tol * g0), "iterations": len(norms) - 1,
            "seconds": time.perf_counter() - start, "grad_norms": norms, "times": times, "rows_kept": None,
            "final_grad_norm": norms[-1], "x": res.x}


def run_ours(problem: SoftmaxRegression, method: str, tol: float, seed: int) -> dict:
    start = time.perf_counter()
    base = method.removesuffix("+ls")
    res = solve(problem, base, tol=tol, seed=seed, max_iter=5_000 if base == "gd" else None,
                line_search=method.endswith("+ls"))
    rows = [h["rows_kept"] for h in res.history if h["rows_kept"] is not None]
    return {"method": method, "converged": res.converged, "iterations": res.iterations,
            "seconds": time.perf_counter() - start, "grad_norms": [h["grad_norm"] for h in res.history],
            "times": [h["time"] for h in res.history], "rows_kept": int(np.median(rows)) if rows else None,
            "final_grad_norm": res.history[-1]["grad_norm"], "x": res.x.numpy(), "message": res.message}


def plot_instance(results: list[dict], title: str, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for r in results:
        for ax, xs in zip(axes, (range(len(r["grad_norms"])), r["times"])):
            ax.semilogy(list(xs), r["grad_norms"], marker=".", label=r["method"])
    axes[0].set(xlabel="iteration", ylabel="||grad L||", title=title)
    axes[1].set(xlabel="seconds", ylabel="||grad L||", title="vs wall time")
    axes[1].set_xscale("symlog", linthresh=1e-3)
    axes[0].set_xscale("symlog", linthresh=10)
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    save_figure(fig, path, dpi=100)
    plt.close(fig)


def run_study(cfg: RegressConfig, command: str = "softdiff regress", log=partial(print, flush=True)) -> Path:
    """Solve every instance with every method and scipy's; write the report into ``cfg.output_dir``."""
    out = check_output_dir("output_dir", cfg.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    all_results, lines = [], ["# Softmax regression solvers", "",
                              f"`{command}`", ""]
    for i, inst in enumerate(cfg.instances):
        n, d, kind, scale, w = inst.n, inst.d, inst.kind, inst.logit_std, inst.w
        problem, info = make_instance(n, d, kind, scale, w, cfg.seed + i)
        cert = convexity_certificate(problem, x=torch.zeros(d, dtype=torch.float64))
        title = f"n={n} d={d} {kind} logit std={scale} w={w}"
        log(f"[{i + 1}/{len(cfg.instances)}] {title} (max b = {info['max_b']:.3f})")
        results = [run_ours(problem, m, cfg.tol, cfg.seed) for m in cfg.methods]
        results += [run_scipy(problem, m, cfg.tol) for m in SCIPY]
        x_ref = min(results, key=lambda r: r["final_grad_norm"])["x"]
        picture = out / f"instance-{i + 1}.png"
        plot_instance(results, title, picture)
        lines += [f"## Instance {i + 1}: {title}", "",
                  f"max b = {info['max_b']:.4f}; convexity certificate (B_bound = 16, [recalled]): "
                  f"min w^2 = {cert['min_w2']:.1e}, certified = {cert['certified_strongly_convex']}; "
                  f"Hessian lambda_min at 0 = {cert['hessian_lambda_min_at_x']:.2e}.", "",
                  "| method | converged | iterations | seconds | final ‖g‖ | ‖x − x_best‖ | rows kept | linear ratio | order |",
                  "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
        for r in results:
            rate = observed_rate(r["grad_norms"])
            r.update(rate, x_error=float(np.linalg.norm(r["x"] - x_ref)))
            lines.append(f"| {r['method']} | {r['converged']} | {r['iterations']} | {r['seconds']:.3f} | "
                         f"{r['final_grad_norm']:.1e} | {r['x_error']:.1e} | {r['rows_kept'] or '-'} | "
                         f"{rate['linear_ratio']:.3f} | {rate['order']:.2f} |")
            log(f"    {r['method']:<16} converged={r['converged']!s:<5} it={r['iterations']:<6} "
                  f"{r['seconds']:.3f}s rows={r['rows_kept'] or '-'}")
        lines += ["", f"![gradient norm]({picture.name})", ""]
        all_results.append({"instance": info, "certificate": cert,
                            "results": [{k: v for k, v in r.items() if k != "x"} for r in results]})
    lines += ["Linear ratio: median of ||g_{t+1}|| / ||g_t|| (docs/theory.md recalls 0.4 for approximate Newton, in "
              "distance to x*). Order: median log ||g_{t+1}|| / log ||g_t|| over steps with ||g|| < 0.1 (2 for "
              "quadratic convergence)."]
    write_text(out / "report.md", "\n".join(lines) + "\n")
    write_text(out / "results.json", json.dumps(all_results, indent=1))
    log(f"wrote {out / 'report.md'}, {out / 'results.json'} and {len(all_results)} plots")
    return out
