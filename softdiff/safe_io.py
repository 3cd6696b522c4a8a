"""Atomic writes, output-path checks, and finite JSON.

Every file or folder softdiff writes for a user appears complete or not at all: it is written to a hidden
temporary sibling (``.NAME.tmp-PID``), flushed to disk, and renamed over the target. A process killed mid-write
leaves the previous version (or nothing) plus a stale temporary sibling, which the next write removes.
``check_output_dir`` / ``check_output_file`` say before any work starts whether an output path can be written (by
writing there), and ``NewEntries`` takes back what a run created when an input error ends it.
"""
from __future__ import annotations

import errno
import json
import math
import os
import shutil
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

from softdiff.errors import ConfigError

DISK_FULL = (errno.ENOSPC, errno.EDQUOT)


def _fsync(path: Path) -> None:
    """Flush a written file (or every file of a written folder) to disk before it is renamed into place."""
    files = [p for p in path.rglob("*") if p.is_file()] if path.is_dir() else [path]
    for f in files:
        fd = os.open(f, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _fsync_dir(folder: Path) -> None:
    """Make a rename inside ``folder`` durable (best effort: not every file system allows it)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _remove(path: Path) -> None:
    if path.is_symlink() or path.is_file():
        path.unlink(missing_ok=True)
    elif path.is_dir():
        shutil.rmtree(path, ignore_errors=True)


def remove_stale(path: Path) -> None:
    """Remove temporary siblings of ``path`` left by a process that was killed while writing it."""
    path = Path(path)
    if path.parent.is_dir():
        for stale in path.parent.glob(f".{path.stem}.tmp-*{path.suffix}"):
            _remove(stale)
        for stale in path.parent.glob(f".{path.name}.old-*"):
            _remove(stale)


def temporary_sibling(path: Path, tag: str = "tmp") -> Path:
    """``DIR/.STEM.tmp-PID.SUFFIX``: the suffix is kept so that savefig / np.savez infer the same format."""
    return path.with_name(f".{path.stem}.{tag}-{os.getpid()}{path.suffix}")


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path to write ``path``'s content to; on success it is flushed and renamed over ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale(path)
    tmp = temporary_sibling(path)
    try:
        yield tmp
        _fsync(tmp)
        os.replace(tmp, path)
        _fsync_dir(path.parent)
    except BaseException:
        _remove(tmp)
        raise


def write_text(path: str | Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def write_json(path: str | Path, obj: Any, **kwargs) -> None:
    write_text(path, json.dumps(obj, **kwargs))


def finite_json(obj: Any) -> Any:
    """``obj`` with every NaN / inf float (inside dicts and lists) replaced by None, so it is valid JSON."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: finite_json(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [finite_json(v) for v in obj]
    return obj


def save_figure(fig, path: str | Path, **kwargs) -> None:
    """``fig.savefig(path)``, atomically."""
    with atomic_path(path) as tmp:
        fig.savefig(tmp, **kwargs)


def replace_dir(src: Path, dst: Path) -> None:
    """Rename the complete folder ``src`` to ``dst``; an existing ``dst`` is moved aside first, removed after."""
    if dst.exists():
        old = dst.with_name(f".{dst.name}.old-{os.getpid()}")
        _remove(old)
        os.rename(dst, old)
        os.rename(src, dst)
        _remove(old)
    else:
        os.rename(src, dst)
    _fsync_dir(dst.parent)


@contextmanager
def atomic_dir(path: str | Path) -> Iterator[Path]:
    """Yield an empty temporary folder to fill; on success it replaces the folder ``path`` as a whole."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    _remove(tmp)
    tmp.mkdir()
    try:
        yield tmp
        _fsync(tmp)
        replace_dir(tmp, path)
    except BaseException:
        _remove(tmp)
        raise


def _nearest_existing(path: Path) -> Path:
    path = Path(os.path.abspath(path))
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def _missing_folders(folder: Path) -> list[Path]:
    """The folders on the way to ``folder`` that do not exist yet, deepest first."""
    missing, path = [], Path(os.path.abspath(folder))
    while not path.exists() and path != path.parent:
        missing.append(path)
        path = path.parent
    return missing


def _check_empty(key: str, path) -> Path:
    if path is None or not str(os.fspath(path)).strip():
        raise ConfigError(f"{key} is empty; pass a folder or file path (an empty one would write into the current "
                          "folder).")
    return Path(path)


def _try_write(key: str, shown: Path, folder: Path) -> None:
    """Create ``folder`` (with its missing parents), write a small file into it and remove it all again.

    ``os.access`` is no test: root may write anywhere by it, /proc and /sys included, where the real write fails
    later. What this creates is removed, so that a bad input found afterwards leaves nothing behind."""
    created = _missing_folders(folder)
    probe = folder / f".softdiff-write-test-{os.getpid()}"
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with open(probe, "xb") as f:
            f.write(b"softdiff")
    except OSError as err:
        reason = (err.strerror or type(err).__name__).lower()
        raise ConfigError(f"{key} '{shown}' cannot be written ({reason}); pass a folder on a writable disk.") from None
    finally:
        if probe.parent.is_dir():
            probe.unlink(missing_ok=True)
        for path in created:  # deepest first; rmdir leaves a folder someone else filled meanwhile
            try:
                path.rmdir()
            except OSError:
                break


def check_output_dir(key: str, path: str | Path) -> Path:
    """Raise ConfigError unless ``path`` is a folder that exists or can be created, and a file can be written into
    it (tried for real, then undone); the one output-folder check of every command."""
    path = _check_empty(key, path)
    if path.exists() and not path.is_dir():
        raise ConfigError(f"{key} '{path}' is a file, not a folder; pass a folder path (it is created if missing).")
    base = _nearest_existing(path)
    if not base.is_dir():
        raise ConfigError(f"{key} '{path}' cannot be created: '{base}' is a file, not a folder.")
    _try_write(key, path, path)
    return path


def check_output_file(key: str, path: str | Path, suffix: str | None = None) -> Path:
    """Raise ConfigError unless ``path`` (with ``suffix``) can be written as a file (its folder is tried for real)."""
    path = _check_empty(key, path)
    if suffix and path.suffix != suffix:
        raise ConfigError(f"{key} '{path}' must end in {suffix}.")
    if path.is_dir():
        raise ConfigError(f"{key} '{path}' is a folder; pass a file path.")
    base = _nearest_existing(path.parent)
    if not base.is_dir():
        raise ConfigError(f"{key} '{path}' cannot be created: '{base}' is a file, not a folder.")
    _try_write(key, path, path.parent)
    return path


class NewEntries:
    """What a command adds to its output folder from now on, so that an input error found after work began (after
    the run lock) can take it back: the folder itself if it is new, else the entries that were not there before.
    Nothing is taken back once the folder holds work worth keeping (a checkpoint or a finished result)."""

    KEEP = ("**/checkpoints/*", "**/result.json")

    def __init__(self, folder: str | Path):
        self.folder = Path(folder)
        missing = _missing_folders(self.folder)
        self.top = missing[-1] if missing else None
        self.before = set() if missing or not self.folder.is_dir() else {p.name for p in self.folder.iterdir()}

    def _new(self) -> list[Path]:
        if self.top is not None:
            return [self.top] if self.top.exists() else []
        if not self.folder.is_dir():
            return []
        return [p for p in self.folder.iterdir() if p.name not in self.before]

    def _holds_work(self, new: list[Path]) -> bool:
        for pattern in self.KEEP:
            for hit in self.folder.glob(pattern):
                if self.top is not None or any(p == hit or p in hit.parents for p in new):
                    return True
        return False

    def remove(self) -> None:
        """Remove what was created since this object was made (unless it holds work)."""
        new = self._new()
        if new and not self._holds_work(new):
            for path in new:
                _remove(path)


def is_disk_full(err: BaseException, folder: str | Path | None = None) -> bool:
    """Whether ``err`` is a write that failed for lack of space: an ENOSPC / EDQUOT OSError (or one it was raised
    from), a writer's message saying so, or any write error while ``folder``'s file system has (almost) no
    space left (torch's writer reports a full disk as 'file write failed', safetensors as its own error)."""
    seen, e = set(), err
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        if isinstance(e, OSError) and e.errno in DISK_FULL:
            return True
        if any(s in str(e) for s in ("No space left on device", "Disk quota exceeded", "os error 28")):
            return True
        e = e.__cause__ or e.__context__
    if folder is not None:
        try:
            return shutil.disk_usage(_nearest_existing(Path(folder))).free < 1 << 20
        except OSError:
            return False
    return False
