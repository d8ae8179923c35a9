"""`deepfake-detect watch`: the watch-folder daemon's command line (the daemon is pipeline.watch.daemon)."""
from __future__ import annotations

import json
import logging
import sys
from pathlib import Path

import click

from deepfake_detect.pipeline.cli.common import CommandError, analysis_options, checked_settings, config_from_options


@click.command()
@click.argument("inbox", required=False, type=click.Path(file_okay=False))
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False),
              help="Reports, results.csv, the journal and watch-status.json go here.")
@click.option("--processed", type=click.Path(file_okay=False),
              help="Move finished inputs here (default: INBOX/processed).")
@click.option("--keep", is_flag=True, help="Leave finished inputs where they are instead of moving them.")
@click.option("--failed", type=click.Path(file_okay=False),
              help="Move inputs that could not be analysed here (default: INBOX/failed).")
@click.option("--render/--no-render", default=None,
              help="Annotated video and keyframe images per input (default: render.enabled; auto means on).")
@click.option("--render-scale", type=float, help="Size of the annotated video relative to the input.")
@click.option("--workers", type=click.IntRange(1, 64), default=1, show_default=True,
              help="Analysis processes, each with its own model.")
@click.option("--timeout", type=click.FloatRange(min=0, min_open=True), default=600.0, show_default=True,
              help="Seconds one file may take before it is failed and its process restarted.")
@click.option("--quiet-time", type=click.FloatRange(min=0), default=5.0, show_default=True,
              help="Seconds a file's size and mtime must stay unchanged before it is taken.")
@click.option("--rescan", type=click.FloatRange(min=0.1), default=30.0, show_default=True,
              help="Seconds between full rescans (the safety net for missed events).")
@click.option("--max-size", help="Refuse larger files, e.g. 2G (default: limits.max_file_bytes).")
@click.option("--stop-grace", type=click.FloatRange(min=0), default=30.0, show_default=True,
              help="On SIGTERM/SIGINT, seconds to let the current file finish before abandoning it.")
@click.option("--status", "show_status", is_flag=True, help="Print what the daemon using --out is doing, and exit.")
@click.option("--json", "as_json", is_flag=True, help="With --status: print JSON.")
@analysis_options
def watch(inbox, out_dir, processed, keep, failed, render, render_scale, workers, timeout, quiet_time, rescan,
          max_size, stop_grace, show_status, as_json, **options):
    """Watch INBOX and analyse each media file that lands there, exactly once.

    Each input gets OUT/<name>.json and a line in OUT/results.csv, then moves to processed/
    (or stays, with --keep); failures get an error report and move to failed/. A journal in
    OUT makes restarts (even after kill -9) resume without repeating finished work. SIGTERM
    or Ctrl-C stops cleanly (exit 0). With --status: exit 0 if a daemon is running, else 1.
    """
    out = Path(out_dir)
    if show_status:  # a monitoring check: only the status file is read, nothing heavy is imported
        from deepfake_detect.pipeline.watch.status import format_status, read_status

        st = read_status(out)
        click.echo(json.dumps(st, indent=2, ensure_ascii=False) if as_json else format_status(st))
        sys.exit(0 if st["alive"] else 1)
    from deepfake_detect.pipeline.core.analysis_process import WorkerStartError
    from deepfake_detect.pipeline.watch.daemon import WatchDaemon, log, parse_size
    from deepfake_detect.pipeline.watch.file_moves import is_within
    from deepfake_detect.pipeline.watch.settings import WatchSettings

    if inbox is None:
        raise CommandError("give the INBOX folder to watch (or --status)")
    inbox_p = Path(inbox)
    if not inbox_p.is_dir():
        raise CommandError(f"inbox {inbox} is not a folder")
    if keep and processed:
        raise CommandError("use --processed or --keep, not both")
    inbox_p = inbox_p.resolve()
    out = out.resolve()
    processed_p = None if keep else Path(processed or inbox_p / "processed").resolve()
    failed_p = Path(failed or inbox_p / "failed").resolve()
    for label, p in (("--out", out), ("--processed", processed_p), ("--failed", failed_p)):
        if p is not None and (p == inbox_p or is_within(inbox_p, p)):
            raise CommandError(f"{label} must not be the inbox or contain it")
    render_mode = None if render is None else ("on" if render else "off")
    config = config_from_options(**options, **{"render.enabled": render_mode, "render.scale": render_scale})
    try:
        max_bytes = parse_size(max_size) if max_size else config.limits.max_file_bytes
    except ValueError:
        raise CommandError(f"--max-size must look like 500M or 2G, got {max_size!r}") from None
    settings = checked_settings(WatchSettings, {
        "inbox": inbox_p, "out": out, "processed": processed_p, "failed": failed_p,
        "render": config.render.enabled != "off", "workers": workers, "timeout_s": timeout, "quiet_s": quiet_time,
        "rescan_s": rescan, "max_bytes": max_bytes, "stop_grace_s": stop_grace}, "watch setting")
    debug = logging.getLogger().isEnabledFor(logging.DEBUG)
    if not debug:
        log.setLevel(logging.INFO)
    try:
        code = WatchDaemon(settings, config, debug=debug).run()
    except WorkerStartError as exc:
        raise CommandError(str(exc)) from None
    sys.exit(code)

