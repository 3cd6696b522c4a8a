"""A local image folder as the Hugging Face dataset ``datasets.load_dataset`` would make of it (the
``imagefolder`` builder), built from one listing of the tree instead of an Arrow conversion of every file.

The table holds the images' paths (each image is decoded when a row is read) and the same rows, in the same
order, as the builder's: every image file in sorted order, with a ``label`` ``ClassLabel`` (the sorted names of
the images' folders) when they lie at one depth in more than one folder; or, with a ``metadata.csv`` /
``metadata.jsonl`` at the top, that file's rows and columns, its ``file_name`` column turned into ``image``.

Only folders whose layout these rules certainly cover are opened here: ``open_image_folder`` returns None for a
dataset card or YAML at the top, a path that could name a split (``train``, ``val``, ``test``, ...), a file the
library would read as another format (CSV, JSON, text, archives, audio, ...), a Parquet or nested metadata file,
and ``load_dataset`` opens those as before.
"""
from __future__ import annotations

import hashlib
import os
import re
from pathlib import Path

from softdiff.data.file_index import list_files
from softdiff.errors import DataError, first_line

CARD_FILES = ("README.md", ".huggingface.yaml", "dataset_infos.json", "dataset_info.json")
METADATA = ("metadata.csv", "metadata.jsonl")
WILDCARDS = re.compile(r"\*+|\?|\[[^\]]*\]")
CSV_ROWS = 10_000  # the builder reads a metadata.csv in chunks of this many rows and types columns by the first


def _rules():
    """The installed library's tables: image extensions, metadata file names, the module each extension is
    read by, the files it ignores, and the split patterns it tries (None when it does not expose them)."""
    try:
        from datasets import data_files, packaged_modules
        from datasets.packaged_modules.imagefolder.imagefolder import ImageFolder

        modules = packaged_modules._EXTENSION_TO_MODULE
        patterns = [{"": [p.replace("{split}", "*") for p in data_files.ALL_SPLIT_PATTERNS]},
                    *data_files.ALL_DEFAULT_PATTERNS]
        return (set(ImageFolder.EXTENSIONS), set(ImageFolder.METADATA_FILENAMES), modules,
                set(data_files.FILES_TO_IGNORE), patterns)
    except (ImportError, AttributeError):
        return None


def _hidden(rel: str) -> bool:
    """A path the library skips: a part starting with '.' (not '.' or '..'), or a folder starting with '__'."""
    parts = rel.split("/")
    return (any(p.startswith(".") and set(p) != {"."} for p in parts)
            or any(p.startswith("__") for p in parts[:-1]))


def _no_split_named(patterns: list[dict], paths: str) -> bool:
    """Whether the library's split inference certainly ends at its catch-all ``{"train": ["**"]}``: every
    pattern it tries first has a fixed part (e.g. ``test``) that no path holds (``paths``: lower-cased, one a
    line)."""
    if {str(k): v for k, v in patterns[-1].items()} != {"train": ["**"]}:
        return False
    found = {}

    def held(part: str) -> bool:  # each fixed part is searched for once
        if part not in found:
            found[part] = part in paths
        return found[part]

    for split_patterns in patterns[:-1]:
        for pattern in (p for ps in split_patterns.values() for p in ps):
            fixed = [part.strip("/").lower() for part in WILDCARDS.split(pattern) if part.strip("/")]
            if not fixed or all(held(part) for part in fixed):
                return False
    return True


def _kind(tail: str, image_exts: set[str], modules: dict) -> str | None:
    """How the library treats a file name ending in ``tail`` (what follows the name's first '.'): "image",
    "ignored", or None when the folder could be read as another format (or the builder and the library's filter
    could disagree on the file)."""
    suffixes = ["." + s.lower() for s in tail.split(".")]
    if any(s == ".zip" or modules.get(s, ("imagefolder",))[0] != "imagefolder" for s in suffixes):
        return None  # another format could be inferred for the folder
    ext = "." + tail.rpartition(".")[2]
    if ext.lower() in image_exts:
        return "image" if ext in (ext.lower(), ext.upper()) else None  # '.Png': inferred from, then filtered out
    return None if len(suffixes) > 1 and suffixes[-2] in image_exts else "ignored"  # 'x.png.gz': an image


def _layout(root: Path, rules) -> tuple[list[str], list[str]] | None:
    """The image files and metadata files below ``root`` as the builder sees them, or None when the folder is
    not one whose table ``open_image_folder`` can build exactly."""
    image_exts, metadata_names, modules, ignored, patterns = rules
    if any((root / name).exists() for name in CARD_FILES):
        return None
    files = list_files(root)
    text = "\n" + "\n".join(files)
    maybe_hidden = "\n." in text or "/." in text or "__" in text
    visible, images, metadata, kinds = [], [], [], {}
    for rel in files:  # one pass; a file's kind is worked out once per distinct name ending
        if maybe_hidden and _hidden(rel):
            continue
        name = rel.rpartition("/")[2]
        if name in ignored:
            continue
        visible.append(rel)
        if name in metadata_names:
            metadata.append(rel)
            continue
        tail = name.partition(".")[2]
        if tail not in kinds:
            kinds[tail] = _kind(tail, image_exts, modules) if tail else "ignored"
        kind = kinds[tail]
        if kind is None:
            return None
        if kind == "image":
            images.append(rel)
    if not images or not _no_split_named(patterns, "\n".join(visible).lower()):
        return None
    return images, metadata


