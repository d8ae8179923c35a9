"""`deepfake-detect bench`: speed and memory on clips it makes itself, all figures from one run.

For each clip: decode-only time of the sampled frames, full analysis time (decode, detect,
classify, aggregate), their ratio, analysed frames/s, realtime factor and peak resident memory;
then render frames/s for the annotated video. The 10-minute clip is the 30-second clip looped
by stream copy (no re-encoding), so it costs seconds to make and shows whether memory grows with
the length of the video.
"""
from __future__ import annotations

import json
import subprocess
import tempfile
import threading
import time
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

import click

if TYPE_CHECKING:
    from stages.decode import Sampling


class PeakMemory:
    """Peak resident memory (MiB) of this process while the block runs, sampled every 20 ms."""

    def __init__(self) -> None:
        self.peak_mib = 0.0

    @staticmethod
    def rss_mib() -> float:
        try:
            with open("/proc/self/status") as fh:
                for line in fh:
                    if line.startswith("VmRSS:"):
                        return int(line.split()[1]) / 1024
        except OSError:
            pass
        import resource  # not Linux: lifetime peak is the best we have

        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

    @contextmanager
    def measure(self):
        stop = threading.Event()
        self.peak_mib = self.rss_mib()

        def sample() -> None:
            while not stop.wait(0.02):
                self.peak_mib = max(self.peak_mib, self.rss_mib())

        thread = threading.Thread(target=sample, daemon=True)
        thread.start()
        try:
            yield self
        finally:
            stop.set()
            thread.join()
            self.peak_mib = max(self.peak_mib, self.rss_mib())


def loop_clip(source: Path, target: Path, times: int) -> Path:
    from stages.render import ffmpeg_exe

    subprocess.run([ffmpeg_exe(), "-y", "-loglevel", "error", "-stream_loop", str(times - 1), "-i", str(source),
                    "-c", "copy", str(target)], check=True, stdin=subprocess.DEVNULL)
    return target


def bench_clip(analyzer, path: Path, sampling: Sampling, render_dir: Path | None) -> dict:
    from pipeline.outputs import render_input
    from stages.decode import open_media

    config = analyzer.config
    analyzer.config = replace(config, sampling=sampling)
    mem = PeakMemory()
    try:
        reader = open_media(path, config.limits)
        indices = reader.sample(sampling)
        with mem.measure():
            t0 = time.perf_counter()
            for _ in reader.batches(indices, config.chunk_size):
                pass
            decode_s = time.perf_counter() - t0
        decode_mib = mem.peak_mib
        with mem.measure():
            t0 = time.perf_counter()
            report = analyzer.analyze(path)
            analyze_s = time.perf_counter() - t0
        if report.errors:
            raise click.ClickException(f"{path.name}: {report.errors[0]}")
        row = {
            "clip": path.name, "duration_s": reader.info.duration_s,
            "size": f"{reader.info.width}x{reader.info.height}", "frames_analysed": report.frames_analysed,
            "decode_only_s": decode_s, "analyze_s": analyze_s, "analyze_over_decode": analyze_s / decode_s,
            "frames_per_s": report.frames_analysed / analyze_s, "realtime_factor": reader.info.duration_s / analyze_s,
            "peak_rss_decode_mib": decode_mib, "peak_rss_analyze_mib": mem.peak_mib,
            "stage_s": {k: v for k, v in report.timings.items() if k != "total_s"}, "verdict": report.verdict,
        }
        if render_dir is not None:
            with mem.measure():
                t0 = time.perf_counter()
                # Grad-CAM runs here, timed apart, so render_fps is drawing and encoding alone
                analysed = analyzer.analysed_input(report, open_media(path, config.limits), render_dir)
                explain_s = time.perf_counter() - t0
                stats = render_input(analysed)
            row.update(render_frames=stats.frames, render_s=stats.seconds, render_fps=stats.fps,
                       peak_rss_render_mib=mem.peak_mib, explain_s=explain_s)
        return row
    finally:
        analyzer.config = config


