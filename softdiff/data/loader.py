"""Feeding a training loop from a lazy dataset: each micro-batch's indices are a pure function of
(seed, step, micro), drawn ahead by a batch sampler, decoded by DataLoader workers (only this process's
slice of the global batch), and checked against the indices the loop draws itself. Decoding has no
randomness, so any number of workers, and any split of the run into resumed pieces, gives the same batches.
"""
from __future__ import annotations

import warnings
from typing import Callable, Iterator

import torch
from torch import Tensor
from torch.utils.data import DataLoader, Sampler

from softdiff.data.lazy import decode_batch
from softdiff.errors import DataError


def draw_indices(count: int, size: int, g: torch.Generator) -> Tensor:
    """The global batch's example indices: the first draw of a micro-batch's generator (as for in-memory sets)."""
    return torch.randint(0, count, (size,), generator=g)


class PlannedBatches(Sampler):
    """Batch sampler: this process's slice of each planned micro-batch's indices, in the loop's order."""

    def __init__(self, keys: list[tuple[int, int]], indices_of: Callable[[int, int], Tensor]):
        self.keys, self.indices_of = keys, indices_of

    def __iter__(self) -> Iterator[list[int]]:
        for step, micro in self.keys:
            yield self.indices_of(step, micro).tolist()

    def __len__(self) -> int:
        return len(self.keys)


class SliceDecoder(torch.utils.data.Dataset):
    """What the workers run: one call decodes one micro-batch slice. A bad file comes back as a message, not
    an exception, so the main process can raise it as one sentence (a worker's exception carries its
    traceback)."""

    def __init__(self, source, shape: tuple[int, ...], skip_bad: bool):
        self.source, self.shape, self.skip_bad = source, shape, skip_bad

    def __len__(self) -> int:
        return len(self.source)

    def __getitems__(self, indices: list[int]) -> dict:
        try:
            images, skipped = decode_batch(self.source, indices, self.shape[-1], self.shape[0], self.skip_bad)
        except DataError as err:
            return {"error": str(err)}
        return {"indices": torch.as_tensor(indices, dtype=torch.long), "images": images, "skipped": skipped,
                "error": None}

    def __getitem__(self, i: int) -> dict:
        return self.__getitems__([i])


def _as_is(batch):
    return batch


class BatchStream:
    """This process's decoded slice (uint8) of every micro-batch of steps ``start`` to ``end``."""

    def __init__(self, dataset, data_cfg, keys: list[tuple[int, int]], indices_of: Callable[[int, int], Tensor],
                 lo: int, hi: int):
        self.source, self.shape, self.skip_bad = dataset.source, dataset.shape, data_cfg.skip_bad_files
        self.skipped: set[str] = set()
        self._it = None
        if data_cfg.num_workers and keys:
            loader = DataLoader(SliceDecoder(self.source, self.shape, self.skip_bad),
                                batch_sampler=PlannedBatches(keys, lambda s, m: indices_of(s, m)[lo:hi]),
                                num_workers=data_cfg.num_workers, collate_fn=_as_is,
                                pin_memory=torch.cuda.is_available(),
                                generator=torch.Generator().manual_seed(0))  # not the global RNG (dropout's)
            self._it = zip(keys, loader)

    def get(self, step: int, micro: int, indices: Tensor) -> Tensor:
        """The images of ``indices`` (this process's slice of micro-batch ``(step, micro)``)."""
        if self._it is None:
            images, skipped = decode_batch(self.source, indices, self.shape[-1], self.shape[0], self.skip_bad)
        else:
            for key, batch in self._it:  # a step cut short (non-finite loss) leaves micro-batches unread
                if key >= (step, micro):
                    break
            else:
                raise RuntimeError(f"the data loader has no batch for step {step} micro-batch {micro}")
            if batch["error"]:
                raise DataError(batch["error"])
            if key != (step, micro) or not torch.equal(batch["indices"], indices):
                raise RuntimeError(f"the data loader is out of step with the training loop at step {step}")
            images, skipped = batch["images"], batch["skipped"]
        for name in skipped:
            if name not in self.skipped:
                self.skipped.add(name)
                warnings.warn(f"skipped unreadable {name} ({len(self.skipped)} so far)", stacklevel=2)
        return images

    def close(self) -> None:
        self._it = None  # drops the DataLoader iterator, which shuts its workers down


def check_batch_fits(dataset, batch_size: int) -> None:
    """Image sets must hold at least one global batch (batches draw with replacement, but a set smaller than a
    batch is almost always a wrong data.path)."""
    if dataset.kind == "image" and len(dataset) < batch_size:
        where = f" at '{dataset.source.root}'" if hasattr(dataset.source, "root") else ""
        raise DataError(f"dataset '{dataset.name}'{where} has {len(dataset)} images, fewer than train.batch_size="
                        f"{batch_size}; lower train.batch_size or add images.")


def take_slice(dataset, drawn: Tensor, lo: int, hi: int, skip_bad: bool, batches: BatchStream | None,
               step: int, micro: int) -> Tensor:
    """This process's slice of a micro-batch in model space: ``drawn`` is the global batch (toy sets) or its
    indices (image sets: in memory, or lazy ones decoded here or by ``batches``'s workers); only the slice is
    gathered and converted, so each process prepares 1 / world of the batch."""
    if dataset.kind != "image":
        return drawn[lo:hi]
    idx = drawn[lo:hi]
    if not dataset.lazy:
        return dataset.examples(idx)
    images = batches.get(step, micro, idx) if batches is not None else dataset.decode(idx, skip_bad)
    return dataset.to_model(images.float() / 255.0)
