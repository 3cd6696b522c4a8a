"""diffusers schedulers by short name, with safe defaults; the OU process of the theory as betas; flow matching.

A training config (``training_scheduler_config``) defines the forward process and is saved beside the model.
``make_scheduler(name, config)`` builds the sampler called ``name`` for that process: for a rectified-flow
config, ``euler`` and ``heun`` are diffusers' ``FlowMatchEulerDiscreteScheduler`` / ``FlowMatchHeunDiscreteScheduler``
and ``dpm++`` / ``dpm++sde`` / ``unipc`` run on flow sigmas (``prediction_type="flow_prediction"``).
"""
from __future__ import annotations

import math
from typing import Any

from diffusers import (
    DDIMScheduler,
    DDPMScheduler,
    DPMSolverMultistepScheduler,
    EulerDiscreteScheduler,
    FlowMatchEulerDiscreteScheduler,
    FlowMatchHeunDiscreteScheduler,
    HeunDiscreteScheduler,
    UniPCMultistepScheduler,
)

from softdiff.diffusion.objectives import PREDICTION_TYPES

SCHEDULERS = {
    "ddpm": DDPMScheduler,
    "ddim": DDIMScheduler,
    "dpm++": DPMSolverMultistepScheduler,
    "dpm++sde": DPMSolverMultistepScheduler,  # the stochastic variant (algorithm_type="sde-dpmsolver++")
    "euler": EulerDiscreteScheduler,
    "heun": HeunDiscreteScheduler,
    "unipc": UniPCMultistepScheduler,
}
FLOW_SCHEDULERS = {
    "euler": FlowMatchEulerDiscreteScheduler,
    "heun": FlowMatchHeunDiscreteScheduler,
    "dpm++": DPMSolverMultistepScheduler,
    "dpm++sde": DPMSolverMultistepScheduler,
    "unipc": UniPCMultistepScheduler,
}
DIFFUSION_PREDICTION_TYPES = tuple(p for p in PREDICTION_TYPES if p != "flow")
FLOW_CLASS = "FlowMatchEulerDiscreteScheduler"  # the class a flow model's saved scheduler config names

# clip_sample=False: data outside [-1, 1] (toy sets, OU) must not be clamped. "trailing" starts sampling at the
# last training timestep (pure noise) with few steps; it is safe with linear betas and with the OU betas.
SAFE_DEFAULTS: dict[str, Any] = {"clip_sample": False, "timestep_spacing": "trailing"}


def ou_betas(t_min: float, t_max: float, num_train_timesteps: int = 1000) -> list[float]:
    """Betas whose ``alphas_cumprod[k] = exp(-2 t_k)`` on the uniform grid ``t_k`` in [t_min, t_max].

    This is the OU process ``dX = -X dt + sqrt(2) dB`` (VP with beta = 2; docs/theory.md) sampled at
    ``num_train_timesteps`` times, so every diffusers scheduler can train and sample it.
    """
    if not 0 < t_min < t_max:
        raise ValueError(f"need 0 < t_min < t_max for the OU process, got t_min={t_min}, t_max={t_max}")
    step = (t_max - t_min) / (num_train_timesteps - 1)
    return [1 - math.exp(-2 * t_min)] + [1 - math.exp(-2 * step)] * (num_train_timesteps - 1)


def is_flow_config(config: dict[str, Any]) -> bool:
    """Whether a training scheduler config describes the rectified flow (rather than a diffusion)."""
    return config.get("_class_name") == FLOW_CLASS


def config_prediction_type(config: dict[str, Any]) -> str:
    """What a model trained under ``config`` outputs: ``flow`` or the diffusion's prediction type."""
    return "flow" if is_flow_config(config) else config["prediction_type"]


def training_scheduler_config(beta_schedule: str = "linear", prediction_type: str = "epsilon",
                              num_train_timesteps: int = 1000, ou_t_min: float = 0.01,
                              ou_t_max: float = 3.0, flow_shift: float = 1.0) -> dict[str, Any]:
    """The config that defines the forward process; saved beside the model and reused for sampling.

    ``prediction_type="flow"`` is the rectified flow ``x_t = (1 - t) x0 + t noise`` (the betas do not apply).
    """
    if prediction_type not in PREDICTION_TYPES:
        raise ValueError(f"unknown prediction_type {prediction_type!r}; choose one of: {', '.join(PREDICTION_TYPES)}")
    if prediction_type == "flow":
        return {"_class_name": FLOW_CLASS, "num_train_timesteps": num_train_timesteps, "shift": flow_shift}
    config: dict[str, Any] = {"num_train_timesteps": num_train_timesteps, "prediction_type": prediction_type,
                              **SAFE_DEFAULTS}
    if beta_schedule == "ou":
        config["trained_betas"] = ou_betas(ou_t_min, ou_t_max, num_train_timesteps)
    elif beta_schedule in ("linear", "scaled_linear", "squaredcos_cap_v2"):
        config["beta_schedule"] = beta_schedule
        if beta_schedule == "squaredcos_cap_v2":
            # The cosine schedule's last beta is ~1: starting at t = 999 blows up.
            config["timestep_spacing"] = "leading"
    else:
        raise ValueError(f"unknown beta_schedule {beta_schedule!r}; choose one of: linear, scaled_linear, "
                         "squaredcos_cap_v2, ou")
    return config


def _flow_scheduler(name: str, config: dict[str, Any], overrides: dict[str, Any]):
    if name not in FLOW_SCHEDULERS:
        raise ValueError(f"scheduler {name!r} does not sample flow-matching models; choose one of: "
                         f"{', '.join(FLOW_SCHEDULERS)}")
    n, shift = config.get("num_train_timesteps", 1000), config.get("shift", 1.0)
    if name in ("euler", "heun"):
        return FLOW_SCHEDULERS[name](**{"num_train_timesteps": n, "shift": shift, **overrides})
    base = {"num_train_timesteps": n, "prediction_type": "flow_prediction", "use_flow_sigmas": True,
            "flow_shift": shift}
    if name != "unipc":
        base["algorithm_type"] = "sde-dpmsolver++" if name == "dpm++sde" else "dpmsolver++"
    return FLOW_SCHEDULERS[name](**{**base, **overrides})


def make_scheduler(name: str, config: dict[str, Any] | None = None, **overrides):
    """A diffusers scheduler by short name, built from a training config (or the defaults) plus overrides."""
    if name not in SCHEDULERS:
        raise ValueError(f"unknown scheduler {name!r}; choose one of: {', '.join(SCHEDULERS)}")
    base = dict(training_scheduler_config() if config is None else config)
    if is_flow_config(base):
        return _flow_scheduler(name, base, overrides)
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
