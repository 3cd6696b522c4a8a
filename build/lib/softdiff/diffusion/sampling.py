"""One shape-agnostic reverse loop over any diffusers scheduler, with classifier-free guidance."""
from __future__ import annotations

from typing import Any, Callable

import torch
from torch import Tensor
from tqdm.auto import tqdm

NULL_LABEL = -1  # the "no class" label: conditional models trained with label dropout embed it as zero


def model_output(out: Any) -> Tensor:
    """A forward's tensor: diffusers-style outputs carry it in ``.sample``, tuples in their first entry."""
    if isinstance(out, Tensor):
        return out
    if hasattr(out, "sample"):
        return out.sample
    if isinstance(out, (tuple, list)) and out and isinstance(out[0], Tensor):
        return out[0]
    raise ValueError(f"the model returned {type(out).__name__}; expected a Tensor or an object with .sample")


def guided(model: Callable, class_labels: Tensor | None = None, guidance_scale: float = 1.0) -> Callable:
    """``(x, t) -> prediction`` of ``model``: unconditional, conditional, or with classifier-free guidance.

    Guidance returns ``uncond + scale * (cond - uncond)`` (scale 1: the conditional prediction, 0: the
    unconditional one); both halves run in one batch. Any prediction type works: they are affine in x0.
    """
    if class_labels is None:
        return lambda x, t: model_output(model(x, t))
    if guidance_scale == 1.0:
        return lambda x, t: model_output(model(x, t, class_labels=class_labels))

    def predict(x: Tensor, t: Tensor) -> Tensor:
        labels = torch.cat([class_labels, torch.full_like(class_labels, NULL_LABEL)])
        out = model_output(model(torch.cat([x, x]), torch.cat([t, t]), class_labels=labels))
        cond, uncond = out.chunk(2)
        return uncond + guidance_scale * (cond - uncond)

    return predict


@torch.no_grad()
def sample(model: Callable, scheduler, shape: tuple[int, ...], num_steps: int = 50,
           generator: torch.Generator | None = None, device: str | torch.device = "cpu",
           dtype: torch.dtype = torch.float32, class_labels: Tensor | None = None,
           guidance_scale: float = 1.0, progress: bool = False) -> Tensor:
    """Draw ``shape[0]`` samples in model space: ``model(x, t)`` returns the scheduler's prediction type.

    Deterministic for a fixed CPU ``generator`` (the initial noise and every stochastic step draw from it).
    """
    scheduler.set_timesteps(num_steps, device=device)  # schedulers are stateful: reset before every run
    # Flow-matching schedulers start at unit noise and take the model input as it is.
    x = torch.randn(shape, generator=generator, dtype=dtype).to(device) * getattr(scheduler, "init_noise_sigma", 1.0)
    predict = guided(model, class_labels, guidance_scale)
    scale_input = getattr(scheduler, "scale_model_input", lambda x, t: x)
    step_kwargs = {"generator": generator} if "generator" in scheduler.step.__code__.co_varnames else {}
    for t in tqdm(scheduler.timesteps, disable=not progress, desc="sampling", leave=False):
        out = predict(scale_input(x, t), t.to(dtype).expand(shape[0]))
        x = scheduler.step(out, t, x, **step_kwargs).prev_sample
    return x
