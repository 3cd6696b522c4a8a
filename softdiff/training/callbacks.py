"""Training callbacks: what the loop does besides learning (previews, diagnostics) plugs in from outside.

The loop calls every callback on the main process only, with a :class:`TrainState`; a callback returns a dict
to append to ``metrics.jsonl`` at that step, or None. ``on_step_end`` runs only after the steps where ``due(step)``
is true, so the other processes wait only on those steps. A config asks for callbacks by name in its
``callbacks`` section (``callbacks.NAME.KEY=VALUE``); whoever calls the trainer builds them (the studies register
theirs in ``softdiff.studies.training_callbacks``). ``claims`` names the sections a callback carries out: a section
that no callback claims is reported instead of silently ignored.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch


@dataclass
class TrainState:
    """What a callback may read; ``model`` is the unwrapped live model, ``ema`` diffusers' EMAModel."""

    cfg: Any
    dataset: Any
    process: Any
    scheduler_config: dict
    output_dir: Path
    device: torch.device
    start: int
    step: int = 0
    model: Any = None
    ema: Any = None


class TrainerCallback:
    """Base class: every hook does nothing."""

    claims: tuple[str, ...] = ()

    def on_train_begin(self, state: TrainState) -> dict | None:
        return None

    def due(self, step: int) -> bool:
        return False

    def on_step_end(self, state: TrainState) -> dict | None:
        return None


def unclaimed_keys(cfg, callbacks) -> list[str]:
    """The ``callbacks.NAME`` sections of ``cfg`` that no callback in ``callbacks`` claims (asked for, not done)."""
    claimed = {key for cb in callbacks for key in cb.claims}
    return [key for key in (f"callbacks.{name}" for name in cfg.callbacks) if key not in claimed]
