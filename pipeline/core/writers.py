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
from collections.abc import Callable
from pathlib import Path

from deepfake_detect.pipeline.core.report import AnalysisReport, report_to_dict


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write `data` to `path` so that the file is, even after a crash or a power cut, either the old
    one or the whole new one: a temporary file beside it, flushed to disk, then renamed over it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        # mkstemp makes the file 0600; a report is an ordinary file, readable as the umask allows
        os.fchmod(fd, 0o666 & ~_UMASK)
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            # Without this a file system may commit the rename before the data (ext4 delalloc,
            # XFS): after a power cut the report would exist but be empty.
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    _fsync_directory(path.parent)


def atomic_write_text(path: Path, text: str) -> None:
    """`atomic_write_bytes` for text, UTF-8."""
    atomic_write_bytes(path, text.encode("utf-8"))


def _read_umask() -> int:
    mask = os.umask(0)  # the only way to read it; set straight back
    os.umask(mask)
    return mask


# read once, at import, before any thread runs: umask is process-wide, and reading it means setting it
_UMASK = _read_umask()


def _fsync_directory(folder: Path) -> None:
    """Make a rename in `folder` durable (the new directory entry itself is on disk).

    POSIX only: Windows cannot open a directory with os.open, and some file systems (network
    or FUSE mounts) refuse fsync on one; the file's data is on disk already, so those are skipped.
    """
    if not hasattr(os, "O_DIRECTORY"):
        return
    try:
        fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def report_json(report: AnalysisReport) -> str:
    return json.dumps(report_to_dict(report), indent=2, ensure_ascii=False) + "\n"


def output_stem(input_path: str) -> str:
    """File-system-safe name for an input's outputs: `clip.mp4` -> `clip.mp4`, odd characters -> `_`."""
    name = Path(input_path).name or "input"
    return re.sub(r"[^\w.\-]+", "_", name).lstrip(".") or "input"


def claim_output_paths(out_dir: Path, input_path: str, tag: str, is_taken: Callable[[Path], bool]) -> tuple[Path, Path]:
    """Where one input's outputs go: (report file, folder for its other outputs).

    The one naming rule of `analyze` and `watch`: `<name>.json` with the annotated video and
    keyframes beside it in `out_dir`; when another input already holds that name (`is_taken`),
    `<name>.<tag>.json` with the other outputs in the folder `<name>.<tag>/`, so that two inputs
    called `p.jpg` in different folders never overwrite each other's files.
    """
    out_dir = Path(out_dir)
    stem = output_stem(input_path)
    report = out_dir / f"{stem}.json"
    if not is_taken(report):
        return report, out_dir
    n = 1
    while True:
        suffix = tag if n == 1 else f"{tag}-{n}"
        report, folder = out_dir / f"{stem}.{suffix}.json", out_dir / f"{stem}.{suffix}"
        if not is_taken(report):
            return report, folder
        n += 1


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

    COLUMNS = ("time", "path", "verdict", "score", "fake_percentage", "frames_analysed", "sha256", "report", "error",
               "verdict_basis", "c2pa")

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
            "verdict_basis": report.verdict_basis, "c2pa": report.provenance.c2pa if report.provenance else "",
        }
        with self._lock:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            new = not self.path.exists() or self.path.stat().st_size == 0
            # a log begun by an older version keeps its own columns: every line of a file has the same ones
            columns = self.COLUMNS if new else self._columns_in_file()
            with open(self.path, "a", newline="", encoding="utf-8") as fh:
                writer = csv.DictWriter(fh, fieldnames=columns, extrasaction="ignore")
                if new:
                    writer.writeheader()
                writer.writerow(row)

    def _columns_in_file(self) -> tuple[str, ...]:
        with open(self.path, newline="", encoding="utf-8", errors="replace") as fh:
            header = next(csv.reader(fh), [])
        return tuple(header) if header and set(header) <= set(self.COLUMNS) else self.COLUMNS

    def has_line_for(self, report_path: Path, created: str | None) -> bool:
        """Whether the log already has the line of this report (a crash between CSV and journal)."""
        if not self.path.is_file():
            return False
        with open(self.path, newline="", encoding="utf-8", errors="replace") as fh:
            return any(row.get("report") == str(report_path) and row.get("time") == created
                       for row in csv.DictReader(fh))


RESULTS_CSV = "results.csv"
