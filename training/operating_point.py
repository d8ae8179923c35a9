"""A detector's operating point: its combiner (mean or stacking), calibration and threshold, fitted
on member logits of faces no member trained on.

One fit for every place that makes one: `train` when its members finish (the held-out identities'
real faces, their self-blends and held-out real fakes), `refit` (the same holdout, other analysis
settings) and `detectors combine --fit` (faces the pipeline scored on labelled data the user names).
"""
from __future__ import annotations

from typing import Literal

import numpy as np
import torch
from scipy.special import expit

from deepfake_detect.stages.ensemble import EnsembleDetector
from deepfake_detect.training.calibrate import apply_calibration, fit_calibration
from deepfake_detect.training.metrics import best_threshold, binary_metrics

STACKING_MARGIN = 0.005   # stacking must beat the plain mean by this much out of fold: a tie keeps the simpler mean


def stacking_cv(logits: np.ndarray, labels: np.ndarray, seed: int, groups: np.ndarray | None = None,
                folds: int = 5) -> tuple[float, float] | None:
    """Out-of-fold AUC of the stacking layer vs the plain mean of member probabilities; None where
    there are too few groups to fold. With `groups` (the item each face came from), no item is split
    between folds: faces of one video are near copies, and a stacker that had seen the item's other
    faces would be flattered."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedGroupKFold, StratifiedKFold

    labels = np.asarray(labels).astype(int)
    if groups is None:
        splitter: StratifiedKFold | StratifiedGroupKFold = StratifiedKFold(folds, shuffle=True, random_state=seed)
        groups_per_class = min(np.bincount(labels, minlength=2))
    else:
        groups_per_class = min(len(np.unique(groups[labels == c])) for c in (0, 1))
        folds = min(folds, groups_per_class)
        splitter = StratifiedGroupKFold(folds, shuffle=True, random_state=seed)
    if groups_per_class < 2 or folds < 2:
        return None
    oof = np.zeros(len(labels))
    for train_idx, test_idx in splitter.split(logits, labels, groups):
        fit = LogisticRegression().fit(logits[train_idx], labels[train_idx])
        oof[test_idx] = fit.predict_proba(logits[test_idx])[:, 1]
    mean_prob = expit(logits).mean(axis=1)
    return binary_metrics(labels, oof, 0.5)["roc_auc"], binary_metrics(labels, mean_prob, 0.5)["roc_auc"]


def fit_operating_point(ensemble: EnsembleDetector, logits: np.ndarray, labels: np.ndarray, seed: int,
                        groups: np.ndarray | None = None) -> dict:
    """Choose `ensemble`'s combiner, then fit its calibration and threshold on member logits (N, M)
    and labels (N,), in place; returns what was fitted and how it measured. The members' own
    calibration (a combined detector's `member_calibration`) applies before the combiner, as at
    analysis."""
    from sklearn.linear_model import LogisticRegression

    labels = np.asarray(labels).astype(int)
    member_z = logits * ensemble.member_scale.numpy() + ensemble.member_shift.numpy()
    aucs = stacking_cv(member_z, labels, seed, groups)
    combiner: Literal["mean", "stacking"] = "mean"
    if aucs is not None and aucs[0] > aucs[1] + STACKING_MARGIN:
        combiner = "stacking"
        lr = LogisticRegression().fit(member_z, labels)
        ensemble.stacker.weight.data = torch.tensor(lr.coef_, dtype=torch.float32)
        ensemble.stacker.bias.data = torch.tensor(lr.intercept_, dtype=torch.float32)
    ensemble.config.combiner = combiner
    with torch.no_grad():
        raw = ensemble.combine(torch.from_numpy(logits.astype(np.float32)), calibrated=False).numpy()
    ensemble.config.calibration = fit_calibration(raw, labels)
    probs = apply_calibration(raw, ensemble.config.calibration)
    ensemble.config.threshold = float(round(best_threshold(labels, probs), 4))
    return {"chosen": combiner, "holdout_auc_stacking_cv": aucs[0] if aucs else None,
            "holdout_auc_mean": aucs[1] if aucs else binary_metrics(labels, raw, 0.5)["roc_auc"],
            "threshold": ensemble.config.threshold, "calibration": ensemble.config.calibration,
            "holdout_ece_uncalibrated": binary_metrics(labels, raw, 0.5)["ece"],
            "holdout_metrics": binary_metrics(labels, probs, ensemble.config.threshold)}
