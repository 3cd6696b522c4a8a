"""Map-style image sources decoded one example at a time (in DataLoader workers when there are some).

A source has ``len()``, ``load(i)`` (a PIL image, or an exception for an unreadable example) and
``name(i)`` (how to name example ``i`` in an error). ``decode(source, i, ...)`` turns an example into uint8
(C, S, S): scaled so the shorter side is S, then centre-cropped; images already S x S are untouched, so
they round-trip exactly.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from softdiff.data.image_modes import eight_bit
from softdiff.errors import DataError

MODES = {1: "L", 3: "RGB"}


class ImageFiles:
    """Image files below ``root`` (paths relative to it)."""

    def __init__(self, root: Path, files: list[str]):
        self.root, self.files = root, files

    def __len__(self) -> int:
        return len(self.files)

    def name(self, i: int) -> str:
        return f"image file '{self.root / self.files[i]}'"

    def load(self, i: int):
        from PIL import Image

        img = Image.open(self.root / self.files[i])
        img.load()  # decode now, so a truncated file fails here and not later
        return img


class HFImages:
    """The image column of a Hugging Face ``datasets.Dataset`` (only that column is read per example)."""

    def __init__(self, table, column: str, where: str):
        self.table, self.column, self.where = table.select_columns([column]), column, where

    def __len__(self) -> int:
        return len(self.table)

    def name(self, i: int) -> str:
        try:  # an image stored as a path, not as bytes (an image folder): name the file too
            value = self.table.with_format("arrow")[int(i)].column(self.column)[0].as_py()
            path = value["path"] if value["bytes"] is None else None
        except (TypeError, KeyError, IndexError, AttributeError):
            path = None
        if path:
            return f"image file '{path}' (row {i} of {self.where}, column '{self.column}')"
        return f"row {i} of {self.where} (column '{self.column}')"

    def load(self, i: int):
        img = self.table[int(i)][self.column]
        if img is None:
            raise ValueError("the image is missing (None)")
        img.load()
        return img


def to_square(img, size: int, channels: int) -> np.ndarray:
    """A PIL image of any mode and bit depth as uint8 (channels, size, size): shorter side scaled to ``size``,
    centre-cropped."""
    from PIL import Image, ImageOps

    img = eight_bit(img).convert(MODES[channels])
    if img.size != (size, size):
        img = ImageOps.fit(img, (size, size), Image.BICUBIC)
    arr = np.asarray(img, dtype=np.uint8)
    return arr[None] if arr.ndim == 2 else arr.transpose(2, 0, 1)


def unreadable(source, i: int, err: BaseException) -> str:
    first = (str(err).strip().splitlines() or [type(err).__name__])[0]
    return (f"{source.name(i)} could not be read ({first[:160]}); fix or remove it, or set "
            f"data.skip_bad_files=true to skip unreadable images.")


def decode_batch(source, indices, size: int, channels: int, skip_bad: bool) -> tuple[Tensor, list[str]]:
    """uint8 (n, channels, size, size) for ``indices``, and the names of unreadable examples that were
    replaced (``skip_bad``) by the next readable one, so the batch stays a function of the indices."""
    out = np.empty((len(indices), channels, size, size), dtype=np.uint8)
    skipped = []
    for k, i in enumerate(indices):
        i = int(i)
        for tries in range(len(source)):
            j = (i + tries) % len(source)
            try:
                out[k] = to_square(source.load(j), size, channels)
                break
            except Exception as err:  # PIL raises OSError, ValueError, SyntaxError... for broken files
                if not skip_bad:
                    raise DataError(unreadable(source, j, err)) from None
                skipped.append(source.name(j))
        else:
            raise DataError(f"no example of the dataset could be read (the first: {source.name(i)}).")
    return torch.from_numpy(out), skipped
