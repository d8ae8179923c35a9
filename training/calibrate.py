"""Score calibration: a monotone map that makes the ensemble's probability mean what it says.

Logistic (Platt) calibration of the combined logit, z -> sigmoid(a*z + b) with a > 0, fitted by
scikit-learn's logistic regression on held-out training identities. One slope and one offset
cannot over-fit a few hundred held-out crops the way isotonic steps would, and being monotone it
changes no ranking: AUC is the same before and after, only the meaning of 0.8 changes.
"""
from __future__ import annotations

import numpy as np
from scipy.special import logit


def fit_calibration(probs: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    """{"scale", "shift"} for `stages.ensemble.DetectorConfig.calibration`; {} when it cannot help
    (one class only, or scores that do not rise with the label)."""
    from sklearn.linear_model import LogisticRegression

    labels = np.asarray(labels).astype(int)
    if len(np.unique(labels)) < 2:
        return {}
    z = logit(np.clip(np.asarray(probs, np.float64), 1e-6, 1 - 1e-6)).reshape(-1, 1)
    fit = LogisticRegression(C=1e4).fit(z, labels)  # barely regularised: two parameters only
    scale, shift = float(fit.coef_[0, 0]), float(fit.intercept_[0])
    if scale <= 0:
        return {}
    return {"scale": round(scale, 6), "shift": round(shift, 6)}


def apply_calibration(probs: np.ndarray, calibration: dict[str, float]) -> np.ndarray:
    """The calibrated probabilities (what EnsembleDetector.combine returns for the same logits)."""
    if not calibration:
        return np.asarray(probs, np.float64)
    from scipy.special import expit

    z = logit(np.clip(np.asarray(probs, np.float64), 1e-6, 1 - 1e-6))
    return expit(calibration["scale"] * z + calibration["shift"])
