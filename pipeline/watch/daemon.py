"""Watch-folder daemon: analyse media that lands in an inbox, unattended; lose nothing, never twice.

    deepfake-detect watch INBOX --out OUT [--processed DIR | --keep] [--failed DIR] ...
    deepfake-detect watch --status --out OUT

How a file travels
  1. Discovery (`pipeline.watch.discovery`, its own thread). watchdog reports new and changed
     paths; a rescan every `--rescan` seconds is the safety net for missed events. Dotfiles,
     dot-folders, temporary names (.part, .tmp, ...), names without a media suffix and empty files
     are ignored. A candidate is taken once its size and mtime have not changed for `--quiet-time`
     seconds. Symlinks, paths that resolve outside INBOX and files over `--max-size` are refused
     (they go to failed/ with the reason, without being read).
  2. Journal. The content is hashed (sha256, streamed) and a row is added to the SQLite journal in
     OUT (`pipeline.core.journal`). A file whose path and content the journal already owns is skipped.
  3. Work (`pipeline.watch.worker`, one thread per worker). A worker claims the oldest queued row.
     Content already analysed under another name reuses that report (no model run). Otherwise the
     file goes to the worker's analysis process (`pipeline.core.analysis_process`, which loads the model
     once; a hung or crashed decoder takes down only that process).
  4. Finish, each step committed in the journal before the next: JSON report -> CSV line -> move
     the input to processed/ or failed/ (never overwritten, never deleted) -> done/failed. After a
     crash, `running` rows go back to `queued` and resume from the last committed step.

This module is the daemon around them: the lock on OUT, signals, the heartbeat (status file),
the threads, and a shutdown that never closes what a thread still uses.
"""
from __future__ import annotations

import json
import logging
import os
import signal
import threading
import time
from types import FrameType
from typing import TYPE_CHECKING, Any, TextIO

from deepfake_detect.pipeline import __version__
from deepfake_detect.pipeline.core.analysis_process import AnalysisProcess, WorkerStartError
from deepfake_detect.pipeline.core.folder_lock import FolderBusyError, hold_folder
from deepfake_detect.pipeline.core.journal import JOURNAL_NAME, Journal
from deepfake_detect.pipeline.core.report import now_iso
from deepfake_detect.pipeline.core.threads import thread_policy
from deepfake_detect.pipeline.core.writers import atomic_write_text
from deepfake_detect.pipeline.watch.discovery import Discovery
from deepfake_detect.pipeline.watch.file_moves import shown_path
from deepfake_detect.pipeline.watch.settings import WatchSettings
from deepfake_detect.pipeline.watch.status import LOCK_NAME, STATUS_NAME, fcntl
from deepfake_detect.pipeline.watch.worker import WorkContext, Worker

if TYPE_CHECKING:
    from deepfake_detect.pipeline.core.config import AnalysisConfig

log = logging.getLogger(__name__)   # also the logger of watch_discovery and watch_worker


