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

from softdiff.diffusion.sampling import model_output

ScoreFn = Callable[[Tensor, Tensor], Tensor]  # (x, t) -> the process's field: a score (VP) or a velocity (flow)
DIVERGENCES = ("auto", "exact", "hutchinson")


class VPProcess:
    """A variance-preserving forward process given by ``log alpha_bar(t) = log alpha(t)^2`` on ``[t_min, t_max]``."""

    def __init__(self, t_min: float, t_max: float):
        if not t_min < t_max:
            raise ValueError(f"need t_min < t_max, got t_min={t_min}, t_max={t_max}")
        self.t_min, self.t_max = float(t_min), float(t_max)

    def log_alpha_bar(self, t: Tensor) -> Tensor:
        raise NotImplementedError

    def beta(self, t: Tensor) -> Tensor:
        raise NotImplementedError

    def alpha_sigma(self, t: Tensor) -> tuple[Tensor, Tensor]:
        """``alpha(t) = sqrt(alpha_bar)`` and ``sigma(t) = sqrt(1 - alpha_bar)``."""
        ab = torch.exp(self.log_alpha_bar(t))
        return ab.sqrt(), (1 - ab).sqrt()

    def drift(self, score_fn: ScoreFn) -> ScoreFn:
        """The probability-flow ODE's right-hand side ``-beta (x + score) / 2`` for a score function."""

        def f(x: Tensor, t: Tensor) -> Tensor:
            half_beta = 0.5 * self.beta(t).reshape(-1, *([1] * (x.dim() - 1)))
            return -half_beta * (x + score_fn(x, t))

        return f


class LinearVP(VPProcess):
    """The VP-SDE with ``beta(t) = beta_min + t (beta_max - beta_min)`` on ``[t_min, 1]`` (Song et al. 2021)."""

    def __init__(self, beta_min: float = 0.1, beta_max: float = 20.0, t_min: float = 1e-5, t_max: float = 1.0):
        super().__init__(t_min, t_max)
        self.beta_min, self.beta_max = beta_min, beta_max

    def log_alpha_bar(self, t: Tensor) -> Tensor:
        return -(self.beta_min * t + 0.5 * (self.beta_max - self.beta_min) * t**2)

    def beta(self, t: Tensor) -> Tensor:
        return self.beta_min + t * (self.beta_max - self.beta_min)


class OUProcess(VPProcess):
    """docs/theory.md 1.5: ``dX = -X dt + sqrt(2) dB``, i.e. constant ``beta = 2``, ``alpha = e^{-t}``."""

    def __init__(self, t_min: float = 0.01, t_max: float = 3.0):
        super().__init__(t_min, t_max)

    def log_alpha_bar(self, t: Tensor) -> Tensor:
        return -2.0 * t

    def beta(self, t: Tensor) -> Tensor:
        return torch.full_like(t, 2.0)


class DiscreteVP(VPProcess):
    """A diffusers schedule as a continuous process: time is the (fractional) timestep index ``0..N-1`` and
    ``log alpha_bar`` is linear between the ``N`` tabulated values (so ``beta`` is piecewise constant)."""

    def __init__(self, alphas_cumprod: Tensor):
        table = torch.as_tensor(alphas_cumprod, dtype=torch.float64)
        super().__init__(0.0, float(len(table) - 1))
        self.table = torch.log(table)

    @classmethod
    def from_scheduler_config(cls, config: dict) -> "DiscreteVP":
        """The forward process a softdiff model was trained with (its saved scheduler config)."""
        from softdiff.diffusion.schedulers import make_scheduler

        return cls(make_scheduler("ddpm", config).alphas_cumprod)

    def _segment(self, t: Tensor) -> tuple[Tensor, Tensor]:
        k = t.detach().to(torch.float64).clamp(0, len(self.table) - 1 - 1e-9)
        i = k.floor().long()
        return i, k - i

    def log_alpha_bar(self, t: Tensor) -> Tensor:
        i, frac = self._segment(t)
        return (self.table[i] + frac * (self.table[i + 1] - self.table[i])).to(t.dtype)

    def beta(self, t: Tensor) -> Tensor:
        i, _ = self._segment(t)
        return (self.table[i] - self.table[i + 1]).to(t.dtype)


class FlowProcess:
    """The rectified flow ``x = (1 - s) x_0 + s eps`` in model time ``t = s * num_train_timesteps`` on
    ``[t_min, num_train_timesteps]``; its ODE field is the model's velocity (``dx/dt = v / num_train_timesteps``)."""

    def __init__(self, num_train_timesteps: int = 1000, t_min: float = 1.0):
        if not 0 < t_min < num_train_timesteps:
            raise ValueError(f"need 0 < t_min < {num_train_timesteps}, got t_min={t_min}")
        self.num_train_timesteps, self.t_min, self.t_max = num_train_timesteps, float(t_min), float(num_train_timesteps)

    def alpha_sigma(self, t: Tensor) -> tuple[Tensor, Tensor]:
        s = t / self.num_train_timesteps
        return 1 - s, s

    def drift(self, velocity_fn: ScoreFn) -> ScoreFn:
        return lambda x, t: velocity_fn(x, t) / self.num_train_timesteps


def process_from_scheduler_config(config: dict) -> VPProcess | FlowProcess:
    """The continuous process a softdiff model was trained with (its saved scheduler config)."""
    from softdiff.diffusion.schedulers import is_flow_config

    if is_flow_config(config):
        return FlowProcess(int(config.get("num_train_timesteps", 1000)))
    return DiscreteVP.from_scheduler_config(config)


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
    from softdiff.diffusion.objectives import append_dims, score_from_output
    from softdiff.diffusion.schedulers import config_prediction_type

    process = process_from_scheduler_config(scheduler_config)
    prediction_type = config_prediction_type(scheduler_config)
    output = _model_output_fn(model)

    def score(x: Tensor, t: Tensor) -> Tensor:
        alpha, sigma = process.alpha_sigma(t.to(x.dtype))
        return score_from_output(prediction_type, output(x, t), x, append_dims(alpha, x.dim()),
                                 append_dims(sigma, x.dim()))

    return score


def model_field_fn(model, scheduler_config: dict) -> ScoreFn:
    """What ``log_likelihood`` integrates for this model: its velocity (flow models) or its score."""
    from softdiff.diffusion.schedulers import is_flow_config

    return _model_output_fn(model) if is_flow_config(scheduler_config) else model_score_fn(model, scheduler_config)


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
