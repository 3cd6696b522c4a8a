"""Build a score net from a config, save it with its forward process and data info, and load it back."""
from __future__ import annotations

import json
from pathlib import Path

from softdiff.data import Dataset
from softdiff.diffusion.process import ForwardProcess
from softdiff.diffusion.schedulers import make_scheduler
from softdiff.errors import DataError
from softdiff.nets import SCORE_NETS, ScoreMLP, ScoreTransformer, TwoLayerScoreNet
from softdiff.training.config import TrainConfig

DATA_INFO = "data_info.json"


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
                                conv_out=m.conv_out, conv_stem=m.conv_stem, conditioning=m.conditioning)
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
    """``save_pretrained`` (safetensors + config.json), the training scheduler config, and the data info."""
    model.save_pretrained(path)
    ForwardProcess(scheduler_config).scheduler().save_pretrained(path)
    info = {"name": dataset.name, "kind": dataset.kind, "shape": list(dataset.shape),
            "data_range": list(dataset.data_range), "num_classes": dataset.num_classes}
    (path / DATA_INFO).write_text(json.dumps(info, indent=2))


def load_trained(model_dir: str | Path):
    """(model, training scheduler config, data info) from a ``model/`` or ``model_ema/`` folder."""
    path = Path(model_dir)
    config_file = path / "config.json"
    if not config_file.is_file():
        raise DataError(f"'{path}' is not a saved model folder (no config.json); pass RUN_DIR/model or "
                        "RUN_DIR/model_ema.")
    try:
        class_name = json.loads(config_file.read_text())["_class_name"]
        cls = SCORE_NETS[class_name]
    except (KeyError, ValueError):
        raise DataError(f"'{config_file}' does not describe a softdiff score net "
                        f"(one of: {', '.join(SCORE_NETS)}).") from None
    try:
        model = cls.from_pretrained(path)
        scheduler_config = dict(make_scheduler("ddpm").load_config(path))
        info = json.loads((path / DATA_INFO).read_text())
    except (OSError, ValueError, EnvironmentError) as err:
        raise DataError(f"model folder '{path}' could not be loaded: {str(err).splitlines()[0]}") from None
    return model.eval(), scheduler_config, info
