"""MNIST and Fashion-MNIST read straight from their IDX files (gzipped or not): from ``data.path``, torchvision's
layout under ``data.root``, or the folder a Debian package installs them in."""
from __future__ import annotations

import gzip
import os
import zlib
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from softdiff.data.images import load_torchvision
from softdiff.errors import DataError
from softdiff.safe_io import atomic_path

IDX_DATASETS = ("mnist", "fashion_mnist")
SPLITS = {"train": "train", "test": "t10k"}  # data.split -> the files' prefix
# Where Debian's dataset packages put the files (a dict so that tests can point them elsewhere).
SYSTEM_FOLDERS = {"mnist": "/usr/share/datasets/mnist", "fashion_mnist": "/usr/share/datasets/fashion-mnist"}
TORCHVISION_FOLDERS = {"mnist": "MNIST", "fashion_mnist": "FashionMNIST"}
IMAGE_SIZE = 28
NUM_CLASSES = 10
_GZIP_MAGIC = b"\x1f\x8b"
_UBYTE = 0x08
_KINDS = {1: "labels", 3: "images"}  # number of dimensions -> what the file holds


def _describe(dims: tuple[int, ...]) -> str:
    """'60000 images of 28x28' or '60000 labels'."""
    what = f"{dims[0]} {_KINDS[len(dims)]}"
    return what + (f" of {'x'.join(map(str, dims[1:]))}" if len(dims) > 1 else "")


def _bad_gzip(path: Path, err: Exception) -> DataError:
    return DataError(f"IDX file '{path}' starts like a gzip file but could not be decompressed ({err}); it is "
                     "probably truncated or damaged.")


def _parse_header(path: Path, raw: bytes) -> tuple[int, ...]:
    """The dimensions in the header at the start of ``raw``; an error unless it is an unsigned-byte IDX header."""
    if len(raw) < 4 or raw[:3] != bytes([0, 0, _UBYTE]) or raw[3] not in _KINDS:
        found = f"0x{raw[:4].hex().upper()}" if len(raw) >= 4 else f"only {len(raw)} bytes"
        raise DataError(f"IDX file '{path}' does not start with an unsigned-byte IDX magic number: expected "
                        f"0x00000803 (images) or 0x00000801 (labels), found {found}.")
    offset = 4 + 4 * raw[3]
    if len(raw) < offset:
        raise DataError(f"IDX file '{path}' is truncated: its header needs {offset} bytes but it holds {len(raw)}.")
    return tuple(int(d) for d in np.frombuffer(raw, ">u4", raw[3], 4))


def _check_size(path: Path, dims: tuple[int, ...], held: int) -> int:
    """The data's size in bytes, which the header promises; an error when the file holds another number."""
    size = int(np.prod(dims, dtype=np.int64))
    if held < size:
        raise DataError(f"IDX file '{path}' is truncated: its header promises {_describe(dims)} ({size} bytes) "
                        f"but it holds {held} bytes.")
    if held > size:
        raise DataError(f"IDX file '{path}' has {held - size} bytes of trailing data after the {_describe(dims)} "
                        f"({size} bytes) its header promises.")
    return size


def _read_bytes(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as err:
        raise DataError(f"IDX file '{path}' could not be read: {err.strerror or err}.") from None


def read_idx(path: str | Path) -> Tensor:
    """An unsigned-byte IDX file (images: (N, rows, cols); labels: (N,)) as a uint8 tensor."""
    path = Path(path)
    raw = _read_bytes(path)
    if raw[:2] == _GZIP_MAGIC:  # by content, not suffix: unpacked copies often keep the .gz name and vice versa
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError, zlib.error) as err:
            raise _bad_gzip(path, err) from None
    dims = _parse_header(path, raw)
    offset = 4 + 4 * len(dims)
    size = _check_size(path, dims, len(raw) - offset)
    return torch.from_numpy(np.frombuffer(raw, np.uint8, size, offset).reshape(dims).copy())


def _stream_shape(path: Path, f) -> tuple[tuple[int, ...], int]:
    """The header's dimensions and the number of data bytes of the open IDX file ``f`` (gzipped or not)."""
    if f.read(2) != _GZIP_MAGIC:
        f.seek(0)
        dims = _parse_header(path, f.read(4 + 4 * 3))
        return dims, os.fstat(f.fileno()).st_size - 4 - 4 * len(dims)
    f.seek(0)
    try:
        with gzip.GzipFile(fileobj=f) as z:
            raw = z.read(4)
            dims = _parse_header(path, raw + z.read(4 * raw[3]) if len(raw) == 4 else raw)
            held = 0
            while chunk := z.read(1 << 22):  # counted, not kept
                held += len(chunk)
            return dims, held
    except (OSError, EOFError, zlib.error) as err:
        raise _bad_gzip(path, err) from None


def idx_shape(path: str | Path) -> tuple[int, ...]:
    """The shape an IDX file holds, with every check of ``read_idx`` but without keeping its data in memory."""
    path = Path(path)
    try:
        with open(path, "rb") as f:
            dims, held = _stream_shape(path, f)
    except OSError as err:
        raise DataError(f"IDX file '{path}' could not be read: {err.strerror or err}.") from None
    _check_size(path, dims, held)
    return dims


