"""Output writers: the JSON report file and the CSV log. Each is one small class with `write`.

Files are written atomically (temporary file, then rename), so a crash or a reader polling the
output folder never sees half a report.
"""
from __future__ import annotations

import csv
import json
import os
import re
import tempfile
import threading
from pathlib import Path

from pipeline.report import AnalysisReport, report_to_dict


def atomic_write_text(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def report_json(report: AnalysisReport) -> str:
    return json.dumps(report_to_dict(report), indent=2, ensure_ascii=False) + "\n"


def output_stem(input_path: str) -> str:
    """File-system-safe name for an input's outputs: `clip.mp4` -> `clip.mp4`, odd characters -> `_`."""
    name = Path(input_path).name or "input"
    return re.sub(r"[^\w.\-]+", "_", name).lstrip(".") or "input"


class JsonReportWriter:
    """Writes `<out>/<input name>.json` per input."""

    def __init__(self, out_dir: Path):
        self.out_dir = Path(out_dir)

    def path_for(self, report: AnalysisReport) -> Path:
        return self.out_dir / f"{output_stem(report.input.path)}.json"

    def write(self, report: AnalysisReport, path: Path | None = None) -> Path:
        path = path or self.path_for(report)
        atomic_write_text(path, report_json(report))
        return path


class CsvLogWriter:
    """Appends one line per analysed input to `<out>/results.csv` (header written once)."""

    COLUMNS = ("time", "path", "verdict", "score", "fake_percentage", "frames_analysed", "sha256", "report", "error")

    def __init__(self, path: Path):
        self.path = Path(path)
        self._lock = threading.Lock()

    def write(self, report: AnalysisReport, report_path: Path | None = None) -> None:
        row = {
            "time": report.created, "path": report.input.path, "verdict": report.verdict,
            "score": "" if report.score is None else f"{report.score:.4f}",
            "fake_percentage": "" if report.fake_percentage is None else f"{report.fake_percentage:.1f}",
            "frames_analysed": report.frames_analysed, "sha256": report.input.sha256 or "",
            "report": str(report_path or ""), "error": "; ".join(report.errors),
        }
        with self._lock:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            new = not self.path.exists() or self.path.stat().st_size == 0
            with open(self.path, "a", newline="", encoding="utf-8") as fh:
                writer = csv.DictWriter(fh, fieldnames=self.COLUMNS)
                if new:
                    writer.writeheader()
                writer.writerow(row)

    def has_line_for(self, report_path: Path, created: str | None) -> bool:
        """Whether the log already has the line of this report (a crash between CSV and journal)."""
        if not self.path.is_file():
            return False
        with open(self.path, newline="", encoding="utf-8", errors="replace") as fh:
            return any(row.get("report") == str(report_path) and row.get("time") == created
                       for row in csv.DictReader(fh))
