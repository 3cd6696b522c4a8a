"""The NTK width study: train two-layer softmax / relu / exp nets by full-batch GD and compare with the kernel regime.

For each task, activation and width: the NTK spectrum at init, kernel drift and weight movement at the end,
the measured loss contraction rate vs the linearised prediction and the recalled bound ``1 - eta*kappa*lambda/2``,
and the gap between the trained network and the kernel-regime prediction on test points.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import torch
from torch import Tensor
from tqdm import tqdm

from softdiff.studies.ntk import (gd_dynamics, kernel_drift, kernel_regression, max_stable_lr,
                                      monte_carlo_ntk, ntk_scale, spectrum, two_layer_ntk)
from softdiff.errors import ConfigError, check_at_most, check_choice, check_positive, check_total
from softdiff.nets.two_layer import TWO_LAYER_ACTIVATIONS, TwoLayerNet


# Sizes a user can type, bounded before anything is allocated (far above the presets).
LIMITS = {"n_train": 4096, "n_test": 65_536, "d_in": 4096, "d_out": 256, "data_dim": 4096, "steps": 10_000_000,
          "n_inits": 1000}
MAX_WIDTH = 2**20
MAX_ENTRIES = 2**27  # of the widest net's hidden activations and of the NTK: about 1 GB in float64


@dataclass
class NTKStudyConfig:
    """Options of ``softdiff ntk`` (the presets are softdiff/configs/ntk/*.yaml)."""

    tasks: list[str] = field(default_factory=lambda: ["regression", "score"])    # see TASKS
    activations: list[str] = field(default_factory=lambda: ["softmax", "relu", "exp"])
    widths: list[int] = field(default_factory=lambda: [64, 128, 256, 512, 1024, 2048, 4096, 8192])
    n_train: int = 32            # training points (kernel is (n_train*d_out)^2)
    n_test: int = 64             # test points for the network-vs-kernel gap
    d_in: int = 8                # regression task: input dimension (inputs on the unit sphere)
    d_out: int = 2               # regression task: outputs
    data_dim: int = 2            # score task: data dimension (input is concat(x_t, t), output x0)
    score_t0: float = 0.05       # score task: t ~ Uniform[score_t0, score_t1] (docs/theory.md 1.5)
    score_t1: float = 1.0
    sigma: float = 1.0           # init std of W
    steps: int = 2000            # maximum full-batch GD steps
    loss_target: float = 1e-3    # stop once loss <= loss_target * loss(0): drift is compared at matched fit
    lr_fraction: float = 0.5     # step = lr_fraction * max_stable_lr(H(0)) = lr_fraction * 2/(kappa*lambda_max)
    rate_constant: float = 0.5   # [recalled] c in the bound rate 1 - c*eta*kappa*lambda_min (paper: 1/2)
    n_inits: int = 3             # Monte-Carlo inits per width for the kernel-convergence curve
    ridge: float = 1e-10         # ridge for the kernel predictions on test points
    seed: int = 0
    output_dir: str = "runs/ntk"

    def validate(self) -> None:
        for task in self.tasks:
            check_choice("tasks", task, list(TASKS))
        for act in self.activations:
            check_choice("activations", act, TWO_LAYER_ACTIVATIONS)
        if not self.tasks or not self.activations or len(self.widths) < 2:
            raise ConfigError("tasks and activations must be non-empty and widths must list at least two widths.")
        for w in self.widths:
            if w < 2 or w % 2:
                raise ConfigError(f"widths entry {w} must be an even number >= 2 (coupled initialisation).")
        for key in ("n_train", "n_test", "d_in", "d_out", "data_dim", "steps", "n_inits", "sigma", "score_t0"):
            check_positive(key, getattr(self, key))
        if len(self.widths) > 64:
            raise ConfigError(f"widths lists {len(self.widths)} widths; at most 64.")
        if max(self.widths) > MAX_WIDTH:
            raise ConfigError(f"widths entry {max(self.widths)} is too large; at most {MAX_WIDTH}.")
        for key, limit in LIMITS.items():
            check_at_most(key, getattr(self, key), limit)
        d_in, d_out = max(self.d_in, self.data_dim + 1), max(self.d_out, self.data_dim)
        check_total("the widest network's activations", (self.n_train + self.n_test) * max(self.widths) * (d_in + d_out),
                    MAX_ENTRIES, {"n_train": self.n_train, "n_test": self.n_test, "widths": max(self.widths),
                                  "d_in": self.d_in, "d_out": self.d_out, "data_dim": self.data_dim})
        check_total("the NTK", (self.n_train * d_out) * ((self.n_train + self.n_test) * d_out), MAX_ENTRIES,
                    {"n_train": self.n_train, "n_test": self.n_test, "d_out": self.d_out, "data_dim": self.data_dim})
        check_positive("ridge", self.ridge, allow_zero=True)
        check_positive("loss_target", self.loss_target, allow_zero=True)
        if not 0 < self.lr_fraction < 1:
            raise ConfigError(f"lr_fraction={self.lr_fraction} must lie in (0, 1) (1 is the edge of stability).")
        if self.score_t1 <= self.score_t0:
            raise ConfigError(f"score_t1={self.score_t1} must exceed score_t0={self.score_t0}.")


# ----------------------------------------------------------------------------------------------------- tasks
@dataclass
class Task:
    """A regression data set with inputs scaled into the unit ball (the theory assumes ||x|| <= 1)."""

    x_train: Tensor
    y_train: Tensor
    x_test: Tensor
    y_test: Tensor


def regression_task(cfg: NTKStudyConfig, gen: torch.Generator) -> Task:
    """Inputs uniform on the unit sphere, targets ``sin(2 x^T B)`` with a Gaussian ``B`` (d_in, d_out)."""
    n = cfg.n_train + cfg.n_test
    x = torch.randn(n, cfg.d_in, generator=gen, dtype=torch.float64)
    x = x / x.norm(dim=1, keepdim=True)
    B = torch.randn(cfg.d_in, cfg.d_out, generator=gen, dtype=torch.float64)
    y = torch.sin(2.0 * x @ B)
    return Task(x[:cfg.n_train], y[:cfg.n_train], x[cfg.n_train:], y[cfg.n_train:])


def score_task(cfg: NTKStudyConfig, gen: torch.Generator) -> Task:
    """docs/theory.md 1.5: inputs ``concat(X_t, t)``, labels ``X_0``, OU forward process, two-Gaussian data."""
    n, d = cfg.n_train + cfg.n_test, cfg.data_dim
    centre = torch.zeros(d, dtype=torch.float64)
    centre[0] = 1.0
    signs = torch.randint(0, 2, (n, 1), generator=gen).to(torch.float64) * 2 - 1
    x0 = signs * centre + 0.3 * torch.randn(n, d, generator=gen, dtype=torch.float64)
    t = cfg.score_t0 + (cfg.score_t1 - cfg.score_t0) * torch.rand(n, 1, generator=gen, dtype=torch.float64)
    alpha, h = torch.exp(-t), 1.0 - torch.exp(-2.0 * t)
    xt = alpha * x0 + h.sqrt() * torch.randn(n, d, generator=gen, dtype=torch.float64)
    inputs = torch.cat([xt, t], dim=1)
    inputs = inputs / inputs.norm(dim=1).max()                  # one global scale keeps ||x|| <= 1
    return Task(inputs[:cfg.n_train], x0[:cfg.n_train], inputs[cfg.n_train:], x0[cfg.n_train:])


TASKS: dict[str, Callable[[NTKStudyConfig, torch.Generator], Task]] = {
    "regression": regression_task, "score": score_task}


def make_task(name: str, cfg: NTKStudyConfig, seed: int) -> Task:
    """The task called ``name``; ValueError listing the names if unknown."""
    if name not in TASKS:
        raise ValueError(f"unknown task {name!r}; choose one of: {', '.join(TASKS)}")
    return TASKS[name](cfg, torch.Generator().manual_seed(seed))


# -------------------------------------------------------------------------------------------------- training
def output_major(F: Tensor) -> Tensor:
    """``(n, d_out)`` outputs -> the kernel's output-major vector (entry ``l*n + i``)."""
    return F.T.reshape(-1)


def train_full_batch(net: TwoLayerNet, x: Tensor, y: Tensor, lr: float, steps: int,
                     loss_target: float = 0.0) -> list[float]:
    """Full-batch GD on ``W`` for ``1/2 ||F(x) - y||_F^2`` until ``steps`` or ``loss <= loss_target * loss(0)``.

    Returns the loss before each step and at the end (``len = steps_taken + 1``).
    """
    losses = []
    for _ in range(steps + 1):
        net.W.grad = None
        loss = 0.5 * ((net(x) - y) ** 2).sum()
        losses.append(float(loss.detach()))
        if len(losses) > steps or losses[-1] <= loss_target * losses[0]:
            break
        loss.backward()
        with torch.no_grad():
            net.W -= lr * net.W.grad
    return losses


def kernel_test_prediction(H: Tensor, H_test: Tensor, r0: Tensor, r_t: Tensor, f_test0: Tensor,
                           ridge: float) -> Tensor:
    """Linearised test outputs after GD: ``f_test(0) - H_test H^{-1} (r(0) - r(t))``."""
    return f_test0 - kernel_regression(H, H_test, r0 - r_t, ridge)


def run_one(task: Task, activation: str, width: int, cfg: NTKStudyConfig, seed: int) -> dict:
    """Train one network and compare it with its kernel-regime prediction; a JSON-ready dict."""
    d_in, d_out = task.x_train.shape[1], task.y_train.shape[1]
    net = TwoLayerNet(d_in, d_out, width, sigma=cfg.sigma, coupled=True, activation=activation,
                          seed=seed).double()
    x, y = task.x_train, task.y_train
    H0 = two_layer_ntk(net, x)
    spec0 = spectrum(H0, output_major(y))
    kappa = ntk_scale(net)
    lr = cfg.lr_fraction * max_stable_lr(H0, kappa)
    W0 = net.W.detach().clone()
    with torch.no_grad():
        f0, f_test0 = output_major(net(x)), output_major(net(task.x_test))
    H_test = two_layer_ntk(net, task.x_test, x)

    losses = train_full_batch(net, x, y, lr, cfg.steps, cfg.loss_target)
    T = len(losses) - 1

    HT = two_layer_ntk(net, x)
    residuals = gd_dynamics(H0, output_major(y), f0, lr, range(T + 1), kappa)
    predicted = (0.5 * (residuals ** 2).sum(1)).tolist()
    with torch.no_grad():
        f_test_net = output_major(net(task.x_test))
    f_test_kernel = kernel_test_prediction(H0, H_test, residuals[0], residuals[-1], f_test0, cfg.ridge)
    change = torch.linalg.norm(f_test_kernel - f_test0)
    return {
        "activation": activation, "width": width, "lr": lr, "kappa": kappa, "steps": T,
        "reached_target": losses[-1] <= cfg.loss_target * losses[0],
        "effective_lr": lr * kappa,
        "lambda_min": spec0.lambda_min, "lambda_max": spec0.lambda_max,
        "condition_number": spec0.condition_number, "effective_rank": spec0.effective_rank,
        "alignment": spec0.alignment, "eigenvalues": spec0.eigenvalues.tolist(),
        "kernel_drift": kernel_drift(HT, H0),
        "weight_movement": float(torch.linalg.norm(net.W.detach() - W0) / torch.linalg.norm(W0)),
        "loss": losses, "loss_linearised": predicted,
        "rate_measured": (losses[-1] / losses[0]) ** (1.0 / T),
        "rate_linearised": (predicted[-1] / predicted[0]) ** (1.0 / T),
        "rate_bound": 1.0 - cfg.rate_constant * lr * kappa * spec0.lambda_min,
        "train_gap": float(torch.linalg.norm(output_major(y) + residuals[-1] - output_major(net(x).detach()))
                           / torch.linalg.norm(residuals[0] - residuals[-1])),
        "test_gap": float(torch.linalg.norm(f_test_net - f_test_kernel) / change),
        "test_mse_net": float(((f_test_net - output_major(task.y_test)) ** 2).mean()),
        "test_mse_kernel": float(((f_test_kernel - output_major(task.y_test)) ** 2).mean()),
    }


def loglog_slope(widths, values) -> float:
    """Least-squares slope of ``log(values)`` against ``log(widths)``."""
    return float(np.polyfit(np.log(widths), np.log(values), 1)[0])


def run_width_study(cfg: NTKStudyConfig, progress: bool = True) -> dict:
    """Every (task, activation, width) run plus drift slopes and Monte-Carlo kernel convergence."""
    cfg.validate()
    jobs = [(t, a, w) for t in cfg.tasks for a in cfg.activations for w in cfg.widths]
    tasks = {name: make_task(name, cfg, cfg.seed) for name in cfg.tasks}
    runs: dict = {t: {a: [] for a in cfg.activations} for t in cfg.tasks}
    for task_name, act, width in tqdm(jobs, desc="ntk width study", disable=not progress):
        runs[task_name][act].append(run_one(tasks[task_name], act, width, cfg, cfg.seed + 1))
    summary: dict = {}
    for task_name in cfg.tasks:
        x = tasks[task_name].x_train
        d_in, d_out = x.shape[1], tasks[task_name].y_train.shape[1]
        for act in cfg.activations:
            rows = runs[task_name][act]
            conv = monte_carlo_ntk(
                lambda w, s: TwoLayerNet(d_in, d_out, w, sigma=cfg.sigma, activation=act, seed=s).double(),
                x, cfg.widths, cfg.n_inits, seed=cfg.seed + 100)
            summary.setdefault(task_name, {})[act] = {
                "drift_slope": loglog_slope(cfg.widths, [r["kernel_drift"] for r in rows]),
                "weight_movement_slope": loglog_slope(cfg.widths, [r["weight_movement"] for r in rows]),
                "kernel_convergence": conv.relative_error,
                "kernel_convergence_slope": loglog_slope(cfg.widths[:-1], conv.relative_error[:-1]),
            }
    return {"config": dataclasses.asdict(cfg), "runs": runs, "summary": summary}
