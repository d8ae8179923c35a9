"""The server's work: analysis processes fed from the job journal and the synchronous predict queue.

    upload -> DATA/jobs/<id>/input<suffix> -> journal row (queued) -> a worker claims it (running)
           -> its AnalysisProcess analyses it (progress into the journal)
           -> DATA/jobs/<id>/report.json, outputs in DATA/jobs/<id>/files/ -> done | failed

Each worker is a thread that owns one `AnalysisProcess` (the watch daemon's supervised child: the
model loads once per process; a crash or a hang of the decoder takes down only that process). A
crash or a timeout fails that job with the reason and restarts the process; the server goes on.

Order of work: /v1/predict files first, then queued jobs oldest first. A predict client holds its
HTTP connection open and its files are capped (10 files of at most 60 s, never rendered), while a
job's client polls; so predicts go ahead of waiting jobs, never ahead of the running ones.

Exactly once: the report is written (atomically) before the journal records the finish, and the
finish is one conditional UPDATE. A restart re-queues running jobs; one whose report was written
before the crash is finished from that report, without analysing it again. Finished jobs and
their files are deleted after the retention period by a sweep every `sweep_every_s` and at start.
"""
from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import re
import shutil
import threading
import time
from collections import deque
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, TextIO

from annotated_types import Ge, Gt

from deepfake_detect.pipeline import __version__
from deepfake_detect.pipeline.core.analysis_process import AnalysisProcess, WorkerStartError
from deepfake_detect.pipeline.core.config import with_overrides
from deepfake_detect.pipeline.core.folder_lock import FolderBusyError, hold_folder
from deepfake_detect.pipeline.core.lifecycle import JobLifecycle, JobStep
from deepfake_detect.pipeline.core.report import AnalysisReport, InputInfo, ModelInfo
from deepfake_detect.pipeline.core.threads import thread_policy
from deepfake_detect.pipeline.server.journal import JOURNAL_NAME, Job, JobJournal

if TYPE_CHECKING:
    from deepfake_detect.pipeline.core.config import AnalysisConfig

log = logging.getLogger("deepfake_detect.pipeline.server")

REPORT_NAME = "report.json"
FILES_DIR = "files"
LOCK_NAME = ".serve.lock"
JOB_ID = re.compile(r"[0-9a-f]{32}")    # uuid4().hex
RESTART_PAUSE_S = 30.0    # between attempts to reload a model that failed to load


class QueueFull(Exception):
    def __init__(self, retry_after_s: int) -> None:
        super().__init__(f"the queue is full; retry in {retry_after_s} s")
        self.retry_after_s = retry_after_s


@dataclass(frozen=True)
class ServeSettings:
    """What `deepfake-detect serve` was told, besides the analysis settings."""
    data: Path
    workers: Annotated[int, Ge(0)] = 1   # 0: jobs are accepted but never run (tests of the HTTP layer)
    max_upload_bytes: Annotated[int, Ge(1)] = 500 * 1024**2
    retention_s: Annotated[float, Gt(0)] = 7 * 86400.0
    queue_size: Annotated[int, Ge(1)] = 100   # queued jobs (and, apart, waiting predict files) at most
    job_timeout_s: Annotated[float, Gt(0)] = 600.0
    render: bool = True               # a job's default
    api_key_hashes: frozenset[str] = frozenset()   # sha256 hex of each key; empty: no keys needed
    cors_origins: tuple[str, ...] = ()
    predict_max_files: Annotated[int, Ge(1)] = 10
    predict_max_duration_s: Annotated[float, Gt(0)] = 60.0
    sweep_every_s: Annotated[float, Gt(0)] = 600.0

    @property
    def jobs_dir(self) -> Path:
        return self.data / "jobs"

    @property
    def predict_dir(self) -> Path:
        return self.data / "predict"


