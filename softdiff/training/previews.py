"""Preview pictures during training: samples of the EMA weights, saved with softdiff.pictures."""
from __future__ import annotations

from pathlib import Path

import torch

from softdiff.diffusion.sampling import sample
from softdiff.diffusion.schedulers import make_scheduler
from softdiff.pictures import save_picture
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
