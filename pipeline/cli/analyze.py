"""`deepfake-detect analyze`, `info` and `sample`: analyse media, show the set-up, make a sample clip."""
from __future__ import annotations

import csv
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

import click

from deepfake_detect.pipeline import __version__
from deepfake_detect.pipeline.cli.common import analysis_options, checked_settings, config_from_options, make_analyzer
from deepfake_detect.pipeline.core.errors import EXIT_FAILED, EXIT_FAKE, EXIT_REAL, EXIT_UNSURE, CommandError

# photo formats OpenCV writes (the sample photo is encoded with it)
SAMPLE_PHOTO_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff")

if TYPE_CHECKING:  # the report and config modules are imported when a command runs
    from deepfake_detect.pipeline.core.config import AnalysisConfig
    from deepfake_detect.pipeline.core.report import AnalysisReport


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
        verdict = f"{r.verdict} (c2pa)" if r.verdict_basis == "provenance" else r.verdict
        rows.append((verdict, "-" if r.score is None else f"{r.score:.3f}",
                     "-" if r.fake_percentage is None else f"{r.fake_percentage:.0f}",
                     str(people), str(r.frames_analysed), f"{r.timings.get('total_s', 0):.1f}", detail))
    widths = [max(len(row[i]) for row in rows) for i in range(6)]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(row[:6], widths)) + "  " + row[6] for row in rows)


def problem_reports(problems: list[tuple[str, str]]) -> list[AnalysisReport]:
    """Error reports for what gave no input (a missing path, an empty folder), each said on stderr."""
    from deepfake_detect.pipeline.core.report import AnalysisReport, InputInfo

    reports = [AnalysisReport(input=InputInfo(path=item), verdict="error", errors=[why]) for item, why in problems]
    for report in reports:
        click.echo(f"error: {report.input.path}: {report.errors[0]}", err=True)
    return reports


def echo_json(report: AnalysisReport, many: bool, file: TextIO | None = None) -> None:
    """`--json`: the report on stdout; one document per line when there are several inputs."""
    from deepfake_detect.pipeline.core.writers import report_json

    click.echo(report_json(report).replace("\n", "") if many else report_json(report), nl=False, file=file)
    if many:
        click.echo(file=file)


def analyze_locally(config: AnalysisConfig, files: list[Path], out: Path | None, as_json: bool) -> list[AnalysisReport]:
    """`--engine local` (pipeline/archive/local_engine.py), with a progress bar on stderr."""
    from tqdm import tqdm

    from deepfake_detect.pipeline.archive.local_engine import LocalEngine

    analyzer = make_analyzer(config)
    if out is not None:
        from deepfake_detect.pipeline.core.outputs import build_output_writers

        analyzer.outputs = build_output_writers(config.render, n_inputs=len(files))
    bar = tqdm(files, unit="file", disable=None, file=sys.stderr, dynamic_ncols=True)

    def each_file() -> Iterator[Path]:
        for path in bar:
            bar.set_postfix_str(path.name[-40:])
            yield path

    def on_report(path: Path, report: AnalysisReport) -> None:
        if report.errors:
            tqdm.write(f"error: {path}: {report.errors[0]}", file=sys.stderr)
        for warning in report.warnings:   # a file changed after signing is news the user must not miss
            if warning.startswith("content credentials invalid"):
                tqdm.write(f"warning: {path}: {warning}", file=sys.stderr)
        if as_json:
            echo_json(report, many=len(files) > 1)

    return LocalEngine(analyzer).run(each_file(), out, on_report)


def analyze_on_ray(config: AnalysisConfig, files: list[Path], out: Path, as_json: bool, address: str | None,
                   workers: int | None, timeout: float) -> list[AnalysisReport]:
    """`--engine ray`: whole files on a Ray cluster's workers (pipeline/archive/ray_engine.py)."""
    from contextlib import redirect_stdout

    from deepfake_detect.pipeline.archive.ray_engine import RayEngine, RaySettings

    stdout = sys.stdout
    # Ray prints its workers' deaths on stdout; stdout keeps --json's reports alone
    with redirect_stdout(sys.stderr):
        ray_settings = checked_settings(RaySettings, {"address": address, "workers": workers, "timeout_s": timeout},
                                        "archive setting")
        engine = RayEngine(config, ray_settings)
        return engine.run(files, out, (lambda path, report: echo_json(report, len(files) > 1, stdout)) if as_json else None)


