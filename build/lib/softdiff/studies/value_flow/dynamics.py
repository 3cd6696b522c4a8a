"""Gradient descent / gradient flow on the value-softmax model ``beta = V s(a)`` (docs/theory.md 3).

Everything is batched over a leading seed dimension: ``V`` is (B, D, N), ``a`` is (B, N), so a sweep of many
initialisations is one call. Gradients are written by hand (no autograd in the loop) from

    g = dL/dbeta,   dL/dV = g s^T,   dL/da = J_s(a)^T V^T g,

where every normalisation's Jacobian-transpose product has the form ``w o (u - <s, u>)`` (``w = s`` for softmax,
so it reuses :func:`softdiff.nets.activations.softmax_vjp`), except the unnormalised sigmoid. ``method="gd"`` is
full-batch gradient descent with a constant step; ``method="flow"`` integrates the gradient-flow ODE with
torchdiffeq. The tied model ``beta = U softmax(U a)`` (massive activations) is :func:`tied_value_softmax_flow`.
"""
from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass, field, fields
from typing import Any, Callable, Sequence

import numpy as np
import torch
from torch import Tensor
from torchdiffeq import odeint

from softdiff.errors import SoftdiffError, lookup
from softdiff.nets.activations import EPS, relu_normalize, softmax_vjp
from softdiff.safe_io import finite_json

_ADAPTIVE_ODE_METHODS = {"dopri5", "dopri8", "bosh3", "fehlberg2", "adaptive_heun"}


class FlowIntegrationError(SoftdiffError):
    """The adaptive ODE solver gave up (non-smooth map or stiff dynamics)."""


# ---------------------------------------------------------------------------------------------- normalisations
def _unit_sum_vjp(weight: Tensor, s: Tensor, u: Tensor) -> Tensor:
    """``J^T u = weight o (u - <s, u>)``: the shared form of every ``phi(z) / sum phi(z)`` map."""
    return weight * (u - (s * u).sum(-1, keepdim=True))


class Normalisation:
    """A map ``a -> s`` and its Jacobian-transpose product ``J_s(a)^T u``."""

    def __init__(self, forward: Callable[[Tensor], Tensor], vjp: Callable[[Tensor, Tensor, Tensor], Tensor]):
        self.forward, self.vjp = forward, vjp


def _ratio(phi: Callable[[Tensor], Tensor], dphi: Callable[[Tensor], Tensor]) -> Normalisation:
    """``s = phi(z) / (sum phi(z) + eps)``, whose ``J^T u = phi'(z) / n o (u - <s, u>)``."""

    def forward(a: Tensor) -> Tensor:
        p = phi(a)
        return p / (p.sum(-1, keepdim=True) + EPS)

    def vjp(a: Tensor, s: Tensor, u: Tensor) -> Tensor:
        return _unit_sum_vjp(dphi(a) / (phi(a).sum(-1, keepdim=True) + EPS), s, u)

    return Normalisation(forward, vjp)


NORMALISATIONS: dict[str, Normalisation] = {
    "softmax": Normalisation(lambda a: torch.softmax(a, -1), lambda a, s, u: softmax_vjp(s, u)),
    "l1": _ratio(torch.abs, torch.sign),
    "sum": _ratio(lambda z: z, torch.ones_like),
    "l2": _ratio(torch.square, lambda z: 2 * z),
    "relu_norm": Normalisation(relu_normalize, _ratio(torch.relu, lambda z: (z > 0).to(z.dtype)).vjp),
    "sigmoid": Normalisation(torch.sigmoid, lambda a, s, u: s * (1 - s) * u),
}


def get_normalisation(name: str) -> Normalisation:
    """The normalisation called ``name``; ValueError listing the names if unknown."""
    return lookup(NORMALISATIONS, "normalization", name)


# ------------------------------------------------------------------------------------------------------ losses
def _bdot(x: Tensor, y: Tensor) -> Tensor:
    return (x * y).sum(-1)


