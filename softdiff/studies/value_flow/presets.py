"""The protocols E1..E5 of docs/theory.md 3.2 as batched runs, drawn with torch (default) or exactly as the
authors' notebook draws them (``rng="numpy"``: NumPy's legacy generator, same seed, order and shapes).

Seed ``i`` of a batch has its own generator (torch: ``1000 * protocol + seed + i``; numpy: ``seed + i``), so a
seed's run does not depend on the batch size.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import numpy as np
import torch
from torch import Tensor

from softdiff.errors import lookup
from softdiff.studies.value_flow.history import FlowHistory
from softdiff.studies.value_flow.integrate import value_softmax_flow
from softdiff.studies.value_flow.references import REFERENCES

AUTHORS_SEED = {"E1": 123, "E2": 42, "E3": 42, "E4": 123, "E5": 123}  # the notebook's np.random.seed
RNGS = ("torch", "numpy")
SPECTRA = ("linear", "geometric")
E2_NORMALISATIONS = ("softmax", "l1", "sum", "l2", "relu_norm", "sigmoid")
E3_DIMS = (10, 20, 50, 100)
E4_KAPPAS = (1, 2, 3, 4, 5)


@dataclass
class FlowCase:
    """One run of a protocol: the driver's keyword arguments and the reference outcome (references.py)."""

    label: str
    kwargs: dict[str, Any]
    reference: Any = field(default_factory=dict)


# ------------------------------------------------------------------------------------------------ drawing
def _stack(per_seed: list[tuple]) -> tuple[Tensor, ...]:
    return tuple(torch.stack([torch.as_tensor(x, dtype=torch.float64) for x in parts]) for parts in zip(*per_seed))


def _torch_draws(seeds: Sequence[int], fn: Callable[[torch.Generator], tuple]) -> tuple[Tensor, ...]:
    return _stack([fn(torch.Generator().manual_seed(int(s))) for s in seeds])


def _numpy_draws(seeds: Sequence[int], fn: Callable[[int], tuple]) -> tuple[Tensor, ...]:
    return _stack([fn(int(s)) for s in seeds])


def _normal(gen: torch.Generator, *shape: int) -> Tensor:
    return torch.randn(*shape, generator=gen, dtype=torch.float64)


def _unit(gen: torch.Generator, d: int) -> Tensor:
    b = _normal(gen, d)
    return b / b.norm()


def _np_unit(rs: np.random.RandomState, d: int) -> np.ndarray:
    b = rs.randn(d)
    return b / np.linalg.norm(b)


def spectrum(kappa: float, k: int, kind: str = "linear") -> np.ndarray:
    """Singular values from 1 to ``1/kappa``: ``linspace`` (the authors') or geometric."""
    if kind == "linear":
        return np.linspace(1, 1 / kappa, k)
    if kind == "geometric":
        return np.logspace(0, -math.log10(kappa), k)
    raise ValueError(f"spectrum {kind!r} must be one of: {', '.join(SPECTRA)}")


def conditioned_design(gen: torch.Generator, n: int, d: int, kappa: float, kind: str = "linear") -> Tensor:
    """``X = Q1 diag(sigma) Q2^T`` with Haar-random ``Q1, Q2`` and ``sigma = spectrum(kappa, min(n, d), kind)``."""
    q1, _ = torch.linalg.qr(_normal(gen, n, n))
    q2, _ = torch.linalg.qr(_normal(gen, d, d))
    k = min(n, d)
    return q1[:, :k] @ torch.diag(torch.as_tensor(spectrum(kappa, k, kind))) @ q2[:, :k].T


def _seeds(num_seeds: int, seed: int, salt: int, rng: str) -> list[int]:
    # torch: a separate seed stream per protocol, so E1 and E2 with the same seed do not share draws.
    return [seed + i if rng == "numpy" else 1000 * salt + seed + i for i in range(num_seeds)]


# --------------------------------------------------------------------------------------------- protocols
def _e1(seeds, rng, kind) -> list[FlowCase]:
    def numpy(s):
        rs = np.random.RandomState(s)
        V = 0.1 * rs.randn(8, 8)
        rs.randn(8)  # the notebook's a = 0 * randn(8) uses up 8 draws
        return V, _np_unit(rs, 8)

    draw = _numpy_draws(seeds, numpy) if rng == "numpy" else \
        _torch_draws(seeds, lambda g: (0.1 * _normal(g, 8, 8), _unit(g, 8)))
    V0, beta = draw
    return [FlowCase("logistic", dict(V0=V0, a0=None, loss="logistic", target=beta, lr=0.1, steps=1_000_000),
                     REFERENCES["E1"])]


