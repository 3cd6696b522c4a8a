"""Empirical NTKs of any module with torch.func: full, trace or diagonal, by Jacobian or by NTK-vector products
(example-major layout; ``ntk_as_matrix`` gives the output-major matrix of the closed forms)."""
from __future__ import annotations

from typing import Callable, Mapping

import torch
from einops import rearrange
from torch import Tensor, nn
from torch.func import functional_call, jacrev, jvp, vjp, vmap
from torch.nn.attention import SDPBackend, sdpa_kernel

from softdiff.diffusion.sampling import model_output

NTK_MODES = ("full", "trace", "diagonal")
NTK_IMPLEMENTATIONS = ("jacobian", "ntk_vp")


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


