"""What every engine of `analyze` offers: files in, one report per file out, each written to OUT.

`--engine local` (`local_engine.LocalEngine`) and `--engine ray` (`ray_engine.RayEngine`) are
interchangeable behind this: the CLI and the bench pick one and call `run`. Both finish each
report through `core.lifecycle`, so OUT looks the same whichever ran (a JSON report per input,
results.csv); the Ray engine adds a journal that makes a run resumable.
"""
from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from deepfake_detect.pipeline.core.report import AnalysisReport

OnReport = Callable[[Path, "AnalysisReport"], None]
"""Called with each input and its whole report as soon as the report is final."""


class Engine(Protocol):
    def run(self, files: Iterable[Path], out: Path | None,
            on_report: OnReport | None = None) -> list[AnalysisReport]:
        """Analyse `files`, writing each report to `out` (None: not written); returns the reports in
        the order of `files`."""
        ...