def _labelled(root: Path, images: list[str]):
    """Images only: the builder's ``image`` column, and ``label`` when the images lie at one depth in more than
    one folder (a folder's name, the sorted names as a ``ClassLabel``)."""
    import datasets
    import pyarrow as pa

    parents = [rel.rpartition("/")[0] for rel in images]
    folders = {p: p.rpartition("/")[2] for p in dict.fromkeys(parents)}  # per folder, not per file (top: one name)
    depths = {p.count("/") + bool(p) for p in folders}
    prefix = f"{root}/"
    columns = {"image": datasets.Image().cast_storage(pa.array([prefix + rel for rel in images], pa.string()))}
    features = {"image": datasets.Image()}
    names = sorted(set(folders.values()))
    if len(names) > 1 and len(depths) == 1:
        number = {p: names.index(name) for p, name in folders.items()}
        columns["label"] = pa.array([number[p] for p in parents], pa.int64())
        features["label"] = datasets.ClassLabel(names=names)
    return columns, features


def _read_metadata(path: Path):
    """A metadata file's rows as Arrow, with the column types the builder gives them (from its first chunk); a
    file with no rows is a DataError (the builder fails on it with an IndexError)."""
    import pyarrow as pa

    try:
        if not path.stat().st_size:
            chunks = []
        elif path.suffix == ".csv":
            import pandas as pd

            chunks = [pa.Table.from_pandas(df) for df in pd.read_csv(path, chunksize=CSV_ROWS)]
        else:
            import pyarrow.json as paj

            chunks = [paj.read_json(path)]
    except Exception as err:  # pandas and pyarrow raise their own parser errors
        first = first_line(err)
        raise DataError(f"metadata file '{path}' could not be read ({first[:160]}); fix it, or remove it to use "
                        "the folder's images without metadata.") from None
    if not chunks or not chunks[0].num_rows:
        raise DataError(f"metadata file '{path}' has no rows (at most a header); give it one row per image "
                        "(file_name, ...), or remove it to use the folder's images without metadata.")
    schema = pa.schema([chunks[0].schema.field(n) for n in chunks[0].column_names])
    try:
        return pa.concat_tables([chunk.select(schema.names).cast(schema) for chunk in chunks])
    except (pa.ArrowInvalid, KeyError) as err:
        first = first_line(err)
        raise DataError(f"metadata file '{path}' changes a column's type after its first {CSV_ROWS} rows "
                        f"({first[:160]}); give each column one type.") from None


def _image_paths(meta: Path, column: str, values: list) -> list:
    """The builder's path for each ``file_name`` value: relative to the metadata file's folder, inside it."""
    out = []
    for item in values:
        if item is not None:
            rel = os.path.normpath(item).replace("\\", "/")
            if "://" in item or os.path.isabs(item) or os.path.isabs(rel) or rel == ".." or rel.startswith("../"):
                raise DataError(f"metadata file '{meta}' names '{item}' in column '{column}', which is not inside "
                                f"its folder; name files by paths relative to '{meta.parent}'.")
            item = os.path.join(meta.parent, rel)
        out.append(item)
    return out


def _from_metadata(root: Path, metadata: str):
    """Rows and columns of ``metadata``: ``file_name`` / ``X_file_name`` become the image columns ``image`` /
    ``X`` (None when a column is not one the builder reads this way, e.g. lists of file names)."""
    import datasets
    import pyarrow as pa

    meta = root / metadata
    table = _read_metadata(meta)
    columns, features = {}, {}
    for name, feature in datasets.Features.from_arrow_schema(table.schema).items():
        if name == "file_names" or name.endswith("_file_names"):
            return None
        is_file = (name == "file_name" or name.endswith("_file_name")) and feature in (
            datasets.Value("string"), datasets.Value("large_string"))
        key = (name[: -len("_file_name")] or "image") if is_file else name
        if key in columns:
            return None  # two columns of one name: left to the builder
        if is_file:
            paths = _image_paths(meta, name, table.column(name).to_pylist())
            columns[key], features[key] = datasets.Image().cast_storage(pa.array(paths, pa.string())), \
                datasets.Image()
        else:
            columns[key], features[key] = table.column(name), feature
    if not any(isinstance(f, datasets.Image) for f in features.values()):
        return None  # the builder raises; load_dataset says so
    return columns, features


def open_image_folder(root: Path, split: str):
    """The ``split`` of the image folder ``root`` as ``load_dataset(root)`` would give it, with paths in place of
    an Arrow conversion; None when the folder's layout is not one this covers (see the module docstring)."""
    import datasets
    import pyarrow as pa

    rules = _rules()
    root = root.resolve()
    found = _layout(root, rules) if rules is not None else None
    if found is None:
        return None
    images, metadata = found
    if metadata and (len(metadata) > 1 or metadata[0] not in METADATA):
        return None  # several, nested or Parquet metadata files: left to load_dataset
    built = _from_metadata(root, metadata[0]) if metadata else _labelled(root, images)
    if built is None:
        return None
    if split != "train":
        raise DataError(f"data.split='{split}' is not a split of '{root}'; choose one of: train.")
    columns, features = built
    features = datasets.Features(features)
    table = pa.table(list(columns.values()), schema=features.arrow_schema)
    listing = "\n".join([str(root), *metadata, *images]).encode()  # the fingerprint: not a hash of the table
    return datasets.Dataset(table, info=datasets.DatasetInfo(features=features), split="train",
                            fingerprint=hashlib.sha256(listing).hexdigest()[:16])
