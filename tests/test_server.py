"""`deepfake-detect serve`: the REST API through FastAPI's TestClient, and the real server in a subprocess.

Most tests share one app with one worker (the test detector, 8 sampled frames, no rendering unless
a test asks for it). Tests of the HTTP layer alone (caps, keys, a full queue, delete of a queued
job) use apps with no worker: their jobs are accepted and never run. The restart test starts the
real server as a subprocess and `kill -9`s it with jobs queued and running.
"""
from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import jsonschema
import pytest
from click.testing import CliRunner
from fastapi.testclient import TestClient
from processes import any_alive_after

from deepfake_detect.pipeline.bench.serve import free_loopback_port
from deepfake_detect.pipeline.cli import main
from deepfake_detect.pipeline.core.config import DEFAULT_WEIGHTS, load_config
from deepfake_detect.pipeline.core.report import REPORT_SCHEMA
from deepfake_detect.pipeline.server.app import create_app, hash_key
from deepfake_detect.pipeline.server.jobs import ServeSettings
from deepfake_detect.pipeline.server.journal import JOURNAL_NAME, JobJournal
from deepfake_detect.stages.decode import MediaError, open_media

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]
JOB_TIMEOUT = 120.0      # one tiny job on a busy 2-core machine
START_TIMEOUT = 180.0    # a server subprocess: imports + the model load


def wait_job(client: Any, job_id: str, timeout: float = JOB_TIMEOUT, until: tuple[str, ...] = ("done", "failed")) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = client.get(f"/v1/jobs/{job_id}").json()
        if job["state"] in until:
            return job
        time.sleep(0.1)
    pytest.fail(f"job {job_id} not {'/'.join(until)} within {timeout:g} s: {job}")


def upload(client: Any, path: Path, name: str | None = None, **fields: Any) -> httpx.Response:
    response: httpx.Response = client.post("/v1/jobs", files={"file": (name or path.name, path.read_bytes())},
                                           data={k: str(v) for k, v in fields.items()})
    return response


@pytest.fixture(scope="module")
def config(weights_dir):
    return load_config(None, {"weights": str(weights_dir), "device": "cpu", "sampling.value": 8})


@pytest.fixture(scope="module")
def client(config, tmp_path_factory) -> Iterator[TestClient]:
    settings = ServeSettings(data=tmp_path_factory.mktemp("serve"), workers=1, render=False,
                             predict_max_files=3, predict_max_duration_s=1.2)
    with TestClient(create_app(settings, config)) as c:
        yield c


@pytest.fixture
def idle_app(tmp_path) -> Callable[..., TestClient]:
    """An app whose jobs never run (no worker): for what the HTTP layer decides alone."""
    opened: list[TestClient] = []

    def make(**settings: Any) -> TestClient:
        app = create_app(ServeSettings(data=tmp_path / f"data{len(opened)}", workers=0, **settings), load_config())
        c = TestClient(app)
        c.__enter__()
        opened.append(c)
        return c

    yield make
    for c in opened:
        c.__exit__(None, None, None)


# -- jobs through the worker ---------------------------------------------------------------------
def test_job_runs_to_done_with_report_progress_files_and_ranges(client, clips):
    r = upload(client, clips["one"], render="true")
    assert r.status_code == 202
    created = r.json()
    assert created["state"] == "queued" and len(created["id"]) == 32
    assert created["urls"] == {"self": f"/v1/jobs/{created['id']}", "files": f"/v1/jobs/{created['id']}/files"}
    job = wait_job(client, created["id"])
    assert job["state"] == "done", job["error"]
    assert job["filename"] == "one face.mp4"
    assert job["progress"] == {"frames_done": 8, "frames_total": 8}
    assert job["created"] and job["started"] and job["finished"] and job["error"] is None
    report = job["report"]
    jsonschema.validate(report, REPORT_SCHEMA)
    assert job["verdict"] == report["verdict"] and report["frames_analysed"] == 8
    assert report["input"]["path"] == "one face.mp4"   # the display name, not the server's path

    files = {f["kind"]: f for f in job["files"]}
    assert {"report", "annotated_video", "keyframe", "heatmaps"} <= set(files)
    assert client.get(created["urls"]["files"]).json() == job["files"]
    assert client.get(files["report"]["url"]).json() == report
    assert all(name == Path(name).name for name in report["outputs"].values())   # served by name only
    for keyframe in report["keyframes"]:
        assert client.get(f"/v1/jobs/{job['id']}/files/{keyframe['image']}").content.startswith(b"\x89PNG")

    video = client.get(files["annotated_video"]["url"])
    assert video.status_code == 200 and video.headers["content-type"] == "video/mp4"
    assert b"ftyp" in video.content[:16] and b"avc1" in video.content   # H.264 in MP4: plays in a browser
    part = client.get(files["annotated_video"]["url"], headers={"Range": "bytes=0-99"})
    assert part.status_code == 206 and len(part.content) == 100 and part.content == video.content[:100]
    assert part.headers["content-range"] == f"bytes 0-99/{len(video.content)}"


