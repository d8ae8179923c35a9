"""A detector's threshold fitted on real material at a chosen false-alarm rate.

Every 0.4 candidate's threshold, fitted on its training holdout, flagged most of the enlarged dev set's
real items, while a threshold fitted on the reals of other sources, pooled over every source left out in
turn, flagged close to the rate it was fitted for (docs/THRESHOLD_TRANSFER.md; weights/MODEL_CARD.md).
So a user with real material like their own can set the threshold on it: the lowest one with at most the
chosen share of those reals at or above it. Only the threshold changes; members, combiner and calibration
stay, and detector.json says what it was fitted on. Fakes are not needed and play no part.
"""
from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np

from deepfake_detect.stages.ensemble import WEIGHTS_FILE, DetectorError, file_sha256, load_verified_config, write_detector_config
from deepfake_detect.training.data import SPLIT_FILE


def rate_threshold(real_scores: np.ndarray, rate: float) -> float:
    """The lowest threshold with at most `rate` of these real scores at or above it."""
    ordered = np.sort(np.asarray(real_scores, dtype=float))[::-1]
    if not len(ordered):
        raise ValueError("no real scores to fit a threshold on")
    allowed = int(np.floor(rate * len(ordered) + 1e-9))   # reals that may sit at or above it (0.29 x 100 is 29)
    if allowed >= len(ordered):
        return float(ordered[-1])
    return float(np.nextafter(ordered[allowed], np.inf))   # just above the first real that must stay below


def fit_threshold_on_reals(source: Path, out: Path, real_scores: list[float], rate: float,
                           described_as: str, item_sources: list[str] | None = None) -> dict:
    """Save `source`'s detector into `out` with its threshold fitted on these real item scores (each the
    score `analyze` reports for one real item); returns what was fitted. Where the items' sources are
    given (one per score) and there are several, the share of each source's items at or above the
    threshold is recorded too: a pooled rate can hide a source far above it."""
    config = load_verified_config(source)   # tensors checked against their sha256; they are copied, not loaded
    scores = np.asarray(real_scores, dtype=float)
    threshold = rate_threshold(scores, rate)
    if threshold > 1.0:   # more than the rate of these reals score 1.0: no threshold a score can stay below
        raise ValueError(f"{int(np.sum(scores >= 1.0))} of {len(scores)} real items score 1.0: no threshold keeps "
                         f"false alarms at {100 * rate:g} %")
    fit = {"data": described_as, "real_items": len(scores), "false_alarm_rate": rate,
           "reals_at_or_above": float(np.mean(scores >= threshold)),
           "threshold_before": config.threshold}
    if item_sources is not None and len(item_sources) != len(scores):
        raise ValueError(f"{len(item_sources)} sources for {len(scores)} real scores")
    if item_sources is not None and len(set(item_sources)) > 1:
        named = np.asarray([name or "(no source)" for name in item_sources])
        fit["by_source"] = {name: {"items": int(np.sum(named == name)),
                                   "at_or_above": float(np.mean(scores[named == name] >= threshold))}
                            for name in sorted(set(named.tolist()))}
    config.threshold = threshold
    config.training = {**config.training, "threshold_fit": fit}
    out.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(source / WEIGHTS_FILE, out / WEIGHTS_FILE)   # not its permissions: shipped weights may be read-only
    if file_sha256(out / WEIGHTS_FILE) != config.sha256:   # changed between the check and the copy
        raise DetectorError(f"{source / WEIGHTS_FILE} changed while it was copied; nothing usable was written")
    write_detector_config(config, out)
    if (source / SPLIT_FILE).is_file():   # the people its members trained on stay recorded beside it
        shutil.copy2(source / SPLIT_FILE, out / SPLIT_FILE)
    return {**fit, "threshold": threshold}
