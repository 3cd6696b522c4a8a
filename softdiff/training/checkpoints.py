"""Checkpoints of a run: ``checkpoints/checkpoint-<step>/``, written atomically, loaded safely and all at once.

A checkpoint holds accelerate's state (``model.safetensors``, ``optimizer.bin``, ``scheduler.bin``,
``random_states_<rank>.pkl``, and ``scaler.pt`` with fp16) plus the EMA as ``ema.safetensors`` + ``ema.json``,
and ``softdiff_checkpoint.json`` written last. It is filled in ``.tmp-checkpoint-<step>`` and renamed when
complete, so a kill mid-save leaves the previous checkpoints as they were.

Loading runs no code from the files: safetensors and JSON, and ``torch.load(weights_only=True)`` for the
optimizer, scheduler, scaler and RNG state (the RNG file holds NumPy arrays, so NumPy's array type and its
reconstructor are allowed: data only). Every file is read and checked against the model before anything is
applied, and all processes must succeed, so a checkpoint either loads completely or not at all.
"""
from __future__ import annotations

import json
import pickle
import random
import re
import uuid
import warnings
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np
import torch
from safetensors.torch import load_file

from softdiff.checkpoint_ema import EMA_KEYS, EMA_WEIGHTS, CheckpointError, read_ema, save_ema
from softdiff.errors import ConfigError, SoftdiffError, first_line
from softdiff.safe_io import _remove, is_disk_full, replace_dir, write_json

_NAME = re.compile(r"^checkpoint-(\d+)$")
MARKER = "softdiff_checkpoint.json"  # written last, inside the temporary folder, before the rename
# What torch.load(weights_only=True) may build from accelerate's RNG file: NumPy arrays of numbers.
_RNG_GLOBALS = [np.ndarray, np.dtype, getattr(np, "_core", getattr(np, "core", None)).multiarray._reconstruct]
if hasattr(np, "dtypes"):
    _RNG_GLOBALS.append(np.dtypes.UInt32DType)
RESUME_MODES = ("latest", "auto")


class DiskFullError(SoftdiffError):
    """A write failed for lack of space; what was saved before is intact."""

    exit_code = 1


def list_checkpoints(checkpoint_dir: Path) -> list[tuple[int, Path]]:
    """Complete-looking checkpoint folders, newest first."""
    if not checkpoint_dir.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in checkpoint_dir.iterdir() if (m := _NAME.match(p.name)) and p.is_dir()]
    return sorted(found, reverse=True)


def read_marker(path: Path) -> dict:
    """The marker of a complete checkpoint: ``{"step": int, "run": str}``; CheckpointError if incomplete."""
    marker = path / MARKER
    if not marker.is_file():
        raise CheckpointError(f"it is incomplete (no {MARKER})")
    try:
        data = json.loads(marker.read_text())
        step = data["step"]
    except (ValueError, KeyError, TypeError):
        raise CheckpointError(f"its {MARKER} is not valid JSON with a step") from None
    if not isinstance(step, int) or isinstance(step, bool) or step < 0:
        raise CheckpointError(f"its {MARKER} has step={step!r}, not a non-negative integer")
    return data


def checkpoint_step(path: Path) -> int:
    """The step recorded in a complete checkpoint; ValueError if the folder is incomplete."""
    try:
        return read_marker(path)["step"]
    except CheckpointError as err:
        raise ValueError(f"checkpoint '{path}' {err}") from None


def resolve_resume(resume: str | None, checkpoint_dir: Path) -> list[Path]:
    """Candidates to resume from, best first: a given folder, or every checkpoint newest first."""
    if resume is None:
        return []
    if resume in RESUME_MODES:
        return [p for _, p in list_checkpoints(checkpoint_dir)]
    path = Path(resume)
    if not path.is_dir():
        raise ConfigError(f"--resume '{resume}' is neither 'latest', 'auto' nor an existing checkpoint folder.")
    return [path]


