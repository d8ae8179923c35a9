"""`deepfake-detect detectors`: import a published detector's checkpoint, combine detector folders, fit a
threshold on the user's own reals; each writes a detector folder for --weights."""
from __future__ import annotations

from pathlib import Path

import click

from deepfake_detect.pipeline.cli.common import config_from_options, make_analyzer
from deepfake_detect.pipeline.core.errors import CommandError

# the formats of training/published (listed here so that --help needs no torch)
FORMATS = ("icpr2020", "sbi", "dfdc-winner", "resnext-lstm")
FEW_ITEMS = 20   # items of a class below which a fitted operating point is a warning (README, detectors combine)


@click.group()
def detectors() -> None:
    """Detector folders: import published checkpoints, combine detectors, fit a threshold on your reals."""


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
@click.option("--fit", "fit_data", type=click.Path(exists=True),
              help="Labelled data (a manifest TSV, or a folder with real/ and fake/) to fit the operating point on.")
@click.option("--split", "splits", multiple=True, help="Manifest split(s) of --fit to use (default: all).")
@click.option("--frames", type=click.IntRange(1, 256), default=16, show_default=True,
              help="Frames analysed per video of --fit.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the combiner's cross-validation.")
def combine_command(folders: tuple[str, ...], out_dir: str, fit_data: str | None, splits: tuple[str, ...],
                    frames: int, seed: int) -> None:
    """One ensemble of the members of FOLDERS (detectors trained here or imported), each member keeping its
    own crop cut, normalisation and calibration.

    Without --fit, its operating point is the mean of the members' calibrated probabilities with threshold
    0.5, not fitted on data. With --fit DATA, every item of DATA is analysed as `analyze` would (each
    member's own cut), and the combiner (mean or stacking), calibration and threshold are fitted on those
    faces. Items of people a member trained here trained on (its split.json) are left out; what an imported
    member's authors trained on is not known here, so do not fit on their training data.
    """
    from deepfake_detect.stages.ensemble import DetectorError
    from deepfake_detect.training.combine import combine_detectors, fit_combined, untrained_items
    from deepfake_detect.training.evaluate import data_root, score_items, select_items

    out = Path(out_dir)
    if (out / "detector.json").exists():
        raise CommandError(f"{out} already holds a detector; choose another --out")
    sources = [Path(f) for f in folders]
    items = []
    if fit_data:   # read and checked before any model loads
        try:
            chosen = select_items(fit_data, list(splits) or None, None)
        except (FileNotFoundError, KeyError, ValueError) as exc:
            raise CommandError(str(exc)) from None
        items = untrained_items(chosen, sources)
        click.echo(f"fit data: {len(items)} of {len(chosen)} items of {fit_data} "
                   f"({len(chosen) - len(items)} left out: people a member trained on)")
        if not {0, 1} <= {item.label for item in items}:
            raise CommandError("--fit needs real and fake items that no member trained on")
    try:
        folder = combine_detectors(sources, out, will_fit=bool(fit_data))
    except DetectorError as exc:
        raise CommandError(str(exc)) from None
    if fit_data:
        analyzer = make_analyzer(config_from_options(config_file=None, sets=(), frames=frames, fps=None, every=None,
                                                         threshold=None, device=None, weights=str(folder), batch_size=None))
        rows = score_items(analyzer, items, log=click.echo, root=data_root(fit_data))
        described = f"{Path(fit_data).name}{' split ' + '+'.join(splits) if splits else ''}, {frames} frames per video"
        try:
            report = fit_combined(folder, rows, described, seed)
        except DetectorError as exc:
            raise CommandError(f"{exc}; {folder} keeps the unfitted mean") from None
        auc = report["holdout_metrics"]["roc_auc"]
        if min(report["real_items"], report["fake_items"]) < FEW_ITEMS:
            click.echo(f"warning: fitted on fewer than {FEW_ITEMS} real or fake items; such a fit measured worse on dev "
                       "than either detector alone (README, detectors combine)", err=True)
        click.echo(f"fitted on {report['faces']} faces of {report['real_items']} real and {report['fake_items']} fake "
                   f"items: combiner {report['chosen']}, threshold {report['threshold']}, face AUC {auc:.3f} "
                   "(on the faces it was fitted on: not a measure of accuracy)")
    click.echo(f"combined {len(folders)} detectors into {folder}: run it with --weights {folder}")


@detectors.command("threshold")
@click.argument("folder", type=click.Path(file_okay=False, exists=True))
@click.option("--reals", "reals_data", required=True, type=click.Path(exists=True),
              help="Real material to fit on: a folder of media files (all real), or a manifest TSV or real/ fake/ "
                   "folder (its real items).")
@click.option("--false-alarms", "rate", type=click.FloatRange(0.01, 0.5), default=0.15, show_default=True,
              help="Share of those real items allowed at or above the threshold.")
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False),
              help="Detector folder to write (FOLDER with the new threshold); use it with --weights.")
@click.option("--split", "splits", multiple=True, help="Manifest split(s) of --reals to use (default: all).")
@click.option("--exclude-sources-of", "exclude_data", type=click.Path(exists=True, dir_okay=False), default=None,
              help="A manifest TSV (the detector's training data): real items from any source it names "
                   "(its source_repo column) are left out, so the fit is on sources the detector never saw.")
