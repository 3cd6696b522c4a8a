"""What a value-softmax run records: :class:`FlowHistory`, the record points, and one snapshot of the state."""
from __future__ import annotations

import math
from dataclasses import dataclass, field, fields
from typing import Any, Sequence

import numpy as np
import torch
from torch import Tensor

from softdiff.nets.activations import EPS
from softdiff.safe_io import finite_json
from softdiff.studies.value_flow.problem import ValueSoftmaxProblem, vtm


@dataclass
class FlowHistory:
    """Trajectory records, indexed first by record (log-spaced steps or times), then by seed if batched.

    ``steps`` are GD step counts (``method="gd"``) or ODE times (``"flow"``); ``times = steps * lr`` for GD.
    ``s``/``a``/``value_norms``/``projections`` are (R, [B,] N); the scalar series are (R, [B]).
    ``entropy`` is that of ``|s| / sum |s|`` (so it is defined for unnormalised maps too); ``max_share`` is
    ``max_i s_i``; ``winner`` is ``argmax_i s_i``; ``projections`` are ``V^T d`` with ``d`` the loss's
    reference direction (``beta*``; ``X^T y`` for design_square; ``p* - 1/k`` for cross_entropy);
    ``dominant_norm`` is the winner's value (column) norm; ``grad_norm_V`` and ``grad_norm_a`` are
    ``||dL/dV||_F`` and ``||dL/da||`` at the recorded state.
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
    grad_norm_V: Tensor
    grad_norm_a: Tensor
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


def shares_distribution(s: Tensor) -> Tensor:
    """``|s| / sum |s|``: a point of the simplex for every map, including those that leave it (sum, sigmoid)."""
    return s.abs() / (s.abs().sum(-1, keepdim=True) + EPS)


def entropy(s: Tensor) -> Tensor:
    p = shares_distribution(s)
    return -torch.xlogy(p, p).sum(-1)


def _positive_int(x: Any) -> bool:
    return isinstance(x, (int, np.integer)) and not isinstance(x, bool) and x > 0


def record_steps(steps: int, record_every: int | str, per_decade: int = 10) -> list[int]:
    """Record points: 0, then log-spaced (``"log"``, ``per_decade`` a decade) or every ``k`` steps, always ``steps``."""
    if record_every == "log":
        decades = max(math.log10(max(steps, 1)), 1e-12)
        pts = np.unique(np.round(np.logspace(0, decades, int(per_decade * decades) + 1)).astype(np.int64))
        return sorted({0, *[int(p) for p in pts if 0 < p <= steps], steps})
    if _positive_int(record_every):
        return sorted({*range(0, steps + 1, int(record_every)), steps})
    raise ValueError(f"record_every={record_every!r} must be 'log' or a positive int")


def record_times(t_max: float, record_every: int | str, per_decade: int = 10, t_min: float = 1e-2) -> list[float]:
    """ODE record times: 0, then log-spaced from ``t_min`` (``"log"``) or ``record_every`` equal intervals."""
    if record_every == "log":
        if t_max <= t_min:
            return [0.0, float(t_max)]
        n = int(per_decade * math.log10(t_max / t_min)) + 1
        return [0.0, *np.geomspace(t_min, t_max, n).tolist()]
    if _positive_int(record_every):
        return np.linspace(0.0, t_max, int(record_every) + 1).tolist()
    raise ValueError(f"record_every={record_every!r} must be 'log' or a positive int (number of intervals)")


def snapshot(problem: ValueSoftmaxProblem, ref: Tensor, V: Tensor, a: Tensor) -> dict[str, Tensor]:
    """Every recorded quantity at ``(V, a)``."""
    s, loss, gV, ga = problem.grads(V, a)
    value_norms = V.norm(dim=-2)
    winner = s.argmax(-1)
    return {
        "s": s, "a": a.clone(), "entropy": entropy(s), "max_share": s.max(-1).values, "winner": winner,
        "value_norms": value_norms, "dominant_norm": value_norms.gather(-1, winner.unsqueeze(-1)).squeeze(-1),
        "projections": vtm(ref, V), "loss": loss,
        "grad_norm_V": gV.square().sum((-1, -2)).sqrt(), "grad_norm_a": ga.norm(dim=-1),
    }


def stack_history(records: list[dict[str, Tensor]], steps: Sequence[float], times: Sequence[float], V: Tensor,
                  a: Tensor, batched: bool, meta: dict) -> FlowHistory:
    """One :class:`FlowHistory` from per-record snapshots (the seed axis dropped when the input was unbatched)."""
    stacked = {k: torch.stack([r[k] for r in records]) for k in records[0]}
    if not batched:
        stacked = {k: v[:, 0] for k, v in stacked.items()}
        V, a = V[0], a[0]
    steps_dtype = torch.float64 if meta["method"] == "flow" else torch.int64
    return FlowHistory(steps=torch.tensor(steps, dtype=steps_dtype), times=torch.tensor(times, dtype=V.dtype),
                       V=V, a_final=a, meta=meta, **stacked)