def test_a_finished_job_downloads_as_one_self_contained_page(client, clips):
    job = wait_job(client, upload(client, clips["photo"], render="true").json()["id"])
    page = client.get(f"/v1/jobs/{job['id']}/report.html")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert "attachment" in page.headers["content-disposition"]
    text = page.text
    assert "default-src 'none'" in text and 'id="embedded-job"' in text and "data:image/png;base64," in text
    assert job["report"]["input"]["sha256"] in text
    assert client.get("/v1/jobs/0123456789abcdef0123456789abcdef/report.html").status_code == 404


def test_the_page_of_a_job_with_a_non_ascii_name_downloads(client, clips):
    job = wait_job(client, upload(client, clips["photo"], name="视频 résumé.jpg").json()["id"])
    page = client.get(f"/v1/jobs/{job['id']}/report.html")
    assert page.status_code == 200
    assert "filename*=UTF-8''" in page.headers["content-disposition"] and "%E8%A7%86" in page.headers["content-disposition"]


def test_a_file_that_declares_itself_generated_is_fake_by_its_credentials(client, clips, tmp_path):
    pytest.importorskip("c2pa", reason="content credentials need c2pa-python")
    pytest.importorskip("cryptography", reason="the test certificates need the test extras")
    from c2pa_fixtures import make_chain, sign

    signed = sign(clips["photo"], tmp_path / "generated.jpg", make_chain(), "image/jpeg")
    job = wait_job(client, upload(client, signed).json()["id"])
    assert (job["verdict"], job["verdict_basis"], job["report"]["verdict_basis"]) == ("fake", "provenance", "provenance")
    listed = {j["id"]: j for j in client.get("/v1/jobs").json()["jobs"]}
    assert listed[job["id"]]["verdict_basis"] == "provenance"   # the recent-jobs list says it too


def test_a_job_journal_from_before_the_basis_gains_its_column(tmp_path):
    import sqlite3

    from deepfake_detect.pipeline.server.journal import JobJournal

    old = sqlite3.connect(tmp_path / "jobs.sqlite")
    old.execute("CREATE TABLE jobs (seq INTEGER PRIMARY KEY AUTOINCREMENT, id TEXT NOT NULL UNIQUE, state TEXT NOT NULL, "
                "filename TEXT NOT NULL, input_name TEXT NOT NULL, options TEXT NOT NULL, attempts INTEGER NOT NULL "
                "DEFAULT 0, frames_done INTEGER, frames_total INTEGER, verdict TEXT, error TEXT, created_at REAL NOT NULL, "
                "started_at REAL, finished_at REAL)")
    old.execute("INSERT INTO jobs (id, state, filename, input_name, options, verdict, created_at, finished_at) "
                "VALUES ('a' , 'done', 'x.jpg', 'input.jpg', '{}', 'real', 1, 2)")
    old.commit()
    old.close()
    journal = JobJournal(tmp_path / "jobs.sqlite")
    job = journal.get("a")
    assert job is not None and job.verdict == "real" and job.verdict_basis is None
    journal.close()


def test_job_options_reach_the_analysis(client, clips):
    job = wait_job(client, upload(client, clips["two"], frames=4, threshold=0.9, render="false").json()["id"])
    assert job["state"] == "done", job["error"]
    assert job["report"]["sampling"] == {"mode": "count", "value": 4.0}
    assert job["report"]["threshold"] == 0.9
    assert job["progress"] == {"frames_done": 4, "frames_total": 4}
    assert [f["kind"] for f in job["files"]] == ["report"]   # nothing rendered
    assert job["options"] == {"sampling": {"mode": "count", "value": 4.0}, "threshold": 0.9, "render": False}


