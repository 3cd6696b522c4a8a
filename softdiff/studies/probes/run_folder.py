"""The probes of a trained run folder: its saved model, its data and its forward process, loaded and probed.

Kept apart from the probes themselves (:mod:`softdiff.studies.probes.attention`, which need only torch): loading a
run brings diffusers and the datasets, which ``softdiff probe`` must not load to answer ``--help`` or a config error.
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import torch

from softdiff.data import make_dataset
from softdiff.diffusion.process import ForwardProcess
from softdiff.errors import DataError
from softdiff.pipeline import SoftdiffPipeline
from softdiff.studies.probes.attention import SINK_THRESHOLD, ProbeResult, attention_layers, probe_model


def probe_run(run_dir: str | Path, timesteps: Sequence[int] = (50, 250, 500, 750), num_samples: int = 64,
              seed: int = 0, ema: bool = True, data_root: str | Path = "data", device: str = "cpu",
              threshold: float = SINK_THRESHOLD) -> ProbeResult:
    """Load a trained run (``RUN_DIR/model_ema`` or ``model``), draw data, and probe it at ``timesteps``."""
    pipe = SoftdiffPipeline.from_pretrained(run_dir, use_ema=ema)
    model, model_dir = pipe.model, pipe.source_dir
    if not attention_layers(model):
        raise DataError(f"the model in '{model_dir}' ({type(model).__name__}) has no attention layers to probe; "
                        "train a ScoreTransformer.")
    bad = [t for t in timesteps if not 0 <= int(t) < pipe.num_train_timesteps]
    if bad:
        raise DataError(f"timesteps {bad} are outside 0..{pipe.num_train_timesteps - 1} (this run's "
                        "num_train_timesteps).")
    dataset = make_dataset(pipe.config.dataset, root=data_root)
    gen = torch.Generator().manual_seed(seed)
    x0, labels = dataset.sample(num_samples, gen)
    process = ForwardProcess(pipe.forward_process)
    model = model.to(device)
    labels = labels.to(device) if labels is not None and getattr(model, "class_embed", None) is not None else None
    result = probe_model(model, x0.to(device), timesteps, process, gen, labels, threshold)
    result.meta.update(run_dir=str(run_dir), model_dir=str(model_dir), dataset=pipe.config.dataset,
                       num_samples=num_samples, seed=seed)
    return result
