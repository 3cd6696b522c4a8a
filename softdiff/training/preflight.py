"""Checks of a training run that go beyond the config's own values, made before any work or write.

The output folder can be written; ``--resume`` names a checkpoint; a folder (or local Hugging Face) dataset
exists; the MNIST / Fashion-MNIST IDX files are found and whole; the model fits in memory (its parameters are
counted on the ``meta`` device, which allocates nothing); and ``accelerate launch`` did not silently start one
process where several were asked for. Allocation failures that happen anyway are turned into one sentence naming
the size keys.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

import torch

from softdiff.data import Dataset, example_shape
from softdiff.data.idx import IDX_DATASETS, check_idx_dataset
from softdiff.errors import ConfigError, DataError, check_choice, first_line
from softdiff.memory import available_memory
from softdiff.nets.registry import model_arguments, net_entry
from softdiff.safe_io import check_output_dir
from softdiff.training.checkpoints import check_resume_arg
from softdiff.training.config import TrainConfig
from softdiff.training.models import build_model

# weights, gradients, EMA copy and AdamW's two moments, in float32
BYTES_PER_PARAMETER = 5 * 4


def size_keys(cfg: TrainConfig, batch: bool = False) -> str:
    """``model.hidden_size=128, ...``: the keys that set the model's (and the batch's) memory."""
    keys = [f"model.{k}={cfg.model[k]}" for k in net_entry(cfg.model["type"]).size_keys]
    if batch:
        keys.insert(0, f"train.batch_size={cfg.train.batch_size}")
    return ", ".join(keys)


def count_parameters(cfg: TrainConfig) -> int | None:
    """The model's parameter count, built on the meta device (no memory); None if it cannot be built there."""
    d = cfg.data
    shape = example_shape(d.name, d.image_size, d.channels)
    classes = 10 if d.class_conditional and d.name != "folder" and len(shape) == 3 else None  # hf: a guess
    stub = Dataset(d.name, "image" if len(shape) == 3 else "vector", shape, (0.0, 1.0), classes)
    try:
        with torch.device("meta"):
            model = build_model(cfg, stub)
    except (MemoryError, RuntimeError) as err:
        if out_of_memory_message(cfg, err):
            return 2**62  # even the build's own tables cannot be allocated
        return None
    except Exception:  # the real build will report it
        return None
    return sum(p.numel() for p in model.parameters())


def process_count() -> int:
    """The run's process count from the launcher's ``WORLD_SIZE`` (the Accelerator does not exist yet); 1 unset."""
    try:
        return max(1, int(os.environ.get("WORLD_SIZE", "1")))
    except ValueError:
        return 1


