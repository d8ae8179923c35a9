"""Binary metrics against values worked out by hand, and the plot files."""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from deepfake_detect.training.metrics import (
    best_threshold,
    binary_metrics,
    bootstrap_auc_interval,
    expected_calibration_error,
    save_plots,
    sharpness_by_label,
)

# Hand-made example, threshold 0.5 (score >= 0.5 -> predicted fake):
#   label : 0    0    0     1     1     1
#   score : 0.1  0.4  0.65  0.45  0.82  0.85
#   pred  : 0    0    1     0     1     1
# TN = 2 (0.1, 0.4), FP = 1 (0.65), FN = 1 (0.45), TP = 2 (0.82, 0.85)
# accuracy = 4/6; precision = 2/(2+1) = 2/3; recall = 2/(2+1) = 2/3; F1 = 2/3
# AUC = P(pos score > neg score) over 3x3 pairs: 0.45 beats 0.1, 0.4 (2); 0.82 and 0.85 beat all (3+3) -> 8/9
# ECE, 10 bins of width 0.1, per bin |mean score - share of fakes| weighted by n/6:
#   bin 1 {0.1, y0}          : |0.1   - 0  | = 0.1   x 1/6
#   bin 4 {0.4 y0, 0.45 y1}  : |0.425 - 0.5| = 0.075 x 2/6
#   bin 6 {0.65, y0}         : |0.65  - 0  | = 0.65  x 1/6
#   bin 8 {0.82, 0.85, y1}   : |0.835 - 1  | = 0.165 x 2/6
#   ECE = (0.1 + 0.15 + 0.65 + 0.33) / 6 = 1.23 / 6 = 0.205
LABELS = np.array([0, 0, 0, 1, 1, 1])
SCORES = np.array([0.1, 0.4, 0.65, 0.45, 0.82, 0.85])


def test_binary_metrics_match_hand_computation() -> None:
    m = binary_metrics(LABELS, SCORES, threshold=0.5)
    assert m["confusion"] == {"tn": 2, "fp": 1, "fn": 1, "tp": 2}
    assert m["accuracy"] == pytest.approx(4 / 6)
    assert m["precision"] == pytest.approx(2 / 3)
    assert m["recall"] == pytest.approx(2 / 3)
    assert m["f1"] == pytest.approx(2 / 3)
    assert m["roc_auc"] == pytest.approx(8 / 9)
    assert m["ece"] == pytest.approx(0.205)
    assert m["count"] == 6 and m["positives"] == 3


def test_threshold_moves_the_confusion_matrix() -> None:
    # At 0.7 only 0.82 and 0.85 are called fake: TN 3, FP 0, FN 1, TP 2; precision 1, recall 2/3.
    m = binary_metrics(LABELS, SCORES, threshold=0.7)
    assert m["confusion"] == {"tn": 3, "fp": 0, "fn": 1, "tp": 2}
    assert m["precision"] == pytest.approx(1.0) and m["recall"] == pytest.approx(2 / 3)
    assert m["f1"] == pytest.approx(0.8)  # 2 * 1 * 2/3 / (1 + 2/3)
    assert m["roc_auc"] == pytest.approx(8 / 9)  # threshold-free


def test_single_class_has_no_auc_and_zero_division_is_safe() -> None:
    m = binary_metrics(np.zeros(4), np.array([0.1, 0.2, 0.3, 0.9]), threshold=0.5)
    assert m["roc_auc"] is None
    assert m["confusion"] == {"tn": 3, "fp": 1, "fn": 0, "tp": 0}
    assert m["precision"] == 0.0 and m["recall"] == 0.0 and m["f1"] == 0.0
    assert m["accuracy"] == pytest.approx(0.75)
    assert m["positives"] == 0
    # Bins 1, 2, 3, 9 each hold one real sample: ECE = (0.1 + 0.2 + 0.3 + 0.9) / 4
    assert m["ece"] == pytest.approx(0.375)


def test_ece_perfect_calibration_and_non_probabilities() -> None:
    # Ten samples scored 0.3, three of them fake: one bin, mean score = share of fakes -> ECE 0.
    # Scored 0.9 instead: |0.9 - 0.3| = 0.6.
    labels = np.array([1, 1, 1, 0, 0, 0, 0, 0, 0, 0])
    assert expected_calibration_error(labels, np.full(10, 0.3)) == pytest.approx(0.0)
    assert expected_calibration_error(labels, np.full(10, 0.9)) == pytest.approx(0.6)
    assert expected_calibration_error(labels, np.linspace(-2, 3, 10)) is None  # logits, not probabilities


def test_best_threshold_maximises_youden_j() -> None:
    # Separable: any threshold in (0.3, 0.7] is perfect; roc_curve offers 0.7.
    assert best_threshold(np.array([0, 0, 1, 1]), np.array([0.2, 0.3, 0.7, 0.8])) == pytest.approx(0.7)
    # Hand example, J = TPR - FPR at each score used as threshold:
    #   0.85: 1/3 - 0 ; 0.82: 2/3 - 0 ; 0.65: 2/3 - 1/3 ; 0.45: 1 - 1/3 ; 0.4: 1 - 2/3 ; 0.1: 0
    # 0.82 and 0.45 tie at 2/3; the higher one wins.
    t = best_threshold(LABELS, SCORES)
    assert t == pytest.approx(0.82)
    assert binary_metrics(LABELS, SCORES, t)["confusion"] == {"tn": 3, "fp": 0, "fn": 1, "tp": 2}


def test_best_threshold_needs_both_classes() -> None:
    with pytest.raises(ValueError):
        best_threshold(np.ones(3), np.array([0.2, 0.5, 0.9]))


