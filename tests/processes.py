"""Helpers for tests that check which processes outlive a daemon or a server."""
from __future__ import annotations

import time
from pathlib import Path


def alive(pid: int) -> bool:
    """Whether `pid` runs (a zombie, finished but not yet reaped, does not count)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def any_alive_after(pids: list[int], timeout: float = 10.0) -> bool:
    """Whether any of `pids` still runs `timeout` s from now. The kernel delivers the parent-death
    signal, and multiprocessing's resource tracker sees its pipe close, only after the parent is gone:
    they end a moment later, not at the same instant."""
    deadline = time.monotonic() + timeout
    while any(alive(pid) for pid in pids) and time.monotonic() < deadline:
        time.sleep(0.1)
    return any(alive(pid) for pid in pids)
