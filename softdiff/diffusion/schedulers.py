"""diffusers schedulers by short name, with safe defaults, and the OU process of THEORY.md 1.5 as betas."""
from __future__ import annotations

import math
from typing import Any

from diffusers import (
    DDIMScheduler,
    DDPMScheduler,
    DPMSolverMultistepScheduler,
    EulerDiscreteScheduler,
    HeunDiscreteScheduler,
    UniPCMultistepScheduler,
)

SCHEDULERS = {
    "ddpm": DDPMScheduler,
    "ddim": DDIMScheduler,
    "dpm++": DPMSolverMultistepScheduler,
    "dpm++sde": DPMSolverMultistepScheduler,  # the stochastic variant (algorithm_type="sde-dpmsolver++")
    "euler": EulerDiscreteScheduler,
    "heun": HeunDiscreteScheduler,
    "unipc": UniPCMultistepScheduler,
}
PREDICTION_TYPES = ("epsilon", "sample", "v_prediction")

# clip_sample=False: data outside [-1, 1] (toy sets, OU) must not be clamped. "trailing" starts sampling at the
# last training timestep (pure noise) with few steps; it is safe with linear betas and with the OU betas.
SAFE_DEFAULTS: dict[str, Any] = {"clip_sample": False, "timestep_spacing": "trailing"}


def ou_betas(t_min: float, t_max: float, num_train_timesteps: int = 1000) -> list[float]:
    """Betas whose ``alphas_cumprod[k] = exp(-2 t_k)`` on the uniform grid ``t_k`` in [t_min, t_max].

    This is the OU process ``dX = -X dt + sqrt(2) dB`` (VP with beta = 2) of THEORY.md 1.5 sampled at
    ``num_train_timesteps`` times, so every diffusers scheduler can train and sample it.
    """
    if not 0 < t_min < t_max:
        raise ValueError(f"need 0 < t_min < t_max for the OU process, got t_min={t_min}, t_max={t_max}")
    step = (t_max - t_min) / (num_train_timesteps - 1)
    return [1 - math.exp(-2 * t_min)] + [1 - math.exp(-2 * step)] * (num_train_timesteps - 1)


def training_scheduler_config(beta_schedule: str = "linear", prediction_type: str = "epsilon",
                              num_train_timesteps: int = 1000, ou_t_min: float = 0.01,
                              ou_t_max: float = 3.0) -> dict[str, Any]:
    """The config that defines the forward process; saved beside the model and reused for sampling."""
    if prediction_type not in PREDICTION_TYPES:
        raise ValueError(f"unknown prediction_type {prediction_type!r}; choose one of: {', '.join(PREDICTION_TYPES)}")
    config: dict[str, Any] = {"num_train_timesteps": num_train_timesteps, "prediction_type": prediction_type,
                              **SAFE_DEFAULTS}
    if beta_schedule == "ou":
        config["trained_betas"] = ou_betas(ou_t_min, ou_t_max, num_train_timesteps)
    elif beta_schedule in ("linear", "scaled_linear", "squaredcos_cap_v2"):
        config["beta_schedule"] = beta_schedule
        if beta_schedule == "squaredcos_cap_v2":
            # The cosine schedule's last beta is ~1: starting at t = 999 blows up (DESIGN.md trap).
            config["timestep_spacing"] = "leading"
    else:
        raise ValueError(f"unknown beta_schedule {beta_schedule!r}; choose one of: linear, scaled_linear, "
                         "squaredcos_cap_v2, ou")
    return config


def make_scheduler(name: str, config: dict[str, Any] | None = None, **overrides):
    """A diffusers scheduler by short name, built from a training config (or the defaults) plus overrides."""
    if name not in SCHEDULERS:
        raise ValueError(f"unknown scheduler {name!r}; choose one of: {', '.join(SCHEDULERS)}")
    base = dict(training_scheduler_config() if config is None else config)
    base = {k: v for k, v in base.items() if not k.startswith("_")}
    cls = SCHEDULERS[name]
    if name == "dpm++":
        base.setdefault("algorithm_type", "dpmsolver++")
    if name == "dpm++sde":
        base["algorithm_type"] = "sde-dpmsolver++"
    if name == "ddim":
        base.setdefault("set_alpha_to_one", True)
    # Saved configs win over the defaults, except clip_sample, which is only ever on when asked for here.
    return cls.from_config({**SAFE_DEFAULTS, **base, "clip_sample": False, **overrides})
