"""The analysis child of the watch daemon and the server: a long-lived process that loads the model
once and analyses the files it is sent, supervised by `AnalysisProcess` in the daemon.

Why a process and not a thread: a decoder that hangs or segfaults on a hostile file must not take
the daemon with it, and a thread cannot be killed. A fresh process per file would reload the
model (~4 s) each time, so the child lives until a per-file timeout or a crash, when it is killed
and restarted (the only time the model is reloaded). It dies with the daemon (PR_SET_PDEATHSIG),
so a `kill -9` of the daemon leaves no orphan writing into OUT; every child is started from one
long-lived thread (`_spawn`) for the reason given there.
"""
from __future__ import annotations

import contextlib
import dataclasses
import logging
import multiprocessing
import os
import queue
import signal
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from pathlib import Path
from typing import TYPE_CHECKING, Any

from deepfake_detect.pipeline.core.report import ModelInfo

log = logging.getLogger(__name__)

if TYPE_CHECKING:
    from deepfake_detect.pipeline.core.config import AnalysisConfig
    from deepfake_detect.pipeline.core.runner import Progress

READY_TIMEOUT_S = 600.0   # model load in a fresh analysis process



def _die_with_parent(parent_pid: int) -> None:
    """Linux: get SIGKILL when the daemon dies (also by kill -9), so no orphan keeps writing."""
    if sys.platform.startswith("linux"):
        with contextlib.suppress(Exception):
            import ctypes

            ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)   # PR_SET_PDEATHSIG
    if os.getppid() != parent_pid:
        os._exit(1)


def _analysis_process(conn: Connection, config: AnalysisConfig, render: bool, threads: int, parent_pid: int,
                      debug: bool) -> None:
    """Child process: load the model once, then analyse each path it is sent."""
    # Ctrl-C in a terminal and systemd's SIGTERM reach the whole process group; the daemon decides
    # when this process stops (it finishes or abandons the current file first).
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    _die_with_parent(parent_pid)
    logging.basicConfig(level=logging.DEBUG if debug else logging.WARNING, format="%(levelname)s %(name)s: %(message)s")

    from deepfake_detect.pipeline.core.outputs import build_output_writers
    from deepfake_detect.pipeline.core.runner import Analyzer
    from deepfake_detect.pipeline.core.threads import thread_policy

    try:
        analyzer = Analyzer(config, threads=thread_policy(threads=threads))
        render_settings = dataclasses.replace(config.render, enabled="on" if render else "off")
        analyzer.outputs = build_output_writers(render_settings, n_inputs=1)
    except Exception as exc:  # noqa: BLE001 - reported to the daemon, which stops with the message
        conn.send(("fatal", f"{type(exc).__name__}: {exc}" if not str(exc) else str(exc)))
        return
    conn.send(("ready", (analyzer.model_info, analyzer.aggregate_settings.threshold, analyzer.backend)))
    while True:
        try:
            message = conn.recv()
        except (EOFError, OSError):
            return
        if message is None:
            return
        path, out_dir, input_config, want_progress = message

        def progress(done: int, total: int) -> None:
            conn.send(("progress", (done, total)))

        try:
            with analyzer.settings_for_input(input_config):
                report = analyzer.analyze(path, out_dir=out_dir, progress=progress if want_progress else None)
            conn.send(("report", report))
        except Exception as exc:  # noqa: BLE001 - e.g. a report that cannot be pickled
            conn.send(("error", f"internal error: {type(exc).__name__}: {exc}"))


class WorkerStartError(Exception):
    pass


# Linux sends the parent-death signal when the *thread* that forked the child exits, not when the
# process does. A child's life must not depend on which thread happened to start it (the main
# thread at start-up, a worker thread after a timeout or a crash), so every child is forked by
# this one thread, which lives exactly as long as the daemon process. The alternative, a child
# polling os.getppid(), was not taken: a child hung in a decoder (C code holding the GIL) never
# gets to poll and would outlive a `kill -9` of the daemon; the kernel's signal always arrives.
_spawn_requests: queue.SimpleQueue[tuple[Callable[[], None], Future[None]]] = queue.SimpleQueue()
_spawner: threading.Thread | None = None
_spawner_lock = threading.Lock()


def _spawner_loop() -> None:
    while True:
        start, done = _spawn_requests.get()
        try:
            start()
        except BaseException as exc:  # noqa: BLE001 - handed to the thread that asked
            done.set_exception(exc)
        else:
            done.set_result(None)


def _spawn(start: Callable[[], None]) -> None:
    """Run `start` (which forks) on the long-lived spawner thread; re-raise what it raises."""
    global _spawner
    with _spawner_lock:
        if _spawner is None:
            # daemon: never joined, it ends only with the process, which is the point
            _spawner = threading.Thread(target=_spawner_loop, name="analysis-spawner", daemon=True)
            _spawner.start()
    done: Future[None] = Future()
    _spawn_requests.put((start, done))
    done.result()


