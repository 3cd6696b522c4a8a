"""Hugging Face ``datasets`` as image sources: a folder written by ``save_to_disk``, a local image folder (read in
place, ``hf_folder.py``), another local folder that ``load_dataset`` reads (Parquet, Arrow, an image folder of
another layout), or a hub name with ``data.download``."""
from __future__ import annotations

import json
from pathlib import Path

import torch

from softdiff.data.hf_folder import open_image_folder
from softdiff.errors import DataError
from softdiff.safe_io import atomic_path, write_json


def _import_datasets():
    try:
        import datasets
    except ImportError:
        raise DataError("data.name=hf needs the 'datasets' package; install it with pip install 'softdiff[hf]'.") \
            from None
    return datasets


def _pinned(index: Path, key: dict):
    """The table whose Arrow files ``index`` lists for ``key`` (None when it lists another dataset or a file is
    gone): opening a local folder lists or globs the whole tree, a restart need not."""
    datasets = _import_datasets()
    try:
        data = json.loads(index.read_text())
    except (OSError, ValueError):
        return None
    files = data.get("arrow_files") if isinstance(data, dict) and data.get("hf") == key else None
    if not files or not all(isinstance(f, str) and Path(f).is_file() for f in files):
        return None
    tables = [datasets.Dataset.from_file(f) for f in files]
    return tables[0] if len(tables) == 1 else datasets.concatenate_datasets(tables)


def open_table(path: str, split: str, download: bool, index: str | Path | None = None):
    """The ``split`` of the dataset at ``path`` (a local folder, or a hub name when ``download``); its Arrow
    files are listed in ``index`` (when given) and reopened from there."""
    key = {"path": str(Path(path).resolve()) if Path(path).exists() else path, "split": split}
    if index is not None and Path(index).is_file() and (table := _pinned(Path(index), key)) is not None:
        return table
    table = _open(path, split, download)
    files = [f["filename"] for f in table.cache_files]
    if index is not None and not files:  # a table built in memory (an image folder read in place): saved
        files = [_write_arrow(table, Path(index).with_suffix(".arrow"))]
    if index is not None and files:
        write_json(index, {"hf": key, "arrow_files": files})
    return table


def _write_arrow(table, path: Path) -> str:
    """``table`` as an Arrow file that ``datasets.Dataset.from_file`` reopens (features included); its path."""
    import pyarrow as pa

    with atomic_path(path) as tmp, pa.OSFile(str(tmp), "wb") as sink, \
            pa.ipc.new_stream(sink, table.data.schema) as writer:
        writer.write_table(table.data.table)
    return str(path)


def _open(path: str, split: str, download: bool):
    datasets = _import_datasets()
    local = Path(path)
    try:
        if local.is_dir() and any((local / f).is_file() for f in ("state.json", "dataset_dict.json")):
            table = datasets.load_from_disk(str(local))  # memory-mapped Arrow: nothing is copied
        elif local.is_dir():
            table = open_image_folder(local, split)  # None: not an image folder read in place
            if table is None:
                table = datasets.load_dataset(str(local), split=split)
        elif download:
            table = datasets.load_dataset(path, split=split)
        else:
            raise DataError(f"data.path '{path}' is not a local folder; set data.download=true to fetch it from the "
                            "Hugging Face hub (needs a network), or set data.path to a local dataset folder.")
    except DataError:
        raise
    except Exception as err:  # datasets raises many types (FileNotFoundError, ValueError, hub errors)
        first = (str(err).strip().splitlines() or [type(err).__name__])[0]
        raise DataError(f"data.path '{path}' could not be opened as a Hugging Face dataset ({first[:200]}).") \
            from None
    if isinstance(table, datasets.DatasetDict):
        if split not in table:
            raise DataError(f"data.split='{split}' is not a split of '{path}'; choose one of: "
                            f"{', '.join(table)}.")
        table = table[split]
    return table


def check_columns(table, path: str, image_column: str, label_column: str | None) -> None:
    datasets = _import_datasets()
    for key, column in (("data.image_column", image_column), ("data.label_column", label_column)):
        if column is not None and column not in table.column_names:
            raise DataError(f"{key}='{column}' is not a column of '{path}'; its columns are: "
                            f"{', '.join(table.column_names)}.")
    if not isinstance(table.features[image_column], datasets.Image):
        raise DataError(f"data.image_column='{image_column}' of '{path}' holds "
                        f"{type(table.features[image_column]).__name__} values, not images; name its image column.")


def labels_of(table, path: str, column: str) -> tuple[torch.Tensor, int]:
    """The integer labels of ``column`` (read without decoding any image) and the number of classes."""
    datasets = _import_datasets()
    values = table.select_columns([column])[column]
    try:
        labels = torch.as_tensor(list(values), dtype=torch.long)
    except (TypeError, ValueError, RuntimeError):
        raise DataError(f"data.label_column='{column}' of '{path}' does not hold integer labels.") from None
    if len(labels) and labels.min() < 0:
        raise DataError(f"data.label_column='{column}' of '{path}' holds negative labels; use 0, 1, ...")
    feature = table.features[column]
    classes = feature.num_classes if isinstance(feature, datasets.ClassLabel) else int(labels.max()) + 1
    return labels, classes
