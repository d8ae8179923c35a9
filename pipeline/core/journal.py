"""The journal of every long-running job: one SQLite row per input taken, so nothing is lost or done twice.

`SqliteJournal` is the base of every job system's journal (the server's `JobJournal` keeps jobs;
`Journal` keeps inputs, for the watch daemon and, with `archive.journal`'s lookups, a Ray batch).
What happens to a job once its report exists is `core.lifecycle`'s, the same for all of them.

A row is keyed by the input's path (stored as bytes, so any file name works) and the sha256 of its
content, and moves through the states

    queued -> running -> done | failed

`running` carries a `phase` that records how far the work got: NULL (analysing), "reported"
(JSON report written), "logged" (CSV line written). `core.lifecycle` writes the report, then the
CSV line (then the daemon moves the input), committing the phase after each step; a crash at any point leaves a
row that says exactly what is left to do. At start-up every `running` row is reset to `queued`
(keeping its phase): that is the whole crash recovery.

The database lives in the output folder, uses WAL (readers such as `watch --status` never block
the daemon) and `synchronous=FULL` (a handful of tiny commits per input; durability is worth it).
One `Journal` object is shared by the daemon's threads; a lock serialises them.
"""
from __future__ import annotations

import os
import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path

STATES = ("queued", "running", "done", "failed")
JOURNAL_NAME = "watch-journal.sqlite"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS inputs (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    path          BLOB NOT NULL,          -- os.fsencode(absolute path in the inbox)
    sha256        TEXT,                   -- NULL for inputs refused before hashing
    size          INTEGER,
    mtime_ns      INTEGER,
    state         TEXT NOT NULL CHECK (state IN ('queued', 'running', 'done', 'failed')),
    phase         TEXT,                   -- inside running: NULL, 'reported', 'logged'
    attempts      INTEGER NOT NULL DEFAULT 0,
    refusal       TEXT,                   -- decided at discovery: fail without analysing
    report_path   BLOB,
    out_dir       BLOB,                   -- where annotated outputs go
    dest_path     BLOB,                   -- where the input was (or is being) moved; NULL: left in place
    verdict       TEXT,
    reason        TEXT,                   -- first error, for failed rows
    created       TEXT,                   -- the report's `created` stamp (finds its CSV line)
    reused_from   INTEGER REFERENCES inputs(id),
    discovered_at REAL,
    started_at    REAL,
    finished_at   REAL
);
CREATE INDEX IF NOT EXISTS inputs_path ON inputs(path);
CREATE INDEX IF NOT EXISTS inputs_sha ON inputs(sha256);
CREATE INDEX IF NOT EXISTS inputs_state ON inputs(state);
"""


def _b(path: str | os.PathLike | None) -> bytes | None:
    return None if path is None else os.fsencode(path)


def _p(blob: bytes | None) -> Path | None:
    return None if blob is None else Path(os.fsdecode(blob))


def display_path(path: str | os.PathLike | None) -> str:
    """A printable form of any path (undecodable bytes become U+FFFD), for logs and JSON."""
    if path is None:
        return ""
    return os.fsencode(path).decode("utf-8", "replace")


@dataclass
class Entry:
    id: int
    path: Path
    sha256: str | None
    size: int | None
    mtime_ns: int | None
    state: str
    phase: str | None
    attempts: int
    refusal: str | None
    report_path: Path | None
    out_dir: Path | None
    dest_path: Path | None
    verdict: str | None
    reason: str | None
    created: str | None
    reused_from: int | None
    discovered_at: float | None
    started_at: float | None
    finished_at: float | None

    @classmethod
    def from_row(cls, row: sqlite3.Row) -> Entry:
        data = dict(row)
        for key in ("path", "report_path", "out_dir", "dest_path"):
            data[key] = _p(data[key])
        return cls(**data)

    def summary(self) -> dict:
        """JSON-friendly view for the status file and `watch --status --json`."""
        return {"id": self.id, "path": display_path(self.path), "state": self.state, "phase": self.phase,
                "sha256": self.sha256, "verdict": self.verdict, "reason": self.reason,
                "report": display_path(self.report_path) or None, "moved_to": display_path(self.dest_path) or None,
                "attempts": self.attempts, "reused_from": self.reused_from,
                "started_at": self.started_at, "finished_at": self.finished_at}


class SqliteJournal:
    """What every journal of this project shares: one SQLite file with `SCHEMA`, in WAL (readers
    never block the writer), synchronous=FULL (a finished step survives a power cut), autocommit,
    used by several threads that `_lock` serialises."""

    SCHEMA = ""

    def __init__(self, path: str | Path, timeout: float = 30.0):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.RLock()
        self._db = sqlite3.connect(str(self.path), timeout=timeout, check_same_thread=False, isolation_level=None)
        self._db.row_factory = sqlite3.Row
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.executescript(self.SCHEMA)

    def close(self) -> None:
        with self._lock:
            self._db.close()


class Journal(SqliteJournal):
    SCHEMA = _SCHEMA

    # -- helpers -----------------------------------------------------------------------------
    def _one(self, sql: str, args: tuple = ()) -> Entry | None:
        with self._lock:
            row = self._db.execute(sql, args).fetchone()
        return Entry.from_row(row) if row else None

    def _all(self, sql: str, args: tuple = ()) -> list[Entry]:
        with self._lock:
            return [Entry.from_row(r) for r in self._db.execute(sql, args).fetchall()]

    def _exec(self, sql: str, args: tuple = ()) -> sqlite3.Cursor:
        with self._lock:
            return self._db.execute(sql, args)

    def get(self, entry_id: int) -> Entry | None:
        return self._one("SELECT * FROM inputs WHERE id = ?", (entry_id,))

    # -- start-up ----------------------------------------------------------------------------
    def recover(self) -> list[Entry]:
        """Reset rows left `running` by a crash to `queued` (phase kept); return them."""
        with self._lock:
            rows = self._all("SELECT * FROM inputs WHERE state = 'running' ORDER BY id")
            self._exec("UPDATE inputs SET state = 'queued' WHERE state = 'running'")
        return rows

    # -- discovery ---------------------------------------------------------------------------
    def current_for_path(self, path: Path) -> Entry | None:
        """The row that still owns the file at `path`: one not finished yet, or one finished but
        left in place (dest_path NULL). A finished-and-moved row does not: a new file under the
        same name is a new arrival."""
        return self._one("SELECT * FROM inputs WHERE path = ? AND (state IN ('queued', 'running') "
                         "OR dest_path IS NULL) ORDER BY id DESC LIMIT 1", (_b(path),))

    def add(self, path: Path, sha256: str | None, size: int, mtime_ns: int, refusal: str | None = None) -> Entry:
        with self._lock:
            cur = self._exec("INSERT INTO inputs (path, sha256, size, mtime_ns, state, refusal, discovered_at) "
                             "VALUES (?, ?, ?, ?, 'queued', ?, ?)", (_b(path), sha256, size, mtime_ns, refusal, time.time()))
            row_id = cur.lastrowid
            assert row_id is not None  # an INSERT always sets lastrowid
            entry = self.get(row_id)
            assert entry is not None  # inserted just now, under the lock
            return entry

    def touch(self, entry_id: int, size: int, mtime_ns: int) -> None:
        """Same content seen with a new mtime (e.g. `touch`): remember it so rescans stay cheap."""
        self._exec("UPDATE inputs SET size = ?, mtime_ns = ? WHERE id = ?", (size, mtime_ns, entry_id))

    def forget(self, entry_id: int) -> None:
        """Drop a row that was never worked on (its file changed or vanished before analysis)."""
        self._exec("DELETE FROM inputs WHERE id = ? AND state = 'queued' AND phase IS NULL", (entry_id,))

    # -- work --------------------------------------------------------------------------------
    def claim(self) -> Entry | None:
        """Oldest queued row whose content is not being analysed right now -> running."""
        with self._lock:
            entry = self._one(
                "SELECT * FROM inputs WHERE state = 'queued' AND (sha256 IS NULL OR sha256 NOT IN "
                "(SELECT sha256 FROM inputs WHERE state = 'running' AND sha256 IS NOT NULL)) ORDER BY id LIMIT 1")
            if entry is None:
                return None
            self._exec("UPDATE inputs SET state = 'running', attempts = attempts + 1, started_at = ? WHERE id = ?",
                       (time.time(), entry.id))
            return self.get(entry.id)

    def release(self, entry_id: int, count_attempt: bool) -> None:
        """Put a running row back in the queue (abandoned at shutdown, or to retry after a crash)."""
        self._exec("UPDATE inputs SET state = 'queued', attempts = attempts - ? WHERE id = ? AND state = 'running'",
                   (0 if count_attempt else 1, entry_id))

    def set_targets(self, entry_id: int, report_path: Path, out_dir: Path, dest_path: Path | None) -> None:
        self._exec("UPDATE inputs SET report_path = ?, out_dir = ?, dest_path = ? WHERE id = ?",
                   (_b(report_path), _b(out_dir), _b(dest_path), entry_id))

    def set_dest(self, entry_id: int, dest_path: Path | None) -> None:
        self._exec("UPDATE inputs SET dest_path = ? WHERE id = ?", (_b(dest_path), entry_id))

    def set_phase(self, entry_id: int, phase: str | None, verdict: str | None = None, created: str | None = None,
                  reason: str | None = None, reused_from: int | None = None) -> None:
        self._exec("UPDATE inputs SET phase = ?, verdict = COALESCE(?, verdict), created = COALESCE(?, created), "
                   "reason = COALESCE(?, reason), reused_from = COALESCE(?, reused_from) WHERE id = ?",
                   (phase, verdict, created, reason, reused_from, entry_id))

    def finish(self, entry_id: int, state: str, reason: str | None = None) -> None:
        assert state in ("done", "failed")
        self._exec("UPDATE inputs SET state = ?, phase = NULL, reason = COALESCE(?, reason), finished_at = ? WHERE id = ?",
                   (state, reason, time.time(), entry_id))

    # -- look-ups ----------------------------------------------------------------------------
    def analysed_copy(self, sha256: str, exclude_id: int) -> Entry | None:
        """An earlier input with this content that was analysed successfully (to reuse its report)."""
        return self._one("SELECT * FROM inputs WHERE sha256 = ? AND id != ? AND state = 'done' "
                         "AND reused_from IS NULL AND verdict IS NOT NULL AND verdict != 'error' ORDER BY id LIMIT 1",
                         (sha256, exclude_id))

    def path_reserved(self, column: str, path: Path, exclude_id: int) -> bool:
        """Whether another row already claims `path` as its report, output folder or destination."""
        assert column in ("report_path", "out_dir", "dest_path")
        with self._lock:
            row = self._db.execute(f"SELECT 1 FROM inputs WHERE {column} = ? AND id != ? LIMIT 1",
                                   (_b(path), exclude_id)).fetchone()
        return row is not None

    def counts(self) -> dict[str, int]:
        with self._lock:
            rows = self._db.execute("SELECT state, COUNT(*) FROM inputs GROUP BY state").fetchall()
        out = {s: 0 for s in STATES}
        out.update({state: n for state, n in rows})
        return out

    def by_state(self, state: str, limit: int = 50) -> list[Entry]:
        return self._all("SELECT * FROM inputs WHERE state = ? ORDER BY id LIMIT ?", (state, limit))

    def recent(self, limit: int = 10) -> list[Entry]:
        return self._all("SELECT * FROM inputs WHERE state IN ('done', 'failed') ORDER BY finished_at DESC, id DESC "
                         "LIMIT ?", (limit,))

    def all(self) -> list[Entry]:
        return self._all("SELECT * FROM inputs ORDER BY id")
