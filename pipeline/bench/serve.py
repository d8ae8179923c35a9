"""`deepfake-detect serve-bench`: many clients at once against the server's job API.

Each client uploads the same short synthetic clip (made here) to POST /v1/jobs, retries after
`Retry-After` on 503, and polls its job until it is done or failed. Reported: jobs done/failed,
wall time, jobs/s, latency from a client's first upload attempt to seeing its job finished (p50,
p95), the 503 count, and, when the bench started the server itself, the peak resident memory of
the server and its analysis processes together.
"""
from __future__ import annotations

import asyncio
import json
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import click

from deepfake_detect.pipeline.bench.measure import PeakMemory
from deepfake_detect.pipeline.core.errors import CommandError

START_TIMEOUT_S = 600.0    # server start: imports and one model load per worker
POLL_S = 0.5


@dataclass
class BenchResult:
    url: str
    clients: int
    clip: dict[str, Any]
    jobs_done: int = 0
    jobs_failed: int = 0
    client_errors: list[str] = field(default_factory=list)   # uploads refused (not 503) or jobs lost
    rejected_503: int = 0
    wall_s: float = 0.0
    jobs_per_s: float = 0.0
    latency_p50_s: float | None = None
    latency_p95_s: float | None = None
    server_rss_peak_mib: float | None = None   # only for a server the bench started

    def text(self) -> str:
        lat = ("-" if self.latency_p50_s is None else
               f"p50 {self.latency_p50_s:.1f} s, p95 {self.latency_p95_s:.1f} s")
        rss = "-" if self.server_rss_peak_mib is None else f"{self.server_rss_peak_mib:.0f} MiB"
        lines = [f"server            {self.url}",
                 f"clients           {self.clients} (one {self.clip['seconds']:g} s {self.clip['size']} clip each)",
                 f"jobs              {self.jobs_done} done, {self.jobs_failed} failed, {len(self.client_errors)} lost",
                 f"wall time         {self.wall_s:.1f} s ({self.jobs_per_s:.2f} jobs/s)",
                 f"latency           {lat} (first upload attempt -> job finished)",
                 f"503 (queue full)  {self.rejected_503}",
                 f"server peak RSS   {rss}"]
        lines += [f"error: {e}" for e in self.client_errors[:5]]
        return "\n".join(lines)


async def _one_client(http: Any, clip: bytes, fields: dict[str, str], result: BenchResult, timeout_s: float) -> float | None:
    """Upload, poll to the end; the latency, or None when the job was lost."""
    t0 = time.perf_counter()
    while True:
        r = await http.post("/v1/jobs", files={"file": ("bench.mp4", clip, "video/mp4")}, data=fields)
        if r.status_code != 503:
            break
        result.rejected_503 += 1
        await asyncio.sleep(float(r.headers.get("retry-after") or 1))
    if r.status_code != 202:
        result.client_errors.append(f"upload: HTTP {r.status_code}: {r.text[:200]}")
        return None
    url = r.json()["urls"]["self"]
    while time.perf_counter() - t0 < timeout_s:
        await asyncio.sleep(POLL_S)
        job = (await http.get(url)).json()
        if job["state"] in ("done", "failed"):
            if job["state"] == "done":
                result.jobs_done += 1
            else:
                result.jobs_failed += 1
            return time.perf_counter() - t0
    result.client_errors.append(f"job {url} did not finish within {timeout_s:g} s")
    return None


async def _run_clients(url: str, clients: int, clip: bytes, fields: dict[str, str], headers: dict[str, str],
                       result: BenchResult, timeout_s: float) -> list[float]:
    import httpx

    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(base_url=url, headers=headers, limits=limits, timeout=120.0) as http:
        latencies = await asyncio.gather(*(_one_client(http, clip, fields, result, timeout_s) for _ in range(clients)),
                                         return_exceptions=True)
    out = []
    for value in latencies:
        if isinstance(value, BaseException):
            result.client_errors.append(f"{type(value).__name__}: {value}")
        elif value is not None:
            out.append(value)
    return out


def free_loopback_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def tree_rss_mib(pid: int) -> Callable[[], float]:
    """A reader of the resident memory (MiB) of process `pid` and its children together."""
    import psutil

    root = psutil.Process(pid)

    def read() -> float:
        try:
            return sum(p.memory_info().rss for p in [root, *root.children(recursive=True)]) / 1024**2
        except psutil.Error:
            return 0.0   # a process came or went between the listing and the reading: skip this sample
    return read


