"""The bench's whole-process measurements: cold CLI runs, and two analyses at once.

Cold runs are what a user or a script waits for per call (interpreter start, imports, model
load, one analysis); two at once is what `watch --workers 2` does, with each process given the
share of the cores that `pipeline.core.threads.thread_policy` decides.
"""
from __future__ import annotations

import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any

from deepfake_detect.pipeline.bench.measure import BenchError

if TYPE_CHECKING:
    from deepfake_detect.pipeline.core.analysis_process import AnalysisProcess
    from deepfake_detect.pipeline.core.config import AnalysisConfig
    from deepfake_detect.pipeline.core.report import AnalysisReport

# The two-at-once target: both finishing within 2.2x one alone (issue 16).
CONCURRENT_TARGET = 2.2
PROCESS_TIMEOUT_S = 900.0


def cli_command() -> list[str]:
    """How to start the CLI: the console script installed beside this interpreter (what users run),
    else `python -m deepfake_detect.pipeline`."""
    script = Path(sys.executable).with_name("deepfake-detect")
    return [str(script)] if script.is_file() else [sys.executable, "-m", "deepfake_detect.pipeline"]


def time_process(argv: Sequence[str], ok_codes: Sequence[int] = (0,)) -> float:
    """Wall time of one process, start to exit; an exit status outside `ok_codes` is a BenchError."""
    t0 = time.perf_counter()
    proc = subprocess.run(list(argv), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                          text=True, timeout=PROCESS_TIMEOUT_S)
    seconds = time.perf_counter() - t0
    if proc.returncode not in ok_codes:
        last = (proc.stderr.strip().splitlines() or ["no message"])[-1]
        raise BenchError(f"{' '.join(argv)} exited with {proc.returncode}: {last}")
    return seconds


def time_runs(argv: Sequence[str], runs: int, ok_codes: Sequence[int] = (0,)) -> dict[str, Any]:
    times = [time_process(argv, ok_codes) for _ in range(runs)]
    return {"runs_s": times, "min_s": min(times), "median_s": statistics.median(times)}


def cold_cli(clip: Path, work: Path, runs: int, options: Sequence[str]) -> dict[str, Any]:
    """Whole-process times of `analyze CLIP --no-render`, `--help` and `watch --status`.
    `options`: analysis options passed through to `analyze` (--weights, --device, ...)."""
    cli = cli_command()
    out = work / "cold-out"
    analyze = [*cli, "analyze", str(clip), "--no-render", "--out", str(out), *options]
    analyze_ok = (0, 1, 3)  # real, fake, inconclusive; 2 is a failure
    # untimed: the first run may export the ONNX files into the model cache
    time_process(analyze, analyze_ok)
    status_dir = work / "cold-watch-status"
    status_dir.mkdir(exist_ok=True)
    return {
        "clip": clip.name, "command": cli,
        "analyze": {**time_runs(analyze, runs, analyze_ok), "args": analyze[len(cli):]},
        "help": {**time_runs([*cli, "--help"], runs), "args": ["--help"]},
        # exit 1: no daemon is running there, which is the point (an empty folder)
        "watch_status": {**time_runs([*cli, "watch", "--status", "--out", str(status_dir)], runs, (0, 1)),
                         "args": ["watch", "--status", "--out", str(status_dir)]},
    }


def _analyse_all(procs: Sequence[AnalysisProcess], clip: Path) -> list[AnalysisReport]:
    """Send `clip` to every process at once; their reports, when all have finished."""
    stop, hurry = threading.Event(), threading.Event()   # never set: the bench waits for the end

    def one(proc: AnalysisProcess) -> AnalysisReport:
        kind, payload = proc.analyze(clip, None, PROCESS_TIMEOUT_S, stop, grace=0.0, hurry=hurry)
        if kind != "report":
            raise BenchError(f"{proc.name}: analysis {kind}: {payload}")
        if payload.errors:
            raise BenchError(f"{proc.name}: {clip.name}: {payload.errors[0]}")
        return payload

    with ThreadPoolExecutor(len(procs)) as pool:
        return list(pool.map(one, procs))


def analyses_in_processes(config: AnalysisConfig, clip: Path, n: int) -> dict[str, Any]:
    """`n` analysis processes, each with thread_policy(concurrent=n)'s share, analysing `clip` at the
    same time. Timed once all have loaded the model and analysed the clip once untimed (as the
    in-process warm analysis is)."""
    from deepfake_detect.pipeline.core.analysis_process import AnalysisProcess
    from deepfake_detect.pipeline.core.threads import thread_policy

    policy = thread_policy(concurrent=n)
    procs = [AnalysisProcess(config, render=False, threads=policy.compute, name=f"bench analysis {i + 1}")
             for i in range(n)]
    try:
        for proc in procs:
            proc.start()
        for proc in procs:
            proc.wait_ready()
        _analyse_all(procs, clip)
        t0 = time.perf_counter()
        reports = _analyse_all(procs, clip)
        wall_s = time.perf_counter() - t0
    finally:
        for proc in procs:
            proc.close()
    return {"processes": n, "threads": policy.as_dict(), "wall_s": wall_s,
            "each_s": [r.timings["total_s"] for r in reports], "frames_analysed": [r.frames_analysed for r in reports]}


def two_at_once(config: AnalysisConfig, clip: Path) -> dict[str, Any]:
    """One analysis alone vs two at once on `clip`; ratio = both's wall time / alone's."""
    alone = analyses_in_processes(config, clip, 1)
    both = analyses_in_processes(config, clip, 2)
    ratio = both["wall_s"] / alone["wall_s"]
    return {"clip": clip.name, "alone": alone, "both": both, "ratio": ratio, "target": CONCURRENT_TARGET,
            "within_target": ratio <= CONCURRENT_TARGET}
