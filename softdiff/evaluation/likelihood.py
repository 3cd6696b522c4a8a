"""Log-likelihood through the probability-flow ODE (score_sde style), integrated with torchdiffeq.

A VP process ``x_t = alpha(t) x_0 + sigma(t) eps`` with ``alpha^2 + sigma^2 = 1`` and ``beta(t) = -d log alpha^2 / dt``
has the probability-flow ODE ``dx/dt = f(x, t) = -beta(t) (x + score(x, t)) / 2``; the rectified flow
``x_s = (1 - s) x_0 + s eps`` has ``dx/ds = v(x, s)``, the velocity its model predicts. Integrating the data point
forward from ``t_min`` to ``t_max`` together with ``int div f dt`` gives
``log p_{t_min}(x) = log p_{t_max}(x(t_max)) + int_{t_min}^{t_max} div f(x(t), t) dt``
(the continuity equation ``d/dt log p_t(x_t) = -div f`` along the flow). The divergence is exact (one
vector-Jacobian product per dimension) for small dimension and Hutchinson's estimator (fixed Rademacher
probe per solve, unbiased) for large.
"""
from __future__ import annotations

import math
from typing import Callable

import torch
from torch import Tensor
from torchdiffeq import odeint

from softdiff.diffusion.continuous import (  # noqa: F401 (re-exported: the processes the ODE integrates)
    DiscreteVP, FlowProcess, LinearVP, OUProcess, ScoreFn, VPProcess,
)
from softdiff.diffusion.objectives import append_dims, score_from_output
from softdiff.diffusion.process import ForwardProcess
from softdiff.diffusion.sampling import model_output

DIVERGENCES = ("auto", "exact", "hutchinson")


def process_from_scheduler_config(config: dict) -> VPProcess | FlowProcess:
    """The continuous process a softdiff model was trained with (its saved scheduler config): the continuous-time
    view of its forward process."""
    return ForwardProcess(config).continuous()


def standard_normal_log_prob(z: Tensor) -> Tensor:
    """``log N(z; 0, I)`` per example."""
    flat = z.flatten(1)
    return -0.5 * (flat**2).sum(1) - 0.5 * flat.shape[1] * math.log(2 * math.pi)


def _model_output_fn(model):
    weight = next(model.parameters())  # the model's device and dtype; the ODE state stays where the caller keeps it

    def output(x: Tensor, t: Tensor) -> Tensor:
        out = model(x.to(weight.device, weight.dtype), t.to(weight.device, weight.dtype))
        return model_output(out).to(x.device, x.dtype)

    return output


def model_score_fn(model, scheduler_config: dict) -> ScoreFn:
    """``score(x, t)`` of a softdiff model whose output is its scheduler's prediction type, at timestep ``t``."""
    trained = ForwardProcess(scheduler_config)
    process, prediction_type = trained.continuous(), trained.prediction_type
    output = _model_output_fn(model)

    def score(x: Tensor, t: Tensor) -> Tensor:
        alpha, sigma = process.alpha_sigma(t.to(x.dtype))
        return score_from_output(prediction_type, output(x, t), x, append_dims(alpha, x.dim()),
                                 append_dims(sigma, x.dim()))

    return score


def model_field_fn(model, scheduler_config: dict) -> ScoreFn:
    """What ``log_likelihood`` integrates for this model: its velocity (flow models) or its score."""
    if ForwardProcess(scheduler_config).is_flow:
        return _model_output_fn(model)
    return model_score_fn(model, scheduler_config)


def _divergence(out: Tensor, vjp_fn, x: Tensor, probe: Tensor | None) -> Tensor:
    if probe is not None:  # Hutchinson: E[v^T J v] = tr J for Rademacher v
        (vjp,) = vjp_fn(probe)
        return (vjp * probe).flatten(1).sum(1)
    flat_dim = x[0].numel()
    div = torch.zeros(x.shape[0], dtype=x.dtype, device=x.device)
    for i in range(flat_dim):
        basis = torch.zeros_like(x).flatten(1)
        basis[:, i] = 1
        (vjp,) = vjp_fn(basis.reshape(x.shape))
        div = div + vjp.flatten(1)[:, i]
    return div


