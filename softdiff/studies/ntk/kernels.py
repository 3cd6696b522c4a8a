"""Neural tangent kernels: closed forms for two-layer nets, empirical NTKs of any module, and kernel-regime tools.

Conventions (stated once, used everywhere):
  * Closed forms (``two_layer_*_ntk``) are W-only kernels normalised to have a width limit:
    ``H = J J^T / kappa`` with ``kappa = ntk_scale(model)``: ``m`` for softmax (``F = m A softmax(W^T x)``,
    docs/theory.md 1.4) and ``1`` for relu / exp (``F = A act(W^T x) / sqrt(m)``, already in NTK parameterisation).
    So all three ``H`` are O(1) as ``m`` grows, and gradient descent with step ``eta`` on ``1/2 ||F - Y||^2``
    has linearised residual ``r(t+1) = (I - eta * kappa * H) r(t)``. The matrix is ``(n*d_out, n2*d_out)``,
    output-major: row ``l*n + i`` is output ``l`` at point ``x_i``.
  * ``empirical_ntk`` is the raw ``J J^T`` (no normalisation) in example-major layout: ``full`` has shape
    ``(n1, n2, o, o)``, ``trace`` ``(n1, n2)`` (sum over the output diagonal), ``diagonal`` ``(n1, n2, o)``;
    ``o`` is the flattened output size. ``ntk_as_matrix`` turns ``full`` into the output-major matrix, so
    ``two_layer_ntk(net, x) * ntk_scale(net) == ntk_as_matrix(empirical_ntk(net, ["W"], x))``.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable, Mapping, Sequence

import numpy as np
import torch
from einops import rearrange
from torch import Tensor, nn
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.func import functional_call, jacrev, jvp, vjp, vmap

from softdiff.diffusion.sampling import model_output
from softdiff.nets.activations import exp_act
from softdiff.nets.two_layer import TwoLayerSoftmax

NTK_MODES = ("full", "trace", "diagonal")
NTK_IMPLEMENTATIONS = ("jacobian", "ntk_vp")


# --------------------------------------------------------------------------------------------- closed forms
def ntk_scale(model: TwoLayerSoftmax) -> float:
    """``kappa`` with ``H = J J^T / kappa``: the width ``m`` for softmax, 1 for relu / exp (see module doc)."""
    _check_two_layer(model)
    return float(model.width) if model.activation == "softmax" else 1.0


def _check_two_layer(model, activation: str | None = None) -> None:
    if not isinstance(model, TwoLayerSoftmax):
        raise ValueError(f"the closed-form NTK needs a TwoLayerSoftmax network, got {type(model).__name__}; "
                         "use empirical_ntk for other modules")
    if activation is not None and model.activation != activation:
        raise ValueError(f"this closed form is for activation={activation!r} but the network has "
                         f"activation={model.activation!r}; use two_layer_ntk to dispatch on it")


def _check_inputs(model: TwoLayerSoftmax, x: Tensor, name: str) -> None:
    if x.ndim != 2 or x.shape[1] != model.d_in:
        raise ValueError(f"{name} must have shape (n, d_in={model.d_in}), got {tuple(x.shape)}")


def _coefficients(model: TwoLayerSoftmax, x: Tensor, W: Tensor, A: Tensor, chunk: slice,
                  softmax_probs: Tensor | None, centre: Tensor | None) -> Tensor:
    """``c[l, i, r]`` with ``dF_l(x_i)/dw_r = output_scale * c[l, i, r] * x_i`` for the neurons in ``chunk``."""
    a = A[:, None, chunk]                                              # (d_out, 1, c)
    if model.activation == "softmax":
        # J_S^T a_l restricted to the chunk (the centring <a_l, S(x)> is global, hence precomputed).
        return softmax_probs[None, :, chunk] * (a - centre.T[..., None])
    z = x @ W[:, chunk]
    slope = (z > 0).to(z.dtype) if model.activation == "relu" else exp_act(z)
    return a * slope[None]


def two_layer_ntk(model: TwoLayerSoftmax, x: Tensor, x2: Tensor | None = None, chunk_size: int = 4096,
                  dtype: torch.dtype | None = None) -> Tensor:
    """Closed-form W-only NTK ``J J^T / kappa`` of a two-layer net, ``(n*d_out, n2*d_out)`` output-major."""
    _check_two_layer(model)
    _check_inputs(model, x, "x")
    if x2 is not None:
        _check_inputs(model, x2, "x2")
    if chunk_size < 1:
        raise ValueError(f"chunk_size={chunk_size} must be a positive number of neurons")
    dtype = dtype or model.W.dtype
    W, A = model.W.detach().to(dtype), model.A.detach().to(dtype)
    xs = [x.detach().to(dtype)] + ([x2.detach().to(dtype)] if x2 is not None else [])
    probs, centres = [None] * len(xs), [None] * len(xs)
    if model.activation == "softmax":
        probs = [torch.softmax(xi @ W, dim=-1) for xi in xs]           # log-sum-exp inside softmax
        centres = [s @ A.T for s in probs]                                # <a_l, S(x_i)>: (n, d_out)
    n1, n2, d_out = xs[0].shape[0], xs[-1].shape[0], A.shape[0]
    gram = torch.zeros(d_out * n1, d_out * n2, dtype=dtype)
    for start in range(0, model.width, chunk_size):
        part = slice(start, min(start + chunk_size, model.width))
        c1 = _coefficients(model, xs[0], W, A, part, probs[0], centres[0]).reshape(d_out * n1, -1)
        if x2 is not None:
            c2 = _coefficients(model, xs[1], W, A, part, probs[1], centres[1]).reshape(d_out * n2, -1)
            gram.addmm_(c1, c2.T)
            continue
        for l in range(d_out):
            # Symmetric Gram: only the row blocks' upper part (columns from block l on), about half the flops.
            rows = slice(l * n1, (l + 1) * n1)
            gram[rows, l * n1:].addmm_(c1[rows], c1[l * n1:].T)
    if x2 is None:
        for l1 in range(d_out):                                            # mirror the skipped lower blocks
            for l2 in range(l1 + 1, d_out):
                gram[l2 * n1:(l2 + 1) * n1, l1 * n1:(l1 + 1) * n1] = gram[l1 * n1:(l1 + 1) * n1,
                                                                          l2 * n1:(l2 + 1) * n1].T
    scale = model.output_scale ** 2 / ntk_scale(model)  # output_scale is applied once, to the Gram matrix
    gram *= (xs[0] @ xs[-1].T).repeat(d_out, d_out).mul_(scale)            # x_i^T x_j, shared by all blocks
    return gram


def two_layer_softmax_ntk(model: TwoLayerSoftmax, x: Tensor, x2: Tensor | None = None, chunk_size: int = 4096,
                          dtype: torch.dtype | None = None) -> Tensor:
    """docs/theory.md 1.4: ``H = J J^T / m`` of ``F = m A softmax(W^T x)``, ``(n*d_out, n2*d_out)`` output-major."""
    _check_two_layer(model, "softmax")
    return two_layer_ntk(model, x, x2, chunk_size, dtype)


def two_layer_relu_ntk(model: TwoLayerSoftmax, x: Tensor, x2: Tensor | None = None, chunk_size: int = 4096,
                       dtype: torch.dtype | None = None) -> Tensor:
    """``H = J J^T`` of ``F = A relu(W^T x) / sqrt(m)`` (W only), output-major like the softmax kernel."""
    _check_two_layer(model, "relu")
    return two_layer_ntk(model, x, x2, chunk_size, dtype)


def two_layer_exp_ntk(model: TwoLayerSoftmax, x: Tensor, x2: Tensor | None = None, chunk_size: int = 4096,
                      dtype: torch.dtype | None = None) -> Tensor:
    """``H = J J^T`` of ``F = A exp(W^T x) / sqrt(m)`` (W only), output-major like the softmax kernel."""
    _check_two_layer(model, "exp")
    return two_layer_ntk(model, x, x2, chunk_size, dtype)


# ------------------------------------------------------------------------------------------ empirical NTK
def _resolve_params(model_fn, params) -> tuple[Callable, dict[str, Tensor]]:
    """``(f(params, *inputs) -> Tensor over a batch, primal params)`` for a module or a functional callable."""
    if isinstance(model_fn, nn.Module):
        named = dict(model_fn.named_parameters())
        if params is None:
            chosen = {k: v for k, v in named.items() if v.requires_grad}
        elif isinstance(params, Mapping):
            chosen = dict(params)
        else:
            if isinstance(params, str):
                params = [params]
            unknown = [p for p in params if p not in named]
            if unknown:
                raise ValueError(f"unknown parameter name(s) {unknown}; the module has: {', '.join(named)}")
            chosen = {k: named[k] for k in params}
        if not chosen:
            raise ValueError("no parameters selected for the NTK; pass params= names of trainable parameters")
        module = model_fn
        # Untracked parameters enter as detached constants, so the kernel never carries an autograd graph.
        frozen = {k: v.detach() for k, v in named.items() if k not in chosen}

        def batched(p, *inputs):
            return model_output(functional_call(module, {**frozen, **p}, inputs))
        return batched, {k: v.detach() for k, v in chosen.items()}
    if not isinstance(params, Mapping):
        raise ValueError("a functional model_fn(params, *inputs) needs params as a dict of tensors")
    return (lambda p, *inputs: model_output(model_fn(p, *inputs))), {k: v.detach() for k, v in params.items()}


def _as_inputs(x, name: str) -> tuple[Tensor, ...]:
    xs = tuple(x) if isinstance(x, (tuple, list)) else (x,)
    if not xs or any(not isinstance(t, Tensor) or t.ndim == 0 for t in xs):
        raise ValueError(f"{name} must be a batched Tensor or a tuple of them (e.g. (sample, timestep))")
    n = xs[0].shape[0]
    if any(t.shape[0] != n for t in xs):
        raise ValueError(f"the tensors in {name} must share the batch size, got {[t.shape[0] for t in xs]}")
    return xs


def _reduce(k_full: Tensor, mode: str) -> Tensor:
    if mode == "full":
        return k_full
    diag = torch.diagonal(k_full, dim1=-2, dim2=-1)
    return diag.sum(-1) if mode == "trace" else diag


def _ntk_jacobian(f, params, xs1, xs2, mode: str, chunk_size: int | None, per_param: bool):
    def single(p, *inputs):                       # one example, kept as a batch of 1 for any module
        return f(p, *(t[None] for t in inputs))[0].reshape(-1)

    def jac(xs):
        return vmap(jacrev(single), in_dims=(None,) + (0,) * len(xs), chunk_size=chunk_size)(params, *xs)

    j1 = jac(xs1)
    j2 = j1 if xs2 is None else jac(xs2)
    eq = {"full": "iaP,jbP->ijab", "trace": "iaP,jaP->ij", "diagonal": "iaP,jaP->ija"}[mode]
    parts = {k: torch.einsum(eq, j1[k].flatten(2), j2[k].flatten(2)) for k in params}
    return parts if per_param else sum(parts.values())


def _ntk_vp(f, params, xs1, xs2, mode: str, chunk_size: int | None):
    # J2 J1^T e_k for every output basis vector e_k of the x1 batch: one vjp and one jvp per k, vmapped.
    xs2 = xs1 if xs2 is None else xs2
    out1, vjp_fn = vjp(lambda p: f(p, *xs1), params)
    n1, n2 = out1.shape[0], xs2[0].shape[0]
    basis = torch.eye(out1.numel(), dtype=out1.dtype).reshape(-1, *out1.shape)

    def column(e):
        (tangent,) = vjp_fn(e)
        return jvp(lambda p: f(p, *xs2), (params,), (tangent,))[1]

    cols = vmap(column, chunk_size=chunk_size)(basis)                      # (n1*o, n2, ...)
    k_full = rearrange(cols.reshape(n1, -1, n2, cols[0, 0].numel()), "i a j b -> i j a b")
    return _reduce(k_full, mode)


def empirical_ntk(model_fn: nn.Module | Callable, params=None, x1: Tensor | tuple = None,
                  x2: Tensor | tuple | None = None, mode: str = "full", implementation: str = "jacobian",
                  chunk_size: int | None = None, per_param: bool = False) -> Tensor | dict[str, Tensor]:
    """Raw empirical NTK ``J(x1) J(x2)^T`` of any module via torch.func; shapes per ``mode`` (module doc).

    ``model_fn``: an ``nn.Module`` called as ``model(*inputs)`` (a Tensor, a tuple, or an object with
    ``.sample`` such as diffusers outputs) or a functional ``f(params_dict, *inputs)``. ``params``: None (all
    trainable parameters), a list of names (others stay fixed), or a dict of tensors. ``x1`` / ``x2``: a batch
    or a tuple of batches such as ``(sample, timestep)``. Examples must not interact (no train-mode batch norm).
    ``chunk_size`` bounds vmap memory (examples for ``jacobian``, output directions for ``ntk_vp``).
    ``per_param=True`` returns ``{name: contribution}``; the contributions sum to the total kernel.
    """
    if mode not in NTK_MODES:
        raise ValueError(f"mode={mode!r} is not valid; choose one of: {', '.join(NTK_MODES)}")
    if implementation not in NTK_IMPLEMENTATIONS:
        raise ValueError(f"implementation={implementation!r} is not valid; choose one of: "
                         f"{', '.join(NTK_IMPLEMENTATIONS)}")
    if x1 is None:
        raise ValueError("x1 (the batch of inputs) is required")
    f, primal = _resolve_params(model_fn, params)
    xs1 = _as_inputs(x1, "x1")
    xs2 = None if x2 is None else _as_inputs(x2, "x2")
    # The fused attention kernels have no vmap batching rule (a slow per-example fallback with a warning); the
    # math backend is plain matmuls and softmax, which vmap batches.
    with sdpa_kernel(SDPBackend.MATH):
        if implementation == "jacobian":
            return _ntk_jacobian(f, primal, xs1, xs2, mode, chunk_size, per_param)
        if per_param:
            return {k: _ntk_vp(_freeze_others(f, primal, k), {k: primal[k]}, xs1, xs2, mode, chunk_size)
                    for k in primal}
        return _ntk_vp(f, primal, xs1, xs2, mode, chunk_size)


def _freeze_others(f, primal: dict[str, Tensor], name: str):
    return lambda p, *inputs: f({**primal, **p}, *inputs)


def ntk_as_matrix(k_full: Tensor) -> Tensor:
    """``(n1, n2, o, o)`` example-major ``full`` kernel -> ``(o*n1, o*n2)`` output-major matrix."""
    if k_full.ndim != 4:
        raise ValueError(f"expected a full kernel of shape (n1, n2, o, o), got {tuple(k_full.shape)}")
    return rearrange(k_full, "i j a b -> (a i) (b j)")


def ntk_to_full(matrix: Tensor, n_outputs: int) -> Tensor:
    """Inverse of ``ntk_as_matrix``: ``(o*n1, o*n2)`` -> ``(n1, n2, o, o)``."""
    if matrix.ndim != 2 or matrix.shape[0] % n_outputs or matrix.shape[1] % n_outputs:
        raise ValueError(f"a {tuple(matrix.shape)} matrix cannot hold {n_outputs} outputs per example")
    return rearrange(matrix, "(a i) (b j) -> i j a b", a=n_outputs, b=n_outputs)


# ------------------------------------------------------------------------------- spectra and kernel drift
@dataclass
class Spectrum:
    """Eigen-summary of a symmetric PSD kernel matrix."""

    eigenvalues: Tensor          # ascending
    lambda_min: float
    lambda_max: float
    condition_number: float      # lambda_max / lambda_min (inf when lambda_min <= 0)
    effective_rank: float        # exp(entropy of eigenvalues / trace) (Roy & Vetterli)
    alignment: float | None = None  # <K, y y^T>_F / (||K||_F ||y||^2) when a target is given

    def as_dict(self) -> dict:
        out = {k: v for k, v in self.__dict__.items() if k != "eigenvalues"}
        out["eigenvalues"] = self.eigenvalues.tolist()
        return out


def _square_matrix(K: Tensor) -> Tensor:
    if K.ndim == 4:
        K = ntk_as_matrix(K)
    if K.ndim != 2 or K.shape[0] != K.shape[1]:
        raise ValueError(f"expected a square kernel matrix (or a full (n, n, o, o) kernel), got {tuple(K.shape)}")
    return K


def spectrum(K: Tensor, y: Tensor | None = None) -> Spectrum:
    """Eigenvalues, extremes, condition number, effective rank and (with ``y``) kernel-target alignment."""
    K = _square_matrix(K)
    evals = torch.linalg.eigvalsh(0.5 * (K + K.T))
    lo, hi = float(evals[0]), float(evals[-1])
    p = evals.clamp(min=0) / evals.clamp(min=0).sum()
    entropy = -float(torch.where(p > 0, p * torch.log(p), torch.zeros_like(p)).sum())
    alignment = None
    if y is not None:
        y = y.reshape(-1).to(K.dtype)
        if y.numel() != K.shape[0]:
            raise ValueError(f"target has {y.numel()} entries but the kernel is {tuple(K.shape)}")
        alignment = float(y @ K @ y / (torch.linalg.norm(K) * (y @ y)))
    return Spectrum(evals, lo, hi, hi / lo if lo > 0 else math.inf, math.exp(entropy), alignment)


def kernel_drift(K_t: Tensor, K_0: Tensor) -> float:
    """Relative drift ``||K_t - K_0||_F / ||K_0||_F``."""
    if K_t.shape != K_0.shape:
        raise ValueError(f"kernels have different shapes {tuple(K_t.shape)} and {tuple(K_0.shape)}")
    return float(torch.linalg.norm(K_t - K_0) / torch.linalg.norm(K_0))


# ---------------------------------------------------------------------------------- kernel-regime predictions
def kernel_regression(K_train: Tensor, K_test_train: Tensor, y: Tensor, ridge: float = 0.0) -> Tensor:
    """Kernel ridge prediction ``K_test_train (K_train + ridge I)^{-1} y`` (y: (N,) or (N, k))."""
    K_train = _square_matrix(K_train)
    if K_test_train.shape[-1] != K_train.shape[0] or y.shape[0] != K_train.shape[0]:
        raise ValueError(f"shapes do not match: K_train {tuple(K_train.shape)}, K_test_train "
                         f"{tuple(K_test_train.shape)}, y {tuple(y.shape)}")
    if ridge < 0:
        raise ValueError(f"ridge={ridge} must be non-negative")
    eye = torch.eye(K_train.shape[0], dtype=K_train.dtype)
    return K_test_train @ torch.linalg.solve(K_train + ridge * eye, y.to(K_train.dtype))


def gd_dynamics(K: Tensor, y: Tensor, f0: Tensor, lr: float, t: int | Sequence[int],
                kernel_scale: float = 1.0) -> Tensor:
    """Linearised GD residuals ``r(t) = (I - lr*kernel_scale*K)^t (f0 - y)``, shape ``(len(t), N)`` (or ``(N,)``).

    For a two-layer net pass ``K = H`` and ``kernel_scale = ntk_scale(model)`` (``eta*m*H`` for softmax);
    for a raw Gram ``J J^T`` keep ``kernel_scale = 1``. Vectors are flattened in the kernel's row order.
    """
    K = _square_matrix(K)
    r0 = (f0 - y).reshape(-1).to(K.dtype)
    if r0.numel() != K.shape[0]:
        raise ValueError(f"residual has {r0.numel()} entries but the kernel is {tuple(K.shape)}")
    scalar = isinstance(t, (int, np.integer))
    steps = torch.as_tensor([t] if scalar else list(t), dtype=K.dtype)
    if (steps < 0).any():
        raise ValueError("steps t must be non-negative")
    evals, evecs = torch.linalg.eigh(0.5 * (K + K.T))
    factor = (1.0 - lr * kernel_scale * evals)[None] ** steps[:, None]   # (T, N) per eigen-direction
    out = (factor * (evecs.T @ r0)[None]) @ evecs.T
    return out[0] if scalar else out


def max_stable_lr(K: Tensor, kernel_scale: float = 1.0) -> float:
    """Largest step for which linearised GD does not diverge: ``2 / (kernel_scale * lambda_max(K))``."""
    return 2.0 / (kernel_scale * spectrum(K).lambda_max)


# --------------------------------------------------------------------------------------- width convergence
@dataclass
class WidthConvergence:
    """Monte-Carlo kernels per width and their distance to the widest mean kernel (the K_inf estimate)."""

    widths: list[int]
    mean_kernels: list[Tensor]
    relative_error: list[float]          # mean over inits of ||K_m - K_inf||_F / ||K_inf||_F
    relative_error_of_mean: list[float]  # ||E K_m - K_inf||_F / ||K_inf||_F
    k_inf: Tensor = field(repr=False)


def monte_carlo_ntk(make_model: Callable[[int, int], nn.Module], x: Tensor, widths: Sequence[int], n_inits: int,
                    kernel_fn: Callable[[nn.Module, Tensor], Tensor] = two_layer_ntk,
                    k_inf: Tensor | None = None, seed: int = 0) -> WidthConvergence:
    """Average ``kernel_fn(make_model(width, seed_k), x)`` over ``n_inits`` inits at each width.

    ``K_inf`` is ``k_inf`` if given, else the mean kernel at the largest width (an estimate: say so in reports).
    """
    if n_inits < 1 or not widths:
        raise ValueError("monte_carlo_ntk needs n_inits >= 1 and at least one width")
    kernels = {w: [kernel_fn(make_model(w, seed + k), x) for k in range(n_inits)] for w in widths}
    means = [torch.stack(kernels[w]).mean(0) for w in widths]
    ref = means[int(np.argmax(widths))] if k_inf is None else k_inf
    norm = torch.linalg.norm(ref)
    errors = [float(np.mean([float(torch.linalg.norm(k - ref) / norm) for k in kernels[w]])) for w in widths]
    errors_mean = [float(torch.linalg.norm(mk - ref) / norm) for mk in means]
    return WidthConvergence(list(widths), means, errors, errors_mean, ref)


# ----------------------------------------------------------------------------------------- training callback
class KernelDriftTracker:
    """Training callback: at the chosen steps, the NTK drift on a fixed probe batch vs the first recorded step.

    Called as ``tracker(step, model)`` with ``model(sample, timestep)`` a score net; returns
    ``{"ntk_drift", "weight_movement", "ntk_lambda_min"}`` at the chosen steps, else None. Drift is
    ``||K_t - K_0||_F / ||K_0||_F``, weight movement ``||theta_t - theta_0|| / ||theta_0||`` over the tracked
    parameters, and ``lambda_min`` that of the trace kernel ``(n, n)`` (mode ``trace``) or of the full
    output-major ``(n*o, n*o)`` matrix (mode ``full``). ``history`` keeps every record with its ``step``.
    """

    def __init__(self, probe_sample: Tensor, probe_timestep: Tensor, steps: Sequence[int], mode: str = "trace",
                 params: Sequence[str] | None = None, implementation: str = "jacobian",
                 chunk_size: int | None = None):
        if mode not in ("trace", "full"):
            raise ValueError(f"mode={mode!r} is not valid for drift tracking; choose one of: trace, full")
        if not steps:
            raise ValueError("steps must list at least one training step at which to record the kernel")
        timestep = torch.as_tensor(probe_timestep)
        if timestep.ndim == 0:
            timestep = timestep.expand(probe_sample.shape[0])
        if timestep.shape[0] != probe_sample.shape[0]:
            raise ValueError(f"probe_timestep has {timestep.shape[0]} entries for {probe_sample.shape[0]} samples")
        self.probe = (probe_sample.detach(), timestep.detach())
        self.steps = set(int(s) for s in steps)
        self.mode, self.params = mode, list(params) if params is not None else None
        self.implementation, self.chunk_size = implementation, chunk_size
        self.history: list[dict] = []
        self._k0: Tensor | None = None
        self._theta0: Tensor | None = None

    def _flat_params(self, model: nn.Module) -> Tensor:
        named = dict(model.named_parameters())
        names = self.params if self.params is not None else [k for k, v in named.items() if v.requires_grad]
        return torch.cat([named[k].detach().reshape(-1) for k in names])

    def __call__(self, step: int, model: nn.Module) -> dict | None:
        if int(step) not in self.steps:
            return None
        was_training = model.training
        model.eval()
        try:
            K = empirical_ntk(model, self.params, self.probe, mode=self.mode,
                              implementation=self.implementation, chunk_size=self.chunk_size).detach()
        finally:
            model.train(was_training)
        K = ntk_as_matrix(K) if self.mode == "full" else K
        theta = self._flat_params(model).clone()
        if self._k0 is None:
            self._k0, self._theta0 = K, theta
        record = {
            "ntk_drift": kernel_drift(K, self._k0),
            "weight_movement": float(torch.linalg.norm(theta - self._theta0) / torch.linalg.norm(self._theta0)),
            "ntk_lambda_min": spectrum(K).lambda_min,
        }
        self.history.append({"step": int(step), **record})
        return record
