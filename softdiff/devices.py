"""Where a command's work runs: the ``--device`` choice of ``softdiff eval`` and the device of each
``softdiff compare`` worker (torch loads only to resolve a device)."""
from __future__ import annotations

from softdiff.errors import check_device


def default_device_name(cuda_available: bool) -> str:
    """A GPU when there is one, else the CPU."""
    return "cuda" if cuda_available else "cpu"


def resolve_device(key: str, name: str | None):
    """The ``torch.device`` named ``name`` (None: the default), checked against the GPUs this process sees (a bad
    name or a missing GPU is one sentence naming ``key``)."""
    import torch

    check_device(key, name)
    return torch.device(name if name is not None else default_device_name(torch.cuda.is_available()))


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


def device_of(module):
    """The device ``module`` computes on: that of its first parameter or buffer; the CPU for a module with neither
    (a fixed function standing in for a classifier, say)."""
    import torch

    tensor = next(module.parameters(), None)
    tensor = tensor if tensor is not None else next(module.buffers(), None)
    return tensor.device if tensor is not None else torch.device("cpu")
