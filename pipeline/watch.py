"""Watch-folder daemon: analyse media that lands in an inbox, unattended; lose nothing, never twice.

    deepfake-detect watch INBOX --out OUT [--processed DIR | --keep] [--failed DIR] ...
    deepfake-detect watch --status --out OUT

How a file travels
  1. Discovery. watchdog reports new and changed paths; a rescan every `--rescan` seconds is the
     safety net for missed events (network shares, inotify limits). Dotfiles, dot-folders and
     temporary names (.part, .tmp, .crdownload, ...) are ignored until renamed; so are names
     without a media suffix and empty files.
  2. Stability. A candidate is taken once its size and mtime have not changed for `--quiet-time`
     seconds. Symlinks, paths that resolve outside INBOX and files over `--max-size` are refused
     here (they go to failed/ with the reason, without being read).
  3. Journal. The content is hashed (sha256, streamed) and a row is added to the SQLite journal in
     OUT (`pipeline.journal`). A file whose path and content the journal already owns is skipped.
  4. Work. A worker claims the oldest queued row. Content already analysed under another name
     reuses that report (no model run). Otherwise the file goes to the worker's analysis process.
  5. Finish, each step committed in the journal before the next: JSON report (pipeline.writers,
     atomic) -> CSV line -> move the input to processed/ or failed/ (os.rename; a suffix on a name
     clash; never overwritten, never deleted) -> done/failed. After a crash, `running` rows go
     back to `queued` and resume from the last committed step, so each input gets exactly one
     report, one CSV line and one move.

Each worker thread supervises one long-lived analysis process (`pipeline.analysis_process`), which
loads the model once; a hung or crashed decoder takes down only that process.
"""
from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
import signal
import stat
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from pipeline import __version__
from pipeline.analysis_process import AnalysisProcess, WorkerStartError
from pipeline.file_moves import is_within, move_file, same_file_content, shown_path, with_suffix_number
from pipeline.journal import JOURNAL_NAME, Entry, Journal, display_path
from pipeline.report import AnalysisReport, InputInfo, load_report, now_iso
from pipeline.watch_status import LOCK_NAME, STATUS_NAME, fcntl, format_status, read_status
from pipeline.writers import CsvLogWriter, JsonReportWriter, atomic_write_text, output_stem
from stages.decode import MEDIA_SUFFIXES
from stages.ensemble import file_sha256

log = logging.getLogger(__name__)

CSV_NAME = "results.csv"
TEMP_SUFFIXES = (".part", ".partial", ".tmp", ".temp", ".crdownload", ".download", ".filepart", ".swp", "~")
MAX_ATTEMPTS = 3          # claims of one input that ended in a crash (of the worker or the daemon)


@dataclass(frozen=True)
class WatchSettings:
    inbox: Path
    out: Path
    processed: Path | None          # None: finished inputs stay where they are
    failed: Path
    render: bool = False
    workers: int = 1
    timeout_s: float = 600.0
    quiet_s: float = 5.0
    rescan_s: float = 30.0
    max_bytes: int = 8 * 1024**3
    stop_grace_s: float = 30.0
    heartbeat_s: float = 2.0


