"""The REST API of `deepfake-detect serve` (FastAPI): jobs, synchronous predict, files, info, the web page.

    POST   /v1/jobs                 upload one image or video (+ frames|fps|every, threshold, render) -> 202
    GET    /v1/jobs?limit=20        recent jobs, newest first (summaries)
    GET    /v1/jobs/{id}            state, progress, verdict, the report, its files
    GET    /v1/jobs/{id}/files      the files a job produced
    GET    /v1/jobs/{id}/files/{n}  one of them (Range requests: the annotated video plays and seeks)
    GET    /v1/jobs/{id}/report.html  the finished job as one self-contained page (core.html_report)
    DELETE /v1/jobs/{id}            forget it and its files (a running job is cancelled) -> 204
    POST   /v1/predict              one or more files, analysed while the client waits -> reports + summary
    GET    /v1/info, /v1/model-card, /healthz; /docs (OpenAPI); / and /static/ (the web page)

The work itself is `pipeline.server.jobs`; uploads are streamed by `pipeline.server.uploads`.
With API keys, every /v1 route needs `Authorization: Bearer KEY` or `X-API-Key: KEY`.
"""
from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import hmac
import json
import mimetypes
import os
import shutil
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any
from urllib.parse import quote

from fastapi import APIRouter, Depends, FastAPI, HTTPException, Query, Request, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import FileResponse, JSONResponse, PlainTextResponse
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel

from deepfake_detect.pipeline import __version__
from deepfake_detect.pipeline.core.config import AnalysisConfig
from deepfake_detect.pipeline.core.html_report import REPORT_PAGE_DIR
from deepfake_detect.pipeline.core.report import report_to_dict
from deepfake_detect.pipeline.server.jobs import (
    FILES_DIR,
    REPORT_NAME,
    JobRunner,
    PredictTask,
    QueueFull,
    ServeSettings,
    output_kind,
    predict_config,
)
from deepfake_detect.pipeline.server.journal import Job
from deepfake_detect.pipeline.server.uploads import ReceivedFile, media_suffix, receive_form

WEB_DIR = REPORT_PAGE_DIR   # the page is core's: `analyze --html` inlines the same files
MODEL_CARD = "MODEL_CARD.md"
VERDICTS = ("real", "fake", "no_face", "inconclusive", "error")


# -- response shapes (they are also the OpenAPI docs) ---------------------------------------------
class Progress(BaseModel):
    frames_done: int
    frames_total: int | None


class FileLink(BaseModel):
    name: str
    url: str
    kind: str     # report, annotated_video, annotated_image, keyframe, heatmaps


class JobCreated(BaseModel):
    id: str
    state: str
    urls: dict[str, str]     # self, files


class JobSummary(JobCreated):
    progress: Progress
    filename: str
    created: str
    started: str | None
    finished: str | None
    error: str | None
    verdict: str | None
    verdict_basis: str | None = None   # "provenance": content credentials declared it generated (report schema 1.3)
    options: dict[str, Any]


class JobDetail(JobSummary):
    report: dict[str, Any] | None     # the same JSON `analyze` writes (schema: pipeline.core.report.REPORT_SCHEMA)
    files: list[FileLink]


class JobList(BaseModel):
    jobs: list[JobSummary]
    counts: dict[str, int]


class PredictSummary(BaseModel):
    n: int
    real: int
    fake: int
    no_face: int
    inconclusive: int
    error: int


class PredictResult(BaseModel):
    reports: list[dict[str, Any]]
    summary: PredictSummary


class Health(BaseModel):
    status: str      # ok: at least one worker has its model loaded; starting otherwise
    workers_ready: int


@dataclasses.dataclass
class Server:
    settings: ServeSettings
    config: AnalysisConfig
    runner: JobRunner


def server(request: Request) -> Server:
    state: Server = request.app.state.server
    return state


# -- API keys ------------------------------------------------------------------------------------
def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


def read_key_file(path: Path) -> frozenset[str]:
    """One key per line (blank lines and #-comments skipped), kept only as sha256 hashes."""
    keys = [line.strip() for line in path.read_text(encoding="utf-8").splitlines()]
    hashes = frozenset(hash_key(k) for k in keys if k and not k.startswith("#"))
    if not hashes:
        raise ValueError(f"no API keys in {path}")
    return hashes