def _e2(seeds, rng, kind) -> list[FlowCase]:
    def numpy(s):
        beta = _np_unit(np.random.RandomState(s), 10)
        rs = np.random.RandomState(s)  # the notebook reseeds before V: V's first row is 0.1 x beta's raw draw
        return 0.1 * rs.randn(10, 10), np.ones(10) + rs.randn(10) * 0.1, beta

    V0, a0, beta = _numpy_draws(seeds, numpy) if rng == "numpy" else _torch_draws(
        seeds, lambda g: (0.1 * _normal(g, 10, 10), 1 + 0.1 * _normal(g, 10), _unit(g, 10)))
    ref, cases = REFERENCES["E2"], []
    for loss, lr, steps in (("square", 0.1, 5_000), ("logistic", 0.5, 100_000)):
        for norm in E2_NORMALISATIONS:
            cases.append(FlowCase(f"{loss}/{norm}", dict(V0=V0, a0=a0, loss=loss, target=beta, lr=lr, steps=steps,
                                                         normalization=norm),
                                  ref[loss] if loss == "square" else ref[loss][norm]))
    return cases


def _e3(seeds, rng, kind) -> list[FlowCase]:
    cases = []
    for d in E3_DIMS:
        def numpy(s, d=d):
            beta = _np_unit(np.random.RandomState(s), d)
            rs = np.random.RandomState(s)
            rs.randn(d, d)  # the notebook draws a V it then replaces by U = I
            return np.ones(d) + rs.randn(d) * 0.1, beta

        a0, beta = _numpy_draws(seeds, numpy) if rng == "numpy" else \
            _torch_draws(seeds, lambda g, d=d: (1 + 0.1 * _normal(g, d), _unit(g, d)))
        U0 = torch.eye(d, dtype=torch.float64).expand(len(seeds), d, d).clone()
        cases.append(FlowCase(f"D={d}", dict(V0=U0, a0=a0, loss="logistic", target=beta, lr=0.05, steps=10_000,
                                             tied=True), REFERENCES["E3"]))
    return cases


def _e4(seeds, rng, kind) -> list[FlowCase]:
    # The same draws for every kappa (the notebook reseeds each run), so only the spectrum changes.
    cases, n = [], 20
    for kappa in E4_KAPPAS:
        def numpy(s, kappa=kappa):
            rs = np.random.RandomState(s)
            W, a, X_raw = 1e-5 * rs.randn(n, n), 1e-3 * rs.randn(n), rs.randn(n, n)
            U, _, Vt = np.linalg.svd(X_raw, full_matrices=False)
            return W, a, U @ np.diag(spectrum(kappa, n, kind)) @ Vt, rs.randn(n)

        V0, a0, X, y = _numpy_draws(seeds, numpy) if rng == "numpy" else _torch_draws(seeds, lambda g, kappa=kappa: (
            1e-5 * _normal(g, n, n), 1e-3 * _normal(g, n), conditioned_design(g, n, n, kappa, kind), _normal(g, n)))
        cases.append(FlowCase(f"kappa={kappa}", dict(V0=V0, a0=a0, loss="design_square", target=y, design=X,
                                                     lr=1e-3, steps=300_000),
                              {"entropy": REFERENCES["E4"]["entropy"][kappa]}))
    return cases


def _e5(seeds, rng, kind) -> list[FlowCase]:
    def numpy(s):
        rs = np.random.RandomState(s)
        V = 0.1 * rs.randn(10, 10)  # the notebook's V is (d, k) with logits V^T s: softdiff's V is its transpose
        rs.randn(10)  # a = 0 * randn(10)
        z = 10 * rs.rand(10)
        p = np.exp(z - z.max())
        return V.T, p / p.sum()

    V0, p = _numpy_draws(seeds, numpy) if rng == "numpy" else _torch_draws(seeds, lambda g: (
        0.1 * _normal(g, 10, 10), torch.softmax(10 * torch.rand(10, generator=g, dtype=torch.float64), -1)))
    return [FlowCase("cross_entropy", dict(V0=V0, a0=None, loss="cross_entropy", target=p, lr=0.1,
                                           steps=10_000_000), REFERENCES["E5"])]


PROTOCOLS: dict[str, Callable[..., list[FlowCase]]] = {"E1": _e1, "E2": _e2, "E3": _e3, "E4": _e4, "E5": _e5}
_SALT = {"E1": 1, "E2": 2, "E3": 3, "E4": 4, "E5": 5}


def preset_cases(name: str, num_seeds: int = 1, seed: int | None = None, rng: str = "torch",
                 spectrum_kind: str = "linear") -> list[FlowCase]:
    """The runs of protocol ``name`` with ``num_seeds`` batched draws from ``seed`` (None: the authors' seed
    for ``rng="numpy"``, 0 for torch); ``spectrum_kind`` is E4's singular-value spacing."""
    build = lookup(PROTOCOLS, "protocol", name)
    lookup(dict.fromkeys(RNGS), "rng", rng)
    lookup(dict.fromkeys(SPECTRA), "spectrum", spectrum_kind)
    if seed is None:
        seed = AUTHORS_SEED[name] if rng == "numpy" else 0
    return build(_seeds(num_seeds, seed, _SALT[name], rng), rng, spectrum_kind)


def run_case(case: FlowCase, **overrides: Any) -> FlowHistory:
    """Run one protocol case; ``overrides`` (e.g. ``steps``, ``lr``, ``method``) replace its keyword arguments."""
    kwargs = {**case.kwargs, **{k: v for k, v in overrides.items() if v is not None}}
    hist = value_softmax_flow(**kwargs)
    hist.meta["case"] = case.label
    return hist
