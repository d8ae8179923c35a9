"""Watch daemon, work: one journal row from claim to move.

    claim -> report (reused, or from the analysis process) -> JSON report -> CSV line -> move -> done/failed

Claiming, analysing and choosing names are this module's; the steps from the report on are the
lifecycle every job system shares (`pipeline.core.lifecycle`), with the move as its last step before
the finish. Each step is committed in the journal before the next starts, so after a crash the row
resumes at the first step not recorded: each input gets exactly one report, one CSV line and one move.
A `Worker` runs on its own thread with its own `AnalysisProcess`.
"""
from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from deepfake_detect.pipeline import __version__
from deepfake_detect.pipeline.core.analysis_process import AnalysisProcess, WorkerStartError
from deepfake_detect.pipeline.core.journal import Entry, Journal, display_path
from deepfake_detect.pipeline.core.lifecycle import EntryRecorder, JobLifecycle, JobStep
from deepfake_detect.pipeline.core.report import AnalysisReport, InputInfo, ModelInfo, load_report, now_iso
from deepfake_detect.pipeline.core.writers import RESULTS_CSV, CsvLogWriter, JsonReportWriter, claim_output_paths
from deepfake_detect.pipeline.watch.file_moves import move_file, same_file_content, shown_path, with_suffix_number

if TYPE_CHECKING:
    from deepfake_detect.pipeline.core.config import AnalysisConfig
    from deepfake_detect.pipeline.watch.settings import WatchSettings

# the daemon's one logger, so that its lines keep their name and the level `watch` sets on it
log = logging.getLogger("deepfake_detect.pipeline.watch.daemon")

MAX_ATTEMPTS = 3          # claims of one input that ended in a crash (of the worker or the daemon)


def _no_retake(path: Path) -> None:
    pass


@dataclass
class WorkContext:
    """What the workers share with each other and with the daemon."""
    settings: WatchSettings
    config: AnalysisConfig
    journal: Journal
    model_info: ModelInfo | None = None
    threshold: float | None = None
    stop: threading.Event = field(default_factory=threading.Event)
    hurry: threading.Event = field(default_factory=threading.Event)        # a second signal: abandon now
    wake: threading.Event = field(default_factory=threading.Event)         # rows queued or content freed
    status_due: threading.Event = field(default_factory=threading.Event)   # rewrite the status file soon
    retake: Callable[[Path], None] = _no_retake    # hand a path back to discovery
    fatal: str | None = None
    # one lock for choosing report names and move destinations, so two workers never pick the same
    names_lock: threading.Lock = field(default_factory=threading.Lock)
    csv: CsvLogWriter = field(init=False)
    json: JsonReportWriter = field(init=False)

    def __post_init__(self) -> None:
        self.csv = CsvLogWriter(self.settings.out / RESULTS_CSV)
        self.json = JsonReportWriter(self.settings.out)

    def give_up(self, reason: str) -> None:
        """The daemon cannot go on (the model no longer loads, the journal failed): stop with `reason`."""
        if self.fatal is None:
            self.fatal = reason
        self.stop.set()
        self.wake.set()


