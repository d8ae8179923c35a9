"""`deepfake-detect train` and `deepfake-detect evaluate`: thin CLI over training/."""
from __future__ import annotations

import shutil
from pathlib import Path
from typing import cast

import click

from deepfake_detect.pipeline.cli.common import CommandError, analysis_options, config_from_options, make_analyzer


@click.command()
@click.option("--config", "config_file", default="configs/train.yaml", show_default=True,
              type=click.Path(dir_okay=False, exists=True), help="Training recipe (YAML).")
@click.option("--data", help="Override the recipe's data (manifest TSV or folder with real/ and fake/).")
@click.option("--out", help="Override the run folder.")
@click.option("--cache", default=".cache/faces", show_default=True, help="Face-crop cache folder.")
@click.option("--install", is_flag=True, help="Copy the trained detector into weights/ when done.")
def train(config_file: str, data: str | None, out: str | None, cache: str, install: bool) -> None:
    """Train the ensemble on self-blended pseudo-fakes of real faces."""
    from deepfake_detect.training.recipe import load_train_config
    from deepfake_detect.training.train import train as run_training

    try:
        cfg = load_train_config(config_file, {"data": data, "out": out})
    except (OSError, ValueError, TypeError) as exc:
        raise CommandError(f"cannot read {config_file}: {exc}") from None
    try:
        folder = run_training(cfg, Path(cache), log=click.echo)
    except (FileNotFoundError, ValueError) as exc:
        raise CommandError(str(exc)) from None
    if install:
        _install(folder)


@click.command()
@click.option("--from", "source", default="weights", show_default=True, type=click.Path(file_okay=False, exists=True),
              help="The trained detector whose members are kept.")
@click.option("--config", "config_file", default="configs/train.yaml", show_default=True,
              type=click.Path(dir_okay=False, exists=True), help="The recipe it was trained with (data, split, "
              "holdout, version, and the analysis settings to fit for, e.g. detail_size).")
@click.option("--data", help="Override the recipe's data (manifest TSV or folder with real/ and fake/).")
@click.option("--out", help="Override the run folder.")
@click.option("--cache", default=".cache/faces", show_default=True, help="Face-crop cache folder.")
@click.option("--install", is_flag=True, help="Copy the refitted detector into weights/ when done.")
def refit(source: str, config_file: str, data: str | None, out: str | None, cache: str, install: bool) -> None:
    """Fit a trained detector's combiner, calibration and threshold again on its training holdout,
    keeping its members: for a recipe setting that changes what they see at analysis (detail_size)."""
    from deepfake_detect.stages.ensemble import DetectorError
    from deepfake_detect.training.recipe import load_train_config
    from deepfake_detect.training.refit import refit_detector

    try:
        cfg = load_train_config(config_file, {"data": data, "out": out})
    except (OSError, ValueError, TypeError) as exc:
        raise CommandError(f"cannot read {config_file}: {exc}") from None
    try:
        folder = refit_detector(Path(source), cfg, Path(cache), log=click.echo)
    except (FileNotFoundError, ValueError, DetectorError) as exc:
        raise CommandError(str(exc)) from None
    if install:
        _install(folder)


def _install(folder: Path) -> None:
    from deepfake_detect.pipeline.core.config import DEFAULT_WEIGHTS
    from deepfake_detect.training.data import SPLIT_FILE

    if folder.resolve() == DEFAULT_WEIGHTS.resolve():  # --out weights: already there
        return
    DEFAULT_WEIGHTS.mkdir(parents=True, exist_ok=True)
    for name in ("detector.safetensors", "detector.json", SPLIT_FILE):  # the split: what it never saw
        shutil.copy2(folder / name, DEFAULT_WEIGHTS / name)
    click.echo(f"installed into {DEFAULT_WEIGHTS}")


@click.command()
@click.argument("data")
@click.option("--split", "splits", multiple=True, help="Manifest split(s) to evaluate (default: all).")
@click.option("--holdout", type=click.Path(dir_okay=False, exists=True),
              help="A training run's split.json: also evaluate real items of its held-out identities.")
@click.option("--never-trained", type=click.Path(dir_okay=False, exists=True),
              help="A training run's split.json: evaluate only what that run never saw (the real items of its held-out "
                   "identities and the fakes of families it never trained on), among the chosen splits.")
@click.option("--out", default="runs/eval", show_default=True, help="Folder for metrics.json and plots.")
@analysis_options
def evaluate(data: str, splits: tuple[str, ...], holdout: str | None, never_trained: str | None, out: str,
             **options) -> None:
    """Accuracy, precision, recall, F1, ROC-AUC with bootstrap intervals, confusion and calibration on
    labelled DATA (a manifest TSV or a folder with real/ and fake/): per frame, item, video, generator
    family and fake/original pair. Every file is scored by the same pipeline as `analyze`, with the
    same options."""
    from deepfake_detect.training.evaluate import data_root, never_trained_items, select_items, summary_lines
    from deepfake_detect.training.evaluate import evaluate as run_evaluation

    if holdout and never_trained:
        raise CommandError("--holdout adds held-out reals, --never-trained keeps only unseen items: give one of them")
    try:
        items = select_items(data, list(splits) or None, holdout)
        if never_trained:
            items = never_trained_items(items, never_trained)
    except (FileNotFoundError, KeyError, ValueError) as exc:
        raise CommandError(str(exc)) from None
    if not items:
        raise CommandError(f"no items selected from {data}")
    analyzer = make_analyzer(config_from_options(**options))
    threshold = analyzer.aggregate_settings.threshold
    assert threshold is not None  # Analyzer resolves it (the detector's own when not given)
    result = run_evaluation(analyzer, items, Path(out), threshold, log=click.echo, root=data_root(data))
    click.echo("\n".join(summary_lines(result)))
    click.echo(f"metrics and plots in {out}")


@click.command("compare")
@click.argument("metrics_a", type=click.Path(dir_okay=False, exists=True))
@click.argument("metrics_b", type=click.Path(dir_okay=False, exists=True))
@click.option("--column-a", default="score", show_default=True,
              help="Score of A to compare: score (what analyze reports) or a member's, e.g. mobilenetv2_100_confident.")
@click.option("--column-b", default="score", show_default=True, help="Score of B to compare (as --column-a).")
@click.option("--resample", type=click.Choice(["items", "sources"]), default="items", show_default=True,
              help="What the bootstrap draws: items, or whole sources (a fake family, a real person) where several "
                   "items share one.")
@click.option("--json", "as_json", is_flag=True, help="Print the comparison as one JSON object.")
def compare(metrics_a: str, metrics_b: str, column_a: str, column_b: str, resample: str, as_json: bool) -> None:
    """Does detector B beat detector A? METRICS_A and METRICS_B are metrics.json files of `evaluate`
    on the same data; AUC differences with paired bootstrap intervals (the same resampled items for
    both), overall, for videos, photos and each generator family."""
    import json

    from deepfake_detect.training.compare import Resample, compare_evaluations, comparison_lines

    try:
        a, b = (json.loads(Path(p).read_text()) for p in (metrics_a, metrics_b))
        result = compare_evaluations(a, b, column_a, column_b, resample=cast(Resample, resample))  # a click.Choice of its values
    except KeyError as exc:
        raise CommandError(f"cannot compare: not a metrics.json of `evaluate` (no {exc} field)") from None
    except (OSError, ValueError, TypeError) as exc:
        raise CommandError(f"cannot compare: {exc}") from None
    click.echo(json.dumps(result) if as_json else "\n".join(comparison_lines(result)))
