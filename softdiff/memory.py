"""How much memory a job may use: training's preflight and ``softdiff sample`` refuse sizes that cannot fit."""
from __future__ import annotations

import os
from pathlib import Path

import torch


def available_memory(gpu: bool | None = None) -> int | None:
    """Bytes available: the GPU's memory (``gpu``; by default when there is one), else the host's available
    memory; None where unknown."""
    if torch.cuda.is_available() if gpu is None else gpu:  # (device properties need no CUDA context)
        return torch.cuda.get_device_properties(int(os.environ.get("LOCAL_RANK", 0))).total_memory
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None
