"""The server's job journal: one SQLite row per job, so that a restart loses nothing and finishes nothing twice.

The same design as the watch daemon's journal (`pipeline.core.journal`): a job moves through

    queued -> running -> done | failed

and at start-up every `running` row goes back to `queued` (the work it did is redone; nothing of
it was recorded as finished). A job is finished by one conditional UPDATE (`WHERE state =
'running'`), so however threads and restarts interleave, a job finishes once. Every change of
state is made by `_transition`, which also appends the change to `events` in the same
transaction: the audit trail (and the test's proof) of exactly-once.

WAL lets the API read while a worker writes; `synchronous=FULL` makes every committed change
survive a power cut (a few tiny commits per job). One `JobJournal` is shared by the server's
threads; a lock serialises them on its one connection.
"""
from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from deepfake_detect.pipeline.core.journal import SqliteJournal

STATES = ("queued", "running", "done", "failed")
JOURNAL_NAME = "jobs.sqlite"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    seq           INTEGER PRIMARY KEY AUTOINCREMENT,   -- order of arrival
    id            TEXT NOT NULL UNIQUE,    -- uuid4 hex, made by the server
    state         TEXT NOT NULL CHECK (state IN ('queued', 'running', 'done', 'failed')),
    filename      TEXT NOT NULL,           -- the client's file name, sanitised: shown, never used as a path
    input_name    TEXT NOT NULL,           -- the upload's file in the job's folder, chosen by the server
    options       TEXT NOT NULL,           -- JSON: sampling, threshold, render
    attempts      INTEGER NOT NULL DEFAULT 0,
    frames_done   INTEGER,
    frames_total  INTEGER,
    verdict       TEXT,
    error         TEXT,                    -- one line, for failed jobs
    created_at    REAL NOT NULL,
    started_at    REAL,
    finished_at   REAL,
    verdict_basis TEXT                     -- 'detector' | 'provenance' (report schema 1.3), finished jobs
);
CREATE INDEX IF NOT EXISTS jobs_state ON jobs(state, seq);
CREATE TABLE IF NOT EXISTS events (
    job_id        TEXT NOT NULL,
    state         TEXT NOT NULL,
    at            REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS events_job ON events(job_id);
"""


@dataclass(frozen=True)
class Job:
    seq: int
    id: str
    state: str
    filename: str
    input_name: str
    options: dict[str, Any]
    attempts: int
    frames_done: int | None
    frames_total: int | None
    verdict: str | None
    error: str | None
    created_at: float
    started_at: float | None
    finished_at: float | None
    verdict_basis: str | None = None

    @classmethod
    def from_row(cls, row: sqlite3.Row) -> Job:
        data = dict(row)
        data["options"] = json.loads(data["options"])
        return cls(**data)

    @property
    def finished(self) -> bool:
        return self.state in ("done", "failed")


class JobJournal(SqliteJournal):
    SCHEMA = _SCHEMA

    def __init__(self, path: str | Path, timeout: float = 30.0):
        super().__init__(path, timeout)
        # a journal written before the verdict's basis was recorded gains the column (its jobs: NULL)
        with self._lock:
            columns = {row[1] for row in self._db.execute("PRAGMA table_info(jobs)")}
            if "verdict_basis" not in columns:
                self._db.execute("ALTER TABLE jobs ADD COLUMN verdict_basis TEXT")

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        """One transaction under the lock: all of it is committed, or none of it."""
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    def _all(self, sql: str, args: tuple = ()) -> list[Job]:
        with self._lock:
            return [Job.from_row(r) for r in self._db.execute(sql, args).fetchall()]

    def _transition(self, db: sqlite3.Connection, job_id: str, from_states: tuple[str, ...], state: str,
                    **columns: Any) -> bool:
        """The one place a job changes state: the row and its event, in the caller's transaction.
        False when the job is not in one of `from_states` (deleted, or already moved on)."""
        assert state in STATES and all(s in STATES for s in from_states)
        sets = ", ".join(["state = ?", *(f"{name} = {expr}" for name, expr in _expressions(columns))])
        marks = ", ".join("?" * len(from_states))
        values = [v for _, v in sorted(columns.items()) if not isinstance(v, _Sql)]
        cur = db.execute(f"UPDATE jobs SET {sets} WHERE id = ? AND state IN ({marks})",
                         (state, *values, job_id, *from_states))
        if cur.rowcount != 1:
            return False
        db.execute("INSERT INTO events (job_id, state, at) VALUES (?, ?, ?)", (job_id, state, time.time()))
        return True

    # -- arrivals ------------------------------------------------------------------------------
    def add(self, job_id: str, filename: str, input_name: str, options: dict[str, Any], max_queued: int) -> bool:
        """Queue a new job; False (nothing written) when `max_queued` jobs are waiting already."""
        with self._tx() as db:
            (queued,) = db.execute("SELECT COUNT(*) FROM jobs WHERE state = 'queued'").fetchone()
            if queued >= max_queued:
                return False
            now = time.time()
            db.execute("INSERT INTO jobs (id, state, filename, input_name, options, created_at) "
                       "VALUES (?, 'queued', ?, ?, ?, ?)", (job_id, filename, input_name, json.dumps(options), now))
            db.execute("INSERT INTO events (job_id, state, at) VALUES (?, 'queued', ?)", (job_id, now))
        return True

    def recover(self) -> list[Job]:
        """At start-up: jobs left `running` by a crash or a stop go back to the queue; returns them."""
        with self._tx() as db:
            jobs = [Job.from_row(r) for r in db.execute("SELECT * FROM jobs WHERE state = 'running' ORDER BY seq")]
            for job in jobs:
                self._transition(db, job.id, ("running",), "queued")
        return jobs

    # -- work ----------------------------------------------------------------------------------
    def claim(self) -> Job | None:
        """The oldest queued job, now running."""
        with self._tx() as db:
            row = db.execute("SELECT id FROM jobs WHERE state = 'queued' ORDER BY seq LIMIT 1").fetchone()
            if row is None:
                return None
            self._transition(db, row["id"], ("queued",), "running", attempts=_Sql("attempts + 1"),
                             started_at=time.time(), frames_done=None, frames_total=None)
        return self.get(row["id"])

    def progress(self, job_id: str, done: int, total: int) -> None:
        """How far a running job is (not a change of state: no event)."""
        with self._lock:
            self._db.execute("UPDATE jobs SET frames_done = ?, frames_total = ? WHERE id = ? AND state = 'running'",
                             (done, total, job_id))

    def release(self, job_id: str) -> bool:
        """A running job back to the queue (the server is stopping): the next start runs it again."""
        with self._tx() as db:
            return self._transition(db, job_id, ("running",), "queued", started_at=None)

    def finish(self, job_id: str, state: str, verdict: str | None, error: str | None,
               verdict_basis: str | None = None) -> bool:
        """running -> done | failed, once: False when the job is no longer running (deleted)."""
        assert state in ("done", "failed")
        with self._tx() as db:
            return self._transition(db, job_id, ("running",), state, verdict=verdict, error=error,
                                    finished_at=time.time(), verdict_basis=verdict_basis)

    def delete(self, job_id: str) -> Job | None:
        """Forget a job and its events; returns it as it was, or None when there was none."""
        with self._tx() as db:
            row = db.execute("SELECT * FROM jobs WHERE id = ?", (job_id,)).fetchone()
            if row is None:
                return None
            db.execute("DELETE FROM jobs WHERE id = ?", (job_id,))
            db.execute("DELETE FROM events WHERE job_id = ?", (job_id,))
        return Job.from_row(row)

    # -- look-ups ------------------------------------------------------------------------------
    def get(self, job_id: str) -> Job | None:
        jobs = self._all("SELECT * FROM jobs WHERE id = ?", (job_id,))
        return jobs[0] if jobs else None

    def recent(self, limit: int) -> list[Job]:
        return self._all("SELECT * FROM jobs ORDER BY seq DESC LIMIT ?", (limit,))

    def queued_count(self) -> int:
        with self._lock:
            (n,) = self._db.execute("SELECT COUNT(*) FROM jobs WHERE state = 'queued'").fetchone()
        return int(n)

    def counts(self) -> dict[str, int]:
        with self._lock:
            rows = self._db.execute("SELECT state, COUNT(*) FROM jobs GROUP BY state").fetchall()
        return {**{s: 0 for s in STATES}, **{state: n for state, n in rows}}

    def finished_before(self, cutoff: float) -> list[Job]:
        return self._all("SELECT * FROM jobs WHERE state IN ('done', 'failed') AND finished_at < ? ORDER BY seq",
                         (cutoff,))

    def ids(self) -> set[str]:
        with self._lock:
            return {r[0] for r in self._db.execute("SELECT id FROM jobs")}

    def mean_run_seconds(self, last: int = 20) -> float | None:
        """Mean time from start to finish of the last `last` finished jobs (None before the first)."""
        with self._lock:
            (mean,) = self._db.execute(
                "SELECT AVG(finished_at - started_at) FROM (SELECT finished_at, started_at FROM jobs "
                "WHERE state IN ('done', 'failed') AND started_at IS NOT NULL ORDER BY finished_at DESC LIMIT ?)",
                (last,)).fetchone()
        return None if mean is None else float(mean)

    def events(self, job_id: str) -> list[tuple[str, float]]:
        """The job's changes of state, oldest first."""
        with self._lock:
            return [(r[0], r[1]) for r in self._db.execute(
                "SELECT state, at FROM events WHERE job_id = ? ORDER BY rowid", (job_id,))]


class _Sql(str):
    """A column value that is an SQL expression over the row (e.g. `attempts + 1`), not a parameter."""


def _expressions(columns: dict[str, Any]) -> Iterator[tuple[str, str]]:
    for name, value in sorted(columns.items()):
        yield name, str(value) if isinstance(value, _Sql) else "?"