@click.command()
@click.argument("paths", nargs=-1)
@click.option("--from-list", "from_list", type=click.Path(dir_okay=False),
              help="Also analyse the paths in FILE: one per line, or a CSV with a `path` column "
                   "(relative paths are relative to FILE's folder).")
@click.option("--out", "out_dir", type=click.Path(file_okay=False), help="Write a JSON report per input (and results.csv) here.")
@click.option("--json", "as_json", is_flag=True, help="Print each report as JSON on stdout (one document per line).")
@click.option("--render/--no-render", default=None,
              help="Annotated video and keyframe images (default: on for a single input with --out).")
@click.option("--render-scale", type=float, help="Size of the annotated video relative to the input.")
@click.option("--html", "html", is_flag=True, default=None,
              help="Also write <name>.html per input in --out: one self-contained page (verdict, timelines, keyframes, "
                   "heatmaps, provenance, settings) that opens offline in any browser.")
@click.option("--engine", type=click.Choice(["local", "ray"]), default="local", show_default=True,
              help="local: this process analyses the inputs in turn. ray: the workers of a Ray cluster do, whole "
                   "files in parallel, resumably (needs --out; every input and --out must be readable and writable "
                   "at the same path on every node: a shared filesystem).")
@click.option("--ray-address", help="--engine ray: the cluster to join, auto or HOST:PORT "
                                    "(default: $RAY_ADDRESS, else a local one on this machine).")
@click.option("--workers", type=click.IntRange(1, 100_000),
              help="--engine ray: workers, each with its own detector (default: one per GPU, else the cluster's CPUs "
                   "divided by --threads).")
@click.option("--timeout", type=click.FloatRange(min=0, min_open=True),
              help="--engine ray: seconds one file may take before it is failed (an error report) and its worker "
                   "replaced by a fresh one (default: 600).")
@analysis_options
def analyze(paths, from_list, out_dir, as_json, render, render_scale, html, engine, ray_address, workers, timeout,
            **options) -> None:
    """Analyse videos and photos: PATHS are files, folders (searched recursively) or glob patterns.

    With --engine ray an archive is analysed on a Ray cluster (--ray-address; without one, a local
    Ray instance on this machine). The inputs and --out must be on a filesystem every node reads at
    the same path. A journal in --out makes the run resumable: run the same command again after an
    interruption, and finished files are skipped.

    Exit status: 0 all real, 1 at least one fake, 2 at least one input failed (and none fake),
    3 otherwise when an input was inconclusive or had no face.
    """
    from deepfake_detect.pipeline.core.inputs import expand_inputs, read_path_list

    render_mode = None if render is None else ("on" if render else "off")
    if html and not out_dir:
        raise CommandError("--html needs --out DIR (the page is written beside each JSON report)")
    config = config_from_options(**options, **{"render.enabled": render_mode, "render.scale": render_scale,
                                               "render.html": html})
    items = list(paths)
    if from_list:
        try:
            items += read_path_list(Path(from_list))
        except (OSError, UnicodeDecodeError, csv.Error) as exc:
            raise CommandError(f"--from-list {from_list}: {exc}") from None
    if not items:
        raise CommandError("nothing to analyse: give PATHS or --from-list FILE")
    out = Path(out_dir) if out_dir else None
    if engine == "ray" and out is None:
        raise CommandError("--engine ray needs --out DIR (a folder every node of the cluster can write)")
    if engine == "local" and (ray_address or workers or timeout is not None):
        raise CommandError("--ray-address, --workers and --timeout go with --engine ray")
    inputs = expand_inputs(items)
    reports = problem_reports(inputs.problems)
    if engine == "ray":
        assert out is not None
        reports += analyze_on_ray(config, inputs.files, out, as_json, ray_address, workers,
                                  600.0 if timeout is None else timeout)
    else:
        reports += analyze_locally(config, inputs.files, out, as_json)
    click.echo(summary_table(reports), err=as_json)
    sys.exit(exit_code(reports))


