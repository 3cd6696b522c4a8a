"""Build a score net from a config, save it with its forward process and data info, and load it back."""
from __future__ import annotations

import json
from pathlib import Path

from softdiff.data import Dataset
from softdiff.diffusion.process import ForwardProcess
from softdiff.nets import ScoreMLP, ScoreTransformer, TwoLayerScoreNet
from softdiff.safe_io import atomic_dir
from softdiff.training.config import TrainConfig

DATA_INFO = "data_info.json"  # read back by softdiff.pipeline.folder_checks


def build_model(cfg: TrainConfig, dataset: Dataset):
    """The score net that ``cfg.model`` describes, sized for ``dataset``."""
    m = cfg.model
    classes = dataset.num_classes if cfg.data.class_conditional else None
    if m.type == "ScoreTransformer":
        channels, size, _ = dataset.shape
        return ScoreTransformer(sample_size=size, in_channels=channels, patch_size=m.patch_size,
                                hidden_size=m.hidden_size, num_layers=m.num_layers, num_heads=m.num_heads,
                                activation=m.activation, attention_normalization=m.attention_normalization,
                                width_mult=m.width_mult, num_registers=m.num_registers,
                                num_class_embeds=classes, dropout=m.dropout, long_skips=m.long_skips,
                                conv_out=m.conv_out, conv_stem=m.conv_stem, conv_decoder=m.conv_decoder,
                                conditioning=m.conditioning)
    dim = 1
    for s in dataset.shape:
        dim *= s
    if m.type == "ScoreMLP":
        return ScoreMLP(dim=dim, hidden_size=m.hidden_size, num_blocks=m.num_layers, activation=m.activation,
                        width_mult=m.width_mult, fourier_features=m.fourier_features,
                        fourier_scale=m.fourier_scale, dropout=m.dropout, num_class_embeds=classes)
    d = cfg.diffusion
    return TwoLayerScoreNet(dim=dim, width=m.width, sigma=m.sigma, coupled=m.coupled, activation=m.activation,
                            t_min=d.ou_t_min, t_max=d.ou_t_max, num_train_timesteps=d.num_train_timesteps,
                            seed=cfg.train.seed)


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