def write_idx(path: str | Path, array) -> None:
    """Write uint8 labels (N,) or images (N, rows, cols) as an IDX file, gzipped when ``path`` ends in .gz."""
    data = np.ascontiguousarray(np.asarray(array, dtype=np.uint8))
    if data.ndim not in _KINDS:
        raise ValueError(f"write_idx takes labels (1 dimension) or images (3), not {data.ndim} dimensions.")
    raw = bytes([0, 0, _UBYTE, data.ndim]) + np.asarray(data.shape, ">u4").tobytes() + data.tobytes()
    if str(path).endswith(".gz"):
        raw = gzip.compress(raw, mtime=0)
    with atomic_path(path) as tmp:
        tmp.write_bytes(raw)


def _file_names(split: str) -> tuple[str, str]:
    prefix = SPLITS[split]
    return f"{prefix}-images-idx3-ubyte", f"{prefix}-labels-idx1-ubyte"


def _in_folder(folder: Path, name: str) -> Path | None:
    """``folder/name`` or ``folder/name.gz``, whichever exists (the unpacked one first: no decompression)."""
    for candidate in (folder / name, folder / f"{name}.gz"):
        if candidate.is_file():
            return candidate
    return None


def _find(folder: Path, split: str) -> tuple[Path, Path] | None:
    """The split's images and labels files in ``folder``; None when it holds neither, an error when only one."""
    names = _file_names(split)
    found = [_in_folder(folder, n) for n in names]
    if all(found):
        return found[0], found[1]
    if any(found):
        have, missing = (found[0], names[1]) if found[0] else (found[1], names[0])
        raise DataError(f"folder '{folder}' holds '{have.name}' but not '{missing}' (or '{missing}.gz'); "
                        "both files of a split are needed.")
    return None


def locations(name: str, root: str | Path, path: str | None) -> list[Path]:
    """The folders searched, in order: ``data.path`` alone if given, else root/<Set>/raw, root, the system's."""
    if path:
        return [Path(path)]
    root = Path(root)
    return [root / TORCHVISION_FOLDERS[name] / "raw", root, Path(SYSTEM_FOLDERS[name])]


def _missing(name: str, split: str, searched: list[Path]) -> DataError:
    images, labels = _file_names(split)
    system = SYSTEM_FOLDERS[name]
    install = ("install them with `apt-get install dataset-fashion-mnist`" if name == "fashion_mnist" else
               f"install a Debian package that places them under {system}")
    places = ", ".join(f"'{p}'" for p in searched)
    return DataError(f"dataset '{name}' ({split} split: {images}[.gz] and {labels}[.gz]) was not found in {places}; "
                     f"{install}, set data.path=FOLDER to a folder holding the four IDX files, or set "
                     "data.download=true to download it (needs a network).")


def find_idx_files(name: str, root: str | Path = "data", path: str | None = None,
                   split: str = "train") -> tuple[Path, Path] | None:
    """``name``'s ``split`` images and labels files in the first of ``locations`` holding them, else None."""
    if split not in SPLITS:
        raise DataError(f"data.split={split!r} is not valid for data.name={name}; choose one of: "
                        f"{', '.join(SPLITS)}.")
    searched = locations(name, root, path)
    if path and not searched[0].is_dir():
        raise DataError(f"data.path='{path}' is not a folder; set it to a folder holding the four IDX files of "
                        f"{name}, or leave it unset to search data.root and {SYSTEM_FOLDERS[name]}.")
    return next((found for folder in searched if (found := _find(folder, split))), None)


def _check_pair(name: str, files: tuple[Path, Path], image_shape: tuple[int, ...], labels: Tensor) -> None:
    """Images of 28x28, one label per image, labels below 10."""
    if len(image_shape) != 3 or image_shape[1:] != (IMAGE_SIZE, IMAGE_SIZE):
        raise DataError(f"IDX file '{files[0]}' should hold {name} images of {IMAGE_SIZE}x{IMAGE_SIZE}, but it "
                        f"holds an array of shape {tuple(image_shape)}.")
    if labels.dim() != 1:
        raise DataError(f"IDX file '{files[1]}' should hold {name} labels (1 dimension), but it holds an array of "
                        f"shape {tuple(labels.shape)}.")
    if image_shape[0] != len(labels):
        raise DataError(f"IDX files '{files[0]}' and '{files[1]}' do not match: {image_shape[0]} images but "
                        f"{len(labels)} labels.")
    if len(labels) and int(labels.max()) >= NUM_CLASSES:
        raise DataError(f"IDX file '{files[1]}' holds label {int(labels.max())}; {name} labels are 0 to "
                        f"{NUM_CLASSES - 1}.")


def check_idx_dataset(name: str, root: str | Path = "data", path: str | None = None, split: str = "train",
                      download: bool = False) -> None:
    """Every check of ``load_idx_dataset`` without holding the images (a run's preflight)."""
    files = find_idx_files(name, root, path, split)
    if files is None:
        if not download:
            raise _missing(name, split, locations(name, root, path))
        return
    _check_pair(name, files, idx_shape(files[0]), read_idx(files[1]))


def load_idx_dataset(name: str, root: str | Path = "data", path: str | None = None, split: str = "train",
                     download: bool = False) -> tuple[Tensor, Tensor]:
    """``split`` as uint8 images (N, 1, 28, 28) and int64 labels; with ``download``, torchvision fetches them."""
    files = find_idx_files(name, root, path, split)
    if files is None:
        if download:
            return load_torchvision(name, root, True, train=split == "train")
        raise _missing(name, split, locations(name, root, path))
    images, labels = read_idx(files[0]), read_idx(files[1])
    _check_pair(name, files, tuple(images.shape), labels)
    return images[:, None].contiguous(), labels.long()
