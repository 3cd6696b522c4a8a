"""The authors' toy protocols (tml-epfl/softmax, visualizations/toy_experiments.ipynb) as plain NumPy loops with
their seeds, for the "their code" column of docs/gradient_flow.md.

    python benchmarks/notebook_reference.py E1 E2 E3 E4 [--e5-steps 1000000] > notebook_reference.json

The updates are the notebook's (same draws, order, shapes, eps); the printed quantities are the ones
``softdiff flow`` reports, taken after ``k`` updates. Independent of softdiff (NumPy only).
"""
from __future__ import annotations

import argparse
import json
import time

import numpy as np


def softmax(z):
    e = np.exp(z - z.max())
    return e / e.sum()


def entropy(s):
    p = np.abs(s) / (np.abs(s).sum() + 1e-10)
    p = p[p > 0]
    return float(-(p * np.log(p)).sum())


def e1():
    rs = np.random.RandomState(123)
    W, a, beta = 0.1 * rs.randn(8, 8), 0 * rs.randn(8), rs.randn(8)
    beta /= np.linalg.norm(beta)
    out, marks = {}, {1_000, 10_000, 100_000, 1_000_000}
    for i in range(1, 1_000_001):
        s = softmax(a)
        c = 1.0 / (1.0 + np.exp(beta @ (W @ s)))  # expit(-z)
        v = -c * (W.T @ beta)
        gW, ga = -c * np.outer(beta, s), s * v - s * (s @ v)
        W -= 0.1 * gW
        a -= 0.1 * ga
        if i in marks:
            out[f"max_share@{i}"] = float(softmax(a).max())
    s = softmax(a)
    win = int(s.argmax())
    out.update(entropy=entropy(s), loss=float(np.logaddexp(0, -(beta @ (W @ s)))),
               winner_projection=float((W.T @ beta)[win]))
    return out


NORMS = {  # forward, backward(grad_out, z, alpha) as in the notebook's NormalizationModule classes
    "l1": (lambda z: np.abs(z) / (np.abs(z).sum() + 1e-10),
           lambda g, z, s: (g - g @ s) * np.sign(z) / (np.abs(z).sum() + 1e-10)),
    "sum": (lambda z: z / (z.sum() + 1e-10), lambda g, z, s: (g - g @ s) / (z.sum() + 1e-10)),
    "l2": (lambda z: z**2 / ((z**2).sum() + 1e-10), lambda g, z, s: 2 * z / ((z**2).sum() + 1e-10) * (g - g @ s)),
    "softmax": (softmax, lambda g, z, s: s * (g - g @ s)),
    "relu_norm": (lambda z: np.maximum(0, z) / (np.maximum(0, z).sum() + 1e-10),
                  lambda g, z, s: (g - g @ s) * (z > 0) / (np.maximum(0, z).sum() + 1e-10)),
    "sigmoid": (lambda z: 1 / (1 + np.exp(-z)), lambda g, z, s: s * (1 - s) * g),
}


def e2():
    out = {}
    for loss, lr, steps in (("square", 0.1, 5_000), ("logistic", 0.5, 100_000)):
        for name, (fwd, bwd) in NORMS.items():
            rs = np.random.RandomState(42)
            beta = rs.randn(10)
            beta /= np.linalg.norm(beta)
            rs = np.random.RandomState(42)
            V, a = 0.1 * rs.randn(10, 10), np.ones(10) + rs.randn(10) * 0.1
            for _ in range(steps):
                s = fwd(a)
                g = V @ s - beta if loss == "square" else -(1 - 1 / (1 + np.exp(-(beta @ (V @ s))))) * beta
                ga = bwd(V.T @ g, a, s)
                V -= lr * np.outer(g, s)
                a -= lr * ga
            s = fwd(a)
            p = np.sort(np.abs(s) / (np.abs(s).sum() + 1e-10))[::-1]
            out[f"{loss}/{name}"] = {"max_share": float(s.max()), "min_share": float(s.min()),
                                     "sum": float(s.sum()), "top2": [float(p[0]), float(p[1])]}
    return out


def e3():
    out = {}
    for d in (10, 20, 50, 100):
        rs = np.random.RandomState(42)
        beta = rs.randn(d)
        beta /= np.linalg.norm(beta)
        rs = np.random.RandomState(42)
        rs.randn(d, d)
        a, U = np.ones(d) + rs.randn(d) * 0.1, np.eye(d)
        for _ in range(10_000):
            z = U @ a
            s = softmax(z)
            c = -(1 - 1 / (1 + np.exp(-(beta @ (U @ s)))))
            gb = c * beta
            gz = softmax(z) * (U.T @ gb - (U.T @ gb) @ s)
            gU = np.outer(gb, s) + np.outer(gz, a)
            ga = U.T @ gz
            U -= 0.05 * gU
            a -= 0.05 * ga
        s = softmax(U @ a)
        norms = np.linalg.norm(U, axis=0)
        out[f"D={d}"] = {"max_share": float(s.max()), "dominant_norm": float(norms[s.argmax()]),
                         "median_norm": float(np.median(norms))}
    return out


def e4():
    out = {}
    for kappa in (1, 2, 3, 4, 5):
        rs = np.random.RandomState(123)
        W, a, X_raw = 1e-5 * rs.randn(20, 20), 1e-3 * rs.randn(20), rs.randn(20, 20)
        U, _, Vt = np.linalg.svd(X_raw, full_matrices=False)
        X = U @ np.diag(np.linspace(1, 1 / kappa, 20)) @ Vt
        y = rs.randn(20)
        for _ in range(300_000):
            s = softmax(a)
            r = y - X @ (W @ s)
            v = -2 * W.T @ (X.T @ r)
            gW, ga = -2 * np.outer(X.T @ r, s), s * v - s * (s @ v)
            W -= 1e-3 * gW
            a -= 1e-3 * ga
        s = softmax(a)
        out[f"kappa={kappa}"] = {"entropy": entropy(s), "loss": float(((y - X @ (W @ s)) ** 2).sum())}
    return out


def e5(steps):
    rs = np.random.RandomState(123)
    V, a = 0.1 * rs.randn(10, 10), 0 * rs.randn(10)
    p = softmax(10 * rs.rand(10))
    out = {}
    for i in range(1, steps + 1):
        s = softmax(a)
        q = softmax(V.T @ s)
        gV = np.outer(s, q - p)
        gs = V @ (q - p)
        ga = s * gs - s * (s @ gs)
        V -= 0.1 * gV
        a -= 0.1 * ga
        if i in (100_000, 1_000_000, 10_000_000):
            q = softmax(V.T @ softmax(a))
            out[f"kl@{i}"] = float((p * (np.log(p) - np.log(q))).sum())
            out[f"max_share@{i}"] = float(softmax(a).max())
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("protocols", nargs="+", choices=["E1", "E2", "E3", "E4", "E5"])
    parser.add_argument("--e5-steps", type=int, default=1_000_000)
    args = parser.parse_args()
    result = {}
    for name in args.protocols:
        start = time.perf_counter()
        result[name] = e5(args.e5_steps) if name == "E5" else globals()[name.lower()]()
        result[name]["seconds"] = time.perf_counter() - start
        print(json.dumps({name: result[name]}), flush=True)


if __name__ == "__main__":
    main()
