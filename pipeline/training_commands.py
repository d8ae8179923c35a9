"""`deepfake-detect train` and `deepfake-detect evaluate`: thin CLI over training/."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import click

from pipeline.cli import fail


@click.command()
@click.option("--config", "config_file", default="configs/train.yaml", show_default=True,
              type=click.Path(dir_okay=False, exists=True), help="Training recipe (YAML).")
@click.option("--data", help="Override the recipe's data (manifest TSV or folder with real/ and fake/).")
@click.option("--out", help="Override the run folder.")
@click.option("--cache", default=".cache/faces", show_default=True, help="Face-crop cache folder.")
@click.option("--install", is_flag=True, help="Copy the trained detector into weights/ when done.")
def train(config_file: str, data: str | None, out: str | None, cache: str, install: bool) -> None:
    """Train the ensemble on self-blended pseudo-fakes of real faces."""
    from pipeline.config import DEFAULT_WEIGHTS
    from training.train import load_train_config, train as run_training

    try:
        cfg = load_train_config(config_file, {"data": data, "out": out})
    except (OSError, ValueError, TypeError) as exc:
        fail(f"cannot read {config_file}: {exc}")
    try:
        folder = run_training(cfg, Path(cache), log=click.echo)
    except (FileNotFoundError, ValueError) as exc:
        fail(str(exc))
    if install:
        DEFAULT_WEIGHTS.mkdir(parents=True, exist_ok=True)
        for name in ("detector.safetensors", "detector.json"):
            shutil.copy2(folder / name, DEFAULT_WEIGHTS / name)
        click.echo(f"installed into {DEFAULT_WEIGHTS}")


@click.command()
@click.argument("data")
@click.option("--weights", type=click.Path(file_okay=False), help="Detector folder (default: weights/).")
@click.option("--split", "splits", multiple=True, help="Manifest split(s) to evaluate (default: all).")
@click.option("--holdout", type=click.Path(dir_okay=False, exists=True),
              help="A training run's split.json: also evaluate real items of its held-out identities.")
@click.option("--out", default="runs/eval", show_default=True, help="Folder for metrics.json and plots.")
@click.option("--cache", default=".cache/faces", show_default=True, help="Face-crop cache folder.")
@click.option("--frames", default=16, show_default=True, help="Frames sampled per video.")
def evaluate(data: str, weights: str | None, splits: tuple[str, ...], holdout: str | None, out: str, cache: str,
             frames: int) -> None:
    """Accuracy, precision, recall, F1, ROC-AUC, confusion and calibration on labelled DATA
    (a manifest TSV or a folder with real/ and fake/), at frame and video level."""
    from pipeline.config import DEFAULT_WEIGHTS
    from stages.ensemble import DetectorError, load_detector
    from training.evaluate import evaluate as run_evaluation, select_items, summary_lines

    try:
        model = load_detector(weights or DEFAULT_WEIGHTS)
        items = select_items(data, list(splits) or None, holdout)
    except (DetectorError, FileNotFoundError, KeyError, ValueError) as exc:
        fail(str(exc))
    if not items:
        fail(f"no items selected from {data}")
    result = run_evaluation(model, items, Path(out), Path(cache), frames, log=click.echo)
    click.echo("\n".join(summary_lines(result)))
    click.echo(json.dumps(result["groups"], indent=1))
    click.echo(f"metrics and plots in {out}")
