"""The EMA weights inside a training checkpoint (``ema.safetensors`` + ``ema.json``): written and resumed by
softdiff.training.checkpoints, read by ``SoftdiffPipeline.from_pretrained(checkpoint=...)``. Safetensors and
JSON only: nothing in these files can run code."""
from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from softdiff.errors import DataError, first_line

EMA_WEIGHTS, EMA_STATE = "ema.safetensors", "ema.json"
EMA_KEYS = {"decay": float, "min_decay": float, "optimization_step": int, "update_after_step": int,
            "use_ema_warmup": bool, "inv_gamma": (float, int), "power": (float, int)}


class CheckpointError(ValueError):
    """One checkpoint cannot be loaded (the reason is the message)."""


def save_ema(ema, names: list[str], folder: Path) -> None:
    """The EMA's shadow weights (safetensors, by parameter name) and its counters (JSON)."""
    if len(names) != len(ema.shadow_params):
        raise ValueError(f"{len(names)} names for {len(ema.shadow_params)} EMA tensors")
    tensors = {n: p.detach().to("cpu").contiguous() for n, p in zip(names, ema.shadow_params)}
    save_file(tensors, str(folder / EMA_WEIGHTS))
    state = {k: getattr(ema, k) for k in EMA_KEYS}
    (folder / EMA_STATE).write_text(json.dumps(state, indent=2))


def read_ema(folder: Path) -> tuple[dict[str, torch.Tensor], dict]:
    """``(shadow tensors by name, counters)`` from :func:`save_ema`'s files; CheckpointError when unusable."""
    if not (folder / EMA_WEIGHTS).is_file():
        old = " (it was written by an older softdiff, whose EMA state is a pickle that is no longer loaded)" \
            if (folder / "custom_checkpoint_0.pkl").exists() else ""
        raise CheckpointError(f"it has no {EMA_WEIGHTS}{old}")
    try:
        tensors = load_file(str(folder / EMA_WEIGHTS))
        state = json.loads((folder / EMA_STATE).read_text())
    except Exception as err:  # safetensors raises several types for a corrupt file
        raise CheckpointError(f"its EMA files cannot be read ({first_line(err)})") from None
    if not isinstance(state, dict) or any(not isinstance(state.get(k), t) or
                                          (t is not bool and isinstance(state.get(k), bool))
                                          for k, t in EMA_KEYS.items()):
        raise CheckpointError(f"its {EMA_STATE} lacks or mistypes one of: {', '.join(EMA_KEYS)}")
    return tensors, state


def load_ema_weights(model, checkpoint: Path) -> None:
    """Copy the EMA weights of the checkpoint folder ``checkpoint`` into ``model`` (by parameter name);
    DataError when the checkpoint has none that fit."""
    try:
        tensors, _ = read_ema(Path(checkpoint))
    except CheckpointError as err:
        raise DataError(f"checkpoint '{checkpoint}' has no usable EMA weights: {err}.") from None
    params = dict(model.named_parameters())
    if set(tensors) != set(params) or any(tensors[k].shape != p.shape for k, p in params.items()):
        raise DataError(f"the EMA weights of checkpoint '{checkpoint}' do not fit the model they are loaded into.")
    with torch.no_grad():
        for name, p in params.items():
            p.copy_(tensors[name])
