"""Fit a trained detector's combiner, calibration and threshold again, keeping its members.

A setting that changes what the members see at analysis but not how they were trained (today
`detail_size`) moves every score, so the operating point fitted on the training holdout no longer
holds. This refits it on the same holdout (the recipe's identity split, checked against the
detector's own `split.json`), as `train` fits it after the members finish, and records where the
members came from. It needs the recipe's data and its face cache, not a GPU: about 30 s once the faces are cached.
"""
from __future__ import annotations

from pathlib import Path

from deepfake_detect.stages.ensemble import CONFIG_FILE, load_detector, save_detector
from deepfake_detect.training.data import SPLIT_FILE, load_split, split_by_identity
from deepfake_detect.training.recipe import Log, TrainConfig, split_seed
from deepfake_detect.training.train import assemble_detector, face_pools, prepare_faces, validation_set


def refit_detector(source: Path, cfg: TrainConfig, cache_dir: Path, log: Log = print) -> Path:
    """The detector in `source` with its operating point fitted again under `cfg`'s analysis settings,
    saved (with `source`'s split.json) into `cfg.out`; returns that folder."""
    old = load_detector(source)
    items, faces = prepare_faces(cfg, cache_dir, log)
    train_ids, held_ids = split_by_identity(items, cfg.holdout_share, split_seed(cfg))
    split_path = source / SPLIT_FILE
    recorded = split_path.read_text() if split_path.is_file() else None
    if recorded is not None and load_split(split_path)[1] != set(held_ids):
        raise ValueError(f"the recipe's identity split is not the one {source} was trained with ({split_path}): "
                         "refitting on identities its members trained on would flatter it")
    held_real, held_fake = face_pools(items, faces, held_ids, cfg.real_balance)
    val = validation_set(held_real, held_fake, cfg)
    members = {name: old.members[name] for name in old.config.members}
    ensemble, combined = assemble_detector(members, dict(old.config.architectures), cfg, val, cfg.version)
    # the members' provenance stays; the operating point is this fit's, and the refit says from what
    ensemble.config.training = {
        **old.config.training, "combiner": combined,
        "refit": {"members_from": {"version": old.config.version, "sha256": old.config.sha256},
                  "detail_size": cfg.detail_size, "combiner_before": old.config.training.get("combiner")}}
    out = Path(cfg.out)
    save_detector(ensemble, out)
    if recorded is not None:
        (out / SPLIT_FILE).write_text(recorded)
    log(f"refitted {source / CONFIG_FILE} into {out}: combiner {ensemble.config.combiner}, calibration "
        f"{ensemble.config.calibration}, threshold {ensemble.config.threshold} (was {old.config.threshold}); "
        f"holdout AUC {combined['holdout_metrics']['roc_auc']:.3f}")
    return out