@pytest.mark.parametrize("fields, message", [({"frames": 4, "fps": 2}, "at most one"), ({"threshold": 2}, "between"),
                                             ({"frames": "x"}, "integer"), ({"render": "maybe"}, "render"),
                                             ({"colour": "red"}, "unknown")])
def test_bad_job_options_are_422(client, clips, fields, message):
    r = upload(client, clips["photo"], **fields)
    assert r.status_code == 422 and message in r.json()["detail"]


def test_no_face_is_done_with_verdict_no_face(client, clips):
    job = wait_job(client, upload(client, clips["none"]).json()["id"])
    assert (job["state"], job["verdict"], job["report"]["verdict"]) == ("done", "no_face", "no_face")


def test_corrupt_video_fails_with_the_reason_analyze_gives(client, clips, tmp_path):
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(clips["one"].read_bytes()[:3000])
    with pytest.raises(MediaError) as expected:   # what the Analyzer reports as the input's error
        open_media(cut)
    job = wait_job(client, upload(client, cut).json()["id"])
    assert job["state"] == "failed" and job["verdict"] == "error"
    assert job["error"] == job["report"]["errors"][0] == str(expected.value)
    assert "\n" not in job["error"]
    jsonschema.validate(job["report"], REPORT_SCHEMA)


def test_a_timeout_fails_that_job_and_the_worker_goes_on(client, clips):
    runner = client.app.state.server.runner
    settings = runner.settings
    runner.settings = dataclasses.replace(settings, job_timeout_s=0.05)
    try:
        job = wait_job(client, upload(client, clips["two"]).json()["id"])
    finally:
        runner.settings = settings
    assert job["state"] == "failed" and "timed out" in job["error"]
    assert wait_job(client, upload(client, clips["photo"]).json()["id"])["state"] == "done"   # restarted


@pytest.fixture(scope="module")
def long_clip(tmp_path_factory) -> Path:
    """Long enough (100 frames, every one analysed) to be still running when a test acts on it."""
    from deepfake_detect.pipeline.core.samples import make_sample_video

    return make_sample_video(tmp_path_factory.mktemp("long") / "long.mp4", seconds=4.0, size=(480, 270), faces=2)


def test_a_crash_fails_that_job_and_the_worker_goes_on(client, clips, long_clip):
    job_id = upload(client, long_clip, every=1).json()["id"]
    assert wait_job(client, job_id, until=("running", "done", "failed"))["state"] == "running"
    child = client.app.state.server.runner.slots[0].proc.proc
    os.kill(child.pid, signal.SIGKILL)   # what a segfaulting decoder looks like from outside
    job = wait_job(client, job_id)
    assert job["state"] == "failed" and job["error"] == "the analysis process died on this file (signal 9)"
    assert job["report"]["errors"] == [job["error"]]
    assert wait_job(client, upload(client, clips["photo"]).json()["id"])["state"] == "done"   # restarted


def test_delete_a_running_job_cancels_it(client, clips, long_clip):
    job_id = upload(client, long_clip, every=1).json()["id"]
    assert wait_job(client, job_id, until=("running", "done", "failed"))["state"] == "running"
    folder = client.app.state.server.runner.job_dir(job_id)
    assert client.delete(f"/v1/jobs/{job_id}").status_code == 204
    assert client.get(f"/v1/jobs/{job_id}").status_code == 404
    assert client.delete(f"/v1/jobs/{job_id}").status_code == 404
    nxt = wait_job(client, upload(client, clips["photo"]).json()["id"])   # the worker was restarted
    assert nxt["state"] == "done"
    assert not folder.exists()


def test_unknown_jobs_and_files_are_404(client, clips):
    job = wait_job(client, upload(client, clips["photo"]).json()["id"])
    base = f"/v1/jobs/{job['id']}/files"
    assert client.get("/v1/jobs/0123456789abcdef0123456789abcdef").status_code == 404
    assert client.get("/v1/jobs/..%2F..%2Fjobs.sqlite").status_code == 404
    for name in ("nothing.png", "input.jpg", "%2e%2e", "..%2F..%2Fjobs.sqlite", "..%2Freport.json",
                 "files%2Freport.json", "%2Fetc%2Fpasswd"):
        assert client.get(f"{base}/{name}").status_code == 404, name
    assert client.get(f"{base}/report.json").status_code == 200