class _AugmentedFlow(torch.nn.Module):
    """The right-hand side of ``(dx/dt, d(int div f)/dt)`` for torchdiffeq."""

    def __init__(self, field_fn: ScoreFn, process: VPProcess | FlowProcess, probe: Tensor | None):
        super().__init__()
        self.drift, self.probe = process.drift(field_fn), probe
        self.evaluations = 0

    def forward(self, t: Tensor, state: tuple[Tensor, Tensor]) -> tuple[Tensor, Tensor]:
        x, _ = state
        self.evaluations += 1
        tb = t.expand(x.shape[0]).to(x.dtype)
        with torch.enable_grad():
            out, vjp_fn = torch.func.vjp(lambda y: self.drift(y, tb), x.detach())
            div = _divergence(out, vjp_fn, x, self.probe)
        return out.detach(), div.detach()


def log_likelihood(field_fn: ScoreFn, process: VPProcess | FlowProcess, x: Tensor, divergence: str = "auto",
                   exact_max_dim: int = 16, rtol: float = 1e-5, atol: float = 1e-5, method: str = "dopri5",
                   seed: int = 0, prior_log_prob: Callable[[Tensor], Tensor] | None = None,
                   options: dict | None = None) -> Tensor:
    """``log p_{t_min}(x)`` in nats per example (shape ``(B,)``), under the model's probability-flow ODE.

    ``field_fn(x, t)`` (the score for a VP process, the velocity for a ``FlowProcess``; see ``model_field_fn``)
    takes a batch and per-example times in the process's units. ``divergence='auto'`` is
    exact when ``x[0].numel() <= exact_max_dim`` and Hutchinson otherwise. The prior at ``t_max`` is
    ``N(0, I)`` unless ``prior_log_prob`` is given. ``method`` / ``options`` go to ``torchdiffeq.odeint``
    (e.g. ``method="rk4", options={"step_size": 0.05}`` for a fixed grid).
    """
    if divergence not in DIVERGENCES:
        raise ValueError(f"unknown divergence {divergence!r}; choose one of: {', '.join(DIVERGENCES)}")
    if not torch.is_floating_point(x) or not torch.isfinite(x).all():
        raise ValueError("log_likelihood needs a finite floating-point batch x")
    use_exact = divergence == "exact" or (divergence == "auto" and x[0].numel() <= exact_max_dim)
    probe = None
    if not use_exact:
        g = torch.Generator().manual_seed(seed)
        probe = (torch.randint(0, 2, x.shape, generator=g) * 2 - 1).to(x.dtype).to(x.device)
    flow = _AugmentedFlow(field_fn, process, probe)
    times = torch.tensor([process.t_min, process.t_max], dtype=x.dtype, device=x.device)
    zero = torch.zeros(x.shape[0], dtype=x.dtype, device=x.device)
    xs, integrals = odeint(flow, (x.detach(), zero), times, rtol=rtol, atol=atol, method=method,
                                 options=options)
    z, integral = xs[-1], integrals[-1]
    prior = standard_normal_log_prob if prior_log_prob is None else prior_log_prob
    return prior(z) + integral


def bits_per_dim(field_fn: ScoreFn, process: VPProcess | FlowProcess, images: Tensor, num_levels: int, seed: int = 0,
                 **kwargs) -> Tensor:
    """Bits/dim of images with ``num_levels`` grey levels (data in [0, 1], model space ``2x - 1``), per image.

    Uniform dequantisation: level ``k`` becomes ``(k + u) / num_levels`` with ``u ~ U[0, 1)``; then
    ``-log P(k) <= -log p_data(x_deq) + D log num_levels`` and ``log p_data = log p_model(2x - 1) + D log 2``.
    """
    if num_levels < 2:
        raise ValueError(f"num_levels={num_levels} must be at least 2")
    if images.min() < 0 or images.max() > 1:
        raise ValueError("bits_per_dim needs images in [0, 1] (data space)")
    g = torch.Generator().manual_seed(seed)
    levels = torch.round(images.double() * (num_levels - 1))
    dequant = (levels + torch.rand(images.shape, generator=g, dtype=torch.float64)) / num_levels
    dim = images[0].numel()
    logp = log_likelihood(field_fn, process, (2 * dequant - 1).to(images.dtype), seed=seed, **kwargs).double()
    nll = -(logp + dim * math.log(2)) + dim * math.log(num_levels)
    return nll / (dim * math.log(2))