def check_resume_arg(resume: str | None, checkpoint_dir: Path) -> None:
    """The checks of ``--resume`` that need no model: an explicit folder must be a complete checkpoint, and
    ``latest`` needs at least one checkpoint."""
    if resume == "latest" and not list_checkpoints(checkpoint_dir):
        raise ConfigError(f"--resume latest: there is no checkpoint in '{checkpoint_dir}'; run without --resume "
                          "to start from step 0 (or pass --resume auto).")
    if resume is None or resume in RESUME_MODES:
        return
    path = Path(resume)
    if not path.is_dir():
        raise ConfigError(f"--resume '{resume}' is neither 'latest', 'auto' nor an existing checkpoint folder.")
    try:
        read_marker(path)
    except CheckpointError as err:
        raise ConfigError(f"--resume '{resume}' is not a softdiff checkpoint: {err}.") from None


# ------------------------------------------------------------------------------------------------ EMA files
@contextmanager
def ema_weights(ema, model) -> Iterator[None]:
    """Run the block with the EMA weights in ``model``; the live weights are back afterwards, even on error."""
    ema.store(model.parameters())
    ema.copy_to(model.parameters())
    try:
        yield
    finally:
        ema.restore(model.parameters())


def ema_names(model) -> list[str]:
    """The names of the parameters the EMA tracks, in ``model.parameters()`` order."""
    return [name for name, _ in model.named_parameters()]


def load_ema_state(ema, names: list[str], tensors: dict[str, torch.Tensor], state: dict) -> None:
    """Copy checked EMA files into ``ema`` (in place: its tensors keep their device)."""
    with torch.no_grad():
        for name, shadow in zip(names, ema.shadow_params):
            shadow.copy_(tensors[name])
    for key in EMA_KEYS:
        setattr(ema, key, state[key])


def _check_tensors(what: str, loaded: dict[str, torch.Tensor], expected: dict[str, torch.Tensor]) -> None:
    missing, extra = sorted(set(expected) - set(loaded)), sorted(set(loaded) - set(expected))
    if missing or extra:
        raise CheckpointError(f"its {what} does not match the model (missing: {', '.join(missing[:3]) or '-'}; "
                              f"unexpected: {', '.join(extra[:3]) or '-'})")
    for name, tensor in expected.items():
        if tuple(loaded[name].shape) != tuple(tensor.shape):
            raise CheckpointError(f"its {what} has {name} of shape {tuple(loaded[name].shape)}, but the model "
                                  f"needs {tuple(tensor.shape)} (was it written with another config?)")


