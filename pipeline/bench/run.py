"""`deepfake-detect bench`: speed and memory on clips it makes itself, all figures from one run.

For each clip (a 30-s 720p clip, a 10-s 1080p clip, and the 30-s clip looped to 10 minutes by
stream copy): decode-only time of the sampled frames, warm analysis time (decode, detect,
classify, aggregate on an already loaded Analyzer), their ratio, frames/s, realtime factor and
peak resident memory; render speed of the annotated video. Then, on the 30-s clip: a naive
reference loop, the no-loss check (ONNX Runtime vs PyTorch), cold CLI processes, and two
analyses at once. The parts live in pipeline/bench_*.py; this module runs them in order.
"""
from __future__ import annotations

import json
import os
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import click

from deepfake_detect.pipeline.bench.measure import BenchError, bench_clip, loop_clip, make_clip, parse_size, sampling_of
from deepfake_detect.pipeline.core.errors import CommandError

if TYPE_CHECKING:
    from deepfake_detect.pipeline.core.config import AnalysisConfig
    from deepfake_detect.pipeline.core.runner import Analyzer
    from deepfake_detect.stages.ensemble import EnsembleDetector


@dataclass(frozen=True)
class BenchPlan:
    """What to measure (the command's options)."""

    weights: str | None
    device: str
    backend: str
    threads: int | None
    seconds: float
    size: tuple[int, int]
    frames: int
    hd_seconds: float
    hd_size: tuple[int, int]
    long_minutes: float
    render: bool
    naive: bool
    compare_backends: bool
    cold: bool
    cold_runs: int
    concurrent: bool
    engines: bool = False   # --engine local vs --engine ray (starts Ray: off unless asked for)
    architectures: bool = False   # crops/s of every member architecture, ours and the published ones


def load_bench_detector(weights: str | None, work: Path) -> tuple[EnsembleDetector, Path, str]:
    """(detector, its folder, a note). With no detector installed, random weights saved in `work`:
    speed does not depend on the weights' values, and the child processes need a folder to load."""
    from deepfake_detect.pipeline.core.config import DEFAULT_WEIGHTS
    from deepfake_detect.stages.ensemble import DetectorError, create_detector, load_detector, save_detector

    folder = Path(weights or DEFAULT_WEIGHTS)
    try:
        model = load_detector(folder)
        return model, folder, f"detector {model.config.name} {model.config.version}"
    except DetectorError as exc:
        if weights:  # asked for by name: timing some other detector would mislead
            raise BenchError(str(exc)) from None
    model = create_detector(trained=True)
    folder = save_detector(model, work / "random-detector")
    return model, folder, "no detector installed: random weights (timings are the same)"


def bench_config(plan: BenchPlan, weights: Path) -> AnalysisConfig:
    """The settings `analyze` would use (configs/default.yaml) with the bench's device and sampling."""
    from deepfake_detect.pipeline.core.config import ConfigError, load_config

    try:
        return load_config(None, {"device": plan.device, "backend": plan.backend, "weights": str(weights),
                                  "threads": plan.threads, "sampling.mode": "count", "sampling.value": plan.frames})
    except ConfigError as exc:
        raise BenchError(str(exc)) from None


def analyzer_for(config: AnalysisConfig, model: EnsembleDetector) -> Analyzer:
    from deepfake_detect.pipeline.core.runner import Analyzer

    try:
        return Analyzer(config, model=model)
    except ValueError as exc:  # e.g. backend onnx on a GPU
        raise BenchError(str(exc)) from None


def no_loss_check(analyzer: Analyzer, other: Analyzer, clips: list[Path]) -> dict[str, Any]:
    """Both backends on `clips`: the bench's own analyzer and `other`, one of the other backend."""
    from deepfake_detect.pipeline.bench.backends import compare_backends
    from deepfake_detect.stages.decode import Sampling

    with sampling_of(other, Sampling("count", 2)):
        other.analyze(clips[0])  # warm-up, as the bench's analyzer had
    by_backend = {analyzer.backend: analyzer, other.backend: other}
    return compare_backends(by_backend["onnx"], by_backend["torch"], clips)


def _load_average() -> float | None:
    """The 1-minute load average: other work on the machine inflates every figure, and shows here."""
    try:
        return round(os.getloadavg()[0], 2)
    except (AttributeError, OSError):  # not Unix
        return None


