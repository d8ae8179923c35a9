"""One owner per folder: the lock that the watch daemon (its OUT), the server (its DATA) and an
archive run (its OUT) each take, so that two of them never claim the same work."""
from __future__ import annotations

import os
from pathlib import Path
from typing import TextIO


class FolderBusyError(Exception):
    """Another process holds the folder; the message says which kind and where."""


def hold_folder(folder: Path, lock_name: str, busy: str) -> TextIO:
    """Take `folder/lock_name` for this process, or raise FolderBusyError(`busy`).

    An flock, which the kernel releases however the process ends (kill -9 too), so a crash leaves no
    stale lock; the file holds our pid for people reading it. Close the returned file to let go."""
    import fcntl  # POSIX only: the callers say so where it is missing

    folder.mkdir(parents=True, exist_ok=True)
    fh = open(folder / lock_name, "a+")
    try:
        fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        fh.close()
        raise FolderBusyError(busy) from None
    fh.seek(0)
    fh.truncate()
    fh.write(f"{os.getpid()}\n")
    fh.flush()
    return fh