def test_list_jobs_newest_first_without_reports(client, clips):
    first = upload(client, clips["photo"]).json()["id"]
    second = upload(client, clips["photo"]).json()["id"]
    listing = client.get("/v1/jobs?limit=2").json()
    assert [j["id"] for j in listing["jobs"]] == [second, first]
    assert all("report" not in j for j in listing["jobs"])
    assert set(listing["counts"]) == {"queued", "running", "done", "failed"}
    wait_job(client, second)


# -- predict -------------------------------------------------------------------------------------
def test_predict_two_files(client, clips):
    r = client.post("/v1/predict", files=[("files", ("a.jpg", clips["photo"].read_bytes())),
                                          ("files", ("b.mp4", clips["none"].read_bytes()))])
    assert r.status_code == 200
    body = r.json()
    assert [rep["input"]["path"] for rep in body["reports"]] == ["a.jpg", "b.mp4"]
    for rep in body["reports"]:
        jsonschema.validate(rep, REPORT_SCHEMA)
        assert rep["outputs"] == {}   # never rendered
    assert body["reports"][1]["verdict"] == "no_face"
    summary = body["summary"]
    assert summary["n"] == 2 and summary["no_face"] == 1
    assert sum(summary[v] for v in ("real", "fake", "no_face", "inconclusive", "error")) == 2


def test_predict_caps_are_per_file_errors(client, clips, tmp_path):
    text = tmp_path / "notes.mp4"
    text.write_text("not a video\n" * 50)
    files = [("files", (name, path.read_bytes())) for name, path in
             (("long.mp4", clips["one"]), ("notes.mp4", text), ("ok.jpg", clips["photo"]), ("fourth.jpg", clips["photo"]))]
    body = client.post("/v1/predict", files=files).json()
    errors = [rep["errors"][0] if rep["errors"] else "" for rep in body["reports"]]
    assert "over the 1 s cap" in errors[0]            # 1.6 s video, 1.2 s cap in this app
    assert errors[1] == "not an image or video: the content is text"
    assert errors[2] == ""
    assert "over the 3-file cap" in errors[3]
    assert body["summary"]["n"] == 4 and body["summary"]["error"] == 3


# -- about the server ----------------------------------------------------------------------------
def test_info_health_and_the_web_page(client, weights_dir):
    info = client.get("/v1/info").json()
    assert info["detector"]["version"] == "test" and info["detector"]["threshold"] == 0.5
    assert len(info["detector"]["sha256"]) == 64 and info["detector"]["members"]
    assert info["device"] == "cpu" and info["backend"] in ("onnx", "torch") and info["workers"] == 1
    assert info["limits"]["max_upload_bytes"] == 500 * 1024**2 and info["limits"]["retention_days"] == 7
    assert client.get("/healthz").json() == {"status": "ok", "workers_ready": 1}
    assert client.get("/v1/model-card").status_code == 404   # the test detector has none
    page = client.get("/")
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]
    for asset in sorted(p.name for p in (REPO / "pipeline" / "core" / "web").iterdir() if p.name != "index.html"):
        assert client.get(f"/static/{asset}").status_code == 200
    assert client.get("/docs").status_code == 200
    paths = client.get("/openapi.json").json()["paths"]
    assert {"/v1/jobs", "/v1/jobs/{job_id}", "/v1/jobs/{job_id}/files/{name}", "/v1/predict", "/v1/info"} <= set(paths)
    assert "multipart/form-data" in paths["/v1/jobs"]["post"]["requestBody"]["content"]


def test_model_card_is_markdown(idle_app):
    assert (DEFAULT_WEIGHTS / "MODEL_CARD.md").is_file()
    r = idle_app().get("/v1/model-card")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/markdown")
    assert r.text == (DEFAULT_WEIGHTS / "MODEL_CARD.md").read_text(encoding="utf-8")


# -- what the HTTP layer decides alone -----------------------------------------------------------
def test_upload_over_the_cap_is_413_and_leaves_nothing(idle_app, clips):
    c = idle_app(max_upload_bytes=10_000)
    assert clips["one"].stat().st_size > 10_000
    r = upload(c, clips["one"])
    assert r.status_code == 413
    jobs_dir = c.app.state.server.settings.jobs_dir
    assert not jobs_dir.exists() or not any(jobs_dir.iterdir())
    # also when the client sends no Content-Length (chunked): the cap is checked as the bytes stream in
    body = httpx.Request("POST", "http://t/", files={"file": ("x.mp4", clips["one"].read_bytes())})
    chunks = iter([body.read()[i:i + 4096] for i in range(0, len(body.read()), 4096)])
    r = c.post("/v1/jobs", content=chunks, headers={"content-type": body.headers["content-type"]})
    assert r.status_code == 413
    assert not jobs_dir.exists() or not any(jobs_dir.iterdir())


