"""`deepfake-detect analyze`, `info` and `sample`: analyse media, show the set-up, make a sample clip."""
from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING

import click

from pipeline import __version__
from pipeline.cli_common import (
    EXIT_FAILED,
    EXIT_FAKE,
    EXIT_REAL,
    EXIT_UNSURE,
    CommandError,
    analysis_options,
    config_from_options,
    make_analyzer,
)

# photo formats OpenCV writes (the sample photo is encoded with it)
SAMPLE_PHOTO_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff")

if TYPE_CHECKING:  # the report module is imported when a command runs
    from pipeline.report import AnalysisReport


def exit_code(reports: list[AnalysisReport]) -> int:
    verdicts = {r.verdict for r in reports}
    if "fake" in verdicts:
        return EXIT_FAKE
    if "error" in verdicts or not reports:
        return EXIT_FAILED
    if verdicts & {"inconclusive", "no_face"}:
        return EXIT_UNSURE
    return EXIT_REAL


def summary_table(reports: list[AnalysisReport]) -> str:
    rows = [("VERDICT", "SCORE", "FAKE%", "PEOPLE", "FRAMES", "SECONDS", "INPUT")]
    for r in reports:
        people = sum(1 for t in r.tracks if t.counted)
        detail = r.input.path if not r.errors else f"{r.input.path}  ({r.errors[0]})"
        rows.append((r.verdict, "-" if r.score is None else f"{r.score:.3f}",
                     "-" if r.fake_percentage is None else f"{r.fake_percentage:.0f}",
                     str(people), str(r.frames_analysed), f"{r.timings.get('total_s', 0):.1f}", detail))
    widths = [max(len(row[i]) for row in rows) for i in range(6)]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(row[:6], widths)) + "  " + row[6] for row in rows)


@click.command()
@click.argument("paths", nargs=-1, required=True)
@click.option("--out", "out_dir", type=click.Path(file_okay=False), help="Write a JSON report per input (and results.csv) here.")
@click.option("--json", "as_json", is_flag=True, help="Print each report as JSON on stdout (one document per line).")
@click.option("--render/--no-render", default=None,
              help="Annotated video and keyframe images (default: on for a single input with --out).")
@click.option("--render-scale", type=float, help="Size of the annotated video relative to the input.")
@analysis_options
def analyze(paths, out_dir, as_json, render, render_scale, **options) -> None:
    """Analyse videos and photos: PATHS are files, folders (searched recursively) or glob patterns.

    Exit status: 0 all real, 1 at least one fake, 2 at least one input failed (and none fake),
    3 otherwise when an input was inconclusive or had no face.
    """
    from tqdm import tqdm

    from pipeline.inputs import expand_inputs
    from pipeline.report import AnalysisReport, InputInfo
    from pipeline.writers import CsvLogWriter, JsonReportWriter, claim_output_paths, report_json

    render_mode = None if render is None else ("on" if render else "off")
    config = config_from_options(**options, **{"render.enabled": render_mode, "render.scale": render_scale})
    inputs = expand_inputs(paths)
    analyzer = make_analyzer(config)
    out = Path(out_dir) if out_dir else None
    if out is not None:
        from pipeline.outputs import build_output_writers

        analyzer.outputs = build_output_writers(config.render, n_inputs=len(inputs.files))
    json_writer = JsonReportWriter(out) if out else None
    csv_writer = CsvLogWriter(out / "results.csv") if out else None

    reports = [AnalysisReport(input=InputInfo(path=item), verdict="error", errors=[why]) for item, why in inputs.problems]
    for report in reports:
        click.echo(f"error: {report.input.path}: {report.errors[0]}", err=True)
    claimed: set[Path] = set()  # report files of this run: a second `p.jpg` gets `p.jpg.2.json` and `p.jpg.2/`
    bar = tqdm(inputs.files, unit="file", disable=None, file=sys.stderr, dynamic_ncols=True)
    for number, path in enumerate(bar, 1):
        bar.set_postfix_str(path.name[-40:])
        report_path, folder = (claim_output_paths(out, str(path), str(number), claimed.__contains__)
                               if out is not None else (None, None))
        report = analyzer.analyze(path, out_dir=folder)
        reports.append(report)
        if report.errors:
            tqdm.write(f"error: {path}: {report.errors[0]}", file=sys.stderr)
        if json_writer and csv_writer and report_path is not None:
            claimed.add(report_path)
            report.outputs["report"] = str(report_path)
            json_writer.write(report, report_path)
            csv_writer.write(report, report_path)
        if as_json:
            click.echo(report_json(report).replace("\n", "") if len(inputs.files) > 1 else report_json(report), nl=False)
            if len(inputs.files) > 1:
                click.echo()
    click.echo(summary_table(reports), err=as_json)
    sys.exit(exit_code(reports))


