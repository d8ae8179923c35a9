"""`deepfake-detect detectors import`: a published detector's checkpoint -> a detector folder for --weights."""
from __future__ import annotations

from pathlib import Path

import click

from deepfake_detect.pipeline.core.errors import CommandError

# the formats of training/published (listed here so that --help needs no torch)
FORMATS = ("icpr2020", "sbi", "dfdc-winner", "resnext-lstm")


@click.group()
def detectors() -> None:
    """Published detectors: import their authors' checkpoints to run them here."""


@detectors.command("import")
@click.argument("format_name", metavar="FORMAT", type=click.Choice(FORMATS))
@click.argument("checkpoints", nargs=-1, required=True, type=click.Path(dir_okay=False))
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False),
              help="Detector folder to write (detector.json + detector.safetensors); use it with --weights.")
def import_command(format_name: str, checkpoints: tuple[str, ...], out_dir: str) -> None:
    """Convert CHECKPOINTS (files its authors publish, downloaded by you) of FORMAT into a detector folder.

    \b
    icpr2020     EfficientNetB4, ...AutoAttB4, and their ST variants (DFDC- or FF++-trained .pth)
    sbi          Self-Blended Images, FFraw.tar or FFc23.tar
    dfdc-winner  one or several final_*_DeepFakeClassifier_tf_efficientnet_b7_ns_* (several: averaged)
    resnext-lstm model_*_acc_*_frames_final_data.pt (ResNeXt50 + LSTM)

    The pickle is read with weights_only=True (no code in it runs); the folder holds safetensors only.
    """
    from deepfake_detect.stages.ensemble import DetectorError
    from deepfake_detect.training.published import CheckpointError, import_detector

    out = Path(out_dir)
    if (out / "detector.json").exists():
        raise CommandError(f"{out} already holds a detector; choose another --out")
    try:
        folder = import_detector(format_name, [Path(c) for c in checkpoints], out)
    except (CheckpointError, DetectorError) as exc:
        raise CommandError(str(exc)) from None
    click.echo(f"imported {format_name} into {folder}: run it with --weights {folder}")


@detectors.command("combine")
@click.argument("folders", nargs=-1, required=True, type=click.Path(file_okay=False, exists=True))
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False),
              help="Detector folder to write; use it with --weights.")
def combine_command(folders: tuple[str, ...], out_dir: str) -> None:
    """One ensemble of the members of FOLDERS (detectors trained here or imported), each member keeping its
    own crop cut, normalisation and calibration. Its operating point is the mean of the members' calibrated
    probabilities with threshold 0.5, not fitted on data."""
    from deepfake_detect.stages.ensemble import DetectorError
    from deepfake_detect.training.combine import combine_detectors

    out = Path(out_dir)
    if (out / "detector.json").exists():
        raise CommandError(f"{out} already holds a detector; choose another --out")
    try:
        folder = combine_detectors([Path(f) for f in folders], out)
    except DetectorError as exc:
        raise CommandError(str(exc)) from None
    click.echo(f"combined {len(folders)} detectors into {folder}: run it with --weights {folder}")