def test_not_media_is_415(idle_app, tmp_path):
    c = idle_app()
    text = tmp_path / "clip.mp4"   # the name says video; the content says text
    text.write_text("hello\n" * 100)
    r = upload(c, text)
    assert r.status_code == 415 and "text" in r.json()["detail"]
    assert c.post("/v1/jobs", json={"file": "x"}).status_code == 415   # not multipart at all
    assert c.post("/v1/jobs", files={"other": ("a", b"x")}).status_code == 422   # no `file` field


def test_full_queue_is_503_with_retry_after(idle_app, clips):
    c = idle_app(queue_size=1)
    assert upload(c, clips["photo"]).status_code == 202
    r = upload(c, clips["photo"])
    assert r.status_code == 503 and int(r.headers["retry-after"]) >= 1


def test_delete_a_queued_job(idle_app, clips):
    c = idle_app()
    job_id = upload(c, clips["photo"], name="../../etc/passwd").json()["id"]
    job = c.get(f"/v1/jobs/{job_id}").json()
    assert job["state"] == "queued" and job["filename"] == "passwd"   # a client's name is display only
    folder = c.app.state.server.runner.job_dir(job_id)
    assert folder.is_dir()
    assert c.delete(f"/v1/jobs/{job_id}").status_code == 204
    assert not folder.exists() and c.get(f"/v1/jobs/{job_id}").status_code == 404


def test_api_keys(idle_app, clips, tmp_path):
    c = idle_app(api_key_hashes=frozenset({hash_key("s3cret"), hash_key("other")}))
    assert c.get("/v1/info").status_code == 401
    assert c.get("/v1/info", headers={"X-API-Key": "wrong"}).status_code == 401
    assert c.get("/v1/info", headers={"Authorization": "Bearer wrong"}).status_code == 401
    assert upload(c, clips["photo"]).status_code == 401
    assert c.get("/v1/info", headers={"X-API-Key": "s3cret"}).status_code == 200
    assert c.get("/v1/info", headers={"Authorization": "Bearer other"}).status_code == 200
    for open_path in ("/healthz", "/", "/docs", "/openapi.json"):
        assert c.get(open_path).status_code == 200, open_path


def test_cors_only_when_asked(idle_app):
    preflight = {"Origin": "https://example.org", "Access-Control-Request-Method": "POST"}
    assert "access-control-allow-origin" not in idle_app().options("/v1/jobs", headers=preflight).headers
    c = idle_app(cors_origins=("https://example.org",))
    assert c.options("/v1/jobs", headers=preflight).headers["access-control-allow-origin"] == "https://example.org"


def test_retention_sweep_deletes_old_finished_jobs(idle_app, clips):
    c = idle_app(retention_s=1.0)
    runner = c.app.state.server.runner
    old, new = (upload(c, clips["photo"]).json()["id"] for _ in range(2))
    for job_id in (old, new):   # what a worker does, without one
        assert runner.journal.claim().id == job_id
        runner.journal.finish(job_id, "done", "real", None)
        if job_id == old:
            time.sleep(1.2)
    assert runner.sweep() == 1
    assert c.get(f"/v1/jobs/{old}").status_code == 404 and not runner.job_dir(old).exists()
    assert c.get(f"/v1/jobs/{new}").json()["state"] == "done"


def test_bad_settings_fail_before_any_model_loads(tmp_path):
    for args, message in ((["--frames", "0"], "--frames must be positive"),
                          (["--set", "sampling.mode=sometimes"], "sampling.mode"),
                          (["--api-key-file", str(tmp_path / "empty")], "no API keys")):
        (tmp_path / "empty").write_text("\n# none\n")
        result = CliRunner().invoke(main, ["serve", "--data", str(tmp_path / "d"), *args])
        assert result.exit_code == 2 and message in result.output, result.output
        assert len(result.output.strip().splitlines()) == 1


