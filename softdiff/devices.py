"""Where a command's work runs: the ``--device`` choice of ``softdiff eval`` and the device of each
``softdiff compare`` worker. The name checks import no torch, so that a bad value answers at once."""
from __future__ import annotations

import re

from softdiff.errors import ConfigError

DEVICE_PATTERN = re.compile(r"(cpu|cuda(:\d+)?)")


def check_device_name(key: str, name: str) -> str:
    """``name`` itself when it spells a device (``cpu``, ``cuda`` or ``cuda:N``); else a one-sentence ConfigError."""
    if not DEVICE_PATTERN.fullmatch(name):
        raise ConfigError(f"{key} {name!r} is not a device; use cpu, cuda or cuda:N (N = 0, 1, ...).")
    return name


def default_device_name(cuda_available: bool) -> str:
    """A GPU when there is one, else the CPU."""
    return "cuda" if cuda_available else "cpu"


def resolve_device(key: str, name: str | None):
    """The ``torch.device`` named ``name`` (None: the default), checked against the GPUs this process sees."""
    import torch

    if name is None:
        return torch.device(default_device_name(torch.cuda.is_available()))
    device = torch.device(check_device_name(key, name))
    if device.type == "cuda":
        count = torch.cuda.device_count()
        index = device.index or 0
        if index >= count:
            seen = f"only cuda:0..cuda:{count - 1}" if count else "no GPU"
            raise ConfigError(f"{key} {name} is not available: this machine has {seen}; use cpu"
                              f"{' or one of those' if count else ''}.")
    return device


def worker_devices(workers: int, num_gpus: int) -> list[str]:
    """The device of each of ``workers`` processes: round-robin over ``num_gpus`` GPUs (worker i on
    ``cuda:i % num_gpus``), every one on the CPU when there is none."""
    if num_gpus <= 0:
        return ["cpu"] * workers
    return [f"cuda:{i % num_gpus}" for i in range(workers)]


def visible_devices_for(device: str, visible: str | None) -> str | None:
    """The ``CUDA_VISIBLE_DEVICES`` value that shows a worker only its GPU ``device`` (``cuda:i`` counts the GPUs
    the parent sees, i.e. the parent's ``visible`` list when it has one); None for a CPU worker."""
    if not device.startswith("cuda"):
        return None
    index = int(device.partition(":")[2] or 0)
    parent = [v.strip() for v in visible.split(",") if v.strip()] if visible else None
    return parent[index] if parent else str(index)
