"""Datasets by name: toy 2-D sets sampled on the fly, in-memory image sets (the small embedded ones), lazy image
sets decoded per example (folders, Hugging Face datasets), with the model-space transform.

Every dataset reports its data-space range and maps to and from model space: images live in [0, 1] as data
and in [-1, 1] for the model; toy 2-D points are used as they are.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import Tensor

from softdiff.choices import NATIVE_SHAPES, example_shape  # noqa: F401 (re-exported)
from softdiff.data.images import TORCHVISION, load_digits_images, load_torchvision
from softdiff.data.file_index import image_files
from softdiff.data.idx import IDX_DATASETS, load_idx_dataset
from softdiff.data.lazy import HFImages, ImageFiles, decode_batch
from softdiff.data.toy2d import ANALYTIC, TOY2D, GaussianMixture
from softdiff.errors import DataError

LAZY_DATASETS = ("folder", "hf")
IMAGE_DATASETS = ("digits", *TORCHVISION, *LAZY_DATASETS)
DATASETS = (*TOY2D, *IMAGE_DATASETS)


def from_model_space(x: Tensor, kind: str) -> Tensor:
    """Model space -> data space for a dataset of ``kind`` (images clamped to [0, 1])."""
    return ((x + 1) / 2).clamp(0, 1) if kind == "image" else x


@dataclass
class Dataset:
    """A source of training batches in model space, plus what is needed to map samples back to data."""

    name: str
    kind: str                                   # "vector" or "image"
    shape: tuple[int, ...]                      # one example's shape in model space
    data_range: tuple[float, float]             # data-space range (images: exact; toy sets: plotting box)
    num_classes: int | None = None
    images: Tensor | None = field(default=None, repr=False)   # uint8 or float in [0, 1], (N, C, H, W)
    labels: Tensor | None = field(default=None, repr=False)
    source: object | None = field(default=None, repr=False)   # lazy sets: see softdiff.data.lazy
    location: dict | None = field(default=None, repr=False)   # IDX sets: where make_dataset found the files

    def __len__(self) -> int:
        if self.source is not None:
            return len(self.source)
        return 0 if self.images is None else len(self.images)

    def split(self, split: str) -> "Dataset | None":
        """The ``split`` ("train" or "test") of a set that has such files (MNIST, Fashion-MNIST), read from where
        this one was found; None for other sets."""
        return make_dataset(self.name, split=split, **self.location) if self.location is not None else None

    @property
    def lazy(self) -> bool:
        """Decoded one example at a time (folders, Hugging Face datasets) rather than held in memory."""
        return self.source is not None

    def decode(self, idx: Tensor, skip_bad: bool = False) -> Tensor:
        """Examples ``idx`` of a lazy set as uint8 (n, C, H, W), decoded in this process."""
        return decode_batch(self.source, idx, self.shape[-1], self.shape[0], skip_bad)[0]

    def to_model(self, x: Tensor) -> Tensor:
        """Data space -> model space."""
        return x * 2 - 1 if self.kind == "image" else x

    def from_model(self, x: Tensor) -> Tensor:
        """Model space -> data space (images clamped to [0, 1])."""
        return from_model_space(x, self.kind)

    def sample(self, n: int, generator: torch.Generator | None = None) -> tuple[Tensor, Tensor | None]:
        """``n`` random training examples in model space (and their labels when the set has them)."""
        if self.kind == "vector":
            return TOY2D[self.name](n, generator), None
        idx = torch.randint(0, len(self), (n,), generator=generator)
        return self.examples(idx), self.labels[idx] if self.labels is not None else None

    def examples(self, idx: Tensor) -> Tensor:
        """Image examples ``idx`` in model space (float32)."""
        return self.to_model(_as_unit_float(self.decode(idx) if self.lazy else self.images[idx]))

    def data_tensor(self, n: int | None = None, generator: torch.Generator | None = None) -> Tensor:
        """``n`` examples in data space (all images when ``n`` is None): the reference set for metrics."""
        if self.kind == "vector":
            return TOY2D[self.name](n or 10_000, generator)
        if self.lazy:
            idx = torch.arange(len(self)) if n is None else torch.randperm(len(self), generator=generator)[:n]
            return _as_unit_float(self.decode(idx))
        images = self.images if n is None else self.images[torch.randperm(len(self.images), generator=generator)[:n]]
        return _as_unit_float(images)

    @property
    def analytic(self) -> GaussianMixture | None:
        """The exact density when the set is a Gaussian mixture (for exact scores and likelihoods)."""
        return ANALYTIC.get(self.name) if self.kind == "vector" else None


def _as_unit_float(images: Tensor) -> Tensor:
    return images.float() / 255.0 if images.dtype == torch.uint8 else images.float()


def make_dataset(name: str, root: str | Path = "data", download: bool = False, path: str | None = None,
                 image_size: int = 32, channels: int = 3, train: bool = True, image_column: str = "image",
                 label_column: str | None = None, split: str = "train", index: str | Path | None = None,
                 rebuild_index: bool = False) -> Dataset:
    """The dataset called ``name`` (see ``DATASETS``); torchvision sets and hub datasets download only with
    ``download=True``. ``split``: the split of mnist / fashion_mnist (train or test) and of hf; ``train``: that of
    cifar10. ``index``: a JSON file pinning the run to its data (a folder's file list, a Hugging Face
    dataset's Arrow files), written on the first open and checked and read on the next; ``rebuild_index``:
    list or open the data again and replace it."""
    if name in TOY2D:
        return Dataset(name, "vector", (2,), (-4.0, 4.0))
    if name == "digits":
        images, labels = load_digits_images()
        return Dataset(name, "image", (1, 8, 8), (0.0, 1.0), 10, images, labels)
    if name in IDX_DATASETS:
        images, labels = load_idx_dataset(name, root, path, split, download)
        return Dataset(name, "image", tuple(images.shape[1:]), (0.0, 1.0), 10, images, labels,
                       location={"root": root, "path": path, "download": download})
    if name in TORCHVISION:
        images, labels = load_torchvision(name, root, download, train)
        return Dataset(name, "image", tuple(images.shape[1:]), (0.0, 1.0), 10, images, labels)
    if name == "folder":
        if not path:
            raise DataError("data.name='folder' needs data.path, a folder of images.")
        root, files = image_files(path, index, rebuild_index)
        return Dataset(name, "image", (channels, image_size, image_size), (0.0, 1.0), source=ImageFiles(root, files))
    if name == "hf":
        return _hf_dataset(path, download, image_size, channels, image_column, label_column, split, index,
                           rebuild_index)
    raise DataError(f"unknown dataset '{name}'; choose one of: {', '.join(DATASETS)}.")


def _hf_dataset(path, download, image_size, channels, image_column, label_column, split, index,
                rebuild_index) -> Dataset:
    # The optional dependency `datasets` (the hf extra): its readers load only for data.name=hf.
    from softdiff.data.hf import check_columns, labels_of, open_table

    if not path:
        raise DataError("data.name='hf' needs data.path, a local dataset folder or a hub name.")
    table = open_table(path, split, download, index, rebuild_index)
    check_columns(table, path, image_column, label_column)
    labels, classes = labels_of(table, path, label_column) if label_column else (None, None)
    return Dataset("hf", "image", (channels, image_size, image_size), (0.0, 1.0), classes, labels=labels,
                   source=HFImages(table, image_column, f"'{path}'"))


def dataset_from_config(data, index: str | Path | None = None, rebuild_index: bool = False) -> Dataset:
    """The dataset a ``DataConfig`` describes (``rebuild_index``: see ``make_dataset``)."""
    return make_dataset(data.name, data.root, data.download, data.path, data.image_size, data.channels,
                        image_column=data.image_column, label_column=data.label_column, split=data.split,
                        index=index, rebuild_index=rebuild_index)


__all__ = ["DATASETS", "Dataset", "GaussianMixture", "IMAGE_DATASETS", "LAZY_DATASETS", "dataset_from_config",
           "example_shape", "from_model_space", "make_dataset"]