class Worker:
    def __init__(self, ctx: WorkContext, proc: AnalysisProcess | None) -> None:
        self.ctx = ctx
        self.proc = proc    # None only where no analysis is needed (tests of the finishing steps)

    @property
    def journal(self) -> Journal:
        return self.ctx.journal

    def run(self) -> None:
        """Thread body: claim and process queued rows until the daemon stops."""
        ctx = self.ctx
        while not ctx.stop.is_set():
            entry = self.journal.claim()
            if entry is None:
                ctx.wake.wait(0.5)
                ctx.wake.clear()
                continue
            ctx.status_due.set()
            try:
                self.process(entry)
            except WorkerStartError as exc:
                self.journal.release(entry.id, count_attempt=False)
                ctx.give_up(f"the analysis process cannot be restarted: {exc}")
            except Exception as exc:  # noqa: BLE001 - one input's trouble must not stop the daemon
                log.exception("failed on %s", shown_path(entry.path))
                if os.path.lexists(entry.path):   # not moved: leave it in place (`touch` it to retry)
                    self.journal.set_dest(entry.id, None)
                self.journal.finish(entry.id, "failed", reason=f"internal error: {type(exc).__name__}: {exc}")
            finally:
                ctx.status_due.set()
                ctx.wake.set()   # another worker may have been waiting on this content

    @property
    def lifecycle(self) -> JobLifecycle:
        """Report, CSV line, move, finish (core.lifecycle), recorded in the daemon's journal."""
        config = self.ctx.config
        return JobLifecycle(EntryRecorder(self.journal), self.ctx.csv, before_finish=self._move_input,
                            html=config if config.render.html else None)

    def _reload(self, entry: Entry) -> Entry:
        fresh = self.journal.get(entry.id)
        assert fresh is not None, f"journal row {entry.id} vanished while running"   # only queued rows are forgotten
        return fresh

    # -- the steps ------------------------------------------------------------------------------
    def process(self, entry: Entry) -> None:
        """Take a claimed row as far as it goes: to done/failed, or back to the queue."""
        if entry.phase is None:
            report = self._produce(entry)
            if report is None:
                return   # released (retry / abandoned) or forgotten
            entry = self._reload(entry)
            dest = self.destination(entry, ok=not report.failed)
            report.input.path = str(entry.path)
            if not report.input.sha256:   # the analyser failed before describing the input
                report.input.sha256, report.input.size_bytes = entry.sha256, entry.size
            if dest is not None:
                report.outputs["archived_input"] = str(dest)
            self.lifecycle.complete(JobStep.of(entry), report)
        else:   # resuming after a crash: the report exists; maybe the CSV line and the move are left
            self.lifecycle.resume(JobStep.of(entry))
        entry = self._reload(entry)
        state = "failed" if entry.verdict == "error" else "done"
        log.info("%s %s: %s%s", state, shown_path(entry.path),
                 f"{entry.verdict} ({entry.reason})" if state == "failed" else entry.verdict,
                 f" -> {shown_path(entry.dest_path)}" if entry.dest_path else "")

    def targets(self, entry: Entry) -> Entry:
        """Choose (once, persisted) the report file and the folder for annotated outputs."""
        if entry.report_path is not None:
            return entry
        with self.ctx.names_lock:
            # another input had this name (now or in an earlier run): keep its report, use "<name>.<id>.json"
            report_path, out_dir = claim_output_paths(
                self.ctx.json.out_dir, display_path(entry.path), str(entry.id),
                lambda p: os.path.lexists(p) or self.journal.path_reserved("report_path", p, entry.id))
            self.journal.set_targets(entry.id, report_path, out_dir, None)
        return self._reload(entry)

    def destination(self, entry: Entry, ok: bool) -> Path | None:
        """Choose (persisted) where the input moves: processed/ or failed/, a number on a clash."""
        s = self.ctx.settings
        folder = s.processed if ok else s.failed
        if folder is None:
            return None
        with self.ctx.names_lock:
            dest = folder / entry.path.relative_to(s.inbox)
            n = 0
            candidate = dest
            while os.path.lexists(candidate) or self.journal.path_reserved("dest_path", candidate, entry.id):
                n += 1
                candidate = with_suffix_number(dest, n)
            self.journal.set_dest(entry.id, candidate)
        return candidate

    def _produce(self, entry: Entry) -> AnalysisReport | None:
        """The report for a claimed row, or None when the row was put back or dropped."""
        ctx = self.ctx
        if entry.attempts > MAX_ATTEMPTS:
            return self._error_report(self.targets(entry), f"gave up after {MAX_ATTEMPTS} attempts: the analysis "
                                                           "or the daemon died each time on this file")
        if entry.refusal:
            return self._error_report(self.targets(entry), entry.refusal)
        try:
            st = os.lstat(entry.path)
        except FileNotFoundError:
            log.warning("%s vanished before it was analysed", shown_path(entry.path))
            self.journal.forget(entry.id)
            return None
        if (st.st_size, st.st_mtime_ns) != (entry.size, entry.mtime_ns):
            self.journal.forget(entry.id)   # rewritten since it was hashed: discovery takes it again
            ctx.retake(entry.path)
            return None
        entry = self.targets(entry)
        earlier = self.journal.analysed_copy(entry.sha256, entry.id) if entry.sha256 else None
        if earlier is not None and earlier.report_path is not None and earlier.report_path.is_file():
            report = self._reuse(entry, earlier)
            if report is not None:
                self.journal.set_phase(entry.id, None, reused_from=earlier.id)
                return report
        assert self.proc is not None, "analysis needs an analysis process"
        alias = self._alias(entry)
        try:
            kind, payload = self.proc.analyze(alias or entry.path, entry.out_dir, ctx.settings.timeout_s, ctx.stop,
                                              ctx.settings.stop_grace_s, ctx.hurry)
        finally:
            if alias is not None:
                with contextlib.suppress(OSError):
                    os.unlink(alias)
        if kind == "report":
            analysed: AnalysisReport = payload
            if analysed.input.sha256 and analysed.input.sha256 != entry.sha256:
                log.warning("%s changed during analysis; taking it again", shown_path(entry.path))
                self.journal.forget(entry.id)
                ctx.retake(entry.path)
                return None
            return analysed
        if kind == "error":
            return self._error_report(entry, payload)
        if kind == "abandoned":
            log.info("abandoned %s; it will be analysed again on restart", shown_path(entry.path))
            self.journal.release(entry.id, count_attempt=False)
            return None
        # the child was killed (timeout) or died: a fresh one for the next file
        self._restart_process()
        if kind == "timeout":
            return self._error_report(entry, f"analysis timed out after {payload:g} s (--timeout)")
        how = f"signal {-payload}" if isinstance(payload, int) and payload < 0 else f"exit code {payload}"
        if entry.attempts < MAX_ATTEMPTS and not ctx.stop.is_set():
            log.warning("the analysis process died on %s (%s); retrying", shown_path(entry.path), how)
            self.journal.release(entry.id, count_attempt=True)
            return None
        if ctx.stop.is_set():
            self.journal.release(entry.id, count_attempt=True)
            return None
        return self._error_report(entry, f"the analysis process died {entry.attempts} times on this file ({how})")

    def _restart_process(self) -> None:
        assert self.proc is not None
        if self.ctx.stop.is_set():
            return   # a fresh child would only be closed again, after loading the model for nothing
        try:
            self.proc.restart(stop=self.ctx.stop)
        except WorkerStartError:
            if not self.ctx.stop.is_set():
                raise   # the model no longer loads: the daemon cannot go on
            # stopped during the model load: this file's result still stands, the next start resumes

    def _error_report(self, entry: Entry, reason: str) -> AnalysisReport:
        return AnalysisReport(input=InputInfo(path=display_path(entry.path), sha256=entry.sha256, size_bytes=entry.size),
                              verdict="error", errors=[reason], model=self.ctx.model_info, threshold=self.ctx.threshold,
                              tool_version=__version__, sampling=dataclasses.asdict(self.ctx.config.sampling))

    def _reuse(self, entry: Entry, earlier: Entry) -> AnalysisReport | None:
        assert earlier.report_path is not None
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

    def _alias(self, entry: Entry) -> Path | None:
        """A file name that is not valid UTF-8 cannot be handed to the decoders: analyse it through
        a symlink with a plain name in OUT/.aliases (removed afterwards; the input is not touched)."""
        try:
            os.fsencode(entry.path).decode("utf-8")
            return None
        except UnicodeDecodeError:
            pass
        alias = self.ctx.settings.out / ".aliases" / f"input-{entry.id}{entry.path.suffix.lower()}"
        alias.parent.mkdir(parents=True, exist_ok=True)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(alias)
        os.symlink(entry.path, alias)
        return alias

    def _move_input(self, step: JobStep, report: AnalysisReport) -> None:
        """Move the input to its destination; safe to repeat after a crash at any point."""
        entry = self.journal.get(int(step.key))
        assert entry is not None   # a running row is never forgotten
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
            dest = self.destination(entry, entry.verdict != "error")
            if dest is None:
                return
        try:
            move_file(src, dest, str(entry.id))
        except OSError as exc:
            log.error("cannot move %s to %s: %s; it stays in place", shown_path(src), shown_path(dest), exc)
            self.journal.set_dest(entry.id, None)
