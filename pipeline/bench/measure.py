"""The bench's in-process measurements: peak memory, the clips, and one clip's analysis row."""
from __future__ import annotations

import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from deepfake_detect.pipeline.core.report import AnalysisReport
    from deepfake_detect.pipeline.core.runner import Analyzer
    from deepfake_detect.stages.decode import Sampling


class BenchError(Exception):
    """A measurement could not be taken (a failed analysis or process); message is for the user."""


def own_rss_mib() -> float:
    """Resident memory of this process (MiB)."""
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    import resource  # not Linux: lifetime peak is the best we have

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


class PeakMemory:
    """Peak of `read_mib()` (default: this process's resident memory, MiB) while the block runs,
    sampled every `every_s` seconds."""

    def __init__(self, read_mib: Callable[[], float] = own_rss_mib, every_s: float = 0.02) -> None:
        self.read_mib, self.every_s = read_mib, every_s
        self.peak_mib = 0.0

    @contextmanager
    def measure(self) -> Iterator[PeakMemory]:
        stop = threading.Event()
        self.peak_mib = self.read_mib()

        def sample() -> None:
            while not stop.wait(self.every_s):
                self.peak_mib = max(self.peak_mib, self.read_mib())

        thread = threading.Thread(target=sample, name="rss", daemon=True)
        thread.start()
        try:
            yield self
        finally:
            stop.set()
            thread.join()
            self.peak_mib = max(self.peak_mib, self.read_mib())


def parse_size(text: str) -> tuple[int, int]:
    """"1280x720" -> (1280, 720)."""
    try:
        width, height = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise BenchError(f"a size looks like 1280x720, got {text!r}") from None
    return width, height


def make_clip(folder: Path, seconds: float, size: tuple[int, int]) -> Path:
    """The bench's synthetic clip: one moving, scaling face and a tone, 30 frames/s."""
    from deepfake_detect.pipeline.core.samples import make_sample_video

    width, height = size
    return make_sample_video(folder / f"bench_{height}p_{seconds:g}s.mp4", seconds, 30.0, size, faces=1, audio=True)


def loop_clip(source: Path, target: Path, times: int) -> Path:
    """`source` played `times` times, by stream copy: a long clip in seconds, without re-encoding."""
    from deepfake_detect.stages.render import ffmpeg_exe

    subprocess.run([ffmpeg_exe(), "-y", "-loglevel", "error", "-stream_loop", str(times - 1), "-i", str(source),
                    "-c", "copy", str(target)], check=True, stdin=subprocess.DEVNULL)
    return target


@contextmanager
def sampling_of(analyzer: Analyzer, sampling: Sampling) -> Iterator[Analyzer]:
    """`analyzer` with `sampling` for the block, restored after it."""
    config = analyzer.config
    analyzer.config = replace(config, sampling=sampling)
    try:
        yield analyzer
    finally:
        analyzer.config = config


def timed_analysis(analyzer: Analyzer, path: Path) -> tuple[float, AnalysisReport]:
    """Warm analysis time of `path` (the analyzer is loaded and has run before) and its report."""
    t0 = time.perf_counter()
    report = analyzer.analyze(path)
    seconds = time.perf_counter() - t0
    if report.errors:
        raise BenchError(f"{path.name}: {report.errors[0]}")
    return seconds, report


@dataclass
class ClipResult:
    row: dict[str, Any]
    report: AnalysisReport


def bench_clip(analyzer: Analyzer, path: Path, sampling: Sampling, render_dir: Path | None, kind: str) -> ClipResult:
    """Decode-only vs full analysis time, peak memory and (with `render_dir`) render speed of one clip."""
    from deepfake_detect.pipeline.core.outputs import render_input
    from deepfake_detect.stages.decode import open_media

    limits = analyzer.config.limits
    mem = PeakMemory()
    with sampling_of(analyzer, sampling):
        # the decoder threads the analysis uses, so analyze_over_decode compares like with like
        reader = open_media(path, limits, analyzer.threads.decode)
        indices = reader.sample(sampling)
        with mem.measure():
            t0 = time.perf_counter()
            for _ in reader.batches(indices, analyzer.config.chunk_size):
                pass
            decode_s = time.perf_counter() - t0
        decode_mib = mem.peak_mib
        with mem.measure():
            analyze_s, report = timed_analysis(analyzer, path)
        info = reader.info
        row: dict[str, Any] = {
            "kind": kind, "clip": path.name, "duration_s": info.duration_s, "size": f"{info.width}x{info.height}",
            "frames_sampled": len(indices), "frames_analysed": report.frames_analysed,
            "decode_only_s": decode_s, "analyze_s": analyze_s, "analyze_over_decode": analyze_s / decode_s,
            "frames_per_s": report.frames_analysed / analyze_s, "realtime_factor": info.duration_s / analyze_s,
            "peak_rss_decode_mib": decode_mib, "peak_rss_analyze_mib": mem.peak_mib,
            "stage_s": {k: v for k, v in report.timings.items() if k != "total_s"}, "verdict": report.verdict,
            "provenance_ms": 1000 * report.timings.get("provenance_s", 0.0),   # C2PA and metadata (issue 27: < 50 ms)
        }
        if render_dir is not None:
            with mem.measure():
                t0 = time.perf_counter()
                # Grad-CAM runs here, timed apart, so render_fps is drawing and encoding alone
                analysed = analyzer.analysed_input(report, open_media(path, limits), render_dir)
                explain_s = time.perf_counter() - t0
                stats = render_input(analysed)
            row.update(render_frames=stats.frames, render_s=stats.seconds, render_fps=stats.fps,
                       peak_rss_render_mib=mem.peak_mib, explain_s=explain_s)
    return ClipResult(row, report)