class WatchDaemon:
    def __init__(self, settings: WatchSettings, config: AnalysisConfig, debug: bool = False) -> None:
        self.s = settings
        self.config = config
        self.debug = debug
        self.stop = threading.Event()
        self.hurry = threading.Event()     # a second SIGTERM/SIGINT: abandon the current file now
        self.status_due = threading.Event()
        self.journal: Journal | None = None
        self.discovery: Discovery | None = None
        self.work: WorkContext | None = None
        self._started = now_iso()

    # -- entry point --------------------------------------------------------------------------
    def run(self) -> int:
        s = self.s
        lock_fh = self._take_lock()
        journal = self.journal = Journal(s.out / JOURNAL_NAME)
        for entry in journal.recover():
            log.warning("resuming %s (interrupted while running, phase %s)", shown_path(entry.path), entry.phase or "analysis")
        self._install_signals()
        self._write_status("starting")
        procs = self._start_processes()
        work = self.work = WorkContext(s, self.config, journal, procs[0].model_info, procs[0].threshold,
                                       stop=self.stop, hurry=self.hurry, status_due=self.status_due)
        discovery = self.discovery = Discovery(s, journal, self.stop, on_queued=self._on_queued, fail=work.give_up)
        work.retake = discovery.mark_dirty
        workers = [threading.Thread(target=Worker(work, p).run, name=p.name, daemon=True) for p in procs]
        try:   # from here on the children run: whatever happens, _shutdown stops them
            discovery.start()
            for t in workers:
                t.start()
            log.info("watching %s -> %s (%d worker%s, quiet %gs, rescan %gs, timeout %gs)", s.inbox, s.out,
                     s.workers, "" if s.workers == 1 else "s", s.quiet_s, s.rescan_s, s.timeout_s)
            self._heartbeat_loop()
        finally:
            self._shutdown(discovery, workers, procs, journal)
            lock_fh.close()
        if work.fatal:
            log.error("stopped: %s", work.fatal)
            return 2
        log.info("stopped")
        return 0

    def _take_lock(self) -> TextIO:
        """One daemon per OUT (core.folder_lock: released however the daemon ends)."""
        if fcntl is None:
            raise WorkerStartError("the watch daemon needs a POSIX system (Linux, macOS)")
        out = self.s.out
        try:
            return hold_folder(out, LOCK_NAME, f"another watch daemon is using {out} (see {out / STATUS_NAME})")
        except FolderBusyError as exc:
            raise WorkerStartError(str(exc)) from None

    def _start_processes(self) -> list[AnalysisProcess]:
        s = self.s
        threads = thread_policy(concurrent=s.workers, threads=self.config.threads).compute
        procs = [AnalysisProcess(self.config, s.render, threads, f"worker-{i + 1}", self.debug) for i in range(s.workers)]
        try:
            for proc in procs:
                proc.start()
            for proc in procs:
                proc.wait_ready()
        except WorkerStartError:
            for proc in procs:
                proc.kill()
            self._write_status("stopped")
            raise
        return procs

    def _install_signals(self) -> None:
        def handler(signum: int, frame: FrameType | None) -> None:
            if self.stop.is_set():   # a second signal: do not wait for the current file
                self.hurry.set()
                log.info("%s again: abandoning the current file", signal.Signals(signum).name)
            else:
                log.info("%s: finishing the current file (up to %gs), taking no new ones",
                         signal.Signals(signum).name, self.s.stop_grace_s)
            self.stop.set()
            if self.work is not None:
                self.work.wake.set()   # idle workers see `stop` now, not at their next poll

        signal.signal(signal.SIGTERM, handler)
        signal.signal(signal.SIGINT, handler)

    def _on_queued(self) -> None:
        self.status_due.set()
        if self.work is not None:
            self.work.wake.set()

    def _heartbeat_loop(self) -> None:
        """The main thread's job while the others work: the status file, and noticing `stop`. It
        does no file I/O in the inbox (discovery hashes on its own thread), so it never lags."""
        next_status = 0.0
        while not self.stop.is_set():
            now = time.monotonic()
            if now >= next_status or self.status_due.is_set():
                self.status_due.clear()
                self._write_status("running")
                next_status = now + self.s.heartbeat_s
            self.stop.wait(0.2)
        self._write_status("stopping")

    def _shutdown(self, discovery: Discovery, workers: list[threading.Thread], procs: list[AnalysisProcess],
                  journal: Journal) -> None:
        """Stop in an order that leaves no thread holding something closed: the threads first,
        then the analysis processes (AnalysisProcess.close waits for a call in progress and then
        refuses work), the journal last and only once no thread that writes to it is left."""
        self.stop.set()
        if self.work is not None:
            self.work.wake.set()
        deadline = time.monotonic() + self.s.stop_grace_s + 15
        discovery_ended = discovery.close(timeout=max(0.0, deadline - time.monotonic()))
        for t in workers:
            if t.ident is not None:   # started
                t.join(max(0.0, deadline - time.monotonic()))
        for proc in procs:
            proc.close()   # an exited worker's process, or one a stuck worker can no longer use
        self._write_status("stopped")
        stuck = [t.name for t in workers if t.is_alive()] + ([] if discovery_ended else ["discovery"])
        if stuck:
            # it may still commit a step; the journal stays open for it, and the process exit
            # (like a crash) leaves rows the next start resumes
            log.warning("%s did not stop in time; the next start resumes its work", ", ".join(stuck))
        else:
            journal.close()

    # -- status -------------------------------------------------------------------------------
    def _write_status(self, state: str) -> None:
        try:
            atomic_write_text(self.s.out / STATUS_NAME, json.dumps(self.status(state), indent=2, ensure_ascii=False) + "\n")
        except Exception as exc:  # noqa: BLE001 - a full disk must not stop the daemon; the journal is the truth
            log.warning("cannot write %s: %s", STATUS_NAME, exc)

    def status(self, state: str) -> dict[str, Any]:
        j = self.journal
        running = []
        if j is not None:
            for entry in j.by_state("running"):
                info = entry.summary()
                info["running_s"] = round(time.time() - (entry.started_at or time.time()), 1)
                running.append(info)
        return {
            "daemon": state, "pid": os.getpid(), "tool_version": __version__, "started": self._started,
            "heartbeat": now_iso(), "heartbeat_unix": round(time.time(), 3),
            "inbox": str(self.s.inbox), "out": str(self.s.out),
            "processed": str(self.s.processed) if self.s.processed else None, "failed": str(self.s.failed),
            "workers": self.s.workers, "render": self.s.render,
            "counts": j.counts() if j else {}, "arriving": self.discovery.arriving if self.discovery else 0,
            "running": running,
            "queued": [e.summary() for e in j.by_state("queued", 20)] if j else [],
            "recent": [e.summary() for e in j.recent(10)] if j else [],
        }


def parse_size(text: str) -> int:
    """'500M', '2G', '1.5GiB', '123' -> bytes."""
    t = text.strip().lower().removesuffix("ib").removesuffix("b")
    units = {"k": 1024, "m": 1024**2, "g": 1024**3, "t": 1024**4}
    mult = units.get(t[-1:], 1)
    number = float(t[:-1] if t[-1:] in units else t)
    if number <= 0:
        raise ValueError("must be positive")
    return int(number * mult)
