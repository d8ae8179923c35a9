"""`analyze --engine ray`: a whole archive analysed on a Ray cluster, with the reports of a local run.

The driver (this module) never decodes media. It
1. matches each input to its row in OUT/analyze-journal.sqlite (`pipeline.archive.journal`): rows an
   earlier run finished are skipped, rows a crash left half-written get their last steps;
2. names each remaining input's report and output folder with `claim_output_paths`, recorded in the
   journal before any worker sees the file, so names never collide, across reruns too;
3. starts (or joins) Ray and a pool of workers (`pipeline.archive.ray_worker`, one loaded detector each),
   and hands each idle worker the next whole file;
4. finishes each report as it comes back: JSON report, then its results.csv line, the journal
   recording each step (`core.lifecycle`, as every job system does), under one progress bar.

Exactly once: a worker process that dies mid-file is restarted by Ray (`max_restarts`) and the file
retried on it (`max_task_retries`); a file that kills its worker every time gets an error report.
A file still running after `--timeout` seconds (a hung decoder) gets an error report, and its worker
is killed for good (a restarted one would be handed the same file again) and replaced by a fresh one.
The driver dying (Ctrl-C, kill -9) leaves rows "running"; the next run re-queues them.
"""
from __future__ import annotations

import dataclasses
import logging
import os
import sys
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, cast

from annotated_types import Ge, Gt

from deepfake_detect.pipeline import __version__
from deepfake_detect.pipeline.archive.journal import JOURNAL_NAME, BatchJournal, BatchLockedError, batch_lock
from deepfake_detect.pipeline.core.errors import CommandError
from deepfake_detect.pipeline.core.journal import Entry
from deepfake_detect.pipeline.core.lifecycle import EntryRecorder, JobLifecycle, JobStep
from deepfake_detect.pipeline.core.report import AnalysisReport, InputInfo, load_report
from deepfake_detect.pipeline.core.threads import ThreadPolicy, available_cores, thread_policy
from deepfake_detect.pipeline.core.writers import RESULTS_CSV, CsvLogWriter, claim_output_paths

if TYPE_CHECKING:
    from tqdm import tqdm

    from deepfake_detect.pipeline.archive.engine import OnReport
    from deepfake_detect.pipeline.core.config import AnalysisConfig
    from deepfake_detect.pipeline.core.report import ReportVerdict

log = logging.getLogger(__name__)

MAX_TASK_RETRIES = 2        # a file whose worker dies 3 times in a row gets an error report
READY_TIMEOUT_S = 900.0     # for every worker to load its detector (a fresh node first exports the ONNX files)


@dataclass(frozen=True)
class RaySettings:
    address: str | None = None   # "auto", HOST:PORT; None: RAY_ADDRESS, else a local instance
    workers: Annotated[int, Ge(1)] | None = None   # None: one per GPU, else as many as the cluster's CPUs hold
    timeout_s: Annotated[float, Gt(0)] = 600.0     # seconds one file may take before its worker is killed and it fails


@dataclass
class RunStats:
    """What a run did and where its time went (for the bench)."""
    inputs: int = 0
    already_done: int = 0
    analysed: int = 0
    workers: int = 0
    startup_s: float = 0.0     # ray.init: starting or joining the cluster
    ready_s: float = 0.0       # creating the workers until each has loaded its detector
    analyse_s: float = 0.0     # first file handed out until the last report is written


@dataclass(frozen=True)
class WorkerShape:
    workers: int
    threads: ThreadPolicy
    resources: dict[str, float]   # Ray resources per worker


@dataclass
class _Item:
    shown: str      # the path as given: the report's input.path, as in a local run
    entry: Entry


def check_detector(config: AnalysisConfig) -> None:
    """Refuse a missing, damaged or untrained detector here, before a cluster starts for nothing."""
    from deepfake_detect.stages.ensemble import DetectorError, load_verified_config

    try:
        detector = load_verified_config(config.weights)
    except DetectorError as exc:
        raise CommandError(str(exc)) from None
    if not detector.trained:
        raise CommandError(f"the detector in {config.weights} is not trained; refusing to report verdicts from an "
                           "untrained network (pass --weights DIR)")