def job_config(base: AnalysisConfig, options: dict[str, Any]) -> AnalysisConfig:
    """The settings of one job: the server's, with the job's sampling, threshold and rendering."""
    changes: dict[str, Any] = {"render.enabled": "on" if options.get("render") else "off"}
    if options.get("sampling"):
        changes["sampling"] = options["sampling"]
    if options.get("threshold") is not None:
        changes["aggregate.threshold"] = float(options["threshold"])
    return with_overrides(base, changes)


def predict_config(base: AnalysisConfig, max_duration_s: float) -> AnalysisConfig:
    """/v1/predict: no rendering, and videos capped at `max_duration_s` (the decoder's own cap
    refuses a longer one with its one-line reason, before any frame is decoded)."""
    return with_overrides(base, {"limits.max_duration_s": min(base.limits.max_duration_s, max_duration_s),
                                 "render.enabled": "off"})


@dataclass
class PredictTask:
    path: Path
    filename: str
    config: AnalysisConfig
    future: Future[AnalysisReport] = field(default_factory=Future)


@dataclass
class _Slot:
    """One worker: its analysis process and whether that process has its model loaded."""
    proc: AnalysisProcess
    ready: bool = False


class JobRunner:
    def __init__(self, settings: ServeSettings, config: AnalysisConfig, debug: bool = False) -> None:
        self.settings, self.config, self.debug = settings, config, debug
        self.journal: JobJournal | None = None
        threads = thread_policy(concurrent=max(1, settings.workers), threads=config.threads).compute
        self.threads_per_worker = threads
        self.slots = [_Slot(AnalysisProcess(config, settings.render, threads, f"worker-{i + 1}", debug))
                      for i in range(settings.workers)]
        self.model_info: ModelInfo | None = None
        self.threshold: float | None = None
        self.backend: str | None = None
        self.stop = threading.Event()
        self.wake = threading.Event()
        self._lock = threading.Lock()      # the predict queue and the cancel events
        self._predicts: deque[PredictTask] = deque()
        self._cancels: dict[str, threading.Event] = {}   # running job id -> set to abandon it
        self._threads: list[threading.Thread] = []
        self._lock_file: TextIO | None = None
        self._started = False
        self._closed = False

    # -- life ----------------------------------------------------------------------------------
    def start(self) -> None:
        """Take DATA, recover the journal, sweep, load the models (WorkerStartError when they do not
        load) and start the workers. Idempotent: the command starts it early, to fail before
        serving; the app's lifespan starts it when nothing did."""
        if self._started:
            return
        s = self.settings
        s.data.mkdir(parents=True, exist_ok=True)
        self._take_lock()
        journal = self.journal = JobJournal(s.data / JOURNAL_NAME)
        for job in journal.recover():
            log.warning("resuming job %s (%s), interrupted while running", job.id, job.filename)
        self.sweep(orphans=True)
        try:
            for slot in self.slots:
                slot.proc.start()
            for slot in self.slots:
                slot.proc.wait_ready()
                slot.ready = True
        except WorkerStartError:
            for slot in self.slots:
                slot.proc.kill()
            raise
        if self.slots:
            first = self.slots[0].proc
            self.model_info, self.threshold, self.backend = first.model_info, first.threshold, first.backend
        self._threads = [threading.Thread(target=self._work, args=(slot,), name=slot.proc.name, daemon=True)
                         for slot in self.slots]
        self._threads.append(threading.Thread(target=self._sweep_loop, name="retention", daemon=True))
        for t in self._threads:
            t.start()
        self._started = True

    def close(self, grace_s: float = 15.0) -> None:
        """Stop: running jobs are abandoned (queued again, so the next start runs them), waiting
        predicts get an error report, the processes are stopped, the journal closed. Idempotent."""
        if self._closed:
            return
        self._closed = True
        self.stop.set()
        with self._lock:
            for cancel in self._cancels.values():
                cancel.set()
            waiting, self._predicts = list(self._predicts), deque()
        for task in waiting:
            task.future.set_result(self.error_report(task.filename, task.config, "the server stopped before "
                                                                                  "this file was analysed"))
        self.wake.set()
        deadline = time.monotonic() + grace_s
        for t in self._threads:
            t.join(max(0.0, deadline - time.monotonic()))
        for slot in self.slots:
            slot.proc.close()
        if self.journal is not None and not any(t.is_alive() for t in self._threads):
            self.journal.close()
        if self._lock_file is not None:
            self._lock_file.close()

    def _take_lock(self) -> None:
        """One server per DATA: two would claim the same jobs (core.folder_lock)."""
        try:
            self._lock_file = hold_folder(self.settings.data, LOCK_NAME, f"another server is using {self.settings.data}")
        except FolderBusyError as exc:
            raise WorkerStartError(str(exc)) from None

    @property
    def workers_ready(self) -> int:
        return sum(slot.ready for slot in self.slots)

    # -- what the API calls --------------------------------------------------------------------
    def _journal(self) -> JobJournal:
        assert self.journal is not None, "the runner is not started"
        return self.journal

    def job_dir(self, job_id: str) -> Path:
        if not JOB_ID.fullmatch(job_id):   # ids are made by the server: a client's string never becomes a path
            raise ValueError(f"not a job id: {job_id!r}")
        return self.settings.jobs_dir / job_id

    def retry_after_s(self) -> int:
        """Seconds until a queue slot is likely free: about one job's run time per worker."""
        mean = self._journal().mean_run_seconds() or 10.0
        return max(1, min(120, round(mean / max(1, self.settings.workers))))

    def check_room(self) -> None:
        """Refuse early (QueueFull) when no job could be queued now: before the upload is read."""
        if self._journal().queued_count() >= self.settings.queue_size:
            raise QueueFull(self.retry_after_s())

    def enqueue(self, job_id: str, filename: str, input_name: str, options: dict[str, Any]) -> None:
        if not self._journal().add(job_id, filename, input_name, options, self.settings.queue_size):
            raise QueueFull(self.retry_after_s())
        self.wake.set()

    def predict(self, tasks: list[PredictTask]) -> None:
        """Queue files for /v1/predict; each task's future gets its report."""
        with self._lock:
            if len(self._predicts) + len(tasks) > self.settings.queue_size:
                raise QueueFull(self.retry_after_s())
            self._predicts.extend(tasks)
        self.wake.set()

    def delete(self, job_id: str) -> Job | None:
        """Forget a job and remove its files; a running one is abandoned (its process killed and
        restarted). Returns the job as it was, or None for an unknown id."""
        job = self._journal().delete(job_id)
        if job is None:
            return None
        with self._lock:
            cancel = self._cancels.get(job_id)
        if cancel is not None:
            cancel.set()
        shutil.rmtree(self.job_dir(job_id), ignore_errors=True)
        return job

    # -- retention -----------------------------------------------------------------------------
    def sweep(self, orphans: bool = False) -> int:
        """Delete finished jobs older than the retention period, with their files; with `orphans`
        (at start, when no upload is in flight) also folders no job owns (an upload or a delete
        cut short by a crash) and leftover predict files. Returns the jobs deleted."""
        s, journal = self.settings, self._journal()
        expired = journal.finished_before(time.time() - s.retention_s)
        for job in expired:
            self.delete(job.id)
        if orphans:
            known = journal.ids()
            if s.jobs_dir.is_dir():
                for folder in s.jobs_dir.iterdir():
                    if folder.name not in known:
                        shutil.rmtree(folder, ignore_errors=True)
            shutil.rmtree(s.predict_dir, ignore_errors=True)
        if expired:
            log.info("retention: deleted %d finished job%s", len(expired), "" if len(expired) == 1 else "s")
        return len(expired)

    def _sweep_loop(self) -> None:
        while not self.stop.wait(self.settings.sweep_every_s):
            try:
                self.sweep()
            except Exception:  # noqa: BLE001 - a failed sweep is tried again at the next one
                log.exception("retention sweep failed")

    # -- the workers ---------------------------------------------------------------------------
    def _take(self) -> PredictTask | Job | None:
        with self._lock:
            if self._predicts:
                return self._predicts.popleft()
        return self._journal().claim()

    def _work(self, slot: _Slot) -> None:
        """Thread body: take predicts and jobs until the server stops."""
        while not self.stop.is_set():
            if not slot.ready and not self._restart(slot):
                self.stop.wait(RESTART_PAUSE_S)
                continue
            task = self._take()
            if task is None:
                self.wake.wait(0.5)
                self.wake.clear()
                continue
            try:
                if isinstance(task, PredictTask):
                    self._run_predict(slot, task)
                else:
                    self._run_job(slot, task)
            except Exception as exc:  # noqa: BLE001 - one input's trouble must not stop the server
                log.exception("internal error on %s", task.filename)
                reason = f"internal error: {type(exc).__name__}: {exc}"
                report = self.error_report(task.filename, self.config, reason)
                if isinstance(task, PredictTask):
                    if not task.future.done():
                        task.future.set_result(report)
                elif self._journal().get(task.id) is not None:
                    try:
                        self._finish_job(task, report)
                    except Exception:  # noqa: BLE001 - e.g. a full disk: the journal still says why
                        self._journal().finish(task.id, "failed", "error", reason)

    def _restart(self, slot: _Slot) -> bool:
        slot.ready = False
        if self.stop.is_set():
            return False
        try:
            slot.proc.restart(stop=self.stop)
        except WorkerStartError as exc:
            if not self.stop.is_set():
                log.error("%s: the analysis process cannot be restarted (%s); trying again in %g s",
                          slot.proc.name, exc, RESTART_PAUSE_S)
            return False
        slot.ready = True
        return True

    def _analyse(self, slot: _Slot, key: str, path: Path, out_dir: Path | None, config: AnalysisConfig,
                 progress: Any = None) -> tuple[str, Any]:
        """One input through the slot's process; `key` names its cancel event (a job id)."""
        cancel = threading.Event()
        with self._lock:
            if self.stop.is_set():
                return "abandoned", None
            self._cancels[key] = cancel
        try:
            # grace 0 and hurry = cancel: a cancelled input is abandoned at once
            kind, payload = slot.proc.analyze(path, out_dir, self.settings.job_timeout_s, cancel, 0.0, cancel,
                                              progress=progress, config=config)
        finally:
            with self._lock:
                self._cancels.pop(key, None)
        if kind in ("timeout", "crashed", "abandoned"):
            self._restart(slot)   # the process was killed or died: a fresh one for the next input
        return kind, payload

    def _outcome(self, kind: str, payload: Any, filename: str, config: AnalysisConfig) -> AnalysisReport:
        if kind == "report":
            report: AnalysisReport = payload
            return report
        if kind == "timeout":
            reason = f"analysis timed out after {payload:g} s (--job-timeout)"
        elif kind == "crashed":
            how = f"signal {-payload}" if isinstance(payload, int) and payload < 0 else f"exit code {payload}"
            reason = f"the analysis process died on this file ({how})"
        else:
            reason = str(payload)
        return self.error_report(filename, config, reason)

    def error_report(self, filename: str, config: AnalysisConfig, reason: str) -> AnalysisReport:
        return AnalysisReport(input=InputInfo(path=filename), verdict="error", errors=[reason], model=self.model_info,
                              threshold=self.threshold if config.aggregate.threshold is None else config.aggregate.threshold,
                              tool_version=__version__, sampling=dataclasses.asdict(config.sampling))

    def _run_predict(self, slot: _Slot, task: PredictTask) -> None:
        kind, payload = self._analyse(slot, f"predict-{id(task)}", task.path, None, task.config)
        if kind == "abandoned":
            payload = "the server stopped before this file was analysed"
        report = self._outcome(kind, payload, task.filename, task.config)
        report.input.path = task.filename
        task.future.set_result(report)

    def _run_job(self, slot: _Slot, job: Job) -> None:
        folder = self.job_dir(job.id)
        if (folder / REPORT_NAME).is_file():   # written before a crash or a stop: finish from it, not again
            self._finish_job(job)
            return
        journal, config = self._journal(), job_config(self.config, job.options)
        out_dir = folder / FILES_DIR
        shutil.rmtree(out_dir, ignore_errors=True)   # an interrupted attempt's partial outputs
        kind, payload = self._analyse(slot, job.id, folder / job.input_name, out_dir, config,
                                      progress=lambda done, total: journal.progress(job.id, done, total))
        if kind == "abandoned":
            if self.stop.is_set():
                journal.release(job.id)   # run again by the next start
                log.info("abandoned job %s; the next start runs it again", job.id)
            else:
                shutil.rmtree(folder, ignore_errors=True)   # deleted while running
            return
        report = self._outcome(kind, payload, job.filename, config)
        report.input.path = job.filename
        _flatten_outputs(report, out_dir)
        self._finish_job(job, report)

    def _finish_job(self, job: Job, report: AnalysisReport | None = None) -> None:
        """Report file, then the journal's finish (core.lifecycle): a crash between the two finishes the
        job from the report at the next start. A report on disk already is the one that counts."""
        folder = self.job_dir(job.id)
        on_disk = (folder / REPORT_NAME).is_file()   # written before a crash, or before an internal error
        step = JobStep(job.id, folder / REPORT_NAME, phase="reported" if on_disk else None)
        lifecycle = JobLifecycle(_JobRecorder(self._journal()), csv=None, report_link=lambda path: path.name)
        if on_disk or report is None:
            finished = lifecycle.resume(step)
        else:
            finished = lifecycle.complete(step, report)
        if not finished.kept:
            shutil.rmtree(folder, ignore_errors=True)   # deleted meanwhile: drop what this worker wrote
            return
        with contextlib.suppress(OSError):
            os.unlink(folder / job.input_name)   # analysed: the report has its sha256; no need to keep it
        report = finished.report
        log.info("%s job %s (%s): %s", "failed" if report.failed else "done", job.id, job.filename,
                 report.errors[0] if report.errors else report.verdict)