class Loss:
    """``value(beta, target, X) -> (B,)`` and ``grad(beta, target, X) -> dL/dbeta (B, D)``, batched over seeds."""

    def __init__(self, value: Callable[..., Tensor], grad: Callable[..., Tensor]):
        self.value, self.grad = value, grad


def _design_residual(beta: Tensor, y: Tensor, X: Tensor) -> Tensor:
    return y - (X * beta.unsqueeze(-2)).sum(-1)  # y - X beta, (B, n)


def _kl(beta: Tensor, p: Tensor, X=None) -> Tensor:
    # Reported as KL(p* || softmax(beta)) = cross-entropy - H(p*): same gradient, and 0 at the optimum.
    return (torch.xlogy(p, p) - p * torch.log_softmax(beta, -1)).sum(-1)


LOSSES: dict[str, Loss] = {
    "logistic": Loss(lambda beta, b, X=None: torch.nn.functional.softplus(-_bdot(beta, b)),
                     lambda beta, b, X=None: torch.sigmoid(_bdot(beta, b).neg_()).unsqueeze_(-1).mul(b).neg_()),
    "square": Loss(lambda beta, b, X=None: 0.5 * (beta - b).square().sum(-1), lambda beta, b, X=None: beta - b),
    "design_square": Loss(lambda beta, y, X: _design_residual(beta, y, X).square().sum(-1),
                          lambda beta, y, X: -2 * (X * _design_residual(beta, y, X).unsqueeze(-1)).sum(-2)),
    "cross_entropy": Loss(_kl, lambda beta, p, X=None: torch.softmax(beta, -1) - p),
}


def get_loss(name: str) -> Loss:
    """The loss called ``name``; ValueError listing the names if unknown."""
    return lookup(LOSSES, "loss", name)


# ---------------------------------------------------------------------------------------------- the two models
# Broadcast-and-sum instead of bmm: for the tiny matrices of these protocols a bmm dispatch costs several
# times more than a fused multiply + reduction, and per-step overhead is what bounds 1e6-step runs.
def _bmv(M: Tensor, x: Tensor) -> Tensor:
    """Batched matrix-vector product (B, p, q) x (B, q) -> (B, p)."""
    return (M * x.unsqueeze(-2)).sum(-1)


def _vtm(x: Tensor, M: Tensor) -> Tensor:
    """Batched ``M^T x``: (B, p) x (B, p, q) -> (B, q)."""
    return (M * x.unsqueeze(-1)).sum(-2)