class AnalysisProcess:
    """Supervises one long-lived analysis child (see the module docstring for why).

    The worker thread that owns an instance is its only regular user; the daemon calls `close()`
    from its own thread at shutdown. A lock makes `close()` wait for the call in progress (which
    returns within the stop grace), and a closed instance refuses all further work, so a worker
    that is still running when the daemon stops can never use or restart a stopped child."""

    def __init__(self, config: AnalysisConfig, render: bool, threads: int, name: str, debug: bool = False):
        self.config, self.render, self.threads, self.name, self.debug = config, render, threads, name, debug
        self._ctx = multiprocessing.get_context("spawn")   # no fork after threads were started
        self.proc: BaseProcess | None = None
        self.conn: Connection | None = None
        self.model_info: ModelInfo | None = None
        self.threshold: float | None = None
        self.backend: str | None = None       # "onnx" or "torch", as the child resolved "auto"
        self._lock = threading.RLock()   # reentrant: restart() calls kill(), start(), wait_ready()
        self._closed = False

    def start(self) -> None:
        with self._lock:
            if self._closed:
                raise WorkerStartError(f"{self.name} is closed: the daemon is stopping")
            parent_conn, child_conn = self._ctx.Pipe(duplex=True)
            proc = self._ctx.Process(target=_analysis_process, name=f"deepfake-detect {self.name}", daemon=True,
                                     args=(child_conn, self.config, self.render, self.threads, os.getpid(),
                                           self.debug))
            try:
                _spawn(proc.start)
            finally:
                child_conn.close()
            self.proc, self.conn = proc, parent_conn

    def wait_ready(self, timeout: float = READY_TIMEOUT_S, stop: threading.Event | None = None) -> None:
        """Wait for the model to load; a set `stop` gives up early (a model load must not hold up
        the daemon's shutdown)."""
        with self._lock:
            if self.proc is None or self.conn is None:
                raise WorkerStartError(f"{self.name} is not running")
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                if stop is not None and stop.is_set():
                    self.kill()
                    raise WorkerStartError("stopped while the analysis process was loading the model")
                if self.conn.poll(0.2):
                    try:
                        kind, payload = self.conn.recv()
                    except (EOFError, OSError):
                        break
                    if kind == "ready":
                        self.model_info, self.threshold, self.backend = payload
                        return
                    self.kill()
                    raise WorkerStartError(payload)
                if not self.proc.is_alive():
                    break
            code = self.proc.exitcode
            self.kill()
            raise WorkerStartError(f"the analysis process did not start (exit code {code})")

    def restart(self, stop: threading.Event | None = None) -> None:
        with self._lock:
            self.kill()
            self.start()
            self.wait_ready(stop=stop)

    def analyze(self, path: Path, out_dir: Path | None, timeout: float, stop: threading.Event, grace: float,
                hurry: threading.Event, progress: Progress | None = None,
                config: AnalysisConfig | None = None) -> tuple[str, Any]:
        """-> ("report", report) | ("error", message) | ("timeout", seconds) | ("crashed", exit code) |
        ("abandoned", None): stop was requested and the file did not finish within `grace` (or a
        second signal set `hurry`), or the process was closed by the daemon's shutdown.

        `progress(done, total)` is called (on this thread) as the child gets through the sampled
        frames; `config` analyses this one input with other settings, which may differ from the
        process's only in PER_INPUT_SETTINGS (the rest was fixed when the model loaded)."""
        if config is not None:
            from deepfake_detect.pipeline.core.config import check_per_input

            check_per_input(self.config, config)  # here too: refused before the child is bothered
        with self._lock:
            if self._closed:
                return "abandoned", None
            if self.proc is None or self.conn is None:
                return "crashed", None   # killed after a timeout and not restarted
            try:
                self.conn.send((path, out_dir, config, progress is not None))
            except (OSError, EOFError):
                return "crashed", self.proc.exitcode
            started = time.monotonic()
            stop_seen: float | None = None
            while True:
                if self.conn.poll(0.1):
                    try:
                        result: tuple[str, Any] = self.conn.recv()
                    except (EOFError, OSError):
                        self.proc.join(2)
                        return "crashed", self.proc.exitcode
                    if result[0] != "progress":
                        return result
                    if progress is not None:
                        try:
                            progress(*result[1])
                        except Exception:  # noqa: BLE001 - a failed progress note must not lose the result
                            log.warning("progress callback failed", exc_info=True)
                if not self.proc.is_alive():
                    return "crashed", self.proc.exitcode
                now = time.monotonic()
                if now - started > timeout:
                    self.kill()
                    return "timeout", timeout
                if stop.is_set():
                    stop_seen = stop_seen or now
                    if now - stop_seen > grace or hurry.is_set():
                        self.kill()
                        return "abandoned", None

    def kill(self) -> None:
        with self._lock:
            if self.proc is not None and self.proc.is_alive():
                self.proc.kill()
                self.proc.join(10)
            if self.conn is not None:
                self.conn.close()
            self.proc = self.conn = None

    def close(self) -> None:
        """Stop the child for good (idempotent); waits for a call in progress on another thread."""
        with self._lock:
            self._closed = True
            if self.proc is not None and self.conn is not None and self.proc.is_alive():
                with contextlib.suppress(OSError, EOFError):
                    self.conn.send(None)
                self.proc.join(5)
            self.kill()
