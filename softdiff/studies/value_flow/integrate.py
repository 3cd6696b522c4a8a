"""Train the value-softmax model by gradient descent (``method="gd"``) or integrate its gradient-flow ODE
(``method="flow"``, torchdiffeq), batched over a leading seed dimension: ``V`` is (B, D, N), ``a`` is (B, N).
"""
from __future__ import annotations

import contextlib
from typing import Any

import numpy as np
import torch
from torch import Tensor

from softdiff.errors import SoftdiffError
from softdiff.studies.value_flow.history import FlowHistory, record_steps, record_times, snapshot, stack_history
from softdiff.studies.value_flow.losses import get_loss, reference_direction
from softdiff.studies.value_flow.normalisations import get_normalisation
from softdiff.studies.value_flow.problem import ValueSoftmaxProblem, make_problem

_ADAPTIVE_ODE_METHODS = {"dopri5", "dopri8", "bosh3", "fehlberg2", "adaptive_heun"}


class FlowIntegrationError(SoftdiffError):
    """The adaptive ODE solver gave up (non-smooth map or stiff dynamics)."""


def _as_tensor(name: str, x: Any, dtype: torch.dtype, device: torch.device | None) -> Tensor:
    if x is None:
        raise ValueError(f"{name} is required")
    t = x if isinstance(x, Tensor) else torch.as_tensor(np.asarray(x))
    return t.to(device=device, dtype=dtype).clone()  # a private copy: the GD loop updates it in place


def _prepare(tied, V0, a0, loss, target, normalization, design, dtype, device, seed):
    get_loss(loss), get_normalisation(normalization)  # unknown names fail before any shape check
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
    return make_problem(tied, normalization, loss, y, X), V, a, batched


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


def _gd(problem: ValueSoftmaxProblem, ref: Tensor, V: Tensor, a: Tensor, lr, steps, record_every, batched,
        meta) -> FlowHistory:
    if not (isinstance(steps, (int, np.integer)) and steps >= 1):
        raise ValueError(f"steps={steps!r} must be a positive int for method='gd'")
    if not lr > 0:
        raise ValueError(f"lr={lr!r} must be positive")
    meta["steps"] = int(steps)
    points = record_steps(int(steps), record_every)
    records, done = [], 0
    for p in points:
        with torch.inference_mode():  # ~15% less per-op overhead than no_grad; V, a stay normal tensors
            problem.gd_steps(V, a, lr, p - done)
        done = p
        records.append(snapshot(problem, ref, V, a))
    return stack_history(records, points, [p * lr for p in points], V, a, batched, meta)


def _ode(problem: ValueSoftmaxProblem, ref: Tensor, V: Tensor, a: Tensor, t_max, record_every, batched, meta,
         rtol, atol, ode_method, max_ode_steps) -> FlowHistory:
    if not t_max > 0:
        raise ValueError(f"t_max={t_max!r} must be positive")
    meta.update(t_max=float(t_max), rtol=rtol, atol=atol, ode_method=ode_method, max_ode_steps=max_ode_steps)
    ts = record_times(float(t_max), record_every)

    def rhs(t: Tensor, state: tuple[Tensor, Tensor]) -> tuple[Tensor, Tensor]:
        _, _, gV, ga = problem.grads(*state)
        return -gV, -ga

    from torchdiffeq import odeint  # brings scipy; loaded only for method=flow

    options = {"max_num_steps": max_ode_steps} if ode_method in _ADAPTIVE_ODE_METHODS else None
    try:
        Vs, As = odeint(rhs, (V, a), torch.tensor(ts, dtype=V.dtype, device=V.device),
                        rtol=rtol, atol=atol, method=ode_method, options=options)
    except AssertionError as err:  # torchdiffeq signals a solver failure with a bare assert
        raise FlowIntegrationError(
            f"the flow ODE ({ode_method}) gave up for normalization={meta['normalization']!r}, "
            f"loss={meta['loss']!r}: {err}; the dynamics are stiff there (non-smooth maps whose shares hit 0, or "
            "long horizons such as E5's), so use method='gd' or raise max_ode_steps.") from None
    records = [snapshot(problem, ref, Vs[i], As[i]) for i in range(len(ts))]
    return stack_history(records, ts, ts, Vs[-1].clone(), As[-1].clone(), batched, meta)


def value_softmax_flow(V0, a0, loss: str, target=None, normalization: str = "softmax", method: str = "gd",
                       lr: float = 0.1, steps: int | None = 1000, t_max: float | None = None,
                       record_every: int | str = "log", seed: int | None = None, *, tied: bool = False,
                       design=None, rtol: float = 1e-9, atol: float = 1e-11, ode_method: str = "dopri5",
                       max_ode_steps: int = 10_000, dtype: torch.dtype = torch.float64,
                       device: str | torch.device | None = None) -> FlowHistory:
    """Train ``beta = V s(a)`` (or, with ``tied=True``, ``beta = U s(U a)`` from a square ``U0 = V0``) by GD
    (``"gd"``) or the exact flow ODE (``"flow"``).

    ``V0`` is (D, N) or (B, D, N) (B seeds at once), ``a0`` (N,) or (B, N) (None = zeros). ``target`` is
    ``beta*`` (logistic, square; None draws a unit ``beta*`` from ``seed``), ``y`` (design_square, with
    ``design=X`` of shape (n, D)) or ``p*`` (cross_entropy, V is k x N). Tensors or NumPy arrays.
    ``max_ode_steps`` caps the adaptive solver's steps between two records (FlowIntegrationError beyond).
    """
    problem, V, a, batched = _prepare(tied, V0, a0, loss, target, normalization, design, dtype, device, seed)
    ref = reference_direction(loss, problem.target, problem.design)
    meta = {"model": "tied" if tied else "value", "loss": loss, "normalization": normalization, "method": method,
            "lr": lr, "seed": seed, "batch": V.shape[0], "D": V.shape[1], "N": V.shape[2]}
    with torch.no_grad(), _one_thread_for_small(V):
        if method == "gd":
            return _gd(problem, ref, V, a, lr, steps, record_every, batched, meta)
        if method == "flow":
            if t_max is None:
                if steps is None or lr is None:
                    raise ValueError("method='flow' needs t_max (or steps and lr, giving t_max = steps * lr)")
                t_max = steps * lr
            return _ode(problem, ref, V, a, t_max, record_every, batched, meta, rtol, atol, ode_method,
                        max_ode_steps)
    raise ValueError(f"unknown method {method!r}; choose one of: gd, flow")