def run_bench(plan: BenchPlan, work: Path, say: Callable[[str], None]) -> dict[str, Any]:
    import platform

    from deepfake_detect.pipeline.bench.naive import naive_loop
    from deepfake_detect.pipeline.bench.processes import cold_cli, two_at_once
    from deepfake_detect.stages.decode import Sampling, open_media

    load_start = _load_average()
    model, weights, note = load_bench_detector(plan.weights, work)
    config = bench_config(plan, weights)
    analyzer = analyzer_for(config, model)
    cpu = platform.processor() or platform.machine()
    threads = analyzer.threads.as_dict()
    say(f"device {analyzer.device}, backend {analyzer.backend}, {threads['compute']} compute / {threads['decode']} decode "
        f"threads, {os.cpu_count()} cores, {cpu}; {note}; load average {load_start}")
    t0 = time.perf_counter()
    base = make_clip(work, plan.seconds, plan.size)
    hd = make_clip(work, plan.hd_seconds, plan.hd_size) if plan.hd_seconds > 0 else None
    say(f"made {', '.join(p.name for p in (base, hd) if p)} in {time.perf_counter() - t0:.1f} s")
    bench_clip(analyzer, base, Sampling("count", 2), None, "warm-up")  # first-call allocations, lazy imports
    sampling = Sampling("count", plan.frames)
    base_result = bench_clip(analyzer, base, sampling, work / "render" if plan.render else None, "base")
    rows = [base_result.row]
    if hd is not None:
        rows.append(bench_clip(analyzer, hd, sampling, None, "hd").row)
    if plan.long_minutes > 0:
        times = max(1, round(plan.long_minutes * 60 / plan.seconds))
        long_clip = loop_clip(base, work / f"bench_{plan.size[1]}p_{times * plan.seconds / 60:g}min.mp4", times)
        rows.append(bench_clip(analyzer, long_clip, sampling, None, "long").row)
        rows.append({**bench_clip(analyzer, long_clip, Sampling("fps", 1.0), None, "long_fps1").row,
                     "clip": long_clip.name + " @1fps"})
    say(f"analysed {len(rows)} clips")
    result: dict[str, Any] = {
        "device": str(analyzer.device), "backend": analyzer.backend, "threads": threads, "cores": os.cpu_count(),
        "cpu": cpu, "note": note, "weights": str(weights), "frames": plan.frames, "rows": rows,
        "naive": None, "no_loss": None, "cold_cli": None, "concurrent": None, "engines": None, "architectures": None,
        "skipped": {},
    }
    if plan.naive:
        naive = naive_loop(analyzer, base, open_media(base, config.limits).sample(sampling))
        pipeline_s = base_result.row["analyze_s"]
        result["naive"] = {**naive, "pipeline_s": pipeline_s, "ratio": naive["naive_s"] / pipeline_s,
                           "pipeline_frames": base_result.report.frames_analysed,
                           "pipeline_faces": sum(len(t.faces) for t in base_result.report.tracks)}
        say(f"naive loop: {naive['naive_s']:.2f} s")
    if plan.compare_backends and analyzer.device.type != "cpu":
        result["skipped"]["no_loss"] = "ONNX Runtime runs on the CPU only"
    elif plan.compare_backends:
        other: Literal["onnx", "torch"] = "torch" if analyzer.backend == "onnx" else "onnx"
        try:
            second = analyzer_for(replace(config, backend=other), model)
        except BenchError as exc:  # e.g. onnxruntime not installed: the other figures still stand
            result["skipped"]["no_loss"] = str(exc)
        else:
            result["no_loss"] = no_loss_check(analyzer, second, [base, *([hd] if hd else [])])
            say("no-loss check done")
    if plan.cold:
        options = ["--weights", str(weights), "--frames", str(plan.frames), "--device", plan.device,
                   "--backend", plan.backend, *(["--threads", str(plan.threads)] if plan.threads else [])]
        result["cold_cli"] = cold_cli(base, work, plan.cold_runs, options)
        say("cold CLI runs done")
    if plan.concurrent:
        result["concurrent"] = two_at_once(config, base)
    if plan.engines:
        from deepfake_detect.pipeline.bench.engines import engines_bench

        try:
            result["engines"] = engines_bench(analyzer, base, work, say)
        except BenchError as exc:   # e.g. ray not installed: the other figures still stand
            result["skipped"]["engines"] = str(exc)
    if plan.architectures:
        from deepfake_detect.pipeline.bench.architectures import architectures_bench

        result["architectures"] = architectures_bench(threads["compute"], say)
    result["load_average"] = {"start": load_start, "end": _load_average()}
    return result


