"""Face masks from 68 landmarks, the four shapes SBI draws from (after Face X-ray's blending masks).

Self-blending (training/self_blend.py) swaps the inside of a mask; which part of the face a real
face swap replaces varies by tool, so SBI draws the mask's shape at random from four:
- `hull`: the convex hull of all 68 points (eyebrows to chin);
- `full`: DeepFaceLab's "full face": the union of three hulls (each half of the jaw with its eyebrow
  and the nose ridge, and the nose with the mouth), so the outline dips between the eyebrows;
- `extended`: the hull with the eyebrows raised (along the chin-to-nose line) by part of the
  eyebrow-to-nose-tip distance, which takes in the forehead (SBI's 81-point variant, without a forehead model);
- `components`: the union of hulls of the parts (eyes with brows, nose, mouth, the two cheeks), which
  leaves skin between them unswapped.
Points follow dlib's 68-point layout (iBUG 300-W).
"""
from __future__ import annotations

import cv2
import numpy as np

JAW = list(range(0, 17))
RIGHT_BROW, LEFT_BROW = list(range(17, 22)), list(range(22, 27))
NOSE_RIDGE, NOSE_BASE = list(range(27, 31)), list(range(31, 36))
RIGHT_EYE, LEFT_EYE = list(range(36, 42)), list(range(42, 48))
MOUTH = list(range(48, 60))  # the outer lip line
SHAPES = ("hull", "full", "extended", "components")


def _fill(mask: np.ndarray, points: np.ndarray) -> None:
    cv2.fillConvexPoly(mask, cv2.convexHull(np.round(points).astype(np.int32)), 1)


def _parts(points: np.ndarray, shape: str, rng: np.random.Generator) -> list[np.ndarray]:
    """The point sets whose convex hulls, filled together, make the mask."""
    if shape == "hull":
        return [points]
    if shape == "full":
        return [points[JAW[:9] + RIGHT_BROW + NOSE_RIDGE], points[JAW[8:] + LEFT_BROW + NOSE_RIDGE],
                points[NOSE_RIDGE + NOSE_BASE + MOUTH]]
    if shape == "extended":
        raised = points.copy()
        brows = RIGHT_BROW + LEFT_BROW
        up = points[27] - points[8]                       # chin to the top of the nose: the face's up, with its roll
        up /= max(float(np.linalg.norm(up)), 1e-6)
        lift = rng.uniform(0.3, 0.8) * float(np.linalg.norm(points[brows].mean(0) - points[30]))
        raised[brows] += up * lift                        # the eyebrows moved up the forehead, the width kept
        return [raised]
    return [points[RIGHT_BROW + RIGHT_EYE], points[LEFT_BROW + LEFT_EYE], points[NOSE_RIDGE + NOSE_BASE], points[MOUTH],
            points[JAW[1:8] + [31, 48]], points[JAW[9:16] + [35, 54]]]


def hull_mask68(shape: tuple[int, int], landmarks: np.ndarray, rng: np.random.Generator,
                kind: str | None = None) -> np.ndarray:
    """Binary uint8 mask of one of SHAPES (drawn at random unless `kind` is given) for (68, 2) landmarks."""
    points = np.asarray(landmarks, np.float64)
    if points.shape != (68, 2):
        raise ValueError(f"expected (68, 2) landmarks, got {points.shape}")
    kind = kind or SHAPES[rng.integers(len(SHAPES))]
    if kind not in SHAPES:
        raise ValueError(f"unknown mask shape {kind!r}; known: {', '.join(SHAPES)}")
    mask = np.zeros(shape, np.uint8)
    for part in _parts(points, kind, rng):
        _fill(mask, part)
    return mask
