"""Calibration: monotone, fitted on held-out scores, and it makes 0.8 mean about 80 %."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.special import expit

from deepfake_detect.stages.ensemble import DetectorConfig, DetectorError, EnsembleDetector
from deepfake_detect.training.calibrate import apply_calibration, fit_calibration
from deepfake_detect.training.metrics import binary_metrics, expected_calibration_error


def _overconfident(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Labels drawn from a true probability p, scores pushed far towards 0 and 1 (logit x3)."""
    rng = np.random.default_rng(seed)
    z = rng.normal(0, 1.5, n)
    labels = (rng.random(n) < expit(z)).astype(int)
    return expit(3 * z + 0.5), labels


def test_calibration_lowers_ece_on_held_out_data_and_keeps_the_ranking():
    fit_scores, fit_labels = _overconfident(2000, 0)
    calibration = fit_calibration(fit_scores, fit_labels)
    assert calibration["scale"] == pytest.approx(1 / 3, abs=0.05) and calibration["scale"] > 0
    scores, labels = _overconfident(2000, 1)  # fresh data: the fit is judged where it was not made
    calibrated = apply_calibration(scores, calibration)
    before, after = expected_calibration_error(labels, scores), expected_calibration_error(labels, calibrated)
    assert after < before / 2, (before, after)
    assert np.all(np.diff(calibrated[np.argsort(scores)]) >= 0)  # monotone
    assert binary_metrics(labels, calibrated, 0.5)["roc_auc"] == pytest.approx(binary_metrics(labels, scores, 0.5)["roc_auc"])


def test_no_calibration_when_it_cannot_help():
    assert fit_calibration(np.array([0.2, 0.7]), np.array([1, 1])) == {}
    assert fit_calibration(np.array([0.9, 0.8, 0.2, 0.1]), np.array([0, 0, 1, 1])) == {}  # inverted scores
    np.testing.assert_allclose(apply_calibration(np.array([0.3]), {}), [0.3])


@pytest.mark.parametrize("combiner", ["mean", "stacking"])
def test_detector_applies_its_calibration_like_the_fit(combiner):
    logits = torch.tensor([[-2.0, 1.0], [0.5, 0.3], [3.0, 2.0]])
    model = EnsembleDetector(DetectorConfig(members=["mobilenetv2_100", "tf_efficientnet_lite0"], combiner=combiner))
    with torch.no_grad():
        raw = model.combine(logits).numpy()
        model.config.calibration = {"scale": 0.5, "shift": -0.2}
        assert np.allclose(model.combine(logits, calibrated=False).numpy(), raw)
        calibrated = model.combine(logits).numpy()
    np.testing.assert_allclose(calibrated, apply_calibration(raw, model.config.calibration), atol=1e-5)


def test_bad_calibration_or_combiner_in_config_is_refused():
    with pytest.raises(DetectorError, match="calibration"):
        DetectorConfig.from_dict({"calibration": {"scale": -1.0, "shift": 0.0}})
    with pytest.raises(DetectorError, match="unknown combiner"):
        DetectorConfig.from_dict({"combiner": "median"})
