"""The bench's engines row (`bench --engines`): `analyze --engine local` against `--engine ray` with
1 and 2 workers, on the same files, and what Ray adds per file and to start.

Every engine analyses the same copies of the base clip (rendering off) into a fresh output folder,
through the functions `analyze` itself runs, so report and journal writes are in the times:
- local: the bench's loaded, warm Analyzer, one file after another (reports written as `analyze` writes them),
  before and after the Ray runs, the faster pass counting;
- ray: `pipeline.archive.ray_engine.RayEngine` on a local Ray instance, timed in its three phases: Ray's
  start-up, the workers loading their detectors, and the files themselves.
Overhead per file = (ray's time for the files - local's) / files: scheduling, passing the report
back, and, with more workers than the cores hold, contention. Start-up is reported apart: a
cluster pays it once per run, not per file.
"""
from __future__ import annotations

import dataclasses
import shutil
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from deepfake_detect.pipeline.bench.measure import BenchError

if TYPE_CHECKING:
    from deepfake_detect.pipeline.core.report import AnalysisReport
    from deepfake_detect.pipeline.core.runner import Analyzer

ENGINE_FILES = 6
RAY_WORKERS = (1, 2)


def engine_clips(clip: Path, work: Path, n: int) -> list[Path]:
    """`n` copies of `clip`: separate files, as an archive has, at the cost of a copy each."""
    folder = work / "engines-clips"
    folder.mkdir(parents=True, exist_ok=True)
    copies = [folder / f"clip-{i + 1:02d}{clip.suffix}" for i in range(n)]
    for copy in copies:
        shutil.copyfile(clip, copy)
    return copies


def _local(analyzer: Analyzer, files: list[Path], out: Path) -> dict[str, Any]:
    from deepfake_detect.pipeline.archive.local_engine import LocalEngine

    def stop_on_error(path: Path, report: AnalysisReport) -> None:
        if report.errors:
            raise BenchError(f"{path.name}: {report.errors[0]}")

    t0 = time.perf_counter()
    LocalEngine(analyzer).run(files, out, stop_on_error)
    seconds = time.perf_counter() - t0
    return {"engine": "local", "workers": 1, "files": len(files), "startup_s": 0.0, "ready_s": 0.0,
            "files_s": seconds, "files_per_s": len(files) / seconds, "per_file_s": seconds / len(files)}


def _ray(analyzer: Analyzer, files: list[Path], out: Path, workers: int) -> dict[str, Any]:
    from deepfake_detect.pipeline.archive.ray_engine import RayEngine, RaySettings
    from deepfake_detect.pipeline.core.errors import CommandError

    config = dataclasses.replace(analyzer.config, render=dataclasses.replace(analyzer.config.render, enabled="off"))
    try:
        engine = RayEngine(config, RaySettings(workers=workers))
        reports = engine.run(files, out)
        stats = engine.stats
    except CommandError as exc:
        raise BenchError(f"--engine ray: {exc.format_message()}") from None
    failed = [r for r in reports if r.errors]
    if failed:
        raise BenchError(f"--engine ray: {failed[0].input.path}: {failed[0].errors[0]}")
    return {"engine": "ray", "workers": stats.workers, "files": len(files), "startup_s": stats.startup_s,
            "ready_s": stats.ready_s, "files_s": stats.analyse_s, "files_per_s": len(files) / stats.analyse_s,
            "per_file_s": stats.analyse_s / len(files)}


def _fresh(work: Path, name: str) -> Path:
    """A new, empty output folder for one measured run: a folder kept from an earlier bench (with
    --workdir) holds a journal that would make Ray skip every file as already done."""
    work.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(dir=work, prefix=f"{name}-"))


def engines_bench(analyzer: Analyzer, clip: Path, work: Path, say: Callable[[str], None],
                  n_files: int = ENGINE_FILES, ray_workers: Sequence[int] = RAY_WORKERS) -> dict[str, Any]:
    """Files/s of the local engine and of Ray with each of `ray_workers`, on `n_files` copies of `clip`."""
    try:
        import ray  # noqa: F401
    except ImportError:
        raise BenchError("ray is not installed (pip install 'ray>=2.9')") from None
    files = engine_clips(clip, work, n_files)
    first = _local(analyzer, files, _fresh(work, "engines-local-1"))
    say(f"engines: local {first['files_per_s']:.2f} files/s")
    rays = []
    for workers in ray_workers:
        row = _ray(analyzer, files, _fresh(work, f"engines-ray-{workers}"), workers)
        rays.append(row)
        say(f"engines: ray, {workers} worker{'s' if workers > 1 else ''}: {row['files_per_s']:.2f} files/s "
            f"(+{row['startup_s'] + row['ready_s']:.1f} s to start)")
    # local again after Ray, and the faster of the two: other work on the machine comes and goes,
    # and a slow local pass would hide Ray's overhead
    second = _local(analyzer, files, _fresh(work, "engines-local-2"))
    local = min(first, second, key=lambda row: row["files_s"])
    local["passes_s"] = [first["files_s"], second["files_s"]]
    for row in [local, *rays]:
        row["overhead_per_file_s"] = row["per_file_s"] - local["per_file_s"]
    return {"clip": clip.name, "files": n_files, "rows": [local, *rays]}
