"""The folders a pipeline loads from: a training run, a bare model folder, or a saved pipeline.

Every file is read as JSON or safetensors; class names in the JSON files are looked up in fixed tables
(softdiff's score nets, diffusers' schedulers), never imported by name, so no file can run code.
"""
from __future__ import annotations

import json
from pathlib import Path

from softdiff.diffusion.schedulers import FLOW_SCHEDULERS, SCHEDULERS
from softdiff.errors import ConfigError, DataError

PIPELINE_INDEX = "model_index.json"
DATA_KEYS = ("kind", "sample_shape", "num_classes", "data_range", "dataset")
SCHEDULER_CLASSES = {cls.__name__: cls for cls in (*SCHEDULERS.values(), *FLOW_SCHEDULERS.values())}


def resolve(path: str | Path, use_ema: bool = True) -> tuple[str, Path]:
    """``("pipeline", folder)`` for a folder with ``model_index.json``, else ``("model", folder)``: ``RUN_DIR``,
    ``RUN_DIR/model`` or ``RUN_DIR/model_ema`` give the EMA or the live weights as asked; a bare model folder
    gives itself. ConfigError (one sentence) for anything else."""
    path = Path(path)
    if (path / PIPELINE_INDEX).is_file():
        return "pipeline", path
    run_dir = path.parent if path.name in ("model", "model_ema") else path
    wanted = run_dir / ("model_ema" if use_ema else "model")
    if wanted.is_dir():
        return "model", wanted
    if (path / "config.json").is_file():  # a bare model folder without the run layout
        return "model", path
    raise ConfigError(f"'{path}' is not a run folder, model folder or saved pipeline (no {wanted.name}/, "
                      f"config.json nor {PIPELINE_INDEX}); pass the folder of a finished training run.")


def _component(index: dict, name: str, table: dict, where: Path) -> type:
    entry = index.get(name)
    if not (isinstance(entry, list) and len(entry) == 2 and entry[1] in table):
        raise DataError(f"'{where}' must name the {name} as [library, class] with a class among: "
                        f"{', '.join(table)}.")
    return table[entry[1]]


def read_pipeline_folder(folder: Path) -> dict:
    """The pieces of a saved pipeline: ``model`` (the score net), ``scheduler`` (the sampler), the data keys
    and ``forward_process``, each checked before use."""
    from softdiff.nets import SCORE_NETS
    from softdiff.training.models import check_data_info, check_net_folder, check_schedule, load_net

    where = folder / PIPELINE_INDEX
    try:
        index = json.loads(where.read_text())
    except (OSError, ValueError, UnicodeDecodeError) as err:
        raise DataError(f"'{where}' is not valid JSON ({str(err).splitlines()[0]}).") from None
    if not isinstance(index, dict):
        raise DataError(f"'{where}' must hold a JSON object.")
    _component(index, "model", SCORE_NETS, where)
    scheduler_cls = _component(index, "scheduler", SCHEDULER_CLASSES, where)
    info = {"name": index.get("dataset"), "kind": index.get("kind"), "shape": index.get("sample_shape"),
            "data_range": index.get("data_range"), "num_classes": index.get("num_classes")}
    check_data_info(info, where)
    process = index.get("forward_process")
    if not isinstance(process, dict):
        raise DataError(f"'{where}' has no forward_process (the training noise schedule, a JSON object).")
    check_schedule(process, where)
    model = load_net(folder / "model", check_net_folder(folder / "model"))
    if not (folder / "scheduler" / "scheduler_config.json").is_file():
        raise DataError(f"saved pipeline '{folder}' has no scheduler/scheduler_config.json.")
    try:
        scheduler = scheduler_cls.from_config(scheduler_cls.load_config(folder / "scheduler"))
    except Exception as err:  # a missing or malformed scheduler_config.json
        raise DataError(f"'{folder / 'scheduler'}' holds no valid {scheduler_cls.__name__} config "
                        f"({str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__}).") from None
    return {"model": model, "scheduler": scheduler, "forward_process": process,
            **{key: index[key] for key in DATA_KEYS}}
