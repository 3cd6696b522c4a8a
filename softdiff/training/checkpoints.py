"""Atomic, rotated accelerate checkpoints: ``checkpoints/checkpoint-<step>/`` appear only once complete."""
from __future__ import annotations

import json
import re
import shutil
import warnings
from pathlib import Path

from softdiff.errors import ConfigError

_NAME = re.compile(r"^checkpoint-(\d+)$")
MARKER = "softdiff_checkpoint.json"  # written last, inside the temporary folder, before the rename


def list_checkpoints(checkpoint_dir: Path) -> list[tuple[int, Path]]:
    """Complete-looking checkpoints, newest first."""
    if not checkpoint_dir.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in checkpoint_dir.iterdir() if (m := _NAME.match(p.name)) and p.is_dir()]
    return sorted(found, reverse=True)


def save_checkpoint(accelerator, checkpoint_dir: Path, step: int, limit: int) -> Path:
    """Save accelerate state to a temporary folder, then rename: a kill mid-save leaves the old ones intact."""
    final = checkpoint_dir / f"checkpoint-{step}"
    tmp = checkpoint_dir / f".tmp-checkpoint-{step}"
    if accelerator.is_main_process:
        shutil.rmtree(tmp, ignore_errors=True)
    accelerator.wait_for_everyone()
    accelerator.save_state(str(tmp))
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        (tmp / MARKER).write_text(json.dumps({"step": step}))
        shutil.rmtree(final, ignore_errors=True)
        tmp.rename(final)
        for _, old in list_checkpoints(checkpoint_dir)[limit:]:
            shutil.rmtree(old, ignore_errors=True)
        for stale in checkpoint_dir.glob(".tmp-checkpoint-*"):
            shutil.rmtree(stale, ignore_errors=True)
    accelerator.wait_for_everyone()
    return final


def checkpoint_step(path: Path) -> int:
    """The step recorded in a complete checkpoint; ValueError if the folder is incomplete."""
    marker = path / MARKER
    if not marker.is_file():
        raise ValueError(f"checkpoint '{path}' is incomplete (no {MARKER})")
    return int(json.loads(marker.read_text())["step"])


def resolve_resume(resume: str | None, checkpoint_dir: Path) -> list[Path]:
    """Candidates to resume from, best first: a given path, or every checkpoint newest first for 'latest'."""
    if resume is None:
        return []
    if resume == "latest":
        return [p for _, p in list_checkpoints(checkpoint_dir)]
    path = Path(resume)
    if not path.is_dir():
        raise ConfigError(f"--resume '{resume}' is neither 'latest' nor an existing checkpoint folder.")
    return [path]


def load_first_valid(accelerator, candidates: list[Path]) -> int:
    """Load the first candidate that loads cleanly and return its step; warn about each one skipped."""
    for path in candidates:
        try:
            step = checkpoint_step(path)
            accelerator.load_state(str(path))
            return step
        except Exception as err:  # a corrupt file can fail in torch, safetensors or pickle
            if len(candidates) == 1:
                raise ConfigError(f"checkpoint '{path}' could not be loaded: {err}") from None
            warnings.warn(f"skipping checkpoint '{path}': {err}", stacklevel=2)
    return 0