@contextmanager
def stdout_reserved(reserve: bool) -> Iterator[None]:
    """With `reserve`, point file descriptor 1 at stderr for the block: ffmpeg, the CLI and analysis
    processes the bench starts and C libraries write to it directly, and --json promises stdout
    holds the JSON alone. A no-op where stdout is not a real file (click's test runner)."""
    try:
        fd, err_fd = sys.stdout.fileno(), sys.stderr.fileno()
    except (AttributeError, OSError, ValueError):  # io.UnsupportedOperation is both
        reserve = False
    if not reserve:
        yield
        return
    sys.stdout.flush()
    saved = os.dup(fd)
    os.dup2(err_fd, fd)
    try:
        yield
    finally:
        sys.stdout.flush()
        os.dup2(saved, fd)
        os.close(saved)


@click.command()
@click.option("--weights", type=click.Path(file_okay=False), help="Detector folder (default: weights/; random weights if none).")
@click.option("--device", default="auto", show_default=True)
@click.option("--backend", type=click.Choice(["auto", "onnx", "torch"]), default="auto", show_default=True,
              help="Backend of the timed analyses (auto: ONNX Runtime on CPU).")
@click.option("--threads", type=click.IntRange(min=1),
              help="CPU threads of the in-process and cold CLI analyses (default: all cores).")
@click.option("--seconds", default=30.0, show_default=True, help="Length of the base clip.")
@click.option("--size", default="1280x720", show_default=True, help="Frame size of the base and long clips.")
@click.option("--frames", default=32, type=click.IntRange(min=1), show_default=True, help="Frames sampled per clip.")
@click.option("--hd-seconds", default=10.0, show_default=True, help="Length of the high-resolution clip (0 to skip).")
@click.option("--hd-size", default="1920x1080", show_default=True, help="Frame size of the high-resolution clip.")
@click.option("--long-minutes", default=10.0, show_default=True, help="Length of the long clip (0 to skip).")
@click.option("--render/--no-render", default=True, show_default=True, help="Also time the annotated video.")
@click.option("--naive/--no-naive", default=True, show_default=True, help="Time the naive reference loop.")
@click.option("--compare-backends/--no-compare-backends", default=True, show_default=True,
              help="No-loss check: ONNX Runtime vs PyTorch on the same clips (CPU only).")
@click.option("--cold/--no-cold", default=True, show_default=True, help="Time whole CLI processes.")
@click.option("--cold-runs", default=3, type=click.IntRange(min=1), show_default=True, help="Timed runs per cold command.")
@click.option("--engines/--no-engines", default=False, show_default=True,
              help="Files/s of analyze --engine local vs --engine ray (1 and 2 workers, a local Ray instance).")
@click.option("--architectures/--no-architectures", default=False, show_default=True,
              help="Also time every member architecture, ours and the importable published ones (random weights).")
@click.option("--concurrent/--no-concurrent", default=True, show_default=True,
              help="Time two analysis processes at once against one alone.")
@click.option("--json", "as_json", is_flag=True, help="Print the figures as one JSON object on stdout (the rest goes to stderr).")
@click.option("--json-out", type=click.Path(dir_okay=False), help="Write the figures as JSON here.")
@click.option("--workdir", type=click.Path(file_okay=False), help="Keep the clips here (default: a temp folder).")
def bench(weights, device, backend, threads, seconds, size, frames, hd_seconds, hd_size, long_minutes, render, naive,
          compare_backends, cold, cold_runs, architectures, concurrent, engines, as_json, json_out, workdir) -> None:
    """Measure analysis speed and memory on generated clips, against a naive loop and cold processes."""
    from deepfake_detect.pipeline.bench.tables import print_tables

    try:
        plan = BenchPlan(weights=weights, device=device, backend=backend, threads=threads, seconds=seconds,
                         size=parse_size(size), frames=frames, hd_seconds=hd_seconds, hd_size=parse_size(hd_size),
                         long_minutes=long_minutes, render=render, naive=naive, compare_backends=compare_backends,
                         cold=cold, cold_runs=cold_runs, concurrent=concurrent, engines=engines,
                         architectures=architectures)
    except BenchError as exc:
        raise CommandError(str(exc)) from None

    def say(line: str) -> None:
        click.echo(line, err=as_json)

    with tempfile.TemporaryDirectory(prefix="deepfake-bench-") as tmp, stdout_reserved(as_json):
        work = Path(workdir or tmp)
        work.mkdir(parents=True, exist_ok=True)
        try:
            result = run_bench(plan, work, say)
        except BenchError as exc:
            raise CommandError(str(exc)) from None
        print_tables(result, say)
    text = json.dumps(result, indent=1)
    if json_out:
        Path(json_out).write_text(text + "\n")
    if as_json:
        click.echo(text)
