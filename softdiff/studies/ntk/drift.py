"""NTK drift during training: the tracker and the training callback that records it into metrics.jsonl."""
from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor, nn

from softdiff.errors import ConfigError, check_positive
from softdiff.training.callbacks import TrainerCallback, TrainState
from softdiff.studies.ntk.empirical import empirical_ntk, ntk_as_matrix
from softdiff.studies.ntk.regime import kernel_drift, spectrum


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


class NTKDriftCallback(TrainerCallback):
    """Records the NTK drift of the score net on a fixed probe batch at mid noise every ``every`` steps (and at the
    first step of the invocation: drift is relative to it; the tracker is not checkpointed). A config asks for it
    as ``callbacks.ntk_drift.every=N`` (older configs: ``diagnostics.ntk_every``); ``every=0`` records nothing."""

    name = "ntk_drift"
    claims = ("callbacks.ntk_drift",)
    SETTINGS = {"every": 0, "probe_size": 8}  # the settings of callbacks.ntk_drift and their defaults

    def __init__(self, every: int, probe_size: int):
        self.every, self.probe_size, self.tracker = every, probe_size, None

    @classmethod
    def from_settings(cls, settings: dict) -> "NTKDriftCallback":
        """The callback of a config's ``callbacks.ntk_drift`` section; ConfigError (one sentence) for a bad key."""
        for key, value in settings.items():
            where = f"callbacks.{cls.name}.{key}"
            if key not in cls.SETTINGS:
                raise ConfigError(f"{where} is not a setting of the NTK drift callback; valid: "
                                  f"{', '.join(cls.SETTINGS)}.")
            if isinstance(value, bool) or not isinstance(value, int):
                raise ConfigError(f"{where}={value!r} must be a whole number.")
        merged = {**cls.SETTINGS, **settings}
        check_positive(f"callbacks.{cls.name}.every", merged["every"], allow_zero=True)
        check_positive(f"callbacks.{cls.name}.probe_size", merged["probe_size"])
        return cls(merged["every"], merged["probe_size"])

    def on_train_begin(self, state: TrainState) -> dict | None:
        if not self.every:
            return None
        g = torch.Generator().manual_seed(state.cfg.train.seed + 12345)
        x0, _ = state.dataset.sample(self.probe_size, g)
        t = state.process.mid_timesteps(len(x0))
        probe = state.process.add_noise(x0, torch.randn(x0.shape, generator=g), t)
        steps = [state.start, *range(self.every, state.cfg.train.steps + 1, self.every)]
        like = next(state.model.parameters())  # the probe is drawn on the CPU in float32; the model may be elsewhere
        self.tracker = KernelDriftTracker(probe.to(like), t.to(like), steps)
        return self.tracker(state.start, state.model)

    def due(self, step: int) -> bool:
        return bool(self.every) and step % self.every == 0

    def on_step_end(self, state: TrainState) -> dict | None:
        return self.tracker(state.step, state.model)
