"""Equal-time budgets: each arm's training steps sized so that it trains for the same seconds.

Activations differ in cost per step (a softmax over the hidden units costs more than a ReLU), so equal steps
favour the expensive ones. With ``budget.mode=time`` the runner times ``probe_steps`` real training steps of
each arm (after as many warm-up steps, on the threads a run gets) and gives it ``seconds / seconds_per_step``
steps. A step count, not a wall-clock cut-off, keeps every run deterministic and resumable and lets its
learning-rate schedule finish; each run's measured training seconds are reported beside it.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Sequence

import torch

from softdiff import training
from softdiff.safe_io import write_json
from softdiff.studies.compare.config import setting_overrides
from softdiff.training.config import load_train_config

# Training keys that do not change the cost of a step: trials differing only in these share one timing.
COST_NEUTRAL_KEYS = ("train.lr", "train.warmup_steps", "train.lr_schedule", "train.weight_decay", "train.ema_decay",
                     "train.grad_clip", "train.label_dropout")


def probe_key(activation: str, settings: dict | None) -> str:
    """Which timing serves a run: its activation and the settings that can change the cost of a step."""
    costly = {k: v for k, v in sorted((settings or {}).items()) if k not in COST_NEUTRAL_KEYS}
    return json.dumps([activation, costly])


def seconds_per_step(base_config: str, overrides: Sequence[str], probe_steps: int, threads: int,
                     folder: Path) -> float:
    """Seconds per optimizer step of the run ``overrides`` describe: the wall time of steps
    ``probe_steps + 1 .. 2 * probe_steps`` of a real training run (the first ``probe_steps`` warm up)."""
    k = probe_steps
    cfg = load_train_config(base_config, [*overrides, f"train.steps={2 * k}", f"train.log_every={k}",
                                          f"train.checkpoint_every={2 * k}", "sample.every=0",
                                          f"output_dir={folder}"])
    cfg.callbacks = {}  # the step alone is timed, without the runs' diagnostics
    shutil.rmtree(folder, ignore_errors=True)
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        training.train(cfg, quiet=True)  # looked up at each call, so that a replaced train (tests) is used
    finally:
        torch.set_num_threads(before)
    records = [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines() if line.strip()]
    wall = {r["step"]: r["wall_time"] for r in records if "wall_time" in r}
    shutil.rmtree(folder, ignore_errors=True)
    return (wall[2 * k] - wall[k]) / k


class StepBudget:
    """Each run's ``train.steps``: the base config's (mode=steps), or seconds / the arm's measured seconds per step
    (mode=time), with the timings cached in ``budget.json`` so that a resumed comparison sizes runs as before."""

    def __init__(self, cfg, folder: Path, point: Sequence[str], log=print):
        self.cfg, self.folder, self.point, self.log = cfg, folder, list(point), log
        self.path = folder / "budget.json"
        self.timings: dict[str, float] = {}
        if cfg.budget.mode == "time" and self.path.is_file():
            try:
                self.timings = {k: float(v) for k, v in json.loads(self.path.read_text())["seconds_per_step"].items()}
            except (ValueError, KeyError, TypeError, AttributeError):
                self.timings = {}

    def steps(self, activation: str, settings: dict | None = None, share: float = 1.0) -> int:
        """Training steps of a run of ``activation`` at ``settings`` on ``share`` of the budget."""
        if self.cfg.budget.mode == "steps":
            return max(1, round(share * self.cfg.base_train_config(self.point, settings).train.steps))
        key = probe_key(activation, settings)
        if key not in self.timings:
            overrides = [*self.cfg.train_overrides, *self.point, *setting_overrides(settings),
                         f"model.activation={activation}", f"train.seed={self.cfg.seed_offset}"]
            self.timings[key] = seconds_per_step(self.cfg.base_config, overrides, self.cfg.budget.probe_steps,
                                                 self.cfg.threads_per_worker, self.folder / "budget_probe")
            write_json(self.path, {"seconds_per_step": self.timings}, indent=2)
            self.log(f"budget: {activation} {json.loads(key)[1] or ''} takes {self.timings[key] * 1e3:.1f} ms a step")
        return max(1, round(share * self.cfg.budget.seconds / self.timings[key]))

    def table(self) -> dict[str, dict]:
        """``{activation: {"seconds_per_step": s}}`` of the arms timed at their base settings (mode=time)."""
        out = {}
        for key, value in self.timings.items():
            activation, costly = json.loads(key)
            if not costly:
                out[activation] = {"seconds_per_step": value}
        return out