def test_render_default_comes_from_the_settings_unless_the_flag_says(tmp_path, monkeypatch):
    """`--set render.enabled=off` (or a --config file) turns rendering off for jobs; the flag wins."""
    seen = []

    class Stop(Exception):
        pass

    def fake_runner(settings, config, debug=False):
        seen.append(settings.render)
        raise Stop  # nothing loads: only the settings the command built are checked

    monkeypatch.setattr("deepfake_detect.pipeline.server.jobs.JobRunner", fake_runner)
    for args, expected in (([], True), (["--set", "render.enabled=off"], False),
                           (["--set", "render.enabled=off", "--render"], True), (["--no-render"], False)):
        result = CliRunner().invoke(main, ["serve", "--data", str(tmp_path / "d"), *args])
        assert isinstance(result.exception, Stop), result.output
        assert seen[-1] is expected, args


# -- the real server: kill -9 and restart --------------------------------------------------------
class ServerProcess:
    def __init__(self, data: Path, weights: Path, port: int, log: Path) -> None:
        self.url = f"http://127.0.0.1:{port}"
        self.log_path = log
        self._log = open(log, "w")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "deepfake_detect.pipeline", "serve", "--data", str(data), "--port", str(port),
             "--weights", str(weights), "--device", "cpu", "--frames", "8", "--no-render"],
            stdout=self._log, stderr=subprocess.STDOUT, cwd=REPO, env={**os.environ, "PYTHONUNBUFFERED": "1"})
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, f"the server exited:\n{log.read_text()}"
            try:
                if httpx.get(f"{self.url}/healthz", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        pytest.fail(f"the server did not start within {START_TIMEOUT:g} s:\n{log.read_text()}")

    def children(self) -> list[int]:
        """The analysis processes (children of whichever of the server's threads forked them)."""
        return [int(pid) for task in Path(f"/proc/{self.proc.pid}/task").iterdir()
                for pid in (task / "children").read_text().split()]

    def kill(self, sig: int = signal.SIGKILL) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        code = self.proc.wait(60)
        self._log.close()
        return code




def test_restart_after_kill_9_finishes_every_job_once(tmp_path, weights_dir, clips):
    data, port = tmp_path / "data", free_loopback_port()
    server = ServerProcess(data, weights_dir, port, tmp_path / "server-1.log")
    ids = []
    try:
        for i in range(5):
            clip = clips["two"] if i % 2 else clips["one"]
            r = httpx.post(f"{server.url}/v1/jobs", files={"file": (f"clip{i}.mp4", clip.read_bytes())}, timeout=30)
            assert r.status_code == 202, r.text
            ids.append(r.json()["id"])
        children = server.children()
        assert children
    finally:
        server.kill(signal.SIGKILL)
    assert not any_alive_after(children), "an analysis process outlived the server"

    journal = JobJournal(data / JOURNAL_NAME)
    before = {job_id: journal.get(job_id) for job_id in ids}
    journal.close()
    unfinished = [job_id for job_id, job in before.items() if job is not None and not job.finished]
    assert unfinished, "every job finished before the kill: nothing was left to resume"

    server = ServerProcess(data, weights_dir, port, tmp_path / "server-2.log")
    try:
        with httpx.Client(base_url=server.url, timeout=30) as http:
            jobs = [wait_job(http, job_id) for job_id in ids]
        children = server.children()
        # uvicorn ends a clean shutdown by re-raising the signal it caught: killed by SIGTERM, as a service should
        assert server.kill(signal.SIGTERM) in (0, -signal.SIGTERM), server.log_path.read_text()
        assert "Application shutdown complete" in server.log_path.read_text()
        assert children and not any_alive_after(children), "an analysis process outlived the server"
    finally:
        server.kill(signal.SIGKILL)

    assert [j["state"] for j in jobs] == ["done"] * len(ids)
    journal = JobJournal(data / JOURNAL_NAME)
    try:
        for job_id in ids:
            events = [state for state, _ in journal.events(job_id)]
            assert events.count("done") == 1 and events[-1] == "done", events
            assert events[0] == "queued"
            if before[job_id].finished:   # finished before the kill: never run again
                assert journal.get(job_id).finished_at == before[job_id].finished_at
            assert list((data / "jobs" / job_id).glob("*.json")) == [data / "jobs" / job_id / "report.json"]
    finally:
        journal.close()
    assert json.loads((data / "jobs" / ids[-1] / "report.json").read_text())["input"]["path"] == f"clip{len(ids) - 1}.mp4"
