"""The folders a pipeline loads from: a training run, a bare model folder, or a saved pipeline.

Every file is read as JSON or safetensors; class names in the JSON files are looked up in fixed tables
(softdiff's score nets, diffusers' schedulers), never imported by name, so no file can run code.
"""
from __future__ import annotations

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
    and ``forward_process``, every file checked against the others before the net is built."""
    from softdiff.nets import SCORE_NETS
    from softdiff.pipeline.folder_checks import (check_data_info, check_net_folder, check_schedule,
                                                 check_scheduler_values, load_net, read_json_object)

    where = folder / PIPELINE_INDEX
    index = read_json_object(where, "the pipeline's index")
    model_cls = _component(index, "model", SCORE_NETS, where)
    scheduler_cls = _component(index, "scheduler", SCHEDULER_CLASSES, where)
    net = check_net_folder(folder / "model")
    if net.cls is not model_cls:
        raise DataError(f"'{where}' names the model {model_cls.__name__}, but '{folder / 'model' / 'config.json'}' "
                        f"describes a {net.cls.__name__}; the files do not belong together.")
    info = {"name": index.get("dataset"), "kind": index.get("kind"), "shape": index.get("sample_shape"),
            "data_range": index.get("data_range"), "num_classes": index.get("num_classes")}
    check_data_info(info, where, net, names={"shape": "sample_shape"})
    process = index.get("forward_process")
    if not isinstance(process, dict):
        raise DataError(f"'{where}' has no forward_process (the training noise schedule, a JSON object).")
    check_schedule(process, where, net)
    sampler = folder / "scheduler" / "scheduler_config.json"
    if not sampler.is_file():
        raise DataError(f"saved pipeline '{folder}' has no scheduler/scheduler_config.json.")
    sampler_config = read_json_object(sampler, "the sampler's config")
    check_scheduler_values(sampler_config, sampler)
    if sampler_config.get("num_train_timesteps", 1000) != process["num_train_timesteps"]:
        raise DataError(f"'{sampler}' has num_train_timesteps={sampler_config.get('num_train_timesteps', 1000)}, "
                        f"but the forward_process in '{where}' has {process['num_train_timesteps']}; they must agree.")
    try:
        scheduler = scheduler_cls.from_config(sampler_config)
    except Exception as err:  # values of the wrong type
        raise DataError(f"'{sampler}' holds no valid {scheduler_cls.__name__} config "
                        f"({str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__}).") from None
    return {"model": load_net(net), "scheduler": scheduler, "forward_process": process,
            **{key: index[key] for key in DATA_KEYS}}
