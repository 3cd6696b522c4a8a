"""One run at a time per folder: an exclusive ``fcntl.flock`` on ``RUN_DIR/.lock``.

The kernel releases the lock when the holding process ends, however it ends (return, exception, SIGKILL), so
a crashed run never leaves the folder locked. With several processes (``torchrun``), the main process holds
the lock and every process learns whether it got it.
"""
from __future__ import annotations

import fcntl
import os
from pathlib import Path

from softdiff.errors import ConfigError

LOCK_NAME = ".lock"


class FolderBusy(ConfigError):
    """Another process holds the folder's lock."""


class RunLock:
    """``with RunLock(folder): ...`` or ``lock.acquire()`` / ``lock.release()``; not reentrant."""

    def __init__(self, folder: str | Path, what: str = "run folder"):
        self.folder, self.what, self.fd = Path(folder), what, None

    def acquire(self) -> "RunLock":
        self.folder.mkdir(parents=True, exist_ok=True)
        path = self.folder / LOCK_NAME
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise FolderBusy(f"{self.what} '{self.folder}' is in use by another process (pid {holder}); wait for "
                             "it to finish, or pass another output folder.") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self.fd = fd
        return self

    def release(self) -> None:
        if self.fd is not None:
            fcntl.flock(self.fd, fcntl.LOCK_UN)
            os.close(self.fd)
            self.fd = None

    def __enter__(self) -> "RunLock":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


def lock_run_folder(folder: str | Path, state) -> RunLock:
    """Lock ``folder`` on the main process of ``state`` (an accelerate ``PartialState``); every process raises
    :class:`FolderBusy` when the main one could not get the lock."""
    lock, error = RunLock(folder), None
    if state.is_main_process:
        try:
            lock.acquire()
        except FolderBusy as err:
            error = err
    if state.num_processes > 1:
        import torch
        import torch.distributed as dist

        flag = torch.tensor([0.0 if error else 1.0], device=state.device)
        dist.broadcast(flag, src=0)
        if not flag.item():
            raise error or FolderBusy(f"run folder '{folder}' is in use by another process; wait for it to "
                                      "finish, or pass another output folder.")
    elif error:
        raise error
    return lock
