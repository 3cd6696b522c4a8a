"""Build a score net from a config, save it with its forward process and data info, and load it back."""
from __future__ import annotations

import json
from pathlib import Path

from softdiff.data import Dataset
from softdiff.diffusion.process import ForwardProcess
from softdiff.nets.registry import build_net
from softdiff.safe_io import atomic_dir
from softdiff.training.config import TrainConfig

DATA_INFO = "data_info.json"  # read back by softdiff.pipeline.folder_checks


def build_model(cfg: TrainConfig, dataset: Dataset):
    """The score net that ``cfg.model`` describes (its registry entry), sized for ``dataset``."""
    classes = dataset.num_classes if cfg.data.class_conditional else None
    return build_net(cfg.model, dataset.shape, classes, cfg)


def save_model(model, path: Path, scheduler_config: dict, dataset: Dataset) -> None:
    """``save_pretrained`` (safetensors + config.json), the training scheduler config, and the data info, into a
    temporary sibling folder that replaces ``path`` once complete."""
    info = {"name": dataset.name, "kind": dataset.kind, "shape": list(dataset.shape),
            "data_range": list(dataset.data_range), "num_classes": dataset.num_classes}
    with atomic_dir(path) as tmp:
        model.save_pretrained(tmp, safe_serialization=True)
        ForwardProcess(scheduler_config).scheduler().save_pretrained(tmp)
        (tmp / DATA_INFO).write_text(json.dumps(info, indent=2))


def load_trained(model_dir: str | Path):
    """(model, training scheduler config, data info) from a ``model/`` or ``model_ema/`` folder (safetensors
    weights and JSON files only, every file checked first: softdiff.pipeline.folder_checks)."""
    from softdiff.pipeline.folder_checks import check_model_folder, load_net

    spec = check_model_folder(Path(model_dir))
    return load_net(spec.net), spec.schedule, spec.info

