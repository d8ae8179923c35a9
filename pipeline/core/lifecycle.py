"""The one lifecycle of a job, whoever runs it (`analyze` on either engine, `watch`, `serve`):

    claim -> analyse -> report -> CSV line -> [finishing touch] -> finish (done | failed)

Claiming and analysing differ by job system (a watch queue, a batch plan, an HTTP job; an
analysis process, a Ray actor, the CLI's analyzer); everything from the report on is this
module's. Each step is recorded in the job's journal (`Recorder`) before the next starts, so a
crash leaves a job that says exactly which steps are left, and `resume` takes it from there:
one report, one CSV line and one finish per job, however often the process dies.

The journals differ in what they store (`core.journal.Journal` rows for watch and archive runs,
`server.journal.JobJournal` jobs); each gives this module a `Recorder` of three calls.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from deepfake_detect.pipeline.core.html_report import html_path, render_html
from deepfake_detect.pipeline.core.journal import Entry, Journal, display_path
from deepfake_detect.pipeline.core.report import AnalysisReport, load_report
from deepfake_detect.pipeline.core.writers import CsvLogWriter, atomic_write_text, report_json

if TYPE_CHECKING:
    from deepfake_detect.pipeline.core.config import AnalysisConfig


@dataclass(frozen=True)
class JobStep:
    """Where one job stands, as its journal recorded it."""
    key: int | str             # the journal's id of the job: a row number, or the server's job id
    report_path: Path          # chosen (and recorded) before the analysis
    phase: str | None = None   # None: nothing written yet; "reported": the report is on disk; "logged": its CSV line too
    created: str | None = None # the report's `created` stamp (finds its CSV line after a crash)

    @classmethod
    def of(cls, entry: Entry) -> JobStep:
        assert entry.report_path is not None, "a job's report is named before it is analysed"
        return cls(entry.id, entry.report_path, entry.phase, entry.created)


class Recorder(Protocol):
    """How a journal records the steps of one job."""

    def reported(self, step: JobStep, report: AnalysisReport) -> None: ...

    def logged(self, step: JobStep) -> None: ...

    def finish(self, step: JobStep, report: AnalysisReport) -> bool:
        """done | failed, once; False when the job is gone (deleted meanwhile)."""
        ...


class EntryRecorder:
    """The steps in a `core.journal.Journal` row (watch and archive runs): its phase, then its state."""

    def __init__(self, journal: Journal) -> None:
        self.journal = journal

    def reported(self, step: JobStep, report: AnalysisReport) -> None:
        self.journal.set_phase(int(step.key), "reported", verdict=report.verdict, created=report.created,
                               reason=report.errors[0] if report.errors else None)

    def logged(self, step: JobStep) -> None:
        self.journal.set_phase(int(step.key), "logged")

    def finish(self, step: JobStep, report: AnalysisReport) -> bool:
        self.journal.finish(int(step.key), "failed" if report.verdict == "error" else "done")
        return True


class Unrecorded:
    """No journal (`analyze --engine local`): a run that is not resumed records nothing."""

    def reported(self, step: JobStep, report: AnalysisReport) -> None:
        pass

    def logged(self, step: JobStep) -> None:
        pass

    def finish(self, step: JobStep, report: AnalysisReport) -> bool:
        return True


@dataclass(frozen=True)
class Finished:
    report: AnalysisReport
    kept: bool    # False: the journal no longer had the job (deleted while it ran)


class JobLifecycle:
    """The steps after the analysis, for one job system.

    `csv`: the results.csv to log each report in (None: the job system keeps no log, the server).
    `before_finish`: a last step before the job is finished, safe to repeat (the watch daemon moves
    its input there). `report_link`: what the report's `outputs.report` says of its own file.
    `html`: also write each report as a self-contained page beside it (core.html_report), with these
    settings shown in it.
    """

    def __init__(self, recorder: Recorder, csv: CsvLogWriter | None,
                 before_finish: Callable[[JobStep, AnalysisReport], None] | None = None,
                 report_link: Callable[[Path], str] = display_path, html: AnalysisConfig | None = None) -> None:
        self.recorder, self.csv = recorder, csv
        self.before_finish = before_finish
        self.report_link = report_link
        self.html = html

    def complete(self, step: JobStep, report: AnalysisReport) -> Finished:
        """A fresh report: write it, log it, finish the job; each step recorded before the next."""
        printable(report)
        report.outputs["report"] = self.report_link(step.report_path)
        if self.html is not None:   # before the JSON, which names it: a crash before the JSON redoes both
            self._write_html(step, report, self.html)
        atomic_write_text(step.report_path, report_json(report))
        self.recorder.reported(step, report)
        if self.csv is not None:
            self.csv.write(report, step.report_path)
            self.recorder.logged(step)
        return self._finish(step, report)

    def _write_html(self, step: JobStep, report: AnalysisReport, config: AnalysisConfig) -> None:
        """The page to hand on; an extra: if it cannot be written, the report says why and the job goes on."""
        page = html_path(step.report_path)
        report.outputs["html"] = self.report_link(page)
        try:
            atomic_write_text(page, render_html(report, dataclasses.asdict(config), config.weights))
        except Exception as exc:  # noqa: BLE001 - the JSON report, the CSV line and the finish must still happen
            del report.outputs["html"]
            report.warnings.append(f"HTML report not written: {type(exc).__name__}: {exc}")

    def resume(self, step: JobStep, report: AnalysisReport | None = None) -> Finished:
        """A job whose report was written before a crash (`report`: as read by the caller, else
        from its file): the steps left, none twice."""
        if report is None:
            report = load_report(step.report_path)
        if step.phase == "reported" and self.csv is not None:
            if not self.csv.has_line_for(step.report_path, step.created):
                self.csv.write(report, step.report_path)
            self.recorder.logged(step)
        return self._finish(step, report)

    def _finish(self, step: JobStep, report: AnalysisReport) -> Finished:
        if self.before_finish is not None:
            self.before_finish(step, report)
        return Finished(report, self.recorder.finish(step, report))


def printable(report: AnalysisReport) -> None:
    """Make every path the report quotes printable: a file name that is not valid UTF-8 must not make
    the report unwritable (its undecodable bytes become U+FFFD)."""
    report.input.path = display_path(report.input.path)
    report.errors = [display_path(e) for e in report.errors]
    report.warnings = [display_path(w) for w in report.warnings]
    report.outputs = {k: display_path(v) for k, v in report.outputs.items()}
