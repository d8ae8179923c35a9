"""Evaluation metrics and plots for a binary real (0) / fake (1) detector.

Scores are the model's probability that a sample is fake; a sample is predicted fake when its
score is >= the threshold (the same convention as `sklearn.metrics.roc_curve`).
"""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import cast

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from sklearn.metrics import (
    ConfusionMatrixDisplay,
    RocCurveDisplay,
    accuracy_score,
    confusion_matrix,
    f1_score,
    precision_score,
    recall_score,
    roc_auc_score,
    roc_curve,
)

from deepfake_detect.stages.face_quality import sharpness


def _as_arrays(labels: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Flatten to 1-D int labels / float scores of equal length."""
    labels = np.asarray(labels).astype(int).ravel()
    scores = np.asarray(scores, dtype=np.float64).ravel()
    if labels.shape != scores.shape:
        raise ValueError(f"{labels.size} labels but {scores.size} scores")
    return labels, scores


def expected_calibration_error(labels: np.ndarray, scores: np.ndarray, n_bins: int = 10) -> float | None:
    """ECE over `n_bins` equal-width score bins, weighted by the share of samples in each bin.

    Per bin: |mean score - fraction of positives| (calibration of the fake probability itself,
    not of max(p, 1 - p)). The last bin includes 1.0. None when empty or when scores are not
    probabilities in [0, 1] (e.g. logits), where the measure has no meaning.
    """
    labels, scores = _as_arrays(labels, scores)
    if scores.size == 0 or scores.min() < 0 or scores.max() > 1:
        return None
    bins = np.minimum((scores * n_bins).astype(int), n_bins - 1)
    ece = 0.0
    for b in np.unique(bins):
        in_bin = bins == b
        ece += in_bin.mean() * abs(scores[in_bin].mean() - labels[in_bin].mean())
    return float(ece)


def binary_metrics(labels: np.ndarray, scores: np.ndarray, threshold: float) -> dict:
    """Accuracy, precision, recall, F1, ROC AUC, confusion counts, ECE, count and positives.

    roc_auc is None when only one class is present (it is undefined there).
    """
    labels, scores = _as_arrays(labels, scores)
    preds = (scores >= threshold).astype(int)
    # labels=[0, 1] keeps the matrix 2x2 even when a class is missing from labels and predictions.
    tn, fp, fn, tp = confusion_matrix(labels, preds, labels=[0, 1]).ravel()
    both_classes = np.unique(labels).size == 2
    return {
        "accuracy": float(accuracy_score(labels, preds)) if labels.size else 0.0,
        "precision": float(precision_score(labels, preds, zero_division=0)),
        "recall": float(recall_score(labels, preds, zero_division=0)),
        "f1": float(f1_score(labels, preds, zero_division=0)),
        "roc_auc": float(roc_auc_score(labels, scores)) if both_classes else None,
        "confusion": {"tn": int(tn), "fp": int(fp), "fn": int(fn), "tp": int(tp)},
        "ece": expected_calibration_error(labels, scores),
        "threshold": float(threshold),
        "count": int(labels.size),
        "positives": int(labels.sum()),
    }


def _resampled_aucs(labels: np.ndarray, scores: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """The ROC AUC of each resample, given as how often it draws each sample (`counts`, shape
    (resamples, samples)); NaN where a resample lacks a class.

    The AUC is the share of (fake, real) pairs ranked the right way, ties counting half: what
    `roc_auc_score` computes. With repeated samples each pair weighs c_fake * c_real, so all
    resamples take a few matrix products instead of thousands of `roc_auc_score` calls (the
    bootstrap of a dev evaluation went from minutes to about a second).
    """
    fake, real = labels == 1, labels == 0
    diff = scores[fake][:, None] - scores[real][None, :]
    right = (diff > 0) + 0.5 * (diff == 0)
    out = np.empty(len(counts))
    for start in range(0, len(counts), 256):   # bounded memory on large evaluations
        c_fake, c_real = counts[start:start + 256, fake], counts[start:start + 256, real]
        pairs = c_fake.sum(1) * c_real.sum(1)
        with np.errstate(invalid="ignore", divide="ignore"):
            out[start:start + 256] = ((c_fake @ right) * c_real).sum(1) / np.where(pairs > 0, pairs, np.nan)
    return out


def _draw_counts(rng: np.random.Generator, units: int, resamples: int) -> np.ndarray:
    """How often each of `units` is drawn in each of `resamples` draws of `units` with replacement."""
    draws = rng.integers(0, units, (resamples, units))
    return np.stack([np.bincount(row, minlength=units) for row in draws]).astype(np.float64)


def _group_counts(samples: int, groups: np.ndarray | None, resamples: int, seed: int) -> np.ndarray:
    """How often each sample is drawn per resample when whole groups are drawn with replacement
    (each sample its own group when `groups` is None): a sample counts as often as its group."""
    groups = np.arange(samples) if groups is None else np.asarray(groups).ravel()
    names, index = np.unique(groups, return_inverse=True)
    return _draw_counts(np.random.default_rng(seed), names.size, resamples)[:, index]


def bootstrap_auc_interval(labels: np.ndarray, scores: np.ndarray, groups: np.ndarray | None = None,
                           resamples: int = 2000, seed: int = 0, level: float = 0.95) -> tuple[float, float] | None:
    """Percentile bootstrap interval of the ROC AUC, resampling whole groups with replacement.

    `groups` names the item each sample comes from (e.g. the video of each frame): frames of one
    video are not independent, so resampling frames one by one would give a falsely narrow
    interval. Without groups every sample is its own item. Resamples that lack a class are
    skipped. None when the data have only one class.
    """
    labels, scores = _as_arrays(labels, scores)
    if np.unique(labels).size != 2:
        return None
    aucs = _resampled_aucs(labels, scores, _group_counts(labels.size, groups, resamples, seed))
    tail = (1 - level) / 2 * 100
    low, high = np.percentile(aucs[~np.isnan(aucs)], [tail, 100 - tail])
    return float(low), float(high)


def paired_auc_difference(labels: np.ndarray, scores_a: np.ndarray, scores_b: np.ndarray, resamples: int = 2000,
                          seed: int = 0, level: float = 0.95, groups: np.ndarray | None = None) -> dict | None:
    """AUC(b) - AUC(a) on the same samples, with a paired percentile bootstrap interval.

    Each resample draws the same samples for both score sets, so what the two detectors share (which
    items happen to be hard) cancels out: the interval of the difference is what says whether b beats
    a, not two overlapping single intervals. `b_better` is the share of resamples where b's AUC is
    higher. `groups`, as in `bootstrap_auc_interval`, resamples whole groups (e.g. the clips of one
    generator). None when the data have only one class.
    """
    labels, scores_a = _as_arrays(labels, scores_a)
    _, scores_b = _as_arrays(labels, scores_b)
    if np.unique(labels).size != 2:
        return None
    counts = _group_counts(labels.size, groups, resamples, seed)
    diffs = _resampled_aucs(labels, scores_b, counts) - _resampled_aucs(labels, scores_a, counts)
    diffs = diffs[~np.isnan(diffs)]
    tail = (1 - level) / 2 * 100
    low, high = np.percentile(diffs, [tail, 100 - tail])
    return {"difference": float(roc_auc_score(labels, scores_b) - roc_auc_score(labels, scores_a)),
            "ci95": (float(low), float(high)), "b_better": float(np.mean(diffs > 1e-12))}  # a tie in float noise is no win


def sharpness_by_label(images: np.ndarray, labels: np.ndarray) -> dict:
    """How far image sharpness alone tells a set's labels apart: each label's median sharpness
    (stages.face_quality) and its AUC as a fake score (0.5: not at all). `images`: (N, 3, S, S) uint8."""
    labels = np.asarray(labels).astype(int).ravel()
    values = sharpness(np.ascontiguousarray(np.asarray(images).transpose(0, 2, 3, 1)))
    both = np.unique(labels).size == 2
    return {"real_median": float(np.median(values[labels == 0])) if (labels == 0).any() else None,
            "fake_median": float(np.median(values[labels == 1])) if (labels == 1).any() else None,
            "roc_auc": float(roc_auc_score(labels, values)) if both else None}


def best_threshold(labels: np.ndarray, scores: np.ndarray) -> float:
    """Threshold maximising Youden's J = TPR - FPR over the ROC curve's thresholds.

    J = 2 * balanced accuracy - 1, so this also maximises balanced accuracy; unlike plain accuracy
    it does not drift towards the majority class on unbalanced validation sets. Ties go to the
    highest threshold (fewest false alarms). Raises ValueError unless both classes are present.
    """
    labels, scores = _as_arrays(labels, scores)
    if np.unique(labels).size != 2:
        raise ValueError("best_threshold needs both real (0) and fake (1) samples")
    fpr, tpr, thresholds = roc_curve(labels, scores)
    # roc_curve's first point has threshold +inf (predict nothing fake); it is never the useful
    # answer and an infinite threshold would break downstream configs, so skip it.
    j = (tpr - fpr)[1:]
    # Tolerance for ties: J values that are equal on paper differ in the last bits (1 - 1/3 vs 2/3).
    best = int(np.flatnonzero(j >= j.max() - 1e-9)[0])
    return float(thresholds[1:][best])


def _new_figure(size: tuple[float, float] = (5, 4)) -> Figure:
    """Figure on the Agg canvas directly: no pyplot, no display, no global backend switch."""
    fig = Figure(figsize=size, tight_layout=True)
    FigureCanvasAgg(fig)
    return fig


def _plot_roc(labels: np.ndarray, scores: np.ndarray, path: Path) -> None:
    fig = _new_figure()
    ax = fig.add_subplot()
    RocCurveDisplay.from_predictions(labels, scores, ax=ax, name="detector", plot_chance_level=True)
    fig.savefig(path, dpi=100)


def _plot_confusion(labels: np.ndarray, preds: np.ndarray, path: Path) -> None:
    fig = _new_figure()
    ax = fig.add_subplot()
    ConfusionMatrixDisplay.from_predictions(labels, preds, labels=[0, 1], display_labels=["real", "fake"],
                                            ax=ax, colorbar=False)
    fig.savefig(path, dpi=100)


def _plot_histogram(labels: np.ndarray, scores: np.ndarray, threshold: float, path: Path) -> None:
    fig = _new_figure((6, 4))
    ax = fig.add_subplot()
    # Shared bin edges so the two classes' bars line up and are comparable.
    edges = np.histogram_bin_edges(scores, bins=30)
    for value, name in ((0, "real"), (1, "fake")):
        if np.any(labels == value):
            # matplotlib's stubs omit arrays for `bins`, which it takes as edges like any sequence
            ax.hist(scores[labels == value], bins=cast(Sequence[float], edges), alpha=0.6,
                    label=f"{name} (n={np.sum(labels == value)})")
    ax.axvline(threshold, color="k", linestyle="--", label=f"threshold {threshold:.3f}")
    ax.set_xlabel("score (probability fake)")
    ax.set_ylabel("count")
    ax.legend()
    fig.savefig(path, dpi=100)


def save_plots(labels: np.ndarray, scores: np.ndarray, threshold: float, out_dir: Path, prefix: str) -> list[Path]:
    """Write `<prefix>_roc.png` (only with both classes), `<prefix>_confusion.png` and
    `<prefix>_hist.png` into `out_dir` (created if missing); returns the paths written."""
    labels, scores = _as_arrays(labels, scores)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    if np.unique(labels).size == 2:  # a ROC curve needs both classes
        _plot_roc(labels, scores, out_dir / f"{prefix}_roc.png")
        written.append(out_dir / f"{prefix}_roc.png")
    _plot_confusion(labels, (scores >= threshold).astype(int), out_dir / f"{prefix}_confusion.png")
    written.append(out_dir / f"{prefix}_confusion.png")
    _plot_histogram(labels, scores, threshold, out_dir / f"{prefix}_hist.png")
    written.append(out_dir / f"{prefix}_hist.png")
    return written
