"""Hugging Face ``datasets`` as image sources: a folder written by ``save_to_disk``, a local image folder (read in
place, ``hf_folder.py``), another local folder that ``load_dataset`` reads (Parquet, Arrow, an image folder of
another layout), or a hub name with ``data.download``."""
from __future__ import annotations

import os
from pathlib import Path

import torch

from softdiff.data.file_index import index_error, read_index
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


def _arrow_homes(index: Path, key: dict) -> list[str]:
    """Where an index's Arrow files may lie: the run folder (an image folder's table), the dataset folder
    (save_to_disk) and the datasets cache (load_dataset's conversions)."""
    datasets = _import_datasets()
    homes = [index.parent, datasets.config.HF_DATASETS_CACHE]
    if Path(key["path"]).is_dir():
        homes.append(key["path"])
    return [os.path.realpath(home) for home in homes]


def _check_table_paths(index: Path, table, root: str) -> None:
    """Every image path of the run folder's table (an image folder read in place) lies inside ``root``."""
    import pyarrow.compute as pc

    datasets = _import_datasets()
    for name, feature in table.features.items():
        if not isinstance(feature, datasets.Image):
            continue
        try:
            paths = table.data.column(name).combine_chunks().field("path")
            ok = pc.fill_null(pc.and_(pc.starts_with(paths, root.rstrip("/") + "/"),
                                      pc.invert(pc.match_substring(paths, "/../"))), True)
        except Exception:  # a column that is not {bytes, path}: not a table this index writes
            raise index_error(index, f"names an Arrow table whose column '{name}' does not hold image paths") \
                from None
        if not pc.all(ok).as_py():
            bad = paths.filter(pc.invert(ok))[0].as_py()
            raise index_error(index, f"names the image '{bad}', which is not inside '{root}'")


def _pinned(index: Path, key: dict):
    """The table whose Arrow files ``index`` lists for ``key`` (None when there is no index), after checking
    that the index is whole, pins this dataset and split, and names readable Arrow files in their places
    (an ``index_error`` otherwise): opening a local folder lists or globs the whole tree, a restart need not."""
    datasets = _import_datasets()
    data = read_index(index)
    if data is None:
        return None
    if "hf" not in data and "files" in data:
        raise index_error(index, "lists an image folder (data.name=folder), not a Hugging Face dataset")
    if not isinstance(data.get("hf"), dict) or "arrow_files" not in data:
        raise index_error(index, "is not a softdiff Hugging Face dataset index")
    if data["hf"] != key:
        pinned = data["hf"]
        raise index_error(index, f"pins the dataset '{pinned.get('path')}' (split '{pinned.get('split')}'), not "
                                 f"'{key['path']}' (split '{key['split']}') that data.path and data.split name")
    files = data["arrow_files"]
    if not isinstance(files, list) or not files or not all(isinstance(f, str) for f in files):
        raise index_error(index, "is damaged (its 'arrow_files' is not a list of paths)")
    homes = _arrow_homes(index, key)
    paths = [os.path.join(index.parent, f) for f in files]  # relative: the run folder's own table (it may move)
    for f, path in zip(files, paths):
        real = os.path.realpath(path)
        if not any(real == h or real.startswith(h.rstrip("/") + "/") for h in homes):
            raise index_error(index, f"names the Arrow file '{f}', outside the run folder, the dataset folder "
                                     "and the datasets cache")
        if not Path(path).is_file():
            raise index_error(index, f"names the Arrow file '{f}', which no longer exists")
    try:
        tables = [datasets.Dataset.from_file(path) for path in paths]
    except Exception as err:  # pyarrow raises ArrowInvalid, OSError... for a truncated or foreign file
        first = (str(err).strip().splitlines() or [type(err).__name__])[0]
        raise index_error(index, f"names Arrow files that could not be read ({first[:160]})") from None
    table = tables[0] if len(tables) == 1 else datasets.concatenate_datasets(tables)
    if "rows" in data and (len(table) != data["rows"] or table.column_names != data.get("columns")):
        raise index_error(index, f"names Arrow files of {len(table)} rows ({', '.join(table.column_names)}), not "
                                 f"the {data['rows']} rows it was written with")
    if os.path.realpath(index.with_suffix(".arrow")) in map(os.path.realpath, paths):
        _check_table_paths(index, table, key["path"])
    return table


def open_table(path: str, split: str, download: bool, index: str | Path | None = None, rebuild: bool = False):
    """The ``split`` of the dataset at ``path`` (a local folder, or a hub name when ``download``); its Arrow
    files are listed in ``index`` (when given) and reopened from there (checked first: a damaged index or one
    of another dataset is a DataError). ``rebuild``: open the dataset again and replace ``index``."""
    key = {"path": str(Path(path).resolve()) if Path(path).exists() else path, "split": split}
    if index is not None and not rebuild and (table := _pinned(Path(index), key)) is not None:
        return table
    table = _open(path, split, download)
    files = [f["filename"] for f in table.cache_files]
    if index is not None and not files:  # a table built in memory (an image folder read in place): saved beside
        files = [Path(_write_arrow(table, Path(index).with_suffix(".arrow"))).name]  # the index, named relatively
    if index is not None and files:
        write_json(index, {"hf": key, "arrow_files": files, "rows": len(table), "columns": table.column_names})
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