@contextmanager
def _own_server(workers: int, server_args: list[str], folder: Path) -> Iterator[tuple[str, PeakMemory]]:
    """`deepfake-detect serve` on a free loopback port with its own data folder; stopped (SIGTERM) after."""
    import httpx

    from deepfake_detect.pipeline.bench.processes import cli_command

    port = free_loopback_port()
    log_path = folder / "server.log"
    with open(log_path, "w") as log:
        proc = subprocess.Popen([*cli_command(), "serve", "--data", str(folder / "data"), "--port", str(port),
                                 "--workers", str(workers), *server_args],
                                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        with PeakMemory(tree_rss_mib(proc.pid), every_s=0.2).measure() as memory:
            deadline = time.monotonic() + START_TIMEOUT_S
            while True:
                if proc.poll() is not None:
                    last = (log_path.read_text(errors="replace").strip().splitlines() or ["no output"])[-1]
                    raise CommandError(f"the server exited with {proc.returncode}: {last}")
                try:
                    if httpx.get(f"{url}/healthz", timeout=2).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                if time.monotonic() > deadline:
                    raise CommandError(f"the server did not start within {START_TIMEOUT_S:g} s (see {log_path})")
                time.sleep(0.5)
            yield url, memory
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def run_bench(clients: int, url: str | None, seconds: float, size: tuple[int, int], fields: dict[str, str],
              api_key: str | None, workers: int, server_args: list[str], timeout_s: float) -> BenchResult:
    import numpy as np

    from deepfake_detect.pipeline.core.samples import make_sample_video

    headers = {"X-API-Key": api_key} if api_key else {}
    with tempfile.TemporaryDirectory(prefix="serve-bench-") as tmp:
        folder = Path(tmp)
        clip = make_sample_video(folder / "bench.mp4", seconds, 25.0, size, faces=1).read_bytes()
        clip_info = {"seconds": seconds, "size": f"{size[0]}x{size[1]}", "bytes": len(clip)}
        with _target(url, workers, server_args, folder) as (target, memory):
            result = BenchResult(url=target, clients=clients, clip=clip_info)
            t0 = time.perf_counter()
            latencies = asyncio.run(_run_clients(target, clients, clip, fields, headers, result, timeout_s))
            result.wall_s = time.perf_counter() - t0
            if memory is not None:
                result.server_rss_peak_mib = round(memory.peak_mib, 1)
    finished = result.jobs_done + result.jobs_failed
    result.jobs_per_s = finished / result.wall_s if result.wall_s else 0.0
    if latencies:
        p50, p95 = np.percentile(latencies, [50, 95])
        result.latency_p50_s, result.latency_p95_s = round(float(p50), 2), round(float(p95), 2)
    result.wall_s = round(result.wall_s, 2)
    result.jobs_per_s = round(result.jobs_per_s, 3)
    return result


@contextmanager
def _target(url: str | None, workers: int, server_args: list[str],
            folder: Path) -> Iterator[tuple[str, PeakMemory | None]]:
    if url:
        yield url.rstrip("/"), None
        return
    with _own_server(workers, server_args, folder) as (own_url, memory):
        yield own_url, memory


@click.command("serve-bench")
@click.option("--clients", type=click.IntRange(1, 10000), default=50, show_default=True,
              help="Concurrent clients, one job each.")
@click.option("--url", help="A running server (default: start one on a free loopback port with its own data folder).")
@click.option("--seconds", type=click.FloatRange(min=0.2), default=3.0, show_default=True,
              help="Length of the clip each client uploads.")
@click.option("--size", default="640x360", show_default=True, help="Frame size of the clip.")
@click.option("--frames", type=click.IntRange(1), help="Frames each job samples (its `frames` field; default the server's).")
@click.option("--render/--no-render", default=None, help="Each job's `render` field (default the server's).")
@click.option("--api-key", envvar="DEEPFAKE_DETECT_API_KEY", help="For a server that needs one (or $DEEPFAKE_DETECT_API_KEY).")
@click.option("--timeout", type=click.FloatRange(min=1), default=1800.0, show_default=True,
              help="Seconds a client waits for its job.")
@click.option("--workers", type=click.IntRange(1, 64), default=1, show_default=True, help="The started server's workers.")
@click.option("--weights", type=click.Path(file_okay=False), help="The started server's detector folder.")
@click.option("--device", help="The started server's device.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def serve_bench(clients, url, seconds, size, frames, render, api_key, timeout, workers, weights, device, as_json):
    """Load-test the server: CLIENTS upload a clip each at once and wait for their jobs.

    Without --url it starts `deepfake-detect serve` itself (and reports its peak memory)."""
    from deepfake_detect.pipeline.bench.measure import BenchError, parse_size

    try:
        frame_size = parse_size(size)
    except BenchError as exc:
        raise CommandError(str(exc)) from None
    fields = {k: v for k, v in (("frames", frames and str(frames)),
                                ("render", None if render is None else str(render).lower())) if v}
    server_args = [*(["--weights", weights] if weights else []), *(["--device", device] if device else [])]
    result = run_bench(clients, url, seconds, frame_size, fields, api_key, workers, server_args, timeout)
    click.echo(json.dumps(asdict(result)) if as_json else result.text())
    if result.client_errors:
        sys.exit(1)   # a job was lost: that is a finding, not a number
