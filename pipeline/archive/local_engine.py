"""`analyze --engine local`: one loaded detector analyses the inputs one after another in this process.

The CLI's default engine, and the bench's reference for the Ray engine's overhead: both run this
loop. Each input's report goes to OUT/<name>.json (a second `p.jpg` gets `p.jpg.2.json` and its
annotated files `p.jpg.2/`, the naming rule of core.writers), and `on_report` sees it as it comes.
"""
from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING

from deepfake_detect.pipeline.core.lifecycle import JobLifecycle, JobStep, Unrecorded
from deepfake_detect.pipeline.core.writers import RESULTS_CSV, CsvLogWriter, claim_output_paths

if TYPE_CHECKING:
    from deepfake_detect.pipeline.archive.engine import OnReport
    from deepfake_detect.pipeline.core.report import AnalysisReport
    from deepfake_detect.pipeline.core.runner import Analyzer


class LocalEngine:
    """`archive.engine.Engine` on one loaded detector: the inputs in turn, in this process."""

    def __init__(self, analyzer: Analyzer) -> None:
        self.analyzer = analyzer

    def run(self, files: Iterable[Path], out: Path | None, on_report: OnReport | None = None) -> list[AnalysisReport]:
        """Analyse `files` in order; with `out`, write each report there. Returns every report."""
        # report and CSV line as every job system writes them (core.lifecycle); no journal: a local
        # run is not resumed, it is run again
        config = self.analyzer.config
        lifecycle = (JobLifecycle(Unrecorded(), CsvLogWriter(out / RESULTS_CSV), html=config if config.render.html else None)
                     if out is not None else None)
        reports = []
        claimed: set[Path] = set()  # report files of this run
        for number, path in enumerate(files, 1):
            report_path, folder = (claim_output_paths(out, str(path), str(number), claimed.__contains__)
                                   if out is not None else (None, None))
            report = self.analyzer.analyze(path, out_dir=folder)
            reports.append(report)
            if lifecycle is not None and report_path is not None:
                claimed.add(report_path)
                lifecycle.complete(JobStep(number, report_path), report)
            if on_report is not None:
                on_report(path, report)
        return reports
