"""Build a score net from a config (trained nets are saved as pipelines: ``SoftdiffPipeline.for_training_run``)."""
from __future__ import annotations

from softdiff.data import Dataset
from softdiff.nets.registry import build_net
from softdiff.training.config import TrainConfig


def build_model(cfg: TrainConfig, dataset: Dataset):
    """The score net that ``cfg.model`` describes (its registry entry), sized for ``dataset``."""
    classes = dataset.num_classes if cfg.data.class_conditional else None
    return build_net(cfg.model, dataset.shape, classes, cfg)
