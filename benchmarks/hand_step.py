"""One training update stepped by hand, for the benchmarks that time or compare training steps outside
``softdiff.training.train``: the optimizer, lr schedule and EMA the trainer builds (``optimization``)."""
from __future__ import annotations

import torch

from softdiff.training.trainer import optimization


class HandStep:
    """``step(loss)``: backward, gradient clipping (``train.grad_clip``), optimizer and lr schedule steps, EMA."""

    def __init__(self, model: torch.nn.Module, cfg, device: torch.device | str = "cpu"):
        self.model, self.grad_clip = model, cfg.train.grad_clip
        self.optimizer, self.lr_schedule, self.ema = optimization(model, cfg, torch.device(device))
        self.ema.to(device)

    def step(self, loss: torch.Tensor) -> None:
        loss.backward()
        if self.grad_clip:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.grad_clip)
        self.optimizer.step()
        self.lr_schedule.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.ema.step(self.model.parameters())