def worker_shape(nodes: list[dict[str, float]], requested: int | None, threads: int | None, device: str) -> WorkerShape:
    """How many workers, with which resources each, on a cluster whose alive nodes have `nodes`' resources.

    With GPUs (and a device other than cpu) each worker gets one GPU; otherwise its CPU share is
    `thread_policy(concurrent=workers)` of this machine's cores, or --threads. Ray would keep a
    worker that fits on no node waiting forever, so that is refused here with the numbers."""
    gpus = int(sum(n.get("GPU", 0) for n in nodes)) if device != "cpu" else 0
    if gpus:
        workers = requested or gpus
        if workers > gpus:
            raise CommandError(f"--workers {workers}: the cluster has {gpus} GPUs (one per worker)")
        return WorkerShape(workers, thread_policy(concurrent=workers, threads=threads), {"num_gpus": 1, "num_cpus": 1})
    workers = requested or max(1, int(sum(n.get("CPU", 0) for n in nodes)) // thread_policy(threads=threads).compute)
    policy = thread_policy(concurrent=workers, threads=threads)
    room = sum(int(n.get("CPU", 0)) // policy.compute for n in nodes)
    if workers > room:
        raise CommandError(f"{workers} workers of {policy.compute} CPUs do not fit on the cluster's nodes "
                           f"({', '.join(str(int(n.get('CPU', 0))) for n in nodes)} CPUs): "
                           f"use --workers {max(1, room)} or fewer, or a smaller --threads")
    return WorkerShape(workers, policy, {"num_cpus": policy.compute})


def summary_only(report: AnalysisReport) -> AnalysisReport:
    """What the summary table and the exit status need of a report, without its faces and keyframes:
    the driver keeps one per input, and a million full reports would not fit in its memory."""
    tracks = [dataclasses.replace(track, faces=[]) for track in report.tracks]
    return dataclasses.replace(report, tracks=tracks, keyframes=[])


class RayEngine:
    """`archive.engine.Engine` on a Ray cluster; `stats` holds the last run's figures (for the bench)."""

    def __init__(self, config: AnalysisConfig, settings: RaySettings) -> None:
        self.config, self.settings = config, settings
        self.stats = RunStats()

    def run(self, files: Iterable[Path], out: Path | None, on_report: OnReport | None = None) -> list[AnalysisReport]:
        """Analyse `files` on Ray into `out`; their reports in the order of `files` (finished ones from
        earlier runs included) as `summary_only` keeps them. `on_report` sees each whole report as it
        is final."""
        if out is None:
            raise CommandError("--engine ray needs --out DIR (a folder every node of the cluster can write)")
        files = list(files)
        check_detector(self.config)
        # the workers' working directory is not ours: every path they get is absolute
        anchors = self.config.provenance.trust_anchors
        config = dataclasses.replace(
            self.config, weights=os.path.abspath(self.config.weights),
            provenance=dataclasses.replace(self.config.provenance, trust_anchors=anchors and os.path.abspath(anchors)))
        try:
            with batch_lock(out):
                journal = BatchJournal(out / JOURNAL_NAME)
                run = _Run(config, out, journal, on_report or (lambda path, report: None))
                try:
                    reports, self.stats = run.run(files, self.settings)
                    return reports
                except KeyboardInterrupt:   # the journal has every finished step: the next run goes on from here
                    raise CommandError(f"interrupted with {run.left} of {len(files)} files left; run the same "
                                       "command again to go on from there") from None
                finally:
                    journal.close()
        except BatchLockedError as exc:
            raise CommandError(str(exc)) from None


class _Run:
    def __init__(self, config: AnalysisConfig, out: Path, journal: BatchJournal, emit: OnReport):
        self.config = config
        self.out = out
        self.journal = journal
        self.emit = emit
        self.lifecycle = JobLifecycle(EntryRecorder(journal), CsvLogWriter(out / RESULTS_CSV),
                                      html=config if config.render.html else None)
        self.reports: dict[int, AnalysisReport] = {}   # by journal row
        self.stats = RunStats()
        self.bar: tqdm | None = None

    @property
    def left(self) -> int:
        """Inputs of this run not finished yet."""
        return self.stats.inputs - len(self.reports)

    def run(self, files: list[Path], settings: RaySettings) -> tuple[list[AnalysisReport], RunStats]:
        self.stats.inputs = len(files)
        self.journal.recover()   # rows a dead driver left running are queued again
        with self.journal.transaction():
            items = [self._plan(path) for path in files]
        todo = []
        for item in items:
            if item.entry.state in ("done", "failed"):
                self._done(item, self._load(item))
            elif item.entry.phase is not None:   # analysed and reported before a crash: finish the steps
                self._complete(item)
            else:
                todo.append(item)
        self.stats.already_done = len(items) - len(todo)
        if self.stats.already_done:
            _say(f"{self.stats.already_done} already done (journal: {self.out / JOURNAL_NAME}); {len(todo)} to analyse")
        if todo:
            self._on_ray(todo, settings, n_inputs=len(files))
        return [self.reports[item.entry.id] for item in items], self.stats

    # -- the journal's side ------------------------------------------------------------------------
    def _plan(self, path: Path) -> _Item:
        entry = self.journal.row_for(Path(os.path.abspath(path)))
        if entry.report_path is None:
            report, folder = claim_output_paths(self.out, str(path), str(entry.id),
                                                lambda p: self.journal.path_reserved("report_path", p, entry.id))
            self.journal.set_targets(entry.id, report, folder, None)
            entry = self.journal.get(entry.id) or entry
        return _Item(str(path), entry)

    def _load(self, item: _Item) -> AnalysisReport:
        """The report an earlier run wrote; if it has gone, what the journal remembers of it."""
        entry = item.entry
        assert entry.report_path is not None   # named before any analysis
        try:
            report = load_report(entry.report_path)
        except (OSError, ValueError, KeyError, TypeError):
            verdict = cast("ReportVerdict", entry.verdict or "error")
            report = AnalysisReport(input=InputInfo(path=item.shown, sha256=entry.sha256), verdict=verdict,
                                    errors=[entry.reason or "report missing"] if entry.verdict == "error" else [],
                                    tool_version=__version__)
            report.warnings.append(f"its report {entry.report_path} could not be read; the verdict is the journal's")
        report.input.path = item.shown
        return report

    def _complete(self, item: _Item) -> None:
        """Analysed and reported before a crash: the steps left (core.lifecycle)."""
        self._done(item, self.lifecycle.resume(JobStep.of(item.entry), self._load(item)).report)

    def _finish(self, item: _Item, report: AnalysisReport) -> None:
        """A worker's report -> JSON report, CSV line, done/failed; the journal records each step."""
        report.input.path = item.shown
        self.journal.set_sha256(item.entry.id, report.input.sha256)
        self.lifecycle.complete(JobStep.of(item.entry), report)
        self.stats.analysed += 1
        if report.errors:
            _say(f"error: {item.shown}: {report.errors[0]}", self.bar)
        self._done(item, report)
        if self.bar is not None:
            self.bar.set_postfix_str(Path(item.shown).name[-40:])
            self.bar.update()

    def _done(self, item: _Item, report: AnalysisReport) -> None:
        self.emit(Path(item.shown), report)
        self.reports[item.entry.id] = summary_only(report)

    # -- Ray's side -----------------------------------------------------------------------------
    def _on_ray(self, todo: list[_Item], settings: RaySettings, n_inputs: int) -> None:
        import ray
        from tqdm import tqdm

        t0 = time.perf_counter()
        try:
            _start_ray(settings.address)
            self.stats.startup_s = time.perf_counter() - t0
            t0 = time.perf_counter()
            workers, new_worker = self._start_workers(settings.workers, n_inputs)
            self.stats.ready_s = time.perf_counter() - t0
            self.bar = tqdm(total=self.stats.inputs, initial=self.stats.already_done, unit="file", disable=None,
                            file=sys.stderr, dynamic_ncols=True)
            t0 = time.perf_counter()
            self._analyse(todo, workers, new_worker, settings.timeout_s)
            self.stats.analyse_s = time.perf_counter() - t0
        finally:
            if self.bar is not None:
                self.bar.close()
            ray.shutdown()

    def _start_workers(self, requested: int | None, n_inputs: int) -> tuple[list[Any], Callable[[], Any]]:
        """The workers, each with its detector loaded, and how to start one more (for a timed-out one)."""
        import ray

        from deepfake_detect.pipeline.archive.ray_worker import AnalysisWorker

        nodes = [node["Resources"] for node in ray.nodes() if node.get("Alive")]
        shape = worker_shape(nodes, requested, self.config.threads, self.config.device)
        # max_restarts=-1: a worker whose process dies comes back (reloading its detector) for the next files
        remote = ray.remote(AnalysisWorker).options(max_restarts=-1, max_task_retries=MAX_TASK_RETRIES, **shape.resources)

        def new_worker() -> Any:
            return remote.remote(self.config, n_inputs, shape.threads)

        handles: list[Any] = [new_worker() for _ in range(shape.workers)]
        try:
            infos = ray.get([h.ready.remote() for h in handles], timeout=READY_TIMEOUT_S)
        except ray.exceptions.GetTimeoutError:
            raise CommandError(f"the Ray workers did not load the detector within {READY_TIMEOUT_S:.0f} s") from None
        except ray.exceptions.RayActorError as exc:
            raise CommandError(f"a Ray worker could not load the detector: {_last_line(exc)}") from None
        self.stats.workers = len(handles)
        nodes_used = len({info["node"] for info in infos})
        _say(f"{len(handles)} Ray worker{'s' if len(handles) > 1 else ''} on {nodes_used} node"
             f"{'s' if nodes_used > 1 else ''} ({infos[0]['device']}, {infos[0]['threads']['compute']} threads each)")
        return handles, new_worker

    def _analyse(self, todo: list[_Item], workers: list[Any], new_worker: Callable[[], Any], timeout_s: float) -> None:
        """Each idle worker gets the next file; a file past `timeout_s` gets an error report, and its
        worker is killed and replaced by a fresh one (killed for good: Ray would retry the file on a restart)."""
        import ray
        from ray.exceptions import RayActorError

        from deepfake_detect.pipeline.archive.ray_worker import Task

        queue = deque(todo)
        idle = list(workers)
        # what each worker is doing, by the ref of its call: a file (None: a fresh worker loading its detector),
        # and when that is overdue
        busy: dict[Any, tuple[Any, _Item | None, float]] = {}

        def files_out() -> bool:
            return any(item is not None for _, item, _ in busy.values())

        while files_out() or (queue and (idle or busy)):
            while idle and queue:
                worker, job = idle.pop(), queue.popleft()
                self.journal.start(job.entry.id)
                ref = worker.analyze.remote(Task(job.entry.id, str(job.entry.path), str(job.entry.out_dir)))
                busy[ref] = (worker, job, time.monotonic() + timeout_s)
            wait = max(0.0, min(deadline for _, _, deadline in busy.values()) - time.monotonic())
            ready, _ = ray.wait(list(busy), num_returns=1, timeout=wait)
            if not ready:   # something is overdue
                now = time.monotonic()
                for ref, (handle, item, deadline) in list(busy.items()):
                    if deadline > now:
                        continue
                    del busy[ref]
                    ray.kill(handle, no_restart=True)
                    if item is None:
                        log.warning("a new Ray worker did not load the detector within %.0f s", READY_TIMEOUT_S)
                        continue
                    fresh = new_worker()
                    busy[fresh.ready.remote()] = (fresh, None, now + READY_TIMEOUT_S)
                    self._finish(item, self._error(item, f"analysis timed out after {timeout_s:g} s (--timeout)"))
                continue
            handle, item, _ = busy.pop(ready[0])
            try:
                outcome = ray.get(ready[0])
            except RayActorError as exc:
                if item is None or exc.actor_init_failed:
                    # restarted on a node where the detector does not load: that worker is gone, the file is not to blame
                    log.warning("a Ray worker was lost: %s", _last_line(exc))
                    if item is not None:
                        self.journal.release(item.entry.id, count_attempt=False)
                        queue.appendleft(item)
                    continue
                log.debug("worker lost on %s: %s", item.shown, exc)
                outcome = None
            idle.append(handle)
            if item is not None:   # else a fresh worker is ready
                self._finish(item, outcome.report if outcome is not None else self._error(
                    item, f"the Ray worker analysing it died {MAX_TASK_RETRIES + 1} times (a crash, the out-of-memory "
                          "killer or a lost node); not analysed"))
        if queue:
            raise CommandError(f"{len(queue)} files were not analysed: no Ray worker could load the detector any more; "
                               "run the same command again to retry them")

    @staticmethod
    def _error(item: _Item, reason: str) -> AnalysisReport:
        return AnalysisReport(input=InputInfo(path=item.shown), verdict="error", tool_version=__version__,
                              errors=[reason])


def _start_ray(address: str | None) -> None:
    import ray

    address = address or os.environ.get("RAY_ADDRESS") or None
    quiet = logging.getLogger().level > logging.DEBUG   # --debug shows the workers' logs
    options: dict[str, Any] = {"logging_level": logging.WARNING, "log_to_driver": not quiet}
    try:
        if address:
            ray.init(address=address, **options)
        else:   # a local instance on this machine's cores; it ends with the run
            ray.init(num_cpus=available_cores(), include_dashboard=False, **options)
    except (ConnectionError, RuntimeError, ValueError) as exc:
        raise CommandError(f"cannot start or reach Ray{f' at {address}' if address else ''}: {_last_line(exc)}") from None


def _last_line(exc: BaseException) -> str:
    """The telling line of a Ray error: its last non-empty one (the cause), not the traceback."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return lines[-1] if lines else type(exc).__name__


def _say(line: str, bar: tqdm | None = None) -> None:
    if bar is not None:
        bar.write(line, file=sys.stderr)
    else:
        print(line, file=sys.stderr)