_bearer = HTTPBearer(auto_error=False)
_key_header = APIKeyHeader(name="X-API-Key", auto_error=False)


def require_key(srv: Server = Depends(server), bearer: HTTPAuthorizationCredentials | None = Depends(_bearer),
                key: str | None = Depends(_key_header)) -> None:
    hashes = srv.settings.api_key_hashes
    if not hashes:
        return
    given = (bearer.credentials if bearer else None) or key
    if given:
        digest = hash_key(given)
        # every stored hash is compared, in constant time: no early exit tells which came close
        matched = [hmac.compare_digest(digest, h) for h in hashes]
        if any(matched):
            return
    raise HTTPException(401, "missing or wrong API key (Authorization: Bearer KEY or X-API-Key: KEY)",
                        headers={"WWW-Authenticate": "Bearer"})


# -- helpers -------------------------------------------------------------------------------------
def _iso(t: float | None) -> str | None:
    import datetime as dt

    return None if t is None else dt.datetime.fromtimestamp(t, dt.UTC).isoformat(timespec="seconds")


def _urls(job_id: str) -> dict[str, str]:
    return {"self": f"/v1/jobs/{job_id}", "files": f"/v1/jobs/{job_id}/files"}


def _summary(job: Job) -> JobSummary:
    done = job.frames_done or 0
    return JobSummary(id=job.id, state=job.state, urls=_urls(job.id), filename=job.filename,
                      progress=Progress(frames_done=done, frames_total=job.frames_total),
                      created=_iso(job.created_at) or "", started=_iso(job.started_at), finished=_iso(job.finished_at),
                      error=job.error, verdict=job.verdict if job.finished else None,
                      verdict_basis=job.verdict_basis if job.finished else None, options=job.options)


