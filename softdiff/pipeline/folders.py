"""The one reader of model folders, and the one format they are written in.

The format is a diffusers pipeline folder, what ``SoftdiffPipeline.save_pretrained`` writes: ``model_index.json``
(the components and the data space), ``model/`` (``config.json`` and safetensors weights) and
``scheduler/scheduler_config.json`` (the sampler). A training run saves two of them, ``RUN_DIR/model`` (the live
weights) and ``RUN_DIR/model_ema`` (the EMA weights).

Every file is read as JSON or safetensors; class names in the JSON files are looked up in fixed tables
(softdiff's score nets, diffusers' schedulers), never imported by name, so no file can run code.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from softdiff.diffusion.process import ForwardProcess
from softdiff.diffusion.schedulers import FLOW_SCHEDULERS, SCHEDULERS
from softdiff.errors import ConfigError, DataError, first_line
from softdiff import nets  # nets.SCORE_NETS read at each load: nets registered after import load too
from softdiff.pipeline.folder_checks import (check_data_info, check_model_folder, check_net_folder, check_schedule,
                                             check_scheduler_values, load_net, read_json_object)

PIPELINE_INDEX = "model_index.json"
DATA_KEYS = ("kind", "sample_shape", "num_classes", "data_range", "dataset")
SCHEDULER_CLASSES = {cls.__name__: cls for cls in (*SCHEDULERS.values(), *FLOW_SCHEDULERS.values())}
RUN_MODELS = ("model", "model_ema")
# The legacy layout's data description spells two keys differently: the pipeline's name -> the legacy one.
LEGACY_DATA_NAMES = {"dataset": "name", "sample_shape": "shape"}


@dataclass
class ReadFolder:
    """A checked folder: ``parts`` are SoftdiffPipeline's constructor arguments; ``saved_sampler`` is False for a
    legacy model folder, which saved only the training noise schedule (no sampler)."""

    folder: Path
    parts: dict
    saved_sampler: bool


def resolve(path: str | Path, use_ema: bool | None = None) -> Path:
    """The model folder that ``path`` names.

    A run folder gives ``model_ema/`` (``use_ema`` True or None) or ``model/`` (False). ``RUN_DIR/model`` and
    ``RUN_DIR/model_ema`` give the EMA or the live weights when ``use_ema`` says which (the ``--no-ema`` flag of
    the commands), else themselves, as does any pipeline or model folder (diffusers' ``from_pretrained(folder)``).
    ConfigError (one sentence) for anything else."""
    path = Path(path)
    in_run = path.name in RUN_MODELS and use_ema is not None
    run_dir = path.parent if in_run else path
    wanted = run_dir / ("model" if use_ema is False else "model_ema")
    if in_run and wanted.is_dir():
        return wanted
    if (path / PIPELINE_INDEX).is_file() or (path / "config.json").is_file():
        return path
    if wanted.is_dir():
        return wanted
    raise ConfigError(f"'{path}' is not a run folder, model folder or saved pipeline (no {wanted.name}/, "
                      f"config.json nor {PIPELINE_INDEX}); pass the folder of a finished training run.")


def read_folder(path: str | Path, use_ema: bool | None = None) -> ReadFolder:
    """The checked pieces of the folder ``path`` names (see :func:`resolve`), the net built and loaded."""
    folder = resolve(path, use_ema)
    if (folder / PIPELINE_INDEX).is_file():
        return ReadFolder(folder, read_pipeline_folder(folder), saved_sampler=True)
    return ReadFolder(folder, read_legacy_model_folder(folder), saved_sampler=False)


def _component(index: dict, name: str, table: dict, where: Path) -> type:
    entry = index.get(name)
    if not (isinstance(entry, list) and len(entry) == 2 and entry[1] in table):
        raise DataError(f"'{where}' must name the {name} as [library, class] with a class among: "
                        f"{', '.join(table)}.")
    return table[entry[1]]


def read_pipeline_folder(folder: Path) -> dict:
    """The pieces of a pipeline folder: ``model`` (the score net), ``scheduler`` (the sampler), the data keys
    and ``forward_process``, every file checked against the others before the net is built."""
    where = folder / PIPELINE_INDEX
    index = read_json_object(where, "the pipeline's index")
    model_cls = _component(index, "model", nets.SCORE_NETS, where)
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
                        f"({first_line(err)}).") from None
    return {"model": load_net(net), "scheduler": scheduler, "forward_process": process,
            **{key: index[key] for key in DATA_KEYS}}


def read_legacy_model_folder(folder: Path) -> dict:
    """Legacy branch: the model folders training wrote before it saved pipelines (up to the commit that made
    tests/fixtures/run_v1): ``config.json`` and weights with ``scheduler_config.json`` (the training noise
    schedule) and ``data_info.json`` (the data, as ``name`` / ``shape``) beside them. They still load, and
    sample as they did: the caller picks the sampler, since none was saved."""
    checked = check_model_folder(folder)
    info, process = checked.info, checked.schedule
    return {"model": load_net(checked.net), "scheduler": ForwardProcess(process).scheduler(),
            "forward_process": process,
            **{key: info[LEGACY_DATA_NAMES.get(key, key)] for key in DATA_KEYS}}