@click.command()
@click.option("--weights", type=click.Path(file_okay=False), help="Detector folder (default: weights/).")
@click.option("--device", default="auto", help="Device to report on.")
def info(weights: str | None, device: str) -> None:
    """Versions, compute device and the installed detector."""
    import platform
    from importlib.metadata import PackageNotFoundError, version

    import torch

    from deepfake_detect.pipeline.core.config import DEFAULT_WEIGHTS
    from deepfake_detect.pipeline.core.model_cache import cache_dir
    from deepfake_detect.pipeline.core.runner import resolve_backend
    from deepfake_detect.pipeline.core.threads import thread_policy
    from deepfake_detect.stages.classify import pick_device
    from deepfake_detect.stages.ensemble import WEIGHTS_FILE, DetectorError, file_sha256, load_detector_config

    def installed(package: str) -> str:
        try:
            return version(package)
        except PackageNotFoundError:
            return "not installed"

    click.echo(f"deepfake-detect {__version__} (python {platform.python_version()})")
    click.echo(", ".join(f"{p} {installed(p)}" for p in ("torch", "timm", "onnxruntime", "opencv-python", "decord",
                                                           "facenet-pytorch")))
    try:
        dev = pick_device(device)
        backend = resolve_backend("auto", dev)
    except ValueError as exc:
        raise CommandError(str(exc)) from None
    name = torch.cuda.get_device_name(dev) if dev.type == "cuda" else platform.processor() or platform.machine()
    policy = thread_policy()
    click.echo(f"device: {dev} ({name}); backend: {'ONNX Runtime' if backend == 'onnx' else 'PyTorch'}; "
               f"{policy.compute} compute + {policy.decode} decode threads per analysis")
    click.echo(f"model cache (ONNX exports): {cache_dir()}")
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
               f"input {cfg.input_size}px" + (f" (detail {cfg.detail_size}px)" if cfg.detail_size else "") +
               f", crop margin {cfg.crop_margin}; trained: {cfg.trained}")
    click.echo(f"  sha256: {cfg.sha256} [{status}]")
    fit = cfg.training.get("threshold_fit")
    if fit:   # `detectors threshold`: the user's own reals chose it
        click.echo(f"  threshold fitted on {fit['real_items']} real items of {fit['data']} at "
                   f"{100 * fit['false_alarm_rate']:.0f} % false alarms (was {fit['threshold_before']})")
    if cfg.provenance.get("combined"):
        parts = ", ".join(f"{c['name']} {c['version']}" for c in cfg.provenance["combined"])
        click.echo(f"  combined from: {parts}; {cfg.provenance.get('operating_point', '')}")
        click.echo(f"  input groups: {len(cfg.input_groups())} (" + "; ".join(
            f"{g.crop_policy} {g.input_size}px: {', '.join(cfg.members[i] for i in idx)}" for g, idx in cfg.input_groups()) + ")")
    elif cfg.provenance:
        p = cfg.provenance
        sources = ", ".join(f"{s['file']} (sha256 {s['sha256'][:12]}…)" for s in p.get("sources", []))
        click.echo(f"  imported ({p.get('format')}): {p.get('method', '')}; crop policy {cfg.crop_policy}")
        click.echo(f"  from: {sources}; {p.get('repository', '')}")
        click.echo(f"  licence: {p.get('licence', 'not recorded')}")


@click.command()
@click.argument("path", type=click.Path(dir_okay=False))
@click.option("--seconds", default=6.0, show_default=True, help="Length of the clip.")
@click.option("--faces", default=1, type=click.IntRange(0, 2), show_default=True, help="People in the clip.")
@click.option("--size", default="640x360", show_default=True, help="WIDTHxHEIGHT.")
@click.option("--audio/--no-audio", default=True, show_default=True, help="Add a test tone.")
def sample(path: str, seconds: float, faces: int, size: str, audio: bool) -> None:
    """Make a sample clip with a moving face (or a photo, by suffix) to try the detector on."""
    from deepfake_detect.pipeline.core.samples import make_sample_photo, make_sample_video
    from deepfake_detect.stages.decode import IMAGE_SUFFIXES

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