def _torch_load(file: Path, allowed=()):
    """``torch.load(weights_only=True)``: tensors, numbers, strings and containers only (plus ``allowed``)."""
    try:
        with torch.serialization.safe_globals(list(allowed)):
            return torch.load(file, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        raise CheckpointError(f"its {file.name} holds pickled objects other than tensors and numbers; it was not "
                              "loaded, as loading them could run code") from None


# ----------------------------------------------------------------------------------------- the checkpoints
@dataclass
class _State:
    """Everything one process needs from a checkpoint, read and checked, not yet applied."""

    step: int
    run: str | None
    model: dict
    optimizer: dict
    scheduler: dict
    rng: dict
    scaler: dict | None
    ema_tensors: dict
    ema_state: dict


class Checkpoints:
    """The checkpoints of one run: atomic saves, safe all-or-nothing resume, and a rotation that deletes a
    checkpoint only once ``limit`` newer good ones exist."""

    def __init__(self, accelerator, folder: Path, limit: int, model, optimizer, lr_scheduler, ema):
        self.accelerator, self.folder, self.limit = accelerator, Path(folder), limit
        self.model, self.optimizer, self.lr_scheduler, self.ema = model, optimizer, lr_scheduler, ema
        self.unwrapped = accelerator.unwrap_model(model)
        self.names = ema_names(self.unwrapped)
        self.run = uuid.uuid4().hex  # the trajectory: a fresh start gets a new one, a resume keeps its own
        self.good: set[int] = set()  # steps of checkpoints of this trajectory known to be complete

    # -- resume
    def resume(self, resume: str | None, quiet: bool = False) -> int:
        """Load the checkpoint ``resume`` asks for and return its step (0 for a fresh start).

        ``latest``: the newest checkpoint that loads (each one skipped is warned about); none: ConfigError.
        ``auto``: the same, but a fresh start when none loads. A folder: that checkpoint or ConfigError.
        """
        candidates = resolve_resume(resume, self.folder)
        failures = []
        for path in candidates:
            try:
                state = self._read(path)
            except CheckpointError as err:
                failures.append(f"{path.name}: {err}")
                if resume in RESUME_MODES:
                    warnings.warn(f"skipping checkpoint '{path}': {err}", stacklevel=2)
                continue
            self._apply(path, state)
            self.run = state.run or self.run
            self.good.add(state.step)
            return state.step
        if resume is None:
            return 0
        if resume not in RESUME_MODES:
            raise ConfigError(f"checkpoint '{candidates[0]}' could not be loaded: {failures[0].split(': ', 1)[1]}.")
        if resume == "auto":
            if failures and not quiet and self.accelerator.is_main_process:
                print(f"no checkpoint in {self.folder} could be loaded: starting from step 0")
            return 0
        if not candidates:
            raise ConfigError(f"--resume latest: there is no checkpoint in '{self.folder}'; run without --resume "
                              "to start from step 0 (or pass --resume auto).")
        raise ConfigError(f"--resume latest: none of the {len(candidates)} checkpoints in '{self.folder}' could be "
                          f"loaded ({'; '.join(failures)}); nothing was changed. Pass --resume auto to start from "
                          "step 0.")

    def _read(self, path: Path) -> _State:
        """Read and check every file this process needs; all processes must succeed."""
        error = None
        try:
            state = self._read_local(path)
        except CheckpointError as err:
            error, state = err, None
        except Exception as err:  # a corrupt file can fail in torch, safetensors or pickle's safe subset
            error, state = CheckpointError(f"it could not be read ({first_line(err)})"), None
        if self.accelerator.num_processes > 1:
            flag = torch.tensor([0.0 if error else 1.0], device=self.accelerator.device)
            readers = self.accelerator.reduce(flag, reduction="sum").item()  # accelerate's reduce has no "min"
            if readers < self.accelerator.num_processes and error is None:
                error = CheckpointError("another process could not read its part of it")
        if error is not None:
            raise error
        return state

    def _read_local(self, path: Path) -> _State:
        marker = read_marker(path)
        acc = self.accelerator
        rank = acc.process_index
        files = {"model": path / "model.safetensors", "optimizer": path / "optimizer.bin",
                 "scheduler": path / "scheduler.bin", "rng": path / f"random_states_{rank}.pkl"}
        if acc.scaler is not None:
            files["scaler"] = path / "scaler.pt"
        for what, file in files.items():
            if not file.is_file():
                raise CheckpointError(f"it has no {file.name}")
        model_sd = load_file(str(files["model"]))
        _check_tensors("model.safetensors", model_sd, self.unwrapped.state_dict())
        optimizer_sd = _torch_load(files["optimizer"])
        self._check_optimizer(optimizer_sd)
        scheduler_sd = _torch_load(files["scheduler"])
        if not isinstance(scheduler_sd, dict) or "last_epoch" not in scheduler_sd:
            raise CheckpointError("its scheduler.bin is not an LR scheduler state")
        rng = _torch_load(files["rng"], _RNG_GLOBALS)
        if not isinstance(rng, dict) or not isinstance(rng.get("torch_manual_seed"), torch.Tensor):
            raise CheckpointError(f"its {files['rng'].name} holds no torch RNG state")
        scaler_sd = _torch_load(files["scaler"]) if "scaler" in files else None
        ema_tensors, ema_state = read_ema(path)
        expected = dict(zip(self.names, self.ema.shadow_params))
        _check_tensors(EMA_WEIGHTS, ema_tensors, expected)
        return _State(marker["step"], marker.get("run"), model_sd, optimizer_sd, scheduler_sd, rng, scaler_sd,
                      ema_tensors, ema_state)

    def _check_optimizer(self, sd) -> None:
        current = self.optimizer.state_dict()
        if not isinstance(sd, dict) or not isinstance(sd.get("param_groups"), list) or "state" not in sd:
            raise CheckpointError("its optimizer.bin is not an optimizer state")
        sizes = [len(g.get("params", ())) for g in sd["param_groups"]]
        if sizes != [len(g["params"]) for g in current["param_groups"]]:
            raise CheckpointError("its optimizer.bin holds other parameter groups than the model's")
        shapes = {i: tuple(p.shape) for i, p in enumerate(q for g in self.optimizer.param_groups for q in g["params"])}
        for index, entry in sd["state"].items():
            for key, value in entry.items():
                if isinstance(value, torch.Tensor) and value.dim() > 0 and tuple(value.shape) != shapes.get(index):
                    raise CheckpointError(f"its optimizer.bin has {key} of shape {tuple(value.shape)} for a "
                                          f"parameter of shape {shapes.get(index)}")

    def _apply(self, path: Path, s: _State) -> None:
        """Put a checked state in place. A failure here cannot be undone, so it ends the run (exit 2)."""
        acc = self.accelerator
        try:
            self.unwrapped.load_state_dict(s.model)  # accelerate saves the unwrapped model's keys
            self.optimizer.load_state_dict(s.optimizer)
            self.lr_scheduler.load_state_dict(s.scheduler)
            if s.scaler is not None:
                acc.scaler.load_state_dict(s.scaler)
            load_ema_state(self.ema, self.names, s.ema_tensors, s.ema_state)
            rng = s.rng
            if "random_state" in rng:
                random.setstate(rng["random_state"])
            if "numpy_random_seed" in rng:
                np.random.set_state(rng["numpy_random_seed"])
            torch.set_rng_state(rng["torch_manual_seed"])
            if torch.cuda.is_available() and "torch_cuda_manual_seed" in rng:
                torch.cuda.set_rng_state_all(rng["torch_cuda_manual_seed"])
            if "step" in rng:
                acc.step = int(rng["step"])
        except Exception as err:
            raise ConfigError(f"checkpoint '{path}' passed its checks but could not be applied "
                              f"({first_line(err)}); the run stops before training.") from None

    # -- save
    def save(self, step: int) -> Path:
        """Save to a temporary folder, then rename; rotate old checkpoints (see :meth:`_rotate`)."""
        acc, final = self.accelerator, self.folder / f"checkpoint-{step}"
        tmp = self.folder / f".tmp-checkpoint-{step}"
        if acc.is_main_process:
            self.folder.mkdir(parents=True, exist_ok=True)
            _remove(tmp)
        acc.wait_for_everyone()
        try:
            acc.save_state(str(tmp))
            if acc.is_main_process:
                save_ema(self.ema, self.names, tmp)
                write_json(tmp / MARKER, {"step": step, "run": self.run})
        except Exception as err:
            if acc.is_main_process:
                _remove(tmp)
            if is_disk_full(err, self.folder):
                raise DiskFullError(self._disk_full_message(final, err)) from None
            raise
        acc.wait_for_everyone()
        if acc.is_main_process:
            replace_dir(tmp, final)
            self.good.add(step)
            self._rotate(step)
            for stale in self.folder.glob(".tmp-checkpoint-*"):
                _remove(stale)
        acc.wait_for_everyone()
        return final

    def _disk_full_message(self, target: Path, err: BaseException) -> str:
        previous = [p.name for s, p in list_checkpoints(self.folder) if s in self.good]
        intact = f"the previous checkpoint '{previous[0]}' is intact" if previous else "no checkpoint was saved yet"
        return (f"no space left on device while writing '{target}' ({first_line(err)}); {intact}. Free space in "
                f"'{self.folder}', then continue with --resume latest.")

    def _rotate(self, step: int) -> None:
        """Delete a checkpoint of this run only once ``limit`` newer good ones exist; checkpoints of an earlier run
        in this folder (started over without --resume) go once this run has saved one. Newer checkpoints of this
        run that it has not reached (one that failed to load) are left alone until the run replaces them."""
        for old_step, path in list_checkpoints(self.folder):
            if old_step == step:
                continue
            try:
                run = read_marker(path).get("run")
            except CheckpointError:
                run = None
            if run != self.run or (old_step < step and sum(s > old_step for s in self.good) >= self.limit):
                _remove(path)
