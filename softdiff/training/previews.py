"""Preview pictures during training: samples of the EMA weights, saved with softdiff.pictures, and the callback
that draws them. It lives here, not in softdiff.training.callbacks, so that the callback base classes (which the
studies' callbacks import, e.g. the NTK drift) do not load matplotlib."""
from __future__ import annotations

from pathlib import Path

import torch

from softdiff.diffusion.sampling import sample
from softdiff.diffusion.schedulers import make_scheduler
from softdiff.pictures import save_picture
from softdiff.training.callbacks import TrainerCallback, TrainState
from softdiff.training.checkpoints import ema_weights


@torch.no_grad()
def write_preview(model, ema, scheduler_config: dict, dataset, cfg, path: Path, device) -> None:
    """Sample with the EMA weights (restoring the live ones afterwards) and save the picture."""
    was_training = model.training
    model.eval()
    try:
        n = cfg.sample.num_samples if dataset.kind == "image" else max(cfg.sample.num_samples, 2000)
        labels = (torch.arange(n, device=device) % dataset.num_classes) if cfg.data.class_conditional else None
        with ema_weights(ema, model):
            x = sample(model, make_scheduler(cfg.sample.scheduler, scheduler_config), (n, *dataset.shape),
                       cfg.sample.steps, torch.Generator().manual_seed(cfg.train.seed), device, class_labels=labels,
                       guidance_scale=cfg.sample.guidance_scale if labels is not None else 1.0)
    finally:
        model.train(was_training)
    save_picture(dataset.from_model(x.cpu()), path, dataset.kind, dataset.data_range,
                 reference=dataset.data_tensor(2000, torch.Generator().manual_seed(0)) if dataset.kind == "vector"
                 else None)


class PreviewCallback(TrainerCallback):
    """A picture of EMA samples every ``sample.every`` steps and at the end, in ``OUTPUT/samples/``."""

    claims = ("sample.every",)

    def __init__(self, every: int, total_steps: int):
        self.every, self.total_steps = every, total_steps

    def due(self, step: int) -> bool:
        return bool(self.every and step % self.every == 0) or step == self.total_steps

    def on_step_end(self, state: TrainState) -> dict | None:
        write_preview(state.model, state.ema, state.scheduler_config, state.dataset, state.cfg,
                      state.output_dir / "samples" / f"step-{state.step}.png", state.device)
        return None