def _print_rows(rows: list[dict]) -> None:
    cols = [("clip", "{}"), ("size", "{}"), ("frames_analysed", "{}"), ("decode_only_s", "{:.2f}"),
            ("analyze_s", "{:.2f}"), ("analyze_over_decode", "{:.1f}x"), ("frames_per_s", "{:.1f}"),
            ("realtime_factor", "{:.1f}x"), ("peak_rss_analyze_mib", "{:.0f}"), ("render_fps", "{:.1f}"),
            ("peak_rss_render_mib", "{:.0f}")]
    table = [[name for name, _ in cols]] + [[fmt.format(r[name]) if r.get(name) is not None else "-" for name, fmt in cols]
                                            for r in rows]
    widths = [max(len(row[i]) for row in table) for i in range(len(cols))]
    for row in table:
        click.echo("  ".join(c.rjust(w) for c, w in zip(row, widths)))


@click.command()
@click.option("--weights", type=click.Path(file_okay=False), help="Detector folder (default: weights/; random weights if none).")
@click.option("--device", default="auto", show_default=True)
@click.option("--seconds", default=30.0, show_default=True, help="Length of the base clip.")
@click.option("--size", default="1280x720", show_default=True, help="Frame size of the clips.")
@click.option("--long-minutes", default=10.0, show_default=True, help="Length of the long clip (0 to skip).")
@click.option("--render/--no-render", default=True, show_default=True, help="Also time the annotated video.")
@click.option("--json-out", type=click.Path(dir_okay=False), help="Write the figures as JSON here.")
@click.option("--workdir", type=click.Path(file_okay=False), help="Keep the clips here (default: a temp folder).")
def bench(weights, device, seconds, size, long_minutes, render, json_out, workdir) -> None:
    """Measure decode-only vs full analysis, render speed and peak memory on generated clips."""
    import platform

    import torch

    from pipeline.config import AnalysisConfig
    from pipeline.runner import Analyzer
    from pipeline.samples import make_sample_video
    from stages.decode import Sampling
    from stages.ensemble import DetectorError, create_detector, load_detector

    width, height = (int(v) for v in size.lower().split("x"))
    config = AnalysisConfig(device=device, **({"weights": weights} if weights else {}))
    try:
        model = load_detector(config.weights)
        note = f"detector {model.config.name} {model.config.version}"
    except DetectorError:
        model = create_detector(trained=True)  # speed does not depend on the weights' values
        note = "no detector installed: random weights (timings are the same)"
    analyzer = Analyzer(config, model=model)
    tmp = tempfile.TemporaryDirectory(prefix="deepfake-bench-")
    work = Path(workdir or tmp.name)
    work.mkdir(parents=True, exist_ok=True)
    cpu = platform.processor() or platform.machine()
    click.echo(f"device {analyzer.device}, {torch.get_num_threads()} threads, {cpu}; {note}")
    t0 = time.perf_counter()
    base = make_sample_video(work / f"bench_{height}p_{seconds:g}s.mp4", seconds, 30.0, (width, height), faces=1, audio=True)
    click.echo(f"made {base.name} in {time.perf_counter() - t0:.1f} s")
    bench_clip(analyzer, base, Sampling("count", 2), None)  # warm-up: first-call allocations, lazy imports
    rows = [bench_clip(analyzer, base, Sampling("count", 32), work / "render" if render else None)]
    if long_minutes > 0:
        times = max(1, round(long_minutes * 60 / seconds))
        long_clip = loop_clip(base, work / f"bench_{height}p_{times * seconds / 60:g}min.mp4", times)
        rows.append(bench_clip(analyzer, long_clip, Sampling("count", 32), None))
        rows.append({**bench_clip(analyzer, long_clip, Sampling("fps", 1.0), None), "clip": long_clip.name + " @1fps"})
    _print_rows(rows)
    if json_out:
        Path(json_out).write_text(json.dumps({"device": str(analyzer.device), "threads": torch.get_num_threads(),
                                              "note": note, "rows": rows}, indent=1) + "\n")
    tmp.cleanup()