def _report(srv: Server, job: Job) -> dict[str, Any] | None:
    """The job's report file as written (finished jobs only: a report of a running job may be one
    left by a crash, about to be finished)."""
    if not job.finished:
        return None
    try:
        data: dict[str, Any] = json.loads((srv.runner.job_dir(job.id) / REPORT_NAME).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data


def _files(job_id: str, report: dict[str, Any] | None) -> list[FileLink]:
    outputs: dict[str, str] = (report or {}).get("outputs") or {}
    return [FileLink(name=name, url=f"/v1/jobs/{job_id}/files/{name}", kind=output_kind(key))
            for key, name in outputs.items()]


def _job(srv: Server, job_id: str) -> Job:
    job = srv.runner.journal.get(job_id) if srv.runner.journal else None
    if job is None:
        raise HTTPException(404, "no such job")
    return job


def _queue_full(exc: QueueFull) -> HTTPException:
    return HTTPException(503, str(exc), headers={"Retry-After": str(exc.retry_after_s)})


def _job_options(fields: dict[str, str], default_render: bool) -> dict[str, Any]:
    """The form fields of POST /v1/jobs, checked (422 with the reason)."""
    unknown = set(fields) - {"frames", "fps", "every", "threshold", "render"}
    if unknown:
        raise HTTPException(422, f"unknown form field(s): {', '.join(sorted(unknown))}")

    def number(name: str, kind: type, low: float, high: float | None = None) -> float | None:
        if name not in fields:
            return None
        try:
            value = kind(fields[name])
        except ValueError:
            raise HTTPException(422, f"{name} must be a{'n integer' if kind is int else ' number'}, "
                                     f"got {fields[name]!r}") from None
        if not (value > low if high is None else low <= value <= high):
            raise HTTPException(422, f"{name} must be {'positive' if high is None else f'between {low} and {high}'}")
        return float(value)

    sampling = [(mode, v) for mode, v in (("count", number("frames", int, 0)), ("fps", number("fps", float, 0)),
                                          ("every", number("every", int, 0))) if v is not None]
    if len(sampling) > 1:
        raise HTTPException(422, "give at most one of frames, fps, every")
    render = fields.get("render", "").strip().lower()
    if render not in ("", "true", "false", "1", "0", "yes", "no", "on", "off"):
        raise HTTPException(422, f"render must be true or false, got {fields['render']!r}")
    return {"sampling": {"mode": sampling[0][0], "value": sampling[0][1]} if sampling else None,
            "threshold": number("threshold", float, 0.0, 1.0),
            "render": default_render if not render else render in ("true", "1", "yes", "on")}


def _upload_body(field: str, many: bool, extra: dict[str, Any]) -> dict[str, Any]:
    """The OpenAPI description of a multipart body the route reads itself (streamed)."""
    item = {"type": "string", "format": "binary"}
    schema = {"type": "object", "required": [field],
              "properties": {field: {"type": "array", "items": item} if many else item, **extra}}
    return {"requestBody": {"required": True, "content": {"multipart/form-data": {"schema": schema}}}}


_JOB_FIELDS = {"frames": {"type": "integer", "minimum": 1, "description": "analyse N frames spread over the video"},
               "fps": {"type": "number", "exclusiveMinimum": 0, "description": "or F frames per second"},
               "every": {"type": "integer", "minimum": 1, "description": "or every N-th frame"},
               "threshold": {"type": "number", "minimum": 0, "maximum": 1},
               "render": {"type": "boolean", "default": True, "description": "annotated video and keyframes"}}

v1 = APIRouter(prefix="/v1", dependencies=[Depends(require_key)])


# -- jobs ----------------------------------------------------------------------------------------
@v1.post("/jobs", status_code=202, response_model=JobCreated, openapi_extra=_upload_body("file", False, _JOB_FIELDS),
         responses={413: {"description": "over the upload cap"}, 415: {"description": "not an image or video"},
                    503: {"description": "queue full (see Retry-After)"}})
async def create_job(request: Request, srv: Server = Depends(server)) -> JobCreated:
    """Upload one image or video (field `file`) to analyse; poll its URL for the result."""
    try:
        await run_in_threadpool(srv.runner.check_room)
    except QueueFull as exc:
        raise _queue_full(exc) from None
    job_id = uuid.uuid4().hex
    folder = srv.runner.job_dir(job_id)
    try:
        form = await receive_form(request, folder, "file", srv.settings.max_upload_bytes, keep_files=1)
        if len(form.files) != 1:
            raise HTTPException(422, "send exactly one file, in the form field `file`")
        options = _job_options(form.fields, srv.settings.render)
        upload = form.files[0]
        assert upload.path is not None   # the first file is always kept
        suffix, why_not = await run_in_threadpool(media_suffix, upload.path)
        if suffix is None:
            raise HTTPException(415, why_not)
        input_name = f"input{suffix}"
        os.replace(upload.path, folder / input_name)
        await run_in_threadpool(srv.runner.enqueue, job_id, upload.filename, input_name, options)
    except QueueFull as exc:
        shutil.rmtree(folder, ignore_errors=True)
        raise _queue_full(exc) from None
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)
        raise
    return JobCreated(id=job_id, state="queued", urls=_urls(job_id))


@v1.get("/jobs", response_model=JobList)
def list_jobs(limit: int = Query(20, ge=1, le=1000), srv: Server = Depends(server)) -> JobList:
    """Recent jobs, newest first (without their reports)."""
    journal = srv.runner.journal
    assert journal is not None
    return JobList(jobs=[_summary(job) for job in journal.recent(limit)], counts=journal.counts())


@v1.get("/jobs/{job_id}", response_model=JobDetail, responses={404: {"description": "no such job"}})
def get_job(job_id: str, srv: Server = Depends(server)) -> JobDetail:
    job = _job(srv, job_id)
    report = _report(srv, job)
    summary = _summary(job)
    if job.finished and job.frames_total is None and report is not None:   # finished from a report, or failed early
        total = report.get("frames_analysed", 0) + ((report.get("input") or {}).get("decode_errors") or 0)
        summary.progress = Progress(frames_done=total, frames_total=total)
    return JobDetail(**summary.model_dump(), report=report, files=_files(job.id, report))


@v1.get("/jobs/{job_id}/files", response_model=list[FileLink], responses={404: {"description": "no such job"}})
def list_files(job_id: str, srv: Server = Depends(server)) -> list[FileLink]:
    job = _job(srv, job_id)
    return _files(job.id, _report(srv, job))


