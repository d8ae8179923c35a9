"""`analyze --engine ray`: same reports as a local run, exactly once, resumable (issue 14).

The end-to-end tests run the CLI in a subprocess, each starting its own local Ray instance on
this machine's cores (dashboard off), on the conftest's tiny clips plus a truncated copy of one.
`--threshold 0.99` keeps the random-weight detector from calling anything fake, so the exit status
shows the bad file (2) instead of a fake (1).
"""
from __future__ import annotations

import csv
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytest.importorskip("ray", reason="ray is not installed (pip install 'ray>=2.9'): --engine ray cannot run")

from deepfake_detect.pipeline.archive.journal import JOURNAL_NAME, BatchJournal, content_sha256  # noqa: E402
from deepfake_detect.pipeline.archive.ray_engine import worker_shape  # noqa: E402
from deepfake_detect.pipeline.archive.ray_worker import CRASH_ON_ENV, HANG_ON_ENV  # noqa: E402
from deepfake_detect.pipeline.cli.common import CommandError  # noqa: E402
from deepfake_detect.pipeline.core.inputs import read_path_list  # noqa: E402
from deepfake_detect.pipeline.core.writers import output_stem  # noqa: E402

TIMEOUT_S = 240
WORKER_TITLE = "ray::AnalysisWorker.analyze"   # a Ray worker's process title while it analyses a file


@pytest.fixture(scope="module")
def archive(clips, tmp_path_factory) -> Path:
    """Three clips (one face, two faces, none) and a video cut off after 2 KB."""
    folder = tmp_path_factory.mktemp("archive")
    for key in ("one", "two", "none"):
        shutil.copy(clips[key], folder / clips[key].name)
    (folder / "cut.mp4").write_bytes(clips["two"].read_bytes()[:2048])
    return folder


def _env(**extra: str) -> dict[str, str]:
    # never join a cluster someone else's shell points at
    return {**{k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}, **extra}


def _argv(weights_dir: Path, out: Path, *args: str) -> list[str]:
    return [sys.executable, "-m", "deepfake_detect.pipeline", "analyze", *args, "--out", str(out), "--weights", str(weights_dir),
            "--frames", "8", "--threshold", "0.99", "--device", "cpu"]


