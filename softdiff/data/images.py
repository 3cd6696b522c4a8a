"""Image datasets held in memory: sklearn's 8x8 digits (embedded), torchvision sets, and (``load_folder``, the
baseline of ``benchmarks/bench_data.py``) a folder decoded whole; training reads folders lazily (``lazy.py``)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from softdiff.data.file_index import IMAGE_SUFFIXES
from softdiff.data.image_modes import eight_bit
from softdiff.errors import DataError

TORCHVISION = {"mnist": "MNIST", "fashion_mnist": "FashionMNIST", "cifar10": "CIFAR10"}


def load_digits_images() -> tuple[Tensor, Tensor]:
    """The 1,797 8x8 digits shipped inside scikit-learn: images in [0, 1] (N, 1, 8, 8) and labels."""
    from sklearn.datasets import load_digits

    d = load_digits()
    images = torch.from_numpy(d.images.astype(np.float32) / 16.0)[:, None]
    return images, torch.from_numpy(d.target).long()


def load_torchvision(name: str, root: str | Path, download: bool, train: bool = True) -> tuple[Tensor, Tensor]:
    """A torchvision dataset as uint8 images (N, C, H, W) and labels; a clear error when it is not on disk."""
    import torchvision

    cls = getattr(torchvision.datasets, TORCHVISION[name])
    try:
        ds = cls(root=str(root), train=train, download=download)
    except RuntimeError as err:
        if download:
            raise DataError(f"could not download dataset '{name}' into '{root}': {err}") from None
        raise DataError(f"dataset '{name}' was not found under '{root}'; set data.download=true to download it "
                        f"(needs a network), or set data.root to a folder that holds it.") from None
    images = torch.as_tensor(np.asarray(ds.data))
    images = images[:, None] if images.dim() == 3 else images.permute(0, 3, 1, 2)
    return images.contiguous(), torch.as_tensor(np.asarray(ds.targets)).long()


def load_folder(path: str | Path, image_size: int, channels: int) -> Tensor:
    """Every image below ``path``, resized to ``image_size`` squares, as uint8 (N, channels, H, W)."""
    from PIL import Image

    root = Path(path)
    if not root.is_dir():
        raise DataError(f"image folder '{root}' does not exist; set data.path to a folder of images.")
    files = sorted(p for p in root.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise DataError(f"image folder '{root}' holds no images ({', '.join(sorted(IMAGE_SUFFIXES))}).")
    mode = {1: "L", 3: "RGB"}[channels]
    arrays = []
    for f in files:
        try:
            img = eight_bit(Image.open(f)).convert(mode).resize((image_size, image_size), Image.BICUBIC)
        except Exception as err:  # PIL raises OSError, ValueError, SyntaxError... for broken files
            first = (str(err).strip().splitlines() or [type(err).__name__])[0]
            raise DataError(f"image file '{f}' could not be read ({first[:160]}).") from None
        arr = np.asarray(img, dtype=np.uint8)
        arrays.append(arr[None] if arr.ndim == 2 else arr.transpose(2, 0, 1))
    return torch.from_numpy(np.stack(arrays))