@v1.get("/jobs/{job_id}/files/{name}", response_class=FileResponse,
        responses={404: {"description": "no such job or file"}, 206: {"description": "a byte range"}})
def get_file(job_id: str, name: str, srv: Server = Depends(server)) -> FileResponse:
    """One file of a finished job, by a name from its file list (Range requests work)."""
    job = _job(srv, job_id)
    report = _report(srv, job)
    # only a name the job's own report lists is served: a client's string is never joined onto a path
    outputs: dict[str, str] = (report or {}).get("outputs") or {}
    if name not in outputs.values() or "/" in name or "\\" in name or name in (".", ".."):
        raise HTTPException(404, "no such file")
    folder = srv.runner.job_dir(job.id)
    path = folder / (REPORT_NAME if name == REPORT_NAME else f"{FILES_DIR}/{name}")
    if not path.is_file():
        raise HTTPException(404, "no such file")
    media_type = mimetypes.guess_type(name)[0] or "application/octet-stream"
    return FileResponse(path, media_type=media_type, filename=name, content_disposition_type="inline")


@v1.get("/jobs/{job_id}/report.html", response_class=Response,
        responses={404: {"description": "no such job, or not finished"}})
def get_html_report(job_id: str, srv: Server = Depends(server)) -> Response:
    """The finished job as one self-contained HTML file: the page below, its images inlined (core.html_report)."""
    from deepfake_detect.pipeline.core.html_report import render_html
    from deepfake_detect.pipeline.core.report import report_from_dict

    job = _job(srv, job_id)
    report = _report(srv, job)
    if report is None:
        raise HTTPException(404, "the job has no report yet")
    page = render_html(report_from_dict(report), job.options, srv.config.weights, srv.runner.job_dir(job.id) / FILES_DIR)
    name = f"{Path(job.filename).name or job.id}.html"
    # headers are latin-1: an ASCII stand-in, and the real name percent-encoded (RFC 6266)
    fallback = "".join(c if c.isascii() and c.isprintable() and c not in '"\\' else "_" for c in name)
    disposition = f"attachment; filename=\"{fallback}\"; filename*=UTF-8''{quote(name)}"
    return Response(page, media_type="text/html; charset=utf-8", headers={"Content-Disposition": disposition})


@v1.delete("/jobs/{job_id}", status_code=204, response_class=Response, responses={404: {"description": "no such job"}})
def delete_job(job_id: str, srv: Server = Depends(server)) -> Response:
    """Forget a job and delete its files; a running job is cancelled."""
    if srv.runner.delete(job_id) is None:
        raise HTTPException(404, "no such job")
    return Response(status_code=204)


# -- predict -------------------------------------------------------------------------------------
@v1.post("/predict", response_model=PredictResult, openapi_extra=_upload_body("files", True, {}),
         responses={503: {"description": "queue full (see Retry-After)"}})
async def predict(request: Request, srv: Server = Depends(server)) -> PredictResult:
    """Analyse up to 10 files (field `files`, repeated; videos up to 60 s) while the client waits.
    No rendering. A file over a cap or not an image or video gets an error report of its own."""
    s = srv.settings
    folder = s.predict_dir / uuid.uuid4().hex
    try:
        form = await receive_form(request, folder, "files", s.max_upload_bytes, keep_files=s.predict_max_files)
        if form.fields:
            raise HTTPException(422, f"unknown form field(s): {', '.join(sorted(form.fields))}")
        if not form.files:
            raise HTTPException(422, "send one or more files, in the form field `files`")
        config = predict_config(srv.config, s.predict_max_duration_s)
        reports: list[Any] = []
        tasks: list[PredictTask] = []
        for received in form.files:
            reason = await _predict_refusal(received, s.predict_max_files)
            if reason:
                reports.append(srv.runner.error_report(received.filename, config, reason))
            else:
                assert received.path is not None
                task = PredictTask(received.path, received.filename, config)
                tasks.append(task)
                reports.append(task)
        try:
            srv.runner.predict(tasks)
        except QueueFull as exc:
            raise _queue_full(exc) from None
        done = [await asyncio.wrap_future(r.future) if isinstance(r, PredictTask) else r for r in reports]
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    dicts = [report_to_dict(r) for r in done]
    counts = {v: sum(d["verdict"] == v for d in dicts) for v in VERDICTS}
    return PredictResult(reports=dicts, summary=PredictSummary(n=len(dicts), **counts))


