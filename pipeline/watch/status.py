"""What a watch daemon is doing, read from outside it: `deepfake-detect watch --status --out OUT`.

The daemon holds an flock on OUT/.watch.lock while it lives and rewrites OUT/watch-status.json
(its heartbeat) every few seconds; the journal has the counts and the files by state.
"""
from __future__ import annotations

import contextlib
import json
import time
from pathlib import Path

from deepfake_detect.pipeline.core.journal import JOURNAL_NAME, Journal

try:
    import fcntl
except ImportError:  # pragma: no cover - not POSIX: the CLI still imports; `watch` refuses to start
    fcntl = None  # type: ignore[assignment]

STATUS_NAME = "watch-status.json"
LOCK_NAME = ".watch.lock"


def daemon_alive(out: Path) -> bool:
    """Whether a daemon holds OUT's lock (more reliable than a pid: it is released when it dies)."""
    lock = Path(out) / LOCK_NAME
    if fcntl is None or not lock.exists():
        return False
    with open(lock, "a+") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except OSError:
            return True
        fcntl.flock(fh, fcntl.LOCK_UN)
        return False


def read_status(out: Path) -> dict:
    out = Path(out)
    heartbeat: dict = {}
    with contextlib.suppress(OSError, ValueError):
        heartbeat = json.loads((out / STATUS_NAME).read_text(encoding="utf-8"))
    result = {"alive": daemon_alive(out), "heartbeat": heartbeat.get("heartbeat"),
              "heartbeat_age_s": round(time.time() - heartbeat["heartbeat_unix"], 1) if "heartbeat_unix" in heartbeat else None,
              "pid": heartbeat.get("pid"), "inbox": heartbeat.get("inbox"), "arriving": heartbeat.get("arriving", 0),
              "counts": {}, "running": [], "queued": [], "failed": [], "recent": []}
    if (out / JOURNAL_NAME).exists():
        journal = Journal(out / JOURNAL_NAME)
        try:
            result["counts"] = journal.counts()
            result["running"] = [e.summary() for e in journal.by_state("running")]
            result["queued"] = [e.summary() for e in journal.by_state("queued", 20)]
            result["failed"] = [e.summary() for e in journal.by_state("failed", 1000)][-20:]
            result["recent"] = [e.summary() for e in journal.recent(10)]
        finally:
            journal.close()
    return result


def format_status(st: dict) -> str:
    lines = []
    if st["alive"]:
        age = st["heartbeat_age_s"]
        lines.append(f"daemon: running (pid {st['pid']}, inbox {st['inbox']}, heartbeat "
                     f"{'?' if age is None else f'{age:.0f}s'} ago)")
    else:
        lines.append("daemon: not running" + (f" (last heartbeat {st['heartbeat']})" if st["heartbeat"] else ""))
    c = st["counts"]
    lines.append(f"queued {c.get('queued', 0)}, running {c.get('running', 0)}, done {c.get('done', 0)}, "
                 f"failed {c.get('failed', 0)}" + (f"; {st['arriving']} still arriving" if st.get("arriving") else ""))
    for e in st["running"]:
        lines.append(f"  running  {e['path']}")
    for e in st["queued"]:
        lines.append(f"  queued   {e['path']}")
    for e in st["failed"]:
        lines.append(f"  failed   {e['path']}: {e['reason']}")
    return "\n".join(lines)