@click.command()
@click.option("--weights", type=click.Path(file_okay=False), help="Detector folder (default: weights/).")
@click.option("--device", default="auto", help="Device to report on.")
def info(weights: str | None, device: str) -> None:
    """Versions, compute device and the installed detector."""
    import platform

    import cv2
    import decord
    import timm
    import torch

    from pipeline.config import DEFAULT_WEIGHTS
    from stages.classify import pick_device
    from stages.ensemble import WEIGHTS_FILE, DetectorError, file_sha256, load_detector_config

    click.echo(f"deepfake-detect {__version__} (python {platform.python_version()})")
    click.echo(f"torch {torch.__version__}, timm {timm.__version__}, opencv {cv2.__version__}, decord {decord.__version__}")
    try:
        dev = pick_device(device)
    except ValueError as exc:
        raise CommandError(str(exc)) from None
    name = torch.cuda.get_device_name(dev) if dev.type == "cuda" else platform.processor() or platform.machine()
    click.echo(f"device: {dev} ({name}), {torch.get_num_threads()} CPU threads")
    folder = Path(weights or DEFAULT_WEIGHTS)
    try:
        cfg = load_detector_config(folder)
    except DetectorError as exc:
        click.echo(f"detector: none ({exc})")
        return
    actual = file_sha256(folder / WEIGHTS_FILE) if (folder / WEIGHTS_FILE).is_file() else "missing"
    status = "ok" if actual == cfg.sha256 else f"MISMATCH (file {actual})"
    click.echo(f"detector: {cfg.name} {cfg.version} in {folder}")
    click.echo(f"  members: {', '.join(cfg.members)}; combiner: {cfg.combiner}; threshold: {cfg.threshold}; "
               f"input {cfg.input_size}px, crop margin {cfg.crop_margin}; trained: {cfg.trained}")
    click.echo(f"  sha256: {cfg.sha256} [{status}]")


@click.command()
@click.argument("path", type=click.Path(dir_okay=False))
@click.option("--seconds", default=6.0, show_default=True, help="Length of the clip.")
@click.option("--faces", default=1, type=click.IntRange(0, 2), show_default=True, help="People in the clip.")
@click.option("--size", default="640x360", show_default=True, help="WIDTHxHEIGHT.")
@click.option("--audio/--no-audio", default=True, show_default=True, help="Add a test tone.")
def sample(path: str, seconds: float, faces: int, size: str, audio: bool) -> None:
    """Make a sample clip with a moving face (or a photo, by suffix) to try the detector on."""
    from pipeline.samples import make_sample_photo, make_sample_video
    from stages.decode import IMAGE_SUFFIXES

    try:
        width, height = (int(v) for v in size.lower().split("x"))
    except ValueError:
        raise CommandError(f"--size must look like 640x360, got {size!r}") from None
    suffix = Path(path).suffix.lower()
    if suffix in IMAGE_SUFFIXES:
        if suffix not in SAMPLE_PHOTO_SUFFIXES:
            raise CommandError(f"a sample photo can be {', '.join(SAMPLE_PHOTO_SUFFIXES)}, not {suffix}")
        make_sample_photo(path, (width, height), faces)
    else:
        make_sample_video(path, seconds, 25.0, (width, height), faces, audio)
    click.echo(path)
