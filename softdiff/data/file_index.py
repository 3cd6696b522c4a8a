"""The sorted list of image files below a folder, cached in a JSON index so that a restart does not re-list it.

The index also pins a run to the files it started with: an image added to the folder mid-run does not shift
which file an index draws, so a resumed run reads the same examples as the straight one. An index read back is
checked first (see ``index_error``): a damaged or foreign one stops the run with how to rebuild it, since
listing again silently would let a resumed run read other files.
"""
from __future__ import annotations

import errno
import json
import os
from pathlib import Path

from softdiff.errors import DataError
from softdiff.safe_io import write_json

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff"}
INDEX_VERSION = 1


def index_error(index: Path, problem: str) -> DataError:
    """One sentence for a run-folder index that cannot be used, saying how to rebuild it."""
    return DataError(f"data index '{index}' {problem}; rebuild it with data.rebuild_index=true (or delete it), "
                     "which lists the dataset again.")


def read_index(index: Path) -> dict | None:
    """The JSON object in ``index`` (None when there is no such file), or an ``index_error``."""
    if not index.exists():
        return None
    try:
        raw = index.read_bytes()
    except OSError as err:
        raise index_error(index, f"could not be read ({err.strerror or err})") from None
    try:
        data = json.loads(raw)
    except ValueError:  # UnicodeDecodeError included
        raise index_error(index, "is not valid JSON (truncated or overwritten)") from None
    except RecursionError:
        raise index_error(index, "is JSON nested too deeply to be a data index") from None
    if not isinstance(data, dict):
        raise index_error(index, "is not a softdiff data index (not a JSON object)")
    return data


def _loop_error(root: Path, rel: str, how: str) -> DataError:
    return DataError(f"'{rel}' inside folder '{root}' is a symbolic link loop ({how}); remove the link, or set "
                     "data.path to a folder without one.")


def list_files(root: Path, suffixes: set[str] | None = None) -> list[str]:
    """Paths (relative to ``root``, '/'-separated, sorted) of every file below ``root``, or of those whose
    lower-cased suffix is in ``suffixes``. Links to folders are followed, except back into a folder above them
    (a loop, which would list forever): that is a DataError."""
    found = []
    top = os.stat(root)
    stack = [("", ((top.st_dev, top.st_ino),))]  # a folder, and the (device, inode) of it and those above it
    while stack:  # os.scandir and plain strings: no stat and no Path object per file (big trees)
        rel, above = stack.pop()
        try:
            with os.scandir(root / rel if rel else root) as entries:
                for entry in entries:
                    try:
                        is_dir = entry.is_dir(follow_symlinks=True)
                        st = entry.stat(follow_symlinks=True) if is_dir else None
                    except OSError as err:
                        if err.errno == errno.ELOOP:  # a link to itself
                            raise _loop_error(root, rel + entry.name, "it resolves to itself") from None
                        raise
                    if is_dir:
                        key = (st.st_dev, st.st_ino)
                        if key in above:
                            raise _loop_error(root, rel + entry.name, "it leads back into a folder above it")
                        stack.append((rel + entry.name + "/", (*above, key)))
                    elif suffixes is None or os.path.splitext(entry.name)[1].lower() in suffixes:
                        found.append(rel + entry.name)
        except OSError as err:
            raise DataError(f"folder '{root / rel}' could not be listed ({err.strerror or err}); check its "
                            "permissions, or set data.path to another folder.") from None
    return sorted(found)


def list_images(root: Path) -> list[str]:
    """Paths (relative to ``root``, '/'-separated, sorted) of every image file below ``root``."""
    return list_files(root, IMAGE_SUFFIXES)


def outside(rel: str) -> bool:
    """Whether the listed path ``rel`` could name a file outside the folder it is relative to."""
    return not rel or rel.startswith("/") or ("." in rel and ".." in rel.split("/"))


def _indexed_files(index: Path, root: Path) -> list[str] | None:
    """The files ``index`` lists for the folder ``root`` (None when there is no index), checked."""
    data = read_index(index)
    if data is None:
        return None
    if "hf" in data:
        raise index_error(index, "pins a Hugging Face dataset (data.name=hf), not an image folder")
    if data.get("version") != INDEX_VERSION or not isinstance(data.get("root"), str) or "files" not in data:
        raise index_error(index, "is not a softdiff image-folder index")
    if data["root"] != str(root):
        raise index_error(index, f"lists the folder '{data['root']}', not '{root}' that data.path names")
    files = data["files"]
    if not isinstance(files, list) or not all(isinstance(f, str) for f in files):
        raise index_error(index, "is damaged (its 'files' is not a list of paths)")
    if not files:
        raise index_error(index, "lists no files")
    if bad := next((f for f in files if outside(f)), None):
        raise index_error(index, f"names '{bad}', which is not inside the folder '{root}'")
    return files


def image_files(path: str | Path, index: str | Path | None = None, rebuild: bool = False) -> tuple[Path, list[str]]:
    """The folder and its image files; read from ``index`` when it exists (checked: a damaged index or one of
    another folder is a DataError), else listed (and saved there when ``index`` is given). ``rebuild``: list
    again and replace ``index``."""
    root = Path(path).resolve()
    if not root.is_dir():
        raise DataError(f"image folder '{path}' does not exist; set data.path to a folder of images.")
    files = _indexed_files(Path(index), root) if index is not None and not rebuild else None
    if files is None:
        files = list_images(root)
        if not files:
            raise DataError(f"image folder '{path}' holds no images ({', '.join(sorted(IMAGE_SUFFIXES))}).")
        if index is not None:
            write_json(index, {"version": INDEX_VERSION, "root": str(root), "files": files})
    return root, files