@click.option("--frames", type=click.IntRange(1, 256), default=None,
              help="Frames analysed per video (default: the analysis default, as analyze).")
def threshold_command(folder: str, reals_data: str, rate: float, out_dir: str, splits: tuple[str, ...],
                      exclude_data: str | None, frames: int | None) -> None:
    """Fit FOLDER's threshold on real material like yours, at a chosen false-alarm rate.

    Every real item is analysed as `analyze` would; the new threshold is the lowest with at most
    --false-alarms of them scored at or above it. Members, combiner and calibration stay. Items of people
    its members trained on (its split.json) are left out. Measured on the enlarged dev set, a threshold
    fitted this way on all but one real source, at 15 %, flagged 12-19 % of the left-out sources' reals
    (pooled over all 12 sources left out in turn; a single small source can fare much worse), where the
    training-holdout thresholds flagged 31-58 % (weights/MODEL_CARD.md). It fixes false alarms only: how
    many fakes it then catches is the detector's ranking, which it does not change. Scores within the
    inconclusive band (0.1) of the threshold get the verdict `inconclusive`, not `fake`.
    """
    from deepfake_detect.stages.ensemble import DetectorError
    from deepfake_detect.training.combine import untrained_items
    from deepfake_detect.training.data import read_manifest, read_real_items
    from deepfake_detect.training.evaluate import data_root, score_items
    from deepfake_detect.training.false_alarm_threshold import fit_threshold_on_reals

    source, out = Path(folder), Path(out_dir)
    if out.resolve() == source.resolve() or (out / "detector.json").exists():
        raise CommandError(f"{out} already holds a detector; choose another --out")
    if out.resolve().is_relative_to(Path(reals_data).resolve()):   # inputs are never written to
        raise CommandError(f"--out {out} is inside --reals {reals_data}; choose a folder outside it")
    try:   # read and checked before any model loads
        listed = [item for item in read_real_items(reals_data) if not splits or item.split in splits]
        excluded = {item.source for item in read_manifest(exclude_data) if item.source} if exclude_data else set()
    except (FileNotFoundError, KeyError, ValueError) as exc:
        raise CommandError(str(exc)) from None
    if exclude_data and not excluded:   # excluding nothing would be silent, and the fit would still say it had
        raise CommandError(f"--exclude-sources-of {exclude_data} names no sources (its source_repo column is "
                           "missing or empty)")
    chosen = [item for item in listed if item.source not in excluded]
    items = untrained_items(chosen, [source])
    if not items:
        why = (" (all of people its members trained on)" if chosen else
               f" (all from sources --exclude-sources-of {exclude_data} names)" if listed else "")
        raise CommandError(f"{reals_data}: no real items to fit on{why}")
    config = config_from_options(config_file=None, sets=(), frames=frames, fps=None, every=None,
                                 threshold=None, device=None, weights=folder, batch_size=None)
    analyzer = make_analyzer(config)
    rows = score_items(analyzer, items, log=click.echo, root=data_root(reals_data))
    scores = [row["score"] for row in rows if row["score"] is not None]
    item_sources = [item.source for item, row in zip(items, rows) if row["score"] is not None]
    failed = sum(bool(row["errors"]) and row["score"] is None for row in rows)   # unreadable, not faceless
    if not scores:
        raise CommandError(f"{reals_data}: none of its {len(items)} real items gave a score "
                           f"({failed} could not be read, {len(items) - failed} without a face)")
    # the threshold holds for the sampling it was fitted under (as `refit` exists for): say which
    described = (f"{Path(reals_data).name}{' split ' + '+'.join(splits) if splits else ''}"
                 f"{' less the sources of ' + Path(exclude_data).name if exclude_data else ''} "
                 f"(sampling {config.sampling.mode} {config.sampling.value:g})")
    try:
        fit = fit_threshold_on_reals(source, out, scores, rate, described, item_sources)
    except (DetectorError, ValueError) as exc:
        raise CommandError(str(exc)) from None
    if len(scores) < FEW_ITEMS:
        click.echo(f"warning: fitted on {len(scores)} real items; a rate is only as fine as one item in "
                   f"{len(scores)}", err=True)
    click.echo(f"threshold {fit['threshold']:.4f} (was {fit['threshold_before']:.4f}): "
               f"{100 * fit['reals_at_or_above']:.1f} % of {len(scores)} real items at or above it "
               f"({failed} unreadable, {len(items) - len(scores) - failed} without a face, "
               f"{len(chosen) - len(items)} of people it trained on"
               f"{f' and {len(listed) - len(chosen)} of sources it trained on' if exclude_data else ''} left out); "
               f"saved into {out}: run it with --weights {out}")
    for name, share in fit.get("by_source", {}).items():   # a pooled rate can hide one source far above it
        click.echo(f"  {name}: {100 * share['at_or_above']:.1f} % of its {share['items']} real items at or above "
                   f"the threshold{' (too few for a rate)' if share['items'] < 5 else ''}")