def activation_bytes(cfg: TrainConfig, processes: int = 1) -> int:
    """A lower estimate of the memory one process's share of a micro-batch keeps for the backward pass."""
    d = cfg.data
    shape = example_shape(d.name, d.image_size, d.channels)
    per_example = net_entry(cfg.model["type"]).activation_floats(model_arguments(cfg.model), shape)
    return 4 * (cfg.train.batch_size // processes) * per_example


def check_memory(cfg: TrainConfig) -> None:
    count, available = count_parameters(cfg), available_memory()
    if count is None or available is None:
        return
    where = "GPU memory" if torch.cuda.is_available() else "memory available"
    need = count * BYTES_PER_PARAMETER
    if need > available:
        raise ConfigError(f"the model is too large: about {count:.3g} parameters need {need / 1e9:.3g} GB (weights, "
                          f"gradients, EMA, AdamW state), more than the {available / 1e9:.3g} GB of {where}; lower "
                          f"{size_keys(cfg)}.")
    processes = process_count()  # each process holds only its slice of the batch
    batch = activation_bytes(cfg, processes)
    if need + batch > available:
        share = "one batch" if processes == 1 else f"each of the {processes} processes' slices of a batch"
        raise ConfigError(f"train.batch_size={cfg.train.batch_size} is too large: {share} needs at least "
                          f"{batch / 1e9:.3g} GB of activations, more than the {available / 1e9:.3g} GB of {where} "
                          f"(with the model's {need / 1e9:.3g} GB); lower {size_keys(cfg, batch=True)}.")


def requested_processes(argv0: str | None = None) -> int | None:
    """``--num_processes N`` of the ``accelerate launch`` that started this process with its one-process
    launcher (no ``WORLD_SIZE`` set), read from the parent's command line; None otherwise."""
    if "WORLD_SIZE" in os.environ or not any(k.startswith("ACCELERATE_") for k in os.environ):
        return None
    try:
        parent = Path(f"/proc/{os.getppid()}/cmdline").read_bytes().decode(errors="replace").split("\0")
    except OSError:
        return None
    if "launch" not in parent:
        return None
    argv0 = argv0 if argv0 is not None else (sys.argv[0] if sys.argv else "")
    value = None
    for i, arg in enumerate(parent[parent.index("launch") + 1:], parent.index("launch") + 1):
        if arg == argv0:
            break  # the training script's own arguments follow
        for flag in ("--num_processes", "--num-processes"):
            if arg == flag and i + 1 < len(parent):
                value = parent[i + 1]
            elif arg.startswith(flag + "="):
                value = arg.split("=", 1)[1]
    try:
        return int(value) if value is not None else None
    except ValueError:
        return None


def check_launcher() -> None:
    asked = requested_processes()
    if asked is not None and asked > 1:
        raise ConfigError(f"accelerate launch was asked for {asked} processes but started one (without several GPUs "
                          f"its launcher runs a single process); on CPU use: torchrun --standalone --nproc_per_node "
                          f"{asked} train.py ARGS.")


def effective_mixed_precision(cfg: TrainConfig) -> str:
    """``train.mixed_precision``, or ``accelerate launch --mixed_precision`` where the config leaves it at "no"."""
    launcher, ours = os.environ.get("ACCELERATE_MIXED_PRECISION", "no").lower(), cfg.train.mixed_precision
    if launcher in ("no", ours):
        return ours
    check_choice("accelerate launch --mixed_precision", launcher, ("no", "fp16", "bf16"))
    if ours != "no":
        raise ConfigError(f"train.mixed_precision={ours} but accelerate launch asked for --mixed_precision "
                          f"{launcher}; drop one of the two, or make them agree.")
    return launcher


def preflight(cfg: TrainConfig, resume: str | None = None) -> None:
    """Every check that needs no dataset, model or lock; raises ConfigError / DataError with one sentence."""
    check_launcher()
    check_output_dir("output_dir", cfg.output_dir)
    check_resume_arg(resume, Path(cfg.output_dir) / "checkpoints")
    if cfg.data.name == "folder" and cfg.data.path and not Path(cfg.data.path).is_dir():
        raise DataError(f"data.path '{cfg.data.path}' is not a folder; set it to a folder of images.")
    if cfg.data.name == "hf" and cfg.data.path and not cfg.data.download and not Path(cfg.data.path).is_dir():
        raise DataError(f"data.path '{cfg.data.path}' is not a local folder; set data.download=true to fetch it from "
                        "the Hugging Face hub (needs a network), or set data.path to a local dataset folder.")
    if cfg.data.name in IDX_DATASETS:
        check_idx_dataset(cfg.data.name, cfg.data.root, cfg.data.path, cfg.data.split, cfg.data.download)
    check_memory(cfg)


def out_of_memory_message(cfg: TrainConfig, err: BaseException) -> str | None:
    """One sentence for an allocation failure (None when ``err`` is not one)."""
    text = str(err)
    oom = isinstance(err, MemoryError) or type(err).__name__ == "OutOfMemoryError" or any(
        s in text for s in ("can't allocate memory", "not enough memory", "out of memory", "Out of memory"))
    if not oom:
        return None
    first = first_line(err)
    return f"ran out of memory ({first[:160]}); lower {size_keys(cfg, batch=True)}."
