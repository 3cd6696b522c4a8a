"""Build a score net from a config, save it with its forward process and data info, and load it back."""
from __future__ import annotations

import json
from pathlib import Path

from safetensors import safe_open

from softdiff.data import Dataset
from softdiff.diffusion.process import ForwardProcess
from softdiff.diffusion.schedulers import make_scheduler
from softdiff.errors import DataError
from softdiff.nets import SCORE_NETS, ScoreMLP, ScoreTransformer, TwoLayerScoreNet
from softdiff.safe_io import atomic_dir
from softdiff.training.config import TrainConfig

DATA_INFO = "data_info.json"
WEIGHTS = "diffusion_pytorch_model.safetensors"


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


def _json_object(path: Path, what: str) -> dict:
    if not path.is_file():
        raise DataError(f"model folder '{path.parent}' has no {path.name} ({what}); pass RUN_DIR/model or "
                        "RUN_DIR/model_ema of a finished run.")
    try:
        data = json.loads(path.read_text())
    except (ValueError, UnicodeDecodeError) as err:
        raise DataError(f"'{path}' is not valid JSON ({err}); the model folder is damaged: retrain, or rerun "
                        "train.py with --resume latest to rewrite it.") from None
    if not isinstance(data, dict):
        raise DataError(f"'{path}' must hold a JSON object ({what}).")
    return data


def check_data_info(info: dict, path: Path) -> None:
    shape, rng, classes = info.get("shape"), info.get("data_range"), info.get("num_classes")
    ok = (info.get("kind") in ("image", "vector") and isinstance(info.get("name"), str)
          and isinstance(shape, list) and len(shape) in (1, 3)
          and all(isinstance(s, int) and not isinstance(s, bool) and 0 < s <= 100_000 for s in shape)
          and isinstance(rng, list) and len(rng) == 2 and all(isinstance(v, (int, float)) for v in rng)
          and (classes is None or (isinstance(classes, int) and not isinstance(classes, bool) and classes > 0)))
    if not ok:
        raise DataError(f"'{path}' does not describe the data: it needs kind (image|vector), name, shape (1 or 3 "
                        "positive sizes), data_range [low, high] and num_classes (null or a positive integer).")


def check_net_folder(path: Path) -> type:
    """The score-net class of a folder holding ``config.json`` and safetensors weights; DataError (one
    sentence) for anything missing or malformed.

    Only safetensors weights are accepted: pickle files (``diffusion_pytorch_model.bin``) can run code when
    loaded, so a folder that holds only those is refused.
    """
    path = Path(path)
    if not path.is_dir():
        raise DataError(f"model folder '{path}' does not exist; pass RUN_DIR/model or RUN_DIR/model_ema.")
    config = _json_object(path / "config.json", "the model's config")
    cls = SCORE_NETS.get(config.get("_class_name"))
    if cls is None:
        raise DataError(f"'{path / 'config.json'}' does not describe a softdiff score net "
                        f"(_class_name must be one of: {', '.join(SCORE_NETS)}).")
    weights = path / WEIGHTS
    if not weights.is_file():
        pickled = sorted(p.name for p in path.iterdir() if p.suffix in (".bin", ".pt", ".pth", ".pkl", ".ckpt"))
        found = f" (it holds {', '.join(pickled)}: pickle files, which can run code and are never loaded)" \
            if pickled else ""
        raise DataError(f"model folder '{path}' has no {WEIGHTS}{found}; softdiff loads safetensors weights only.")
    try:
        with safe_open(str(weights), "pt") as f:
            f.keys()
    except Exception as err:  # an empty or truncated file
        reason = (str(err).strip().splitlines() or [type(err).__name__])[0]
        raise DataError(f"'{weights}' is not a readable safetensors file ({reason}); the model folder is damaged: "
                        "rerun train.py with --resume latest to rewrite it.") from None
    return cls


def check_schedule(schedule: dict, where: Path) -> None:
    """DataError unless ``schedule`` (read from ``where``) is a valid training noise schedule."""
    steps = schedule.get("num_train_timesteps")
    if not isinstance(steps, int) or isinstance(steps, bool) or not 1 <= steps <= 100_000:
        raise DataError(f"'{where}' has num_train_timesteps={steps!r}; it must be an integer from 1 to 100000.")
    try:
        ForwardProcess(schedule).scheduler()
    except Exception as err:
        raise DataError(f"'{where}' is not a valid noise schedule "
                        f"({str(err).splitlines()[0] if str(err) else type(err).__name__}).") from None


def check_model_folder(path: Path) -> type:
    """The score-net class of a saved model folder (see :func:`check_net_folder`), with its noise schedule and
    data description checked too."""
    path = Path(path)
    cls = check_net_folder(path)
    check_schedule(_json_object(path / "scheduler_config.json", "the training noise schedule"),
                   path / "scheduler_config.json")
    check_data_info(_json_object(path / DATA_INFO, "the data description"), path / DATA_INFO)
    return cls


def load_net(path: Path, cls: type):
    """``cls.from_pretrained(path)`` from safetensors only, in eval mode; DataError when the weights do not fit."""
    try:
        return cls.from_pretrained(path, use_safetensors=True, local_files_only=True).eval()
    except Exception as err:  # wrong types or shapes in config.json, weights that do not fit it, ...
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise DataError(f"model folder '{path}' could not be loaded: {first}") from None


def load_trained(model_dir: str | Path):
    """(model, training scheduler config, data info) from a ``model/`` or ``model_ema/`` folder (safetensors
    weights and JSON files only; see :func:`check_model_folder`)."""
    path = Path(model_dir)
    model = load_net(path, check_model_folder(path))
    scheduler_config = dict(make_scheduler("ddpm").load_config(path))
    info = json.loads((path / DATA_INFO).read_text())
    return model, scheduler_config, info
