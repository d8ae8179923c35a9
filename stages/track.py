"""Link faces across sampled frames into tracks, one per person.

Sampled frames can be a second apart, so box overlap alone is not enough: a face is matched to a
track by centre distance measured in face sizes (gated by how much time passed), size change and
colour appearance of the crop, with an optimal one-to-one assignment per frame. Two people in one
frame can therefore never share a track, and a person who crosses another keeps their own.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Annotated

import cv2
import numpy as np
from annotated_types import Ge, Gt, Interval
from scipy.optimize import linear_sum_assignment

from deepfake_detect.stages.detect import Face


@dataclass(frozen=True)
class TrackSettings:
    max_shift: Annotated[float, Gt(0)] = 1.0          # centre movement allowed per second, in face sizes
    min_shift: Annotated[float, Ge(0)] = 0.6          # ... and at least this much between any two samples
    max_size_ratio: Annotated[float, Ge(1)] = 1.8     # a face may not grow or shrink more than this between samples
    max_appearance_distance: Annotated[float, Interval(ge=0, le=1)] = 0.6  # Bhattacharyya distance of histograms
    appearance_weight: Annotated[float, Interval(ge=0, le=1)] = 0.5
    max_gap_s: Annotated[float, Gt(0)] = 10.0         # a track unseen for longer is closed


def appearance(crop: np.ndarray) -> np.ndarray:
    """Hue-saturation histogram of the inner face crop: cheap, and stable under small motion."""
    h, w = crop.shape[:2]
    inner = crop[h // 4: 3 * h // 4, w // 4: 3 * w // 4]
    hsv = cv2.cvtColor(inner, cv2.COLOR_RGB2HSV)
    hist = cv2.calcHist([hsv], [0, 1], None, [16, 8], [0, 180, 0, 256])
    return cv2.normalize(hist, hist).astype(np.float32)


@dataclass
class _Track:
    id: int
    center: np.ndarray
    size: float
    time_s: float
    hist: np.ndarray
    seen: int = 1


@dataclass
class FaceTracker:
    """Incremental tracker: call `update` once per analysed frame, in time order."""

    settings: TrackSettings = TrackSettings()
    _tracks: list[_Track] = field(default_factory=list)
    _next_id: int = 0

    def update(self, time_s: float, faces: list[Face], crops: np.ndarray) -> list[int]:
        """Track id for each face of one frame (same order as `faces`)."""
        s = self.settings
        self._tracks = [t for t in self._tracks if time_s - t.time_s <= s.max_gap_s]
        hists = [appearance(c) for c in crops]
        centers = [np.array([(f.box[0] + f.box[2]) / 2, (f.box[1] + f.box[3]) / 2]) for f in faces]
        ids = [-1] * len(faces)
        if self._tracks and faces:
            cost = np.full((len(self._tracks), len(faces)), 1e6)
            for i, t in enumerate(self._tracks):
                allowed = max(s.min_shift, s.max_shift * (time_s - t.time_s))
                for j, f in enumerate(faces):
                    shift = np.linalg.norm(centers[j] - t.center) / ((t.size + f.size) / 2)
                    ratio = max(f.size, t.size) / max(1e-6, min(f.size, t.size))
                    dist = cv2.compareHist(t.hist, hists[j], cv2.HISTCMP_BHATTACHARYYA)
                    if shift <= allowed and ratio <= s.max_size_ratio and dist <= s.max_appearance_distance:
                        cost[i, j] = shift / allowed + s.appearance_weight * dist
            rows, cols = linear_sum_assignment(cost)
            for i, j in zip(rows, cols):
                if cost[i, j] < 1e6:
                    t = self._tracks[i]
                    t.center, t.size, t.time_s, t.seen = centers[j], faces[j].size, time_s, t.seen + 1
                    t.hist = 0.7 * t.hist + 0.3 * hists[j]  # slow update: lighting changes, identity does not
                    ids[j] = t.id
        for j, f in enumerate(faces):
            if ids[j] < 0:
                self._tracks.append(_Track(self._next_id, centers[j], f.size, time_s, hists[j]))
                ids[j] = self._next_id
                self._next_id += 1
        return ids