# ---------------------------------------------------------------------------------------------
# the daemon
# ---------------------------------------------------------------------------------------------
class WatchDaemon:
    def __init__(self, settings: WatchSettings, config, debug: bool = False):
        self.s = settings
        self.config = config
        self.debug = debug
        self.stop = threading.Event()
        self.hurry = threading.Event()     # a second SIGTERM/SIGINT: abandon the current file now
        self.fatal: str | None = None
        self.journal: Journal | None = None
        self.csv = CsvLogWriter(settings.out / CSV_NAME)
        self.json = JsonReportWriter(settings.out)
        self._names_lock = threading.Lock()       # choosing report names and move destinations
        self._dirty: set[Path] = set()              # paths to look at (from events and rescans)
        self._dirty_lock = threading.Lock()
        self._pending: dict[Path, tuple[int, int, float]] = {}   # path -> (size, mtime_ns, unchanged since)
        self._said: set[tuple[str, Path]] = set()   # log "ignored" once per path
        self._wake = threading.Event()
        self._status_due = threading.Event()
        self._started = now_iso()
        self._lock_fh = None
        self._observer = None
        self.excluded = [p for p in (settings.out, settings.processed, settings.failed)
                         if p is not None and is_within(p, settings.inbox)]

    # -- entry point --------------------------------------------------------------------------
    def run(self) -> int:
        s = self.s
        if fcntl is None:
            raise WorkerStartError("the watch daemon needs a POSIX system (Linux, macOS)")
        s.out.mkdir(parents=True, exist_ok=True)
        self._lock_fh = open(s.out / LOCK_NAME, "a+")
        try:
            fcntl.flock(self._lock_fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            raise WorkerStartError(f"another watch daemon is using {s.out} (see {s.out / STATUS_NAME})") from None
        self._lock_fh.seek(0)
        self._lock_fh.truncate()
        self._lock_fh.write(f"{os.getpid()}\n")
        self._lock_fh.flush()
        self.journal = Journal(s.out / JOURNAL_NAME)
        for entry in self.journal.recover():
            log.warning("resuming %s (interrupted while running, phase %s)", shown_path(entry.path), entry.phase or "analysis")
        self._install_signals()
        self._write_status("starting")
        threads = max(1, (os.cpu_count() or 1) // s.workers)
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
        self.model_info, self.threshold = procs[0].model_info, procs[0].threshold
        workers = [threading.Thread(target=self._worker, args=(p,), name=p.name, daemon=True) for p in procs]
        self._start_observer()
        self._mark_dirty(s.inbox)
        for t in workers:
            t.start()
        log.info("watching %s -> %s (%d worker%s, quiet %gs, rescan %gs, timeout %gs)", s.inbox, s.out,
                 s.workers, "" if s.workers == 1 else "s", s.quiet_s, s.rescan_s, s.timeout_s)
        try:
            self._main_loop()
        finally:
            self.stop.set()
            self._wake.set()
            if self._observer is not None:
                with contextlib.suppress(Exception):
                    self._observer.stop()
                    self._observer.join(5)
            for t in workers:
                t.join(s.stop_grace_s + 15)
            for proc in procs:
                proc.close()
            self._write_status("stopped")
            self.journal.close()
            self._lock_fh.close()
        if self.fatal:
            log.error("stopped: %s", self.fatal)
            return 2
        log.info("stopped")
        return 0

    def _install_signals(self) -> None:
        def handler(signum, frame):
            if self.stop.is_set():   # a second signal: do not wait for the current file
                self.hurry.set()
                log.info("%s again: abandoning the current file", signal.Signals(signum).name)
            else:
                log.info("%s: finishing the current file (up to %gs), taking no new ones",
                         signal.Signals(signum).name, self.s.stop_grace_s)
            self.stop.set()
            self._wake.set()

        signal.signal(signal.SIGTERM, handler)
        signal.signal(signal.SIGINT, handler)

    def _start_observer(self) -> None:
        try:
            from watchdog.events import FileSystemEventHandler
            from watchdog.observers import Observer
        except ImportError:  # pragma: no cover - watchdog is a dependency; rescans still work
            log.warning("watchdog is not installed: relying on rescans every %.0fs", self.s.rescan_s)
            return
        daemon = self

        class Handler(FileSystemEventHandler):
            def on_any_event(self, event):
                if event.event_type in ("created", "modified", "moved", "closed"):
                    daemon._mark_dirty(Path(os.fsdecode(event.src_path)))
                    dest = getattr(event, "dest_path", "")
                    if dest:
                        daemon._mark_dirty(Path(os.fsdecode(dest)))

        try:
            observer = Observer()
            observer.schedule(Handler(), str(self.s.inbox), recursive=True)
            observer.start()
            self._observer = observer
        except Exception as exc:  # noqa: BLE001 - e.g. inotify watch limit: rescans are the safety net
            log.warning("file system events unavailable (%s): relying on rescans every %.0fs", exc, self.s.rescan_s)

    def _main_loop(self) -> None:
        next_rescan = time.monotonic() + self.s.rescan_s
        next_status = 0.0
        while not self.stop.is_set():
            now = time.monotonic()
            if now >= next_rescan:
                self._mark_dirty(self.s.inbox)
                next_rescan = now + self.s.rescan_s
            self._discover()
            if now >= next_status or self._status_due.is_set():
                self._status_due.clear()
                self._write_status("running")
                next_status = now + self.s.heartbeat_s
            self.stop.wait(0.2)
        self._write_status("stopping")

    # -- discovery ----------------------------------------------------------------------------
    def _mark_dirty(self, path: Path) -> None:
        with self._dirty_lock:
            self._dirty.add(path)

    def _ignored(self, path: Path) -> str | None:
        """Why `path` is not (yet) a candidate, or None."""
        inbox = self.s.inbox
        if not is_within(path, inbox) or path == inbox:
            return "outside the inbox"
        if any(is_within(path, ex) for ex in self.excluded):
            return "output folder"
        rel = path.relative_to(inbox)
        if any(part.startswith(".") for part in rel.parts):
            return "hidden"
        if path.name.lower().endswith(TEMP_SUFFIXES):
            return "temporary name"
        return None

    def _say_once(self, why: str, path: Path, level: int = logging.INFO) -> None:
        if (why, path) not in self._said:
            self._said.add((why, path))
            log.log(level, "ignoring %s: %s", shown_path(path), why)

    def _expand(self, path: Path) -> list[Path]:
        """A dirty path -> the file paths under it to consider (walks folders, not their symlinks)."""
        try:
            st = os.lstat(path)
        except OSError:
            return [path]
        if not stat.S_ISDIR(st.st_mode):
            return [path]
        found = []
        for root, dirs, files in os.walk(path, followlinks=False):
            root_p = Path(root)
            keep = []
            for d in dirs:
                p = root_p / d
                if os.path.islink(p):
                    files.append(d)    # a symlinked folder is looked at (and refused) as an entry
                elif not d.startswith(".") and not any(is_within(p, ex) for ex in self.excluded):
                    keep.append(d)
            dirs[:] = keep
            found.extend(root_p / f for f in files)
        return found

    def _discover(self) -> None:
        with self._dirty_lock:
            dirty, self._dirty = self._dirty, set()
        for item in dirty:
            for path in self._expand(item):
                self._consider(path)
        now = time.monotonic()
        for path, (size, mtime, since) in list(self._pending.items()):
            if self.stop.is_set():
                return
            try:
                st = os.lstat(path)
            except OSError:
                self._pending.pop(path, None)
                continue
            if (st.st_size, st.st_mtime_ns) != (size, mtime):
                self._pending[path] = (st.st_size, st.st_mtime_ns, now)
            elif now - since >= self.s.quiet_s:
                self._pending.pop(path, None)
                self._admit(path, st)

    def _consider(self, path: Path) -> None:
        why = self._ignored(path)
        if why is not None:
            if why in ("temporary name",):
                self._say_once(why, path, logging.DEBUG)
            self._pending.pop(path, None)
            return
        try:
            st = os.lstat(path)
        except OSError:
            self._pending.pop(path, None)
            return
        is_link = stat.S_ISLNK(st.st_mode)
        if not is_link and not stat.S_ISREG(st.st_mode):
            return   # folders were expanded; fifos, sockets and devices are never opened
        if path.suffix.lower() not in MEDIA_SUFFIXES:
            # a symlink with a media name is refused below (and moved to failed/); other names are
            # left alone: sidecar files, folder links
            self._say_once("not a media file name" if not is_link else "symbolic link", path,
                           logging.INFO if not is_link else logging.WARNING)
            return
        if not is_link and st.st_size == 0:
            return   # a copy that has not started writing yet
        current = self.journal.current_for_path(path)
        if current is not None and (current.size, current.mtime_ns) == (st.st_size, st.st_mtime_ns):
            return   # already taken (or finished and left in place): nothing new
        old = self._pending.get(path)
        if old is None or (old[0], old[1]) != (st.st_size, st.st_mtime_ns):
            self._pending[path] = (st.st_size, st.st_mtime_ns, time.monotonic())

    def _refusal(self, path: Path, st: os.stat_result) -> str | None:
        if stat.S_ISLNK(st.st_mode):
            return f"refused: symbolic link (to {display_path(os.readlink(path))})"
        if not is_within(path.resolve(), self.s.inbox):
            return f"refused: the path resolves outside the inbox ({display_path(path.resolve())})"
        if st.st_size > self.s.max_bytes:
            return f"refused: file is {st.st_size} bytes, over the size cap of {self.s.max_bytes} bytes (--max-size)"
        return None

    def _admit(self, path: Path, st: os.stat_result) -> None:
        """A stable candidate: refuse it, skip it (already known), or queue it in the journal."""
        refusal = self._refusal(path, st)
        current = self.journal.current_for_path(path)
        if current is not None and (current.size, current.mtime_ns) == (st.st_size, st.st_mtime_ns):
            return
        if refusal:
            entry = self.journal.add(path, None, st.st_size, st.st_mtime_ns, refusal=refusal)
            log.warning("%s: %s", shown_path(path), refusal)
        else:
            try:
                sha = file_sha256(path)
                after = os.lstat(path)
            except OSError as exc:
                log.warning("cannot read %s (%s); will look again", shown_path(path), exc.strerror or exc)
                return
            if (after.st_size, after.st_mtime_ns) != (st.st_size, st.st_mtime_ns):
                self._pending[path] = (after.st_size, after.st_mtime_ns, time.monotonic())
                return   # it changed while being hashed: not complete after all
            if current is not None and current.sha256 == sha and current.state != "failed":
                self.journal.touch(current.id, st.st_size, st.st_mtime_ns)
                return   # same content re-touched; `touch` a failed file to have it retried
            entry = self.journal.add(path, sha, st.st_size, st.st_mtime_ns)
            log.info("queued %s (%s, %d bytes)", shown_path(path), sha[:12], st.st_size)
        self._status_due.set()
        self._wake.set()
        return entry

    # -- work ---------------------------------------------------------------------------------
    def _worker(self, proc: AnalysisProcess) -> None:
        while not self.stop.is_set():
            entry = self.journal.claim()
            if entry is None:
                self._wake.wait(0.5)
                self._wake.clear()
                continue
            self._status_due.set()
            try:
                self._process(entry, proc)
            except WorkerStartError as exc:
                self.journal.release(entry.id, count_attempt=False)
                self.fatal = f"the analysis process cannot be restarted: {exc}"
                self.stop.set()
            except Exception as exc:  # noqa: BLE001 - one input's trouble must not stop the daemon
                log.exception("failed on %s", shown_path(entry.path))
                if os.path.lexists(entry.path):   # not moved: leave it in place (`touch` it to retry)
                    self.journal.set_dest(entry.id, None)
                self.journal.finish(entry.id, "failed", reason=f"internal error: {type(exc).__name__}: {exc}")
            finally:
                self._status_due.set()
                self._wake.set()   # another worker may have been waiting on this content

    def _targets(self, entry: Entry) -> Entry:
        """Choose (once, persisted) the report file and the folder for annotated outputs."""
        if entry.report_path is not None:
            return entry
        with self._names_lock:
            default = self.json.out_dir / f"{output_stem(display_path(entry.path))}.json"
            report_path, out_dir, n = default, self.s.out, 0
            while os.path.lexists(report_path) or self.journal.path_reserved("report_path", report_path, entry.id):
                n += 1   # another input had this name: keep its report, use "<name>.<id>.json"
                tag = f"{entry.id}" if n == 1 else f"{entry.id}-{n}"
                report_path = default.with_name(f"{default.name[:-5]}.{tag}.json")
                out_dir = self.s.out / f"{default.name[:-5]}.{tag}"
            self.journal.set_targets(entry.id, report_path, out_dir, None)
        return self.journal.get(entry.id)

    def _destination(self, entry: Entry, ok: bool) -> Path | None:
        folder = self.s.processed if ok else self.s.failed
        if folder is None:
            return None
        with self._names_lock:
            dest = folder / entry.path.relative_to(self.s.inbox)
            n = 0
            candidate = dest
            while os.path.lexists(candidate) or self.journal.path_reserved("dest_path", candidate, entry.id):
                n += 1
                candidate = with_suffix_number(dest, n)
            self.journal.set_dest(entry.id, candidate)
        return candidate

    def _error_report(self, entry: Entry, reason: str) -> AnalysisReport:
        return AnalysisReport(input=InputInfo(path=display_path(entry.path), sha256=entry.sha256, size_bytes=entry.size),
                              verdict="error", errors=[reason], model=self.model_info, threshold=self.threshold,
                              tool_version=__version__, sampling=dataclasses.asdict(self.config.sampling))

    def _reuse(self, entry: Entry, earlier: Entry) -> AnalysisReport | None:
        try:
            report = load_report(earlier.report_path)
        except (OSError, ValueError, TypeError) as exc:
            log.warning("cannot reuse %s (%s): analysing again", shown_path(earlier.report_path), exc)
            return None
        report.input.path = display_path(entry.path)
        report.created = now_iso()
        report.outputs["reused_report"] = display_path(earlier.report_path)
        report.warnings.append(f"same content (sha256 {entry.sha256}) as {display_path(earlier.path)}, analysed earlier: "
                               f"this report reuses {display_path(earlier.report_path)}; the model was not run again")
        return report

    def _process(self, entry: Entry, proc: AnalysisProcess) -> None:
        name = display_path(entry.path)
        if entry.phase is None:
            report = self._produce(entry, proc)
            if report is None:
                return   # released (retry / abandoned) or forgotten
            entry = self.journal.get(entry.id)
            ok = not report.failed
            dest = self._destination(entry, ok)
            report.input.path = name
            if not report.input.sha256:   # the analyser failed before describing the input
                report.input.sha256, report.input.size_bytes = entry.sha256, entry.size
            # a file name that is not valid UTF-8 must not make the report unwritable
            report.errors = [display_path(e) for e in report.errors]
            report.warnings = [display_path(w) for w in report.warnings]
            report.outputs = {k: display_path(v) for k, v in report.outputs.items()}
            report.outputs["report"] = display_path(entry.report_path)
            if dest is not None:
                report.outputs["archived_input"] = display_path(dest)
            self.json.write(report, path=entry.report_path)
            self.journal.set_phase(entry.id, "reported", verdict=report.verdict, created=report.created,
                                   reason=report.errors[0] if report.errors else None)
            self.csv.write(report, entry.report_path)
            self.journal.set_phase(entry.id, "logged")
        else:   # resuming after a crash: the report exists; maybe the CSV line and the move are left
            report = load_report(entry.report_path)
            if entry.phase == "reported":
                if not self.csv.has_line_for(entry.report_path, entry.created):
                    self.csv.write(report, entry.report_path)
                self.journal.set_phase(entry.id, "logged")
        entry = self.journal.get(entry.id)
        self._finish_move(entry)
        state = "failed" if entry.verdict == "error" else "done"
        self.journal.finish(entry.id, state)
        log.info("%s %s: %s%s", state, shown_path(entry.path),
                 f"{entry.verdict} ({entry.reason})" if state == "failed" else entry.verdict,
                 f" -> {shown_path(entry.dest_path)}" if entry.dest_path else "")

    def _produce(self, entry: Entry, proc: AnalysisProcess) -> AnalysisReport | None:
        """The report for a claimed row, or None when the row was put back or dropped."""
        if entry.attempts > MAX_ATTEMPTS:
            entry = self._targets(entry)
            return self._error_report(entry, f"gave up after {MAX_ATTEMPTS} attempts: the analysis or the daemon "
                                             "died each time on this file")
        if entry.refusal:
            return self._error_report(self._targets(entry), entry.refusal)
        try:
            st = os.lstat(entry.path)
        except FileNotFoundError:
            log.warning("%s vanished before it was analysed", shown_path(entry.path))
            self.journal.forget(entry.id)
            return None
        if (st.st_size, st.st_mtime_ns) != (entry.size, entry.mtime_ns):
            self.journal.forget(entry.id)   # rewritten since it was hashed: discovery takes it again
            self._mark_dirty(entry.path)
            return None
        entry = self._targets(entry)
        earlier = self.journal.analysed_copy(entry.sha256, entry.id) if entry.sha256 else None
        if earlier is not None and earlier.report_path is not None and earlier.report_path.is_file():
            report = self._reuse(entry, earlier)
            if report is not None:
                self.journal.set_phase(entry.id, None, reused_from=earlier.id)
                return report
        alias = self._alias(entry)
        try:
            kind, payload = proc.analyze(alias or entry.path, entry.out_dir, self.s.timeout_s, self.stop,
                                        self.s.stop_grace_s, self.hurry)
        finally:
            if alias is not None:
                with contextlib.suppress(OSError):
                    os.unlink(alias)
        if kind == "report":
            if payload.input.sha256 and payload.input.sha256 != entry.sha256:
                log.warning("%s changed during analysis; taking it again", shown_path(entry.path))
                self.journal.forget(entry.id)
                self._mark_dirty(entry.path)
                return None
            return payload
        if kind == "error":
            return self._error_report(entry, payload)
        if kind == "abandoned":
            log.info("abandoned %s; it will be analysed again on restart", shown_path(entry.path))
            self.journal.release(entry.id, count_attempt=False)
            return None
        # the child was killed (timeout) or died: a fresh one for the next file
        if not self.stop.is_set():
            proc.restart()
        if kind == "timeout":
            return self._error_report(entry, f"analysis timed out after {payload:g} s (--timeout)")
        how = f"signal {-payload}" if isinstance(payload, int) and payload < 0 else f"exit code {payload}"
        if entry.attempts < MAX_ATTEMPTS and not self.stop.is_set():
            log.warning("the analysis process died on %s (%s); retrying", shown_path(entry.path), how)
            self.journal.release(entry.id, count_attempt=True)
            return None
        if self.stop.is_set():
            self.journal.release(entry.id, count_attempt=True)
            return None
        return self._error_report(entry, f"the analysis process died {entry.attempts} times on this file ({how})")

    def _alias(self, entry: Entry) -> Path | None:
        """A file name that is not valid UTF-8 cannot be handed to the decoders: analyse it through
        a symlink with a plain name in OUT/.aliases (removed afterwards; the input is not touched)."""
        try:
            os.fsencode(entry.path).decode("utf-8")
            return None
        except UnicodeDecodeError:
            pass
        alias = self.s.out / ".aliases" / f"input-{entry.id}{entry.path.suffix.lower()}"
        alias.parent.mkdir(parents=True, exist_ok=True)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(alias)
        os.symlink(entry.path, alias)
        return alias

    def _finish_move(self, entry: Entry) -> None:
        """Move the input to its destination; safe to repeat after a crash at any point."""
        src, dest = entry.path, entry.dest_path
        if dest is None:
            return
        if not os.path.lexists(src):
            if not os.path.lexists(dest):
                log.warning("%s is gone; nothing to move", shown_path(src))
                self.journal.set_dest(entry.id, None)
            return   # moved before a crash
        if os.path.lexists(dest):
            if same_file_content(src, dest, entry.sha256):
                os.unlink(src)   # a cross-device move finished its copy before a crash: drop the source copy
                return
            dest = self._destination(entry, entry.verdict != "error")
        try:
            move_file(src, dest, str(entry.id))
        except OSError as exc:
            log.error("cannot move %s to %s: %s; it stays in place", shown_path(src), shown_path(dest), exc)
            self.journal.set_dest(entry.id, None)

    # -- status -------------------------------------------------------------------------------
    def _write_status(self, state: str) -> None:
        try:
            atomic_write_text(self.s.out / STATUS_NAME, json.dumps(self.status(state), indent=2, ensure_ascii=False) + "\n")
        except Exception as exc:  # noqa: BLE001 - a full disk must not stop the daemon; the journal is the truth
            log.warning("cannot write %s: %s", STATUS_NAME, exc)

    def status(self, state: str) -> dict:
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
            "counts": j.counts() if j else {}, "arriving": len(self._pending),
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


# ---------------------------------------------------------------------------------------------
# the click command (built on first access: pipeline.cli imports this module while it is being
# imported itself, and the analysis child imports this module without the CLI)
# ---------------------------------------------------------------------------------------------
def _build_command():
    import click

    from pipeline.cli import analysis_options, config_from_options, fail

    @click.command()
    @click.argument("inbox", required=False, type=click.Path(file_okay=False))
    @click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False),
                  help="Reports, results.csv, the journal and watch-status.json go here.")
    @click.option("--processed", type=click.Path(file_okay=False),
                  help="Move finished inputs here (default: INBOX/processed).")
    @click.option("--keep", is_flag=True, help="Leave finished inputs where they are instead of moving them.")
    @click.option("--failed", type=click.Path(file_okay=False),
                  help="Move inputs that could not be analysed here (default: INBOX/failed).")
    @click.option("--render/--no-render", default=None,
                  help="Annotated video and keyframe images per input (default: render.enabled; auto means on).")
    @click.option("--render-scale", type=float, help="Size of the annotated video relative to the input.")
    @click.option("--workers", type=click.IntRange(1, 64), default=1, show_default=True,
                  help="Analysis processes, each with its own model.")
    @click.option("--timeout", type=click.FloatRange(min=0, min_open=True), default=600.0, show_default=True,
                  help="Seconds one file may take before it is failed and its process restarted.")
    @click.option("--quiet-time", type=click.FloatRange(min=0), default=5.0, show_default=True,
                  help="Seconds a file's size and mtime must stay unchanged before it is taken.")
    @click.option("--rescan", type=click.FloatRange(min=0.1), default=30.0, show_default=True,
                  help="Seconds between full rescans (the safety net for missed events).")
    @click.option("--max-size", help="Refuse larger files, e.g. 2G (default: limits.max_file_bytes).")
    @click.option("--stop-grace", type=click.FloatRange(min=0), default=30.0, show_default=True,
                  help="On SIGTERM/SIGINT, seconds to let the current file finish before abandoning it.")
    @click.option("--status", "show_status", is_flag=True, help="Print what the daemon using --out is doing, and exit.")
    @click.option("--json", "as_json", is_flag=True, help="With --status: print JSON.")
    @analysis_options
    def watch(inbox, out_dir, processed, keep, failed, render, render_scale, workers, timeout, quiet_time, rescan,
              max_size, stop_grace, show_status, as_json, **options):
        """Watch INBOX and analyse each media file that lands there, exactly once.

        Each input gets OUT/<name>.json and a line in OUT/results.csv, then moves to processed/
        (or stays, with --keep); failures get an error report and move to failed/. A journal in
        OUT makes restarts (even after kill -9) resume without repeating finished work. SIGTERM
        or Ctrl-C stops cleanly (exit 0). With --status: exit 0 if a daemon is running, else 1.
        """
        out = Path(out_dir)
        if show_status:
            st = read_status(out)
            click.echo(json.dumps(st, indent=2, ensure_ascii=False) if as_json else format_status(st))
            sys.exit(0 if st["alive"] else 1)
        if inbox is None:
            fail("give the INBOX folder to watch (or --status)")
        inbox_p = Path(inbox)
        if not inbox_p.is_dir():
            fail(f"inbox {inbox} is not a folder")
        if keep and processed:
            fail("use --processed or --keep, not both")
        inbox_p = inbox_p.resolve()
        out = out.resolve()
        processed_p = None if keep else Path(processed or inbox_p / "processed").resolve()
        failed_p = Path(failed or inbox_p / "failed").resolve()
        for label, p in (("--out", out), ("--processed", processed_p), ("--failed", failed_p)):
            if p is not None and (p == inbox_p or is_within(inbox_p, p)):
                fail(f"{label} must not be the inbox or contain it")
        render_mode = None if render is None else ("on" if render else "off")
        config = config_from_options(**options, **{"render.enabled": render_mode, "render.scale": render_scale})
        try:
            max_bytes = parse_size(max_size) if max_size else config.limits.max_file_bytes
        except ValueError:
            fail(f"--max-size must look like 500M or 2G, got {max_size!r}")
        settings = WatchSettings(inbox=inbox_p, out=out, processed=processed_p, failed=failed_p,
                                 render=config.render.enabled != "off", workers=workers, timeout_s=timeout,
                                 quiet_s=quiet_time, rescan_s=rescan, max_bytes=max_bytes, stop_grace_s=stop_grace)
        debug = logging.getLogger().isEnabledFor(logging.DEBUG)
        if not debug:
            log.setLevel(logging.INFO)
        try:
            code = WatchDaemon(settings, config, debug=debug).run()
        except WorkerStartError as exc:
            fail(str(exc))
        sys.exit(code)

    return watch


_command = None


def __getattr__(name: str):
    global _command
    if name == "watch":
        if _command is None:
            _command = _build_command()
        return _command
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
