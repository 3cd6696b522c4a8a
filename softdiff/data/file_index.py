"""The sorted list of image files below a folder, cached in a JSON index so that a restart does not re-list it.

The index also pins a run to the files it started with: an image added to the folder mid-run does not shift
which file an index draws, so a resumed run reads the same examples as the straight one.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

from softdiff.errors import DataError
from softdiff.safe_io import write_json

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp"}
INDEX_VERSION = 1


def list_files(root: Path, suffixes: set[str] | None = None) -> list[str]:
    """Paths (relative to ``root``, '/'-separated, sorted) of every file below ``root``, or of those whose
    lower-cased suffix is in ``suffixes``."""
    found, stack = [], [""]
    while stack:  # os.scandir and plain strings: no stat and no Path object per file (big trees)
        rel = stack.pop()
        with os.scandir(root / rel if rel else root) as entries:
            for entry in entries:
                if entry.is_dir(follow_symlinks=True):
                    stack.append(rel + entry.name + "/")
                elif suffixes is None or os.path.splitext(entry.name)[1].lower() in suffixes:
                    found.append(rel + entry.name)
    return sorted(found)


def list_images(root: Path) -> list[str]:
    """Paths (relative to ``root``, '/'-separated, sorted) of every image file below ``root``."""
    return list_files(root, IMAGE_SUFFIXES)


def _read_index(index: Path, root: Path) -> list[str] | None:
    try:
        data = json.loads(index.read_text())
    except (OSError, ValueError):
        return None  # unreadable or torn: list again
    ok = isinstance(data, dict) and data.get("version") == INDEX_VERSION and data.get("root") == str(root)
    files = data.get("files") if ok else None
    return files if isinstance(files, list) and all(isinstance(f, str) for f in files) else None


def image_files(path: str | Path, index: str | Path | None = None) -> tuple[Path, list[str]]:
    """The folder and its image files; read from ``index`` when it lists this folder, else listed (and saved
    there when ``index`` is given)."""
    root = Path(path).resolve()
    if not root.is_dir():
        raise DataError(f"image folder '{path}' does not exist; set data.path to a folder of images.")
    files = _read_index(Path(index), root) if index is not None and Path(index).is_file() else None
    if files is None:
        files = list_images(root)
        if files and index is not None:
            write_json(index, {"version": INDEX_VERSION, "root": str(root), "files": files})
    if not files:
        raise DataError(f"image folder '{path}' holds no images ({', '.join(sorted(IMAGE_SUFFIXES))}).")
    return root, files
