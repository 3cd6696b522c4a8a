"""One shape-agnostic reverse loop over any diffusers scheduler."""
from __future__ import annotations

from typing import Any, Callable

import torch
from torch import Tensor
from tqdm.auto import tqdm


def _as_tensor(output: Any) -> Tensor:
    return output.sample if hasattr(output, "sample") else output


@torch.no_grad()
def sample(model: Callable, scheduler, shape: tuple[int, ...], num_steps: int = 50,
           generator: torch.Generator | None = None, device: str | torch.device = "cpu",
           dtype: torch.dtype = torch.float32, class_labels: Tensor | None = None,
           progress: bool = False) -> Tensor:
    """Draw ``shape[0]`` samples in model space: ``model(x, t)`` returns the scheduler's prediction type.

    Deterministic for a fixed CPU ``generator`` (the initial noise and every stochastic step draw from it).
    """
    scheduler.set_timesteps(num_steps, device=device)  # schedulers are stateful: reset before every run
    x = torch.randn(shape, generator=generator, dtype=dtype).to(device) * scheduler.init_noise_sigma
    kwargs = {"class_labels": class_labels} if class_labels is not None else {}
    for t in tqdm(scheduler.timesteps, disable=not progress, desc="sampling", leave=False):
        inp = scheduler.scale_model_input(x, t)
        out = _as_tensor(model(inp, t.to(dtype).expand(shape[0]), **kwargs))
        step_kwargs = {"generator": generator} if "generator" in scheduler.step.__code__.co_varnames else {}
        x = scheduler.step(out, t, x, **step_kwargs).prev_sample
    return x
