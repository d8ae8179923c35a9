"""`analyze --engine local`: one loaded detector analyses the inputs one after another in this process.

The CLI's default engine, and the bench's reference for the Ray engine's overhead: both run this
loop. Each input's report goes to OUT/<name>.json (a second `p.jpg` gets `p.jpg.2.json` and its
annotated files `p.jpg.2/`, the naming rule of core.writers), and `on_report` sees it as it comes.
"""
from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING

from deepfake_detect.pipeline.core.writers import ReportFiles, claim_output_paths

if TYPE_CHECKING:
    from deepfake_detect.pipeline.core.report import AnalysisReport
    from deepfake_detect.pipeline.core.runner import Analyzer


def run_locally(analyzer: Analyzer, files: Iterable[Path], out: Path | None,
                on_report: Callable[[Path, AnalysisReport], None] | None = None) -> list[AnalysisReport]:
    """Analyse `files` in order; with `out`, write each report there. Returns every report."""
    report_files = ReportFiles(out) if out is not None else None
    reports = []
    claimed: set[Path] = set()  # report files of this run
    for number, path in enumerate(files, 1):
        report_path, folder = (claim_output_paths(out, str(path), str(number), claimed.__contains__)
                               if out is not None else (None, None))
        report = analyzer.analyze(path, out_dir=folder)
        reports.append(report)
        if report_files is not None and report_path is not None:
            claimed.add(report_path)
            report_files.write(report, report_path)
        if on_report is not None:
            on_report(path, report)
    return reports
