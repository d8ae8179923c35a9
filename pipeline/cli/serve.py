"""`deepfake-detect serve`: the REST API and web page (the app is pipeline.server.app, the work pipeline.server.jobs)."""
from __future__ import annotations

import logging
from pathlib import Path

import click

from deepfake_detect.pipeline.cli.common import CommandError, analysis_options, checked_settings, config_from_options


@click.command()
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to listen on (loopback only unless given, e.g. 0.0.0.0).")
@click.option("--port", type=click.IntRange(1, 65535), default=8000, show_default=True)
@click.option("--data", "data_dir", default="serve-data", show_default=True, type=click.Path(file_okay=False),
              help="Uploads, reports, annotated files and the job journal go here.")
@click.option("--workers", type=click.IntRange(1, 64), default=1, show_default=True,
              help="Analysis processes, each with its own model.")
@click.option("--api-key-file", type=click.Path(dir_okay=False, exists=True),
              help="Require an API key: one key per line (kept in memory as sha256 hashes only).")
@click.option("--max-upload-mb", type=click.FloatRange(min=0, min_open=True), default=500.0, show_default=True,
              help="Refuse larger uploads (413), checked while they stream in.")
@click.option("--retention-days", type=click.FloatRange(min=0, min_open=True), default=7.0, show_default=True,
              help="Delete finished jobs and their files after this long.")
@click.option("--queue-size", type=click.IntRange(1), default=100, show_default=True,
              help="Queued jobs at most; more get 503 with Retry-After.")
@click.option("--cors-origin", "cors_origins", multiple=True, metavar="ORIGIN",
              help="Allow browser pages from ORIGIN (repeat for several); CORS is off without it.")
@click.option("--job-timeout", type=click.FloatRange(min=0, min_open=True), default=600.0, show_default=True,
              help="Seconds one job may take before it fails and its process is restarted.")
@click.option("--render/--no-render", default=None,
              help="Jobs' default for the annotated video and keyframes (default: render.enabled, where auto "
                   "means on; a job's `render` field overrides it).")
@click.option("--render-scale", type=float, help="Size of the annotated video relative to the input.")
@analysis_options
def serve(host, port, data_dir, workers, api_key_file, max_upload_mb, retention_days, queue_size, cors_origins,
          job_timeout, render, render_scale, **options):
    """Serve the detector over HTTP: a REST API (docs at /docs) and a web page (at /).

    Jobs (POST /v1/jobs) are analysed in the background, one per worker at a time, and survive
    restarts (even kill -9); POST /v1/predict answers while the client waits. Each worker
    process loads the model once. SIGTERM or Ctrl-C stops cleanly; running jobs resume at the
    next start.
    """
    config = config_from_options(**options, **{"render.scale": render_scale})
    if render is None:  # from the settings (configs/default.yaml, --config, --set): "off" turns it off
        render = config.render.enabled != "off"
    from deepfake_detect.pipeline.server.app import read_key_file

    try:
        keys = read_key_file(Path(api_key_file)) if api_key_file else frozenset()
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise CommandError(f"--api-key-file: {exc}") from None

    import uvicorn

    from deepfake_detect.pipeline.core.analysis_process import WorkerStartError
    from deepfake_detect.pipeline.server.app import create_app
    from deepfake_detect.pipeline.server.jobs import JobRunner, ServeSettings

    settings = checked_settings(ServeSettings, {
        "data": Path(data_dir).resolve(), "workers": workers, "max_upload_bytes": int(max_upload_mb * 1024**2),
        "retention_s": retention_days * 86400, "queue_size": queue_size, "job_timeout_s": job_timeout, "render": render,
        "api_key_hashes": keys, "cors_origins": tuple(cors_origins)}, "serve setting")
    debug = logging.getLogger().isEnabledFor(logging.DEBUG)
    logging.getLogger("deepfake_detect.pipeline.server").setLevel(logging.DEBUG if debug else logging.INFO)
    runner = JobRunner(settings, config, debug=debug)
    try:
        # the models load before the port opens: a detector that does not load is one line, exit 2
        runner.start()
        uvicorn.run(create_app(settings, config, runner, debug=debug), host=host, port=port,
                    log_level="debug" if debug else "info", timeout_graceful_shutdown=30)
    except WorkerStartError as exc:
        raise CommandError(str(exc)) from None
    finally:
        runner.close()
