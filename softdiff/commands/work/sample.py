"""``softdiff sample``'s work: load the model, draw the samples, write the .npz and its picture."""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch

from softdiff.commands.sample import KEYS, SampleConfig
from softdiff.errors import ConfigError, DataError
from softdiff.memory import available_memory
from softdiff.pictures import MAX_GRID_IMAGES, save_picture
from softdiff.pipeline import SoftdiffPipeline
from softdiff.safe_io import atomic_path


def _check_output_size(num_samples: int, shape) -> None:
    """Refuse a sample count whose output alone cannot fit in memory (before any sampling)."""
    need, available = 2 * 4 * num_samples * math.prod(shape), available_memory(gpu=False)  # samples end on the host
    if available is not None and need > available:
        raise ConfigError(f"num_samples={num_samples} needs about {need / 1e9:.3g} GB for the samples alone, more "
                          f"than the {available / 1e9:.3g} GB of memory available; ask for fewer.")


def _check_finite_samples(x, source, cfg: SampleConfig) -> None:
    """Refuse to write samples with NaN / inf values: they come from broken weights or a broken schedule."""
    bad = int((~torch.isfinite(x)).flatten(1).any(1).sum())
    if bad:
        raise DataError(f"the model in '{source}' drew {bad} of {len(x)} samples with NaN or inf values "
                        f"(scheduler={cfg.scheduler}, steps={cfg.steps}); nothing was written: its weights or noise "
                        "schedule are broken, or the run diverged.")


def run(args, cfg: SampleConfig, out: Path) -> int:
    pipe = SoftdiffPipeline.from_pretrained(cfg.run, use_ema=cfg.ema, scheduler=cfg.scheduler)
    labels = pipe.check_inputs(cfg.num_samples, cfg.steps, cfg.class_label, cfg.guidance_scale, "pt",
                               cfg.max_batch_size, KEYS)
    _check_output_size(cfg.num_samples, pipe.config.sample_shape)
    pipe.to(cfg.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    x = pipe(batch_size=cfg.num_samples, num_inference_steps=cfg.steps,
             generator=torch.Generator().manual_seed(cfg.seed), class_labels=cfg.class_label,
             guidance_scale=cfg.guidance_scale, max_batch_size=cfg.max_batch_size, progress=not args.quiet).samples
    _check_finite_samples(x, pipe.source_dir, cfg)
    with atomic_path(out) as tmp:
        # The dataset and (class-conditional models) the requested labels let `softdiff eval --score` check them.
        extra = {} if labels is None else {"labels": labels.numpy()}
        np.savez(tmp, samples=x.numpy(), dataset=np.str_(pipe.config.dataset or ""), **extra)
    picture = out.with_suffix(".png")
    save_picture(x, picture, pipe.config.kind, tuple(pipe.config.data_range),
                 title=f"{len(x)} samples, {cfg.scheduler} {cfg.steps} steps")
    shown = f" (the first {MAX_GRID_IMAGES})" if pipe.config.kind == "image" and len(x) > MAX_GRID_IMAGES else ""
    print(f"wrote {out} (samples: {tuple(x.shape)}) and {picture}{shown}")
    return 0