def _is_png(path: Path) -> bool:
    image = cv2.imread(str(path))
    return path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and image is not None and min(image.shape[:2]) > 100


def test_save_plots_writes_pngs(tmp_path: Path) -> None:
    paths = save_plots(LABELS, SCORES, 0.5, tmp_path / "plots", "val")
    assert sorted(p.name for p in paths) == ["val_confusion.png", "val_hist.png", "val_roc.png"]
    assert all(p.parent == tmp_path / "plots" and _is_png(p) for p in paths)


def test_save_plots_single_class_skips_roc(tmp_path: Path) -> None:
    paths = save_plots(np.zeros(5), np.linspace(0, 1, 5), 0.5, tmp_path, "real_only")
    assert sorted(p.name for p in paths) == ["real_only_confusion.png", "real_only_hist.png"]
    assert all(_is_png(p) for p in paths)
    assert not (tmp_path / "real_only_roc.png").exists()


def test_bootstrap_interval_brackets_the_auc_and_is_seeded() -> None:
    rng = np.random.default_rng(1)
    labels = np.repeat([0, 1], 40)
    scores = np.concatenate([rng.normal(0, 1, 40), rng.normal(1, 1, 40)])
    low, high = bootstrap_auc_interval(labels, scores, resamples=500, seed=3)
    auc = binary_metrics(labels, scores, 0.5)["roc_auc"]
    assert low < auc < high and high - low > 0.05
    assert bootstrap_auc_interval(labels, scores, resamples=500, seed=3) == (low, high)
    # perfectly separated: every resample with both classes has AUC 1
    assert bootstrap_auc_interval(LABELS, np.array([0, 0.1, 0.2, 0.7, 0.8, 0.9]), resamples=200) == (1.0, 1.0)
    assert bootstrap_auc_interval(np.zeros(5), np.arange(5.0)) is None


def test_bootstrap_resamples_items_not_frames() -> None:
    """Ten identical frames per item carry no more evidence than the item: same interval."""
    rng = np.random.default_rng(2)
    labels = np.repeat([0, 1], 15)
    scores = np.concatenate([rng.normal(0, 1, 15), rng.normal(0.8, 1, 15)])
    per_item = bootstrap_auc_interval(labels, scores, resamples=300, seed=0)
    frames = bootstrap_auc_interval(np.repeat(labels, 10), np.repeat(scores, 10),
                                    groups=np.repeat(np.arange(30), 10), resamples=300, seed=0)
    assert frames == pytest.approx(per_item)
    naive = bootstrap_auc_interval(np.repeat(labels, 10), np.repeat(scores, 10), resamples=300, seed=0)
    assert naive[1] - naive[0] < 0.6 * (per_item[1] - per_item[0])  # frames as items: falsely narrow


def test_bootstrap_intervals_equal_the_one_roc_auc_score_per_resample_definition():
    """The vectorised bootstrap draws the same resamples as a loop of roc_auc_score calls would."""
    from sklearn.metrics import roc_auc_score

    rng = np.random.default_rng(3)
    labels = np.repeat([0, 1, 1, 0, 1], 6)             # 30 frames of 5 videos
    scores = np.round(rng.random(30) + 0.3 * labels, 1)  # rounded: ties across classes count half
    groups = np.repeat(np.arange(5), 6)
    draw = np.random.default_rng(0)
    aucs = []
    for _ in range(300):
        take = np.concatenate([np.flatnonzero(groups == g) for g in draw.integers(0, 5, 5)])
        if np.unique(labels[take]).size == 2:
            aucs.append(roc_auc_score(labels[take], scores[take]))
    expected = np.percentile(aucs, [2.5, 97.5])
    got = bootstrap_auc_interval(labels, scores, groups, resamples=300)
    assert got is not None and np.allclose(got, expected, atol=1e-12)


def test_sharpness_by_label_tells_how_far_sharpness_alone_separates_the_labels():
    import cv2
    from skimage import data

    face = np.ascontiguousarray(data.astronaut()[30:254, 150:374])
    blurred = [cv2.GaussianBlur(face, (0, 0), s) for s in (1.5, 2.0, 3.0)]
    images = np.stack([face, face[:, ::-1], face[::-1], *blurred]).transpose(0, 3, 1, 2)
    result = sharpness_by_label(images, np.array([0, 0, 0, 1, 1, 1]))  # sharp reals, blurred fakes
    assert result["roc_auc"] == 0.0 and result["real_median"] > result["fake_median"] > 0
    assert sharpness_by_label(images, np.zeros(6))["roc_auc"] is None


def test_family_groups_score_their_fake_videos_against_every_real_video():
    from deepfake_detect.training.groups import group_aucs

    rows = [{"kind": "video", "label": 0, "group": "none", "score": s} for s in (0.1, 0.2, 0.3)]
    rows += [{"kind": "video", "label": 1, "group": "DINet", "score": 0.9},
             {"kind": "video", "label": 1, "group": "EMO", "score": 0.15},   # above one real video of three
             {"kind": "image", "label": 1, "group": "EMO", "score": 0.0},
             {"kind": "video", "label": 1, "group": "Wav2Lip", "score": 0.0}]
    out = group_aucs(rows)
    assert out["lip-sync methods"]["fakes"] == 1 and out["lip-sync methods"]["roc_auc"] == 1.0  # Wav2Lip is in train
    assert out["talking heads"]["fakes"] == 1 and out["talking heads"]["roc_auc"] == pytest.approx(1 / 3)  # photos left out
    assert out["avatar generators"]["fakes"] == 0 and out["avatar generators"]["roc_auc"] is None