def _analyze(weights_dir: Path, out: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(_argv(weights_dir, out, *args), capture_output=True, text=True, timeout=TIMEOUT_S,
                          env=env or _env())


def _csv_paths(out: Path) -> list[str]:
    with open(out / "results.csv", newline="", encoding="utf-8") as fh:
        return [row["path"] for row in csv.DictReader(fh)]


def _reports(out: Path) -> dict[str, dict]:
    """The JSON reports in `out`, by input file name."""
    reports = [json.loads(p.read_text()) for p in out.glob("*.json")]
    return {Path(r["input"]["path"]).name: r for r in reports}


def _exactly_once(out: Path, archive: Path, failed: int = 1) -> dict[str, dict]:
    """Every input of `archive` has one JSON report and one results.csv line; the reports."""
    names = sorted(p.name for p in archive.iterdir())
    assert sorted(Path(p).name for p in _csv_paths(out)) == names
    assert sorted(p.name for p in out.glob("*.json")) == sorted(f"{output_stem(n)}.json" for n in names)
    reports = _reports(out)
    assert sorted(reports) == names
    journal = BatchJournal(out / JOURNAL_NAME)
    try:
        assert journal.counts() == {"queued": 0, "running": 0, "done": len(names) - failed, "failed": failed}
    finally:
        journal.close()
    return reports


def _session(proc: subprocess.Popen) -> list[int]:
    """The processes of the session `proc` leads: the driver and the Ray processes it started
    (Ray workers have process groups of their own, but stay in the driver's session)."""
    import psutil

    found = []
    for pid in psutil.pids():
        try:
            if os.getsid(pid) == proc.pid:
                found.append(pid)
        except OSError:
            continue
    return found


def _kill_session(proc: subprocess.Popen) -> None:
    """End what is left of a driver started in its own session: only processes this test started."""
    for pid in _session(proc):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def _wait_for(condition, what: str, timeout: float = 180.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)


# -- without Ray ------------------------------------------------------------------------------------
def test_help_does_not_import_ray():
    code = "import sys; from deepfake_detect.pipeline.cli import main; sys.exit('ray' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], timeout=60).returncode == 0


def test_a_path_list_is_lines_or_a_csv_with_a_path_column(tmp_path):
    (tmp_path / "lists").mkdir()
    plain = tmp_path / "lists" / "plain.txt"
    plain.write_text("# an archive\na.mp4\n\n/abs/b.mov\n  sub/c.jpg  \n")
    assert read_path_list(plain) == [str(tmp_path / "lists" / "a.mp4"), "/abs/b.mov", str(tmp_path / "lists" / "sub/c.jpg")]
    table = tmp_path / "lists" / "table.csv"
    table.write_text("\nid,Path,label\n1,x.mp4,real\n2,\"y, z.mp4\",fake\n3,,\n")
    assert read_path_list(table) == [str(tmp_path / "lists" / "x.mp4"), str(tmp_path / "lists" / "y, z.mp4")]


def test_workers_get_a_share_of_the_cores_or_a_gpu_each():
    shape = worker_shape([{"CPU": 2.0}], requested=None, threads=1, device="auto")
    assert (shape.workers, shape.threads.compute, shape.resources) == (2, 1, {"num_cpus": 1})
    shape = worker_shape([{"CPU": 2.0}], requested=None, threads=2, device="auto")
    assert (shape.workers, shape.resources) == (1, {"num_cpus": 2})
    with pytest.raises(CommandError, match="do not fit"):   # Ray would wait for them forever
        worker_shape([{"CPU": 2.0}, {"CPU": 1.0}], requested=2, threads=2, device="auto")
    shape = worker_shape([{"CPU": 8.0, "GPU": 2.0}, {"CPU": 4.0}], requested=None, threads=None, device="auto")
    assert (shape.workers, shape.resources["num_gpus"]) == (2, 1)
    assert "num_gpus" not in worker_shape([{"CPU": 8.0, "GPU": 2.0}], requested=None, threads=4, device="cpu").resources
    with pytest.raises(CommandError, match="2 GPUs"):
        worker_shape([{"CPU": 8.0, "GPU": 2.0}], requested=3, threads=None, device="auto")


def test_the_journal_knows_a_file_by_path_and_content(tmp_path):
    clip = tmp_path / "a.mp4"
    clip.write_bytes(b"video bytes")
    journal = BatchJournal(tmp_path / JOURNAL_NAME)
    try:
        first = journal.row_for(clip)
        journal.start(first.id)
        journal.set_sha256(first.id, content_sha256(clip))   # as the worker's report measured it
        journal.finish(first.id, "done")
        assert journal.row_for(clip).id == first.id          # unchanged: nothing read
        os.utime(clip, ns=(time.time_ns(), time.time_ns() + 10**9))
        assert journal.row_for(clip).id == first.id          # touched: same content, same row
        clip.write_bytes(b"other bytes")                     # same size, new content
        second = journal.row_for(clip)
        assert second.id != first.id and second.state == "queued"
        assert journal.row_for(clip).id == second.id
    finally:
        journal.close()


# -- on a local Ray instance -------------------------------------------------------------------------
@pytest.mark.slow
def test_ray_gives_the_local_reports_and_a_second_run_does_nothing(weights_dir, archive, tmp_path):
    local = _analyze(weights_dir, tmp_path / "local", str(archive))
    assert local.returncode == 2, local.stderr
    ray_out = tmp_path / "ray"
    first = _analyze(weights_dir, ray_out, str(archive), "--engine", "ray", "--workers", "2")
    assert first.returncode == 2, first.stderr
    assert "error: " in first.stderr and "cut.mp4" in first.stderr
    assert "cut.mp4" in first.stdout   # the summary table

    reports = _exactly_once(ray_out, archive)
    expected = _reports(tmp_path / "local")
    assert sorted(expected) == sorted(reports)
    for name, report in reports.items():
        want = expected[name]
        assert report["verdict"] == want["verdict"], name
        assert report["frames_analysed"] == want["frames_analysed"]
        if want["score"] is None:
            assert report["score"] is None
        else:
            assert report["score"] == pytest.approx(want["score"], abs=1e-6)
        assert [t["score"] for t in report["tracks"]] == pytest.approx([t["score"] for t in want["tracks"]], abs=1e-6)
    assert reports["cut.mp4"]["verdict"] == "error" and reports["cut.mp4"]["errors"]
    # rendering follows the local rules: keyframe images for a batch, written beside the reports
    keyframes = [k["image"] for k in reports["two.mp4"]["keyframes"] if k.get("image")]
    assert keyframes and all(Path(k).is_file() and Path(k).is_relative_to(ray_out) for k in keyframes)

    stamps = {p.name: p.stat().st_mtime_ns for p in ray_out.glob("*.json")}
    lines = (ray_out / "results.csv").read_text()
    again = _analyze(weights_dir, ray_out, str(archive), "--engine", "ray")
    assert again.returncode == 2, again.stderr
    assert "4 already done" in again.stderr and "0 to analyse" in again.stderr
    assert "Ray worker" not in again.stderr          # no cluster started for nothing
    assert (ray_out / "results.csv").read_text() == lines
    assert {p.name: p.stat().st_mtime_ns for p in ray_out.glob("*.json")} == stamps
    assert "cut.mp4" in again.stdout


@pytest.mark.slow
def test_a_worker_killed_mid_file_costs_nothing(weights_dir, archive, tmp_path):
    listing = tmp_path / "archive.csv"   # the inputs as a CSV list, absolute paths
    listing.write_text("path,note\n" + "".join(f"{p},x\n" for p in sorted(archive.iterdir())))
    out = tmp_path / "out"
    proc = subprocess.Popen(_argv(weights_dir, out, "--from-list", str(listing), "--engine", "ray", "--no-render"),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_env(), start_new_session=True)
    try:
        victims: list[int] = []

        def a_worker_is_analysing() -> bool:
            import psutil

            for pid in _session(proc):
                try:
                    if (psutil.Process(pid).cmdline() or [""])[0].startswith(WORKER_TITLE):
                        victims.append(pid)
                        return True
                except psutil.Error:
                    continue
            return proc.poll() is not None

        _wait_for(a_worker_is_analysing, "a worker to start a file")
        assert victims, "the run ended before a worker could be killed"
        os.kill(victims[0], signal.SIGKILL)
        stdout, stderr = proc.communicate(timeout=TIMEOUT_S)
    finally:
        _kill_session(proc)
    assert proc.returncode == 2, stderr
    reports = _exactly_once(out, archive)
    for name, report in reports.items():   # the killed file was analysed again, not failed
        assert (report["verdict"] == "error") == (name == "cut.mp4"), (name, report["errors"])


@pytest.mark.slow
def test_a_file_that_kills_every_worker_gets_an_error_report(weights_dir, archive, tmp_path):
    out = tmp_path / "out"
    crash = _env(**{CRASH_ON_ENV: "none.mp4"})   # as a decoder that segfaults on this file would
    run = _analyze(weights_dir, out, str(archive), "--engine", "ray", "--no-render", env=crash)
    assert run.returncode == 2, run.stderr
    reports = _exactly_once(out, archive, failed=2)
    assert reports["none.mp4"]["verdict"] == "error"
    assert "worker analysing it died 3 times" in reports["none.mp4"]["errors"][0]
    # the files after it (in name order) were analysed by the restarted worker
    assert reports["one face.mp4"]["verdict"] != "error" and reports["two.mp4"]["verdict"] != "error"


@pytest.mark.slow
def test_a_file_that_hangs_is_failed_after_the_timeout(weights_dir, archive, tmp_path):
    out = tmp_path / "out"
    hang = _env(**{HANG_ON_ENV: "none"})   # as a decoder that hangs on this file would
    started = time.monotonic()
    # one worker: the files after the hung one (in name order) can only be analysed by its replacement
    run = _analyze(weights_dir, out, str(archive), "--engine", "ray", "--workers", "1", "--timeout", "5",
                   "--no-render", env=hang)
    took = time.monotonic() - started
    assert run.returncode == 2, run.stderr
    assert took < 50, f"the run took {took:.0f} s"
    reports = _exactly_once(out, archive, failed=2)
    assert reports["none.mp4"]["verdict"] == "error"
    assert reports["none.mp4"]["errors"] == ["analysis timed out after 5 s (--timeout)"]
    assert "none.mp4: analysis timed out after 5 s" in run.stderr
    assert reports["one face.mp4"]["verdict"] != "error" and reports["two.mp4"]["verdict"] != "error"
    # a rerun leaves the failed file failed, as the watch daemon does
    again = _analyze(weights_dir, out, str(archive), "--engine", "ray", "--timeout", "5", "--no-render", env=hang)
    assert again.returncode == 2, again.stderr
    assert "4 already done" in again.stderr and "Ray worker" not in again.stderr
    assert _exactly_once(out, archive, failed=2)["none.mp4"]["errors"] == reports["none.mp4"]["errors"]


def test_timeout_goes_with_the_ray_engine(weights_dir, archive, tmp_path):
    run = _analyze(weights_dir, tmp_path / "out", str(archive), "--timeout", "5")
    assert run.returncode == 2 and "--timeout go with --engine ray" in run.stderr
    run = _analyze(weights_dir, tmp_path / "out", str(archive), "--engine", "ray", "--timeout", "0")
    assert run.returncode == 2 and "--timeout" in run.stderr and not (tmp_path / "out").exists()


@pytest.mark.slow
def test_a_killed_driver_goes_on_where_it_stopped(weights_dir, archive, tmp_path):
    out = tmp_path / "out"
    proc = subprocess.Popen(_argv(weights_dir, out, str(archive), "--engine", "ray", "--no-render"),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=_env(), start_new_session=True)
    try:
        csv_file = out / "results.csv"
        _wait_for(lambda: csv_file.is_file() and len(_csv_paths(csv_file.parent)) >= 2 or proc.poll() is not None,
                  "two reports")
        assert proc.poll() is None, "the run ended before the driver could be killed"
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        _kill_session(proc)   # its Ray instance's leftovers: a kill -9 gives the driver no chance to stop them
    finished = len(_csv_paths(out))
    assert 2 <= finished < 4
    again = _analyze(weights_dir, out, str(archive), "--engine", "ray", "--no-render")
    assert again.returncode == 2, again.stderr
    done = re.search(r"(\d+) already done", again.stderr)
    # a kill between a report and its CSV line leaves one more file done than the CSV shows
    assert done and finished <= int(done.group(1)) <= finished + 1, again.stderr
    _exactly_once(out, archive)
