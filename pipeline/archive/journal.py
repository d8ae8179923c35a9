"""The journal of `analyze --engine ray`: the watch daemon's SQLite journal, used for a batch.

The design is `pipeline.core.journal`'s (one row per input, keyed by path and content sha256, WAL,
synchronous=FULL, queued -> running -> done | failed, with the phases "reported" and "logged"
inside running); this module adds what a batch needs on top:

- `row_for`: an input of this run -> its row. A file whose size and mtime match its row is the
  same file, so a rerun over a finished archive reads no media at all; the sha256 comes from the
  worker's report (the analysis hashes the file anyway), so the driver never reads every byte
  of the archive either. A file with a new mtime but its old size is hashed here and keeps its
  row when the content is the same (a `touch`); other changes make a new row.
- `start`: one chosen row -> running (the watch daemon takes the oldest queued row instead).
- `batch_lock`: one driver per output folder, since each start re-queues every running row.
"""
from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from deepfake_detect.pipeline.core.folder_lock import FolderBusyError, hold_folder
from deepfake_detect.pipeline.core.journal import Entry, Journal

JOURNAL_NAME = "analyze-journal.sqlite"
LOCK_NAME = "analyze-journal.lock"


class BatchLockedError(Exception):
    """Another driver holds the output folder."""


def content_sha256(path: Path) -> str:
    with open(path, "rb") as fh:
        return hashlib.file_digest(fh, "sha256").hexdigest()


@contextmanager
def batch_lock(out: Path) -> Iterator[None]:
    """Hold `out` for this driver (core.folder_lock: released however the driver ends)."""
    try:
        fh = hold_folder(out, LOCK_NAME, f"another `analyze --engine ray` is writing to {out}")
    except FolderBusyError as exc:
        raise BatchLockedError(str(exc)) from None
    with fh:
        yield


class BatchJournal(Journal):
    def __init__(self, path: str | Path, timeout: float = 30.0):
        super().__init__(path, timeout)
        # a batch names each new input's report by looking its candidates up: without an index that
        # is a scan of the whole journal per input
        self._exec("CREATE INDEX IF NOT EXISTS inputs_report ON inputs(report_path)")

    @contextmanager
    def transaction(self) -> Iterator[None]:
        """One commit (one fsync) for the statements of the block instead of one each: planning a
        run of a million inputs would otherwise wait for a million fsyncs."""
        with self._lock:
            self._exec("BEGIN IMMEDIATE")
            try:
                yield
            except BaseException:
                self._exec("ROLLBACK")
                raise
            self._exec("COMMIT")

    def row_for(self, path: Path) -> Entry:
        """The row of the file at `path` (absolute): its row from an earlier run when it is the same
        file, else a new queued row."""
        try:
            st = os.stat(path)
            size, mtime_ns = st.st_size, st.st_mtime_ns
        except OSError:   # vanished or unreadable: the worker's analysis reports why
            size, mtime_ns = 0, 0
        entry = self.current_for_path(path)
        if entry is None:
            return self.add(path, None, size, mtime_ns)
        if (entry.size, entry.mtime_ns) == (size, mtime_ns):
            return entry
        if entry.state in ("queued", "running"):
            # not analysed yet (or a crash lost the analysis): analyse the file as it is now
            self.touch(entry.id, size, mtime_ns)
            return self._fresh(entry.id)
        if entry.sha256 and entry.size == size and self._same_content(path, entry.sha256):
            self.touch(entry.id, size, mtime_ns)
            return self._fresh(entry.id)
        return self.add(path, None, size, mtime_ns)

    @staticmethod
    def _same_content(path: Path, sha256: str) -> bool:
        try:
            return content_sha256(path) == sha256
        except OSError:
            return False

    def _fresh(self, entry_id: int) -> Entry:
        entry = self.get(entry_id)
        assert entry is not None  # rows of a batch are never deleted
        return entry

    def start(self, entry_id: int) -> None:
        """A queued row goes to a worker now."""
        self._exec("UPDATE inputs SET state = 'running', attempts = attempts + 1, started_at = ? "
                   "WHERE id = ? AND state = 'queued'", (time.time(), entry_id))

    def set_sha256(self, entry_id: int, sha256: str | None) -> None:
        """The content's sha256, as the worker's analysis measured it."""
        if sha256:
            self._exec("UPDATE inputs SET sha256 = ? WHERE id = ?", (sha256, entry_id))