class _JobRecorder:
    """A job's steps in the server's journal: the report file itself records "reported" (there is no
    CSV log), and the finish is the journal's one conditional UPDATE."""

    def __init__(self, journal: JobJournal) -> None:
        self.journal = journal

    def reported(self, step: JobStep, report: AnalysisReport) -> None:
        pass

    def logged(self, step: JobStep) -> None:
        pass

    def finish(self, step: JobStep, report: AnalysisReport) -> bool:
        return self.journal.finish(str(step.key), "failed" if report.failed else "done", report.verdict,
                                   report.errors[0] if report.errors else None, report.verdict_basis)


def _flatten_outputs(report: AnalysisReport, out_dir: Path) -> None:
    """Move every file the writers made into `out_dir` itself, and name outputs by file name only:
    the API serves a job's files by these names, and only names found in its report."""
    outputs: dict[str, str] = {"report": REPORT_NAME}
    renamed: dict[str, str] = {}
    for key, value in report.outputs.items():
        src = Path(value)
        if not src.is_file():
            continue   # e.g. a folder of explained frames: not served
        name = src.name if src.name not in outputs.values() else f"{key}-{src.name}"
        if src != out_dir / name:
            os.replace(src, out_dir / name)
        outputs[key] = renamed[value] = name
    for sub in out_dir.iterdir() if out_dir.is_dir() else ():
        if sub.is_dir():
            shutil.rmtree(sub, ignore_errors=True)
    report.outputs = outputs
    for keyframe in report.keyframes:
        keyframe.image = renamed.get(keyframe.image or "", keyframe.image)


def output_kind(key: str) -> str:
    """What a report output is, for the API's file list."""
    if key in ("report", "annotated_video", "annotated_image"):
        return key
    if key.endswith("_heatmaps"):
        return "heatmaps"
    return "keyframe" if key.startswith("keyframe_") else "other"