async def _predict_refusal(received: ReceivedFile, max_files: int) -> str:
    if received.path is None:
        return f"not analysed: over the {max_files}-file cap of /v1/predict"
    suffix, why_not = await run_in_threadpool(media_suffix, received.path)
    return why_not if suffix is None else ""


# -- about the server ----------------------------------------------------------------------------
@v1.get("/info")
def info(srv: Server = Depends(server)) -> dict[str, Any]:
    """Versions, the detector, the device and backend, the workers and the limits."""
    r, s, c = srv.runner, srv.settings, srv.config
    model = r.model_info
    return {
        "tool_version": __version__,
        "detector": None if model is None else {
            "name": model.name, "version": model.version, "sha256": model.sha256, "members": model.members,
            "combiner": model.combiner, "threshold": r.threshold},
        "device": model.device if model else None, "backend": r.backend,
        "workers": s.workers, "workers_ready": r.workers_ready, "threads_per_worker": r.threads_per_worker,
        "sampling": dataclasses.asdict(c.sampling), "render_default": s.render,
        "limits": {"max_upload_bytes": s.max_upload_bytes, "max_duration_s": c.limits.max_duration_s,
                   "max_frames": c.limits.max_frames, "job_timeout_s": s.job_timeout_s, "queue_size": s.queue_size,
                   "predict_max_files": s.predict_max_files, "predict_max_duration_s": s.predict_max_duration_s,
                   "retention_days": s.retention_s / 86400},
        "auth": bool(s.api_key_hashes),
    }


@v1.get("/model-card", response_class=PlainTextResponse, responses={404: {"description": "no model card"}})
def model_card(srv: Server = Depends(server)) -> PlainTextResponse:
    """The detector's model card (markdown): read it before trusting a verdict."""
    path = Path(srv.config.weights) / MODEL_CARD
    if not path.is_file():
        raise HTTPException(404, f"the detector in use has no {MODEL_CARD}")
    return PlainTextResponse(path.read_text(encoding="utf-8"), media_type="text/markdown; charset=utf-8")


def health(srv: Server = Depends(server)) -> JSONResponse:
    ready = srv.runner.workers_ready
    ok = ready > 0 or srv.settings.workers == 0
    return JSONResponse(Health(status="ok" if ok else "starting", workers_ready=ready).model_dump(),
                        status_code=200 if ok else 503)


def index() -> FileResponse:
    return FileResponse(WEB_DIR / "index.html", media_type="text/html")


# -- the app -------------------------------------------------------------------------------------
def create_app(settings: ServeSettings, config: AnalysisConfig, runner: JobRunner | None = None,
               debug: bool = False) -> FastAPI:
    """The server: `runner` already started (the command does, to fail before serving) or made and
    started here, in the lifespan; the lifespan's end stops it (worker processes included)."""
    runner = runner or JobRunner(settings, config, debug)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await run_in_threadpool(runner.start)
        try:
            yield
        finally:
            await run_in_threadpool(runner.close)

    app = FastAPI(title="deepfake-detect", version=__version__, lifespan=lifespan,
                  description="Detect face manipulation in videos and photos, and show why. Read the model card "
                              "(/v1/model-card) before trusting a verdict.")
    app.state.server = Server(settings, config, runner)
    if settings.cors_origins:
        app.add_middleware(CORSMiddleware, allow_origins=list(settings.cors_origins), allow_methods=["*"],
                           allow_headers=["Authorization", "X-API-Key", "Content-Type", "Range"],
                           expose_headers=["Retry-After", "Content-Range", "Accept-Ranges"])
    app.include_router(v1)
    app.add_api_route("/healthz", health, methods=["GET"], response_model=Health, tags=["health"])
    app.add_api_route("/", index, methods=["GET"], include_in_schema=False)
    app.mount("/static", StaticFiles(directory=WEB_DIR), name="static")
    return app