class _ValueSoftmaxProblem:
    """``beta = V s(a)``: value gradients and forward quantities, all batched."""

    tied = False

    def __init__(self, norm: Normalisation, loss: Loss, target: Tensor, design: Tensor | None):
        self.norm, self.loss, self.target, self.design = norm, loss, target, design

    def forward(self, V: Tensor, a: Tensor) -> tuple[Tensor, Tensor]:
        s = self.norm.forward(a)
        return s, _bmv(V, s)

    def grads(self, V: Tensor, a: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """``(s, loss, dL/dV, dL/da)``."""
        s, beta = self.forward(V, a)
        loss = self.loss.value(beta, self.target, self.design)
        g = self.loss.grad(beta, self.target, self.design)
        grad_a = self.norm.vjp(a, s, _vtm(g, V))
        return s, loss, g.unsqueeze(-1) * s.unsqueeze(-2), grad_a

    def gd_steps(self, V: Tensor, a: Tensor, lr: float, n: int) -> None:
        """``n`` in-place gradient-descent steps; the loop body is kept to a dozen small kernels."""
        norm, grad, target, design = self.norm, self.loss.grad, self.target, self.design
        for _ in range(n):
            s = norm.forward(a)
            g = grad(_bmv(V, s), target, design)
            grad_a = norm.vjp(a, s, _vtm(g, V))
            V.addcmul_(g.unsqueeze(-1), s.unsqueeze(-2), value=-lr)  # V -= lr g s^T in one kernel
            a.sub_(grad_a, alpha=lr)


class _TiedProblem(_ValueSoftmaxProblem):
    """``beta = U s(U a)`` with one shared square ``U`` (docs/theory.md 3, massive activations)."""

    tied = True

    def forward(self, V: Tensor, a: Tensor) -> tuple[Tensor, Tensor]:
        s = self.norm.forward(_bmv(V, a))
        return s, _bmv(V, s)

    def grads(self, V: Tensor, a: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        z = _bmv(V, a)
        s = self.norm.forward(z)
        beta = _bmv(V, s)
        loss, g = self.loss.value(beta, self.target, self.design), self.loss.grad(beta, self.target, self.design)
        h = self.norm.vjp(z, s, _vtm(g, V))  # dL/dz
        grad_V = g.unsqueeze(-1) * s.unsqueeze(-2) + h.unsqueeze(-1) * a.unsqueeze(-2)
        return s, loss, grad_V, _vtm(h, V)

    def gd_steps(self, V: Tensor, a: Tensor, lr: float, n: int) -> None:
        for _ in range(n):
            _, _, grad_V, grad_a = self.grads(V, a)
            V.sub_(grad_V, alpha=lr)
            a.sub_(grad_a, alpha=lr)


# ------------------------------------------------------------------------------------------------- the history
@dataclass
class FlowHistory:
    """Trajectory records, indexed first by record (log-spaced steps or times), then by seed if batched.

    ``steps`` are GD step counts (``method="gd"``) or ODE times (``"flow"``); ``times = steps * lr`` for GD.
    ``s``/``a``/``value_norms``/``projections`` are (R, [B,] N); the scalar series are (R, [B]).
    ``entropy`` is that of ``|s| / sum |s|`` (so it is defined for unnormalised maps too); ``max_share`` is
    ``max_i s_i``; ``winner`` is ``argmax_i s_i``; ``projections`` are ``V^T d`` with ``d`` the loss's
    reference direction (``beta*``; ``X^T y`` for design_square; ``p* - 1/k`` for cross_entropy);
    ``dominant_norm`` is the winner's value (column) norm; ``grad_norms`` is ``||(dL/dV, dL/da)||``.
    """

    steps: Tensor
    times: Tensor
    s: Tensor
    a: Tensor
    entropy: Tensor
    max_share: Tensor
    winner: Tensor
    value_norms: Tensor
    dominant_norm: Tensor
    projections: Tensor
    loss: Tensor
    grad_norms: Tensor
    V: Tensor
    a_final: Tensor
    meta: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready nested lists (NaN/inf as None)."""
        out: dict[str, Any] = {"meta": self.meta}
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, Tensor):
                arr = value.detach().cpu().numpy()
                out[f.name] = np.where(np.isfinite(arr), arr, np.nan).tolist() if arr.dtype.kind == "f" \
                    else arr.tolist()
        return finite_json(out)


def _entropy(s: Tensor) -> Tensor:
    p = s.abs() / (s.abs().sum(-1, keepdim=True) + EPS)
    return -torch.xlogy(p, p).sum(-1)


def _record_steps(steps: int, record_every: int | str, per_decade: int = 10) -> list[int]:
    """Record points: 0, then log-spaced (``"log"``, ``per_decade`` a decade) or every ``k`` steps, always ``steps``."""
    if record_every == "log":
        decades = max(math.log10(max(steps, 1)), 1e-12)
        pts = np.unique(np.round(np.logspace(0, decades, int(per_decade * decades) + 1)).astype(np.int64))
        return sorted({0, *[int(p) for p in pts if 0 < p <= steps], steps})
    if isinstance(record_every, (int, np.integer)) and not isinstance(record_every, bool) and record_every > 0:
        return sorted({*range(0, steps + 1, int(record_every)), steps})
    raise ValueError(f"record_every={record_every!r} must be 'log' or a positive int")


def _record_times(t_max: float, record_every: int | str, per_decade: int = 10, t_min: float = 1e-2) -> list[float]:
    """ODE record times: 0, then log-spaced from ``t_min`` (``"log"``) or ``record_every`` equal intervals."""
    if record_every == "log":
        if t_max <= t_min:
            return [0.0, float(t_max)]
        n = int(per_decade * math.log10(t_max / t_min)) + 1
        return [0.0, *np.geomspace(t_min, t_max, n).tolist()]
    if isinstance(record_every, (int, np.integer)) and not isinstance(record_every, bool) and record_every > 0:
        return np.linspace(0.0, t_max, int(record_every) + 1).tolist()
    raise ValueError(f"record_every={record_every!r} must be 'log' or a positive int (number of intervals)")


# ----------------------------------------------------------------------------------------------- the drivers
def _as_tensor(name: str, x: Any, dtype: torch.dtype, device: torch.device | None) -> Tensor:
    if x is None:
        raise ValueError(f"{name} is required")
    t = x if isinstance(x, Tensor) else torch.as_tensor(np.asarray(x))
    return t.to(device=device, dtype=dtype).clone()  # a private copy: the GD loop updates it in place


def _reference_direction(loss: str, target: Tensor, design: Tensor | None) -> Tensor:
    if loss == "design_square":
        return (design * target.unsqueeze(-1)).sum(-2)
    if loss == "cross_entropy":
        return target - 1.0 / target.shape[-1]
    return target


def _prepare(V0, a0, loss, target, normalization, design, dtype, device, tied, seed):
    lossfn, norm = get_loss(loss), get_normalisation(normalization)
    if device is None:
        device = V0.device if isinstance(V0, Tensor) else torch.device("cpu")
    V = _as_tensor("V0", V0, dtype, device)
    if V.ndim not in (2, 3):
        raise ValueError(f"V0 must have shape (D, N) or (B, D, N), got {tuple(V.shape)}")
    batched = V.ndim == 3
    V = V if batched else V.unsqueeze(0)
    B, D, N = V.shape
    if tied and D != N:
        raise ValueError(f"the tied model needs a square U0, got {tuple(V.shape[1:])}")
    a = torch.zeros(B, N, dtype=dtype, device=device) if a0 is None else _as_tensor("a0", a0, dtype, device)
    a = a.expand(B, N).clone() if a.shape in ((N,), (1, N), (B, N)) else None
    if a is None:
        raise ValueError(f"a0 must have shape ({N},) or ({B}, {N}) to match V0 of shape {tuple(V0.shape)}")
    X = None
    if loss == "design_square":
        if design is None:
            raise ValueError("loss='design_square' needs design=X of shape (n, D) or (B, n, D)")
        X = _as_tensor("design", design, dtype, device)
        X = X.expand(B, *X.shape[-2:]) if X.ndim in (2, 3) and X.shape[-1] == D else None
        if X is None:
            raise ValueError(f"design must have shape (n, {D}) or ({B}, n, {D})")
    if target is None and loss in ("logistic", "square"):
        gen = torch.Generator().manual_seed(0 if seed is None else seed)
        target = torch.randn(D, generator=gen, dtype=torch.float64)
        target = target / target.norm()
    y = _as_tensor("target", target, dtype, device)
    width = X.shape[-2] if X is not None else D
    if y.shape[-1] != width or y.ndim > 2 or (y.ndim == 2 and y.shape[0] not in (1, B)):
        raise ValueError(f"target must have shape ({width},) or ({B}, {width}) for loss={loss!r}, got {tuple(y.shape)}")
    y = y.expand(B, width).contiguous()
    cls = _TiedProblem if tied else _ValueSoftmaxProblem
    return cls(norm, lossfn, y, X), V, a, batched


def _snapshot(problem: _ValueSoftmaxProblem, ref: Tensor, V: Tensor, a: Tensor) -> dict[str, Tensor]:
    s, loss, gV, ga = problem.grads(V, a)
    value_norms = V.norm(dim=-2)
    winner = s.argmax(-1)
    return {
        "s": s, "a": a.clone(), "entropy": _entropy(s), "max_share": s.max(-1).values, "winner": winner,
        "value_norms": value_norms, "dominant_norm": value_norms.gather(-1, winner.unsqueeze(-1)).squeeze(-1),
        "projections": _vtm(ref, V), "loss": loss,
        "grad_norms": (gV.square().sum((-1, -2)) + ga.square().sum(-1)).sqrt(),
    }


def _history(records: list[dict[str, Tensor]], steps: Sequence[float], times: Sequence[float], V: Tensor,
             a: Tensor, batched: bool, meta: dict) -> FlowHistory:
    stacked = {k: torch.stack([r[k] for r in records]) for k in records[0]}
    if not batched:
        stacked = {k: v[:, 0] for k, v in stacked.items()}
        V, a = V[0], a[0]
    dt = V.dtype
    return FlowHistory(steps=torch.tensor(steps, dtype=torch.float64 if meta["method"] == "flow" else torch.int64),
                       times=torch.tensor(times, dtype=dt), V=V, a_final=a, meta=meta, **stacked)


@contextlib.contextmanager
def _one_thread_for_small(t: Tensor, limit: int = 1 << 20):
    """Run small CPU problems on one intra-op thread: thread hand-offs cost more than the tiny kernels (10x here)."""
    small = t.device.type == "cpu" and t.numel() < limit
    before = torch.get_num_threads()
    if small:
        torch.set_num_threads(1)
    try:
        yield
    finally:
        if small:
            torch.set_num_threads(before)


def _run(tied: bool, V0, a0, loss, target, normalization, method, lr, steps, t_max, record_every, seed, design,
         rtol, atol, ode_method, max_ode_steps, dtype, device) -> FlowHistory:
    problem, V, a, batched = _prepare(V0, a0, loss, target, normalization, design, dtype, device, tied, seed)
    ref = _reference_direction(loss, problem.target, problem.design)
    meta = {"model": "tied" if tied else "value", "loss": loss, "normalization": normalization, "method": method,
            "lr": lr, "seed": seed, "batch": V.shape[0], "D": V.shape[1], "N": V.shape[2]}
    with torch.no_grad(), _one_thread_for_small(V):
        if method == "gd":
            if not (isinstance(steps, (int, np.integer)) and steps >= 1):
                raise ValueError(f"steps={steps!r} must be a positive int for method='gd'")
            if not lr > 0:
                raise ValueError(f"lr={lr!r} must be positive")
            meta["steps"] = int(steps)
            points = _record_steps(int(steps), record_every)
            records, done = [], 0
            for p in points:
                with torch.inference_mode():  # ~15% less per-op overhead than no_grad; V, a stay normal tensors
                    problem.gd_steps(V, a, lr, p - done)
                done = p
                records.append(_snapshot(problem, ref, V, a))
            return _history(records, points, [p * lr for p in points], V, a, batched, meta)
        if method == "flow":
            if t_max is None:
                if steps is None or lr is None:
                    raise ValueError("method='flow' needs t_max (or steps and lr, giving t_max = steps * lr)")
                t_max = steps * lr
            if not t_max > 0:
                raise ValueError(f"t_max={t_max!r} must be positive")
            meta.update(t_max=float(t_max), rtol=rtol, atol=atol, ode_method=ode_method, max_ode_steps=max_ode_steps)
            ts = _record_times(float(t_max), record_every)

            def rhs(t: Tensor, state: tuple[Tensor, Tensor]) -> tuple[Tensor, Tensor]:
                _, _, gV, ga = problem.grads(*state)
                return -gV, -ga

            options = {"max_num_steps": max_ode_steps} if ode_method in _ADAPTIVE_ODE_METHODS else None
            try:
                Vs, As = odeint(rhs, (V, a), torch.tensor(ts, dtype=V.dtype, device=V.device),
                                rtol=rtol, atol=atol, method=ode_method, options=options)
            except AssertionError as err:  # torchdiffeq signals a solver failure with a bare assert
                raise FlowIntegrationError(
                    f"the flow ODE ({ode_method}) gave up for normalization={normalization!r}, loss={loss!r}: {err}; "
                    "non-smooth maps (l1, relu_norm) whose shares hit 0 can make it stiff, so use method='gd' "
                    "or raise max_ode_steps.") from None
            records = [_snapshot(problem, ref, Vs[i], As[i]) for i in range(len(ts))]
            return _history(records, ts, ts, Vs[-1].clone(), As[-1].clone(), batched, meta)
    raise ValueError(f"unknown method {method!r}; choose one of: gd, flow")


def value_softmax_flow(V0, a0, loss: str, target=None, normalization: str = "softmax", method: str = "gd",
                       lr: float = 0.1, steps: int | None = 1000, t_max: float | None = None,
                       record_every: int | str = "log", seed: int | None = None, *, design=None,
                       rtol: float = 1e-9, atol: float = 1e-11, ode_method: str = "dopri5",
                       max_ode_steps: int = 10_000, dtype: torch.dtype = torch.float64,
                       device: str | torch.device | None = None) -> FlowHistory:
    """Train ``beta = V s(a)`` from ``(V0, a0)`` by GD (``"gd"``) or the exact flow ODE (``"flow"``).

    ``V0`` is (D, N) or (B, D, N) (B seeds at once), ``a0`` (N,) or (B, N) (None = zeros). ``target`` is
    ``beta*`` (logistic, square; None draws a unit ``beta*`` from ``seed``), ``y`` (design_square, with
    ``design=X`` of shape (n, D)) or ``p*`` (cross_entropy, V is k x N). Tensors or NumPy arrays.
    ``max_ode_steps`` caps the adaptive solver's steps between two records (FlowIntegrationError beyond).
    """
    return _run(False, V0, a0, loss, target, normalization, method, lr, steps, t_max, record_every, seed,
                design, rtol, atol, ode_method, max_ode_steps, dtype, device)


def tied_value_softmax_flow(U0, a0, loss: str, target=None, normalization: str = "softmax", method: str = "gd",
                            lr: float = 0.05, steps: int | None = 1000, t_max: float | None = None,
                            record_every: int | str = "log", seed: int | None = None, *, design=None,
                            rtol: float = 1e-9, atol: float = 1e-11, ode_method: str = "dopri5",
                            max_ode_steps: int = 10_000, dtype: torch.dtype = torch.float64,
                            device: str | torch.device | None = None) -> FlowHistory:
    """Train the tied model ``beta = U s(U a)`` (``U0`` is (D, D) or (B, D, D)); ``dominant_norm`` tracks the winner's column."""
    return _run(True, U0, a0, loss, target, normalization, method, lr, steps, t_max, record_every, seed,
                design, rtol, atol, ode_method, max_ode_steps, dtype, device)


def objective(V: Tensor, a: Tensor, loss: str, target, normalization: str = "softmax", design=None,
              tied: bool = False) -> Tensor:
    """The loss (B,) at ``(V, a)`` built from plain differentiable tensor ops (the autograd reference)."""
    cls = _TiedProblem if tied else _ValueSoftmaxProblem
    Vb = V if V.ndim == 3 else V.unsqueeze(0)
    ab = a if a.ndim == 2 else a.unsqueeze(0)
    t = torch.as_tensor(target, dtype=V.dtype).expand(Vb.shape[0], -1)
    X = None if design is None else torch.as_tensor(design, dtype=V.dtype).expand(Vb.shape[0], -1, -1)
    problem = cls(get_normalisation(normalization), get_loss(loss), t, X)
    _, beta = problem.forward(Vb, ab)
    return problem.loss.value(beta, t, X)


# -------------------------------------------------------------------------------- reference protocols E1..E5
@dataclass
class FlowCase:
    """One run of a protocol: which model, the keyword arguments of the driver, and docs/theory.md's outcome
    (``expected`` in words; ``reference`` the same numbers by quantity, for the measured-vs-reference table)."""

    label: str
    tied: bool
    kwargs: dict[str, Any]
    expected: str = ""
    reference: dict[str, Any] = field(default_factory=dict)


# docs/theory.md 3.2's outcomes, the one source of both the cases' `expected` text and their `reference`.
E1_REFERENCE = {"max_share": {0: "0.125", 1_000: "0.21", 10_000: "0.86", 100_000: "0.95", 1_000_000: "0.97"},
                "entropy": "2.08 -> 0.17", "loss": "0.70 -> 1e-5", "winner_projection": "0.09 -> 11.7",
                "gain_per_decade": "+2.3"}
E2_EXPECTED = {
    "square": "nothing polarises before the loss reaches ~0",
    "logistic": {"softmax": "max share ~0.98", "l1": "one-hot", "l2": "one-hot", "relu_norm": "one-hot",
                 "sum": "leaves the simplex", "sigmoid": "flat, ~0.8 on every coordinate"},
}
E3_REFERENCE = {"max_share": "0.998 .. 1.000", "dominant_norm": "1 -> ~6.3", "median_norm": "~1.0"}
E4_EXPECTED_ENTROPY = {1: 3.00, 2: 2.95, 3: 1.72, 4: 0.77, 5: 0.40}
E5_REFERENCE = {"kl": "~3e-16", "max_share": "~0.96"}


def _draw(seeds: Sequence[int], fn: Callable[[torch.Generator], tuple[Tensor, ...]]) -> tuple[Tensor, ...]:
    """Stack ``fn``'s draws over seeds, each from its own generator, so a seed's run does not depend on the batch."""
    per_seed = [fn(torch.Generator().manual_seed(int(s))) for s in seeds]
    return tuple(torch.stack(parts) for parts in zip(*per_seed))


def _normal(gen: torch.Generator, *shape: int) -> Tensor:
    return torch.randn(*shape, generator=gen, dtype=torch.float64)


def _unit(gen: torch.Generator, d: int) -> Tensor:
    b = _normal(gen, d)
    return b / b.norm()


def _seeds(num_seeds: int, seed: int, salt: int) -> list[int]:
    # A separate seed stream per protocol, so E1 and E2 with the same seed do not share draws.
    return [1000 * salt + seed + i for i in range(num_seeds)]


def _e1(num_seeds: int, seed: int) -> list[FlowCase]:
    V0, beta = _draw(_seeds(num_seeds, seed, 1), lambda g: (0.1 * _normal(g, 8, 8), _unit(g, 8)))
    r, shares = E1_REFERENCE, E1_REFERENCE["max_share"]
    path = " -> ".join(f"{v} (1e{round(math.log10(k))})" if k else v for k, v in shares.items())
    expected = (f"max share {path}; entropy {r['entropy']}; loss {r['loss']}; winner <v, beta*> "
                f"{r['winner_projection']} ({r['gain_per_decade']} per decade)")
    return [FlowCase("logistic", False, dict(V0=V0, a0=None, loss="logistic", target=beta, lr=0.1, steps=1_000_000),
                     expected, r)]


E2_NORMALISATIONS = ("softmax", "l1", "sum", "l2", "relu_norm", "sigmoid")


def _e2(num_seeds: int, seed: int) -> list[FlowCase]:
    V0, a0, beta = _draw(_seeds(num_seeds, seed, 2),
                         lambda g: (0.1 * _normal(g, 10, 10), 1 + 0.1 * _normal(g, 10), _unit(g, 10)))
    cases = []
    for loss, lr, steps in (("square", 0.1, 5_000), ("logistic", 0.5, 100_000)):
        for norm in E2_NORMALISATIONS:
            expected = E2_EXPECTED[loss] if loss == "square" else E2_EXPECTED[loss][norm]
            cases.append(FlowCase(f"{loss}/{norm}", False, dict(V0=V0, a0=a0, loss=loss, target=beta, lr=lr,
                                                                  steps=steps, normalization=norm), expected,
                                  {"outcome": expected}))
    return cases


def _e3(num_seeds: int, seed: int) -> list[FlowCase]:
    cases = []
    for d in (10, 20, 50, 100):
        a0, beta = _draw(_seeds(num_seeds, seed, 3), lambda g: (1 + 0.1 * _normal(g, d), _unit(g, d)))
        U0 = torch.eye(d, dtype=torch.float64).expand(num_seeds, d, d).clone()
        r = E3_REFERENCE
        cases.append(FlowCase(f"D={d}", True, dict(V0=U0, a0=a0, loss="logistic", target=beta, lr=0.05, steps=10_000),
                              f"max share -> {r['max_share']}; dominant column norm {r['dominant_norm']}, median "
                              f"column {r['median_norm']}", r))
    return cases


def conditioned_design(gen: torch.Generator, n: int, d: int, kappa: float) -> Tensor:
    """``X = Q1 diag(sigma) Q2^T`` with Haar-random ``Q1, Q2`` and singular values geometric from 1 to ``1/kappa``."""
    q1, _ = torch.linalg.qr(_normal(gen, n, n))
    q2, _ = torch.linalg.qr(_normal(gen, d, d))
    k = min(n, d)
    sigma = torch.logspace(0, -math.log10(kappa), k, dtype=torch.float64)
    return q1[:, :k] @ torch.diag(sigma) @ q2[:, :k].T


E4_EXPECTED_ENTROPY = {1: 3.00, 2: 2.95, 3: 1.72, 4: 0.77, 5: 0.40}


def _e4(num_seeds: int, seed: int) -> list[FlowCase]:
    # docs/theory.md fixes cond(X) only; X's spectrum (geometric) and y ~ N(0, I_n) are this toolkit's choice.
    cases, n = [], 20
    for kappa, expected in E4_EXPECTED_ENTROPY.items():
        V0, a0, X, y = _draw(_seeds(num_seeds, seed, 4), lambda g: (
            1e-5 * _normal(g, n, n), 1e-3 * _normal(g, n), conditioned_design(g, n, n, kappa), _normal(g, n)))
        cases.append(FlowCase(f"kappa={kappa}", False, dict(V0=V0, a0=a0, loss="design_square", target=y, design=X,
                                                            lr=1e-3, steps=300_000),
                              f"final entropy {expected:.2f} (log 20 = 3.00)", {"entropy": f"{expected:.2f}"}))
    return cases


def _e5(num_seeds: int, seed: int) -> list[FlowCase]:
    V0, p = _draw(_seeds(num_seeds, seed, 5), lambda g: (
        0.1 * _normal(g, 10, 10), torch.softmax(10 * torch.rand(10, generator=g, dtype=torch.float64), -1)))
    return [FlowCase("cross_entropy", False, dict(V0=V0, a0=None, loss="cross_entropy", target=p, lr=0.1,
                                                 steps=1_000_000),
                      f"KL -> {E5_REFERENCE['kl']} while the max share only reaches {E5_REFERENCE['max_share']}",
                      E5_REFERENCE)]


PRESETS: dict[str, Callable[[int, int], list[FlowCase]]] = {"E1": _e1, "E2": _e2, "E3": _e3, "E4": _e4, "E5": _e5}


def preset_cases(name: str, num_seeds: int = 1, seed: int = 0) -> list[FlowCase]:
    """The runs of protocol ``name`` (docs/theory.md 3) with ``num_seeds`` batched draws starting at ``seed``."""
    return lookup(PRESETS, "preset", name)(num_seeds, seed)


def run_case(case: FlowCase, **overrides: Any) -> FlowHistory:
    """Run one protocol case; ``overrides`` (e.g. ``steps``, ``lr``, ``method``) replace its keyword arguments."""
    kwargs = {**case.kwargs, **{k: v for k, v in overrides.items() if v is not None}}
    fn = tied_value_softmax_flow if case.tied else value_softmax_flow
    kwargs["U0" if case.tied else "V0"] = kwargs.pop("V0")
    hist = fn(**kwargs)
    hist.meta["case"] = case.label
    return hist
