"""Datasets by name: toy 2-D sets sampled on the fly and in-memory image sets, with the model-space transform.

Every dataset reports its data-space range and maps to and from model space: images live in [0, 1] as data
and in [-1, 1] for the model; toy 2-D points are used as they are.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import Tensor

from softdiff.data.images import TORCHVISION, load_digits_images, load_folder, load_torchvision
from softdiff.data.toy2d import ANALYTIC, TOY2D, GaussianMixture
from softdiff.errors import DataError

IMAGE_DATASETS = ("digits", *TORCHVISION, "folder")
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

    def __len__(self) -> int:
        return 0 if self.images is None else len(self.images)

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
        idx = torch.randint(0, len(self.images), (n,), generator=generator)
        return self.to_model(_as_unit_float(self.images[idx])), self.labels[idx] if self.labels is not None else None

    def data_tensor(self, n: int | None = None, generator: torch.Generator | None = None) -> Tensor:
        """``n`` examples in data space (all images when ``n`` is None): the reference set for metrics."""
        if self.kind == "vector":
            return TOY2D[self.name](n or 10_000, generator)
        images = self.images if n is None else self.images[torch.randperm(len(self.images), generator=generator)[:n]]
        return _as_unit_float(images)

    @property
    def analytic(self) -> GaussianMixture | None:
        """The exact density when the set is a Gaussian mixture (for exact scores and likelihoods)."""
        return ANALYTIC.get(self.name) if self.kind == "vector" else None


def _as_unit_float(images: Tensor) -> Tensor:
    return images.float() / 255.0 if images.dtype == torch.uint8 else images.float()


NATIVE_SHAPES = {"digits": (1, 8, 8), "mnist": (1, 28, 28), "fashion_mnist": (1, 28, 28), "cifar10": (3, 32, 32)}


def example_shape(name: str, image_size: int = 32, channels: int = 3) -> tuple[int, ...]:
    """One example's shape in model space for dataset ``name``, without loading it."""
    if name in TOY2D:
        return (2,)
    if name == "folder":
        return (channels, image_size, image_size)
    return NATIVE_SHAPES[name]


def make_dataset(name: str, root: str | Path = "data", download: bool = False, path: str | None = None,
                 image_size: int = 32, channels: int = 3, train: bool = True) -> Dataset:
    """The dataset called ``name`` (see ``DATASETS``); torchvision sets download only with ``download=True``."""
    if name in TOY2D:
        return Dataset(name, "vector", (2,), (-4.0, 4.0))
    if name == "digits":
        images, labels = load_digits_images()
        return Dataset(name, "image", (1, 8, 8), (0.0, 1.0), 10, images, labels)
    if name in TORCHVISION:
        images, labels = load_torchvision(name, root, download, train)
        return Dataset(name, "image", tuple(images.shape[1:]), (0.0, 1.0), 10, images, labels)
    if name == "folder":
        if not path:
            raise DataError("data.name='folder' needs data.path, a folder of images.")
        images = load_folder(path, image_size, channels)
        return Dataset(name, "image", tuple(images.shape[1:]), (0.0, 1.0), None, images, None)
    raise DataError(f"unknown dataset '{name}'; choose one of: {', '.join(DATASETS)}.")


__all__ = ["DATASETS", "Dataset", "GaussianMixture", "IMAGE_DATASETS", "example_shape", "from_model_space",
           "make_dataset"]
