"""One Ray worker of `analyze --engine ray`: a process that holds one loaded detector and analyses
whole files with the same `Analyzer` (and the same settings) as a local `analyze`.

The class is plain Python; `pipeline.archive.ray_engine` turns it into a Ray actor with `ray.remote`, so
this module imports nothing heavy and Ray only inside the worker. The driver decides every file
name: a task carries the input's path and the folder for its annotated outputs, and the worker
sends the report back instead of writing it, so results.csv and the journal have one writer.
"""
from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

# Tests only: a worker analysing a file of this name dies on the spot, as one would on a decoder
# crash, so the driver's handling of a file that kills every worker it meets can be tested.
CRASH_ON_ENV = "DEEPFAKE_DETECT_TEST_CRASH_ON"
# Tests only: a worker analysing a file whose name contains this hangs, as one would on a decoder
# hang, so the driver's --timeout can be tested.
HANG_ON_ENV = "DEEPFAKE_DETECT_TEST_HANG_ON"

if TYPE_CHECKING:
    from deepfake_detect.pipeline.core.config import AnalysisConfig
    from deepfake_detect.pipeline.core.report import AnalysisReport
    from deepfake_detect.pipeline.core.threads import ThreadPolicy


@dataclass(frozen=True)
class Task:
    entry_id: int    # the input's journal row
    path: str        # absolute: a worker's working directory is not the driver's
    folder: str      # where its annotated video and keyframes go


@dataclass(frozen=True)
class Outcome:
    entry_id: int
    worker: str      # the Ray actor id: the driver's key for the task a worker holds
    pid: int
    report: AnalysisReport


class AnalysisWorker:
    def __init__(self, config: AnalysisConfig, n_inputs: int, threads: ThreadPolicy):
        """`n_inputs`: the run's number of inputs, for the same rendering rule as a local run
        (the annotated video is on by default for a single input only)."""
        import ray

        from deepfake_detect.pipeline.core.outputs import build_output_writers
        from deepfake_detect.pipeline.core.runner import Analyzer

        self.analyzer = Analyzer(config, threads=threads)
        self.analyzer.outputs = build_output_writers(config.render, n_inputs=n_inputs)
        self.worker_id = ray.get_runtime_context().get_actor_id() or ""

    def ready(self) -> dict[str, Any]:
        """Who this worker is, once its detector has loaded."""
        import ray

        return {"worker": self.worker_id, "pid": os.getpid(), "node": ray.get_runtime_context().get_node_id(),
                "device": str(self.analyzer.device), "backend": self.analyzer.backend,
                "threads": self.analyzer.threads.as_dict()}

    def analyze(self, task: Task) -> Outcome:
        # Analyzer.analyze turns every failure of the input into an error report, so this returns
        # for any file; only the process dying (a crash, the OOM killer, a lost node) does not.
        if os.environ.get(CRASH_ON_ENV) == Path(task.path).name:
            os._exit(70)
        if os.environ.get(HANG_ON_ENV) and os.environ[HANG_ON_ENV] in Path(task.path).name:
            while True:
                time.sleep(3600)
        report = self.analyzer.analyze(task.path, out_dir=Path(task.folder))
        return Outcome(task.entry_id, self.worker_id, os.getpid(), report)
