"""Face-crop geometry: which square of the frame the classifier sees. numpy and OpenCV only.

The square is the face box enlarged by a margin. Where it would leave the frame, it is slid back
inside (and, if the frame is too small, shrunk to fit) instead of padding with replicated edge
pixels: smeared borders look like the blending seams the detector is trained to find, so they made
tight face-crop photos and faces at the frame edge look fake. Every crop the project cuts - at
inference, in training, in evaluation, and where a heatmap is laid back over the frame - comes from
`crop_square`, so all of them agree on the geometry.
"""
from __future__ import annotations

import cv2
import numpy as np

# The labelled part of a frame: all of it, or one half of a side-by-side layout (a generator demo
# with the reference photo beside the output).
REGIONS = ("", "left_half", "right_half")


def crop_region(frame: np.ndarray, region: str) -> np.ndarray:
    """The frame, or its left or right half (one of REGIONS)."""
    if region == "left_half":
        return np.ascontiguousarray(frame[:, : frame.shape[1] // 2])
    if region == "right_half":
        return np.ascontiguousarray(frame[:, frame.shape[1] // 2:])
    if region:
        raise ValueError(f"unknown region {region!r}; known: left_half, right_half")
    return frame


def square_crop_box(box: np.ndarray, margin: float) -> np.ndarray:
    """Square around a face box, enlarged by `margin` (integer pixels; may leave the frame)."""
    cx, cy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
    side = max(box[2] - box[0], box[3] - box[1]) * (1 + margin)
    half = side / 2
    return np.round([cx - half, cy - half, cx + half, cy + half]).astype(np.int64)


def crop_square(box: np.ndarray, margin: float, height: int, width: int) -> np.ndarray:
    """`square_crop_box`, slid (and if needed shrunk) to lie wholly inside a height x width frame."""
    x1, y1, x2, y2 = (int(v) for v in square_crop_box(box, margin))
    side = max(1, min(x2 - x1, height, width))
    # keep the square centred on the face as far as the frame allows
    cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
    x1 = int(np.clip(round(cx - side / 2), 0, width - side))
    y1 = int(np.clip(round(cy - side / 2), 0, height - side))
    return np.array([x1, y1, x1 + side, y1 + side], np.int64)


def crop_face(frame: np.ndarray, box: np.ndarray, margin: float, size: int) -> np.ndarray:
    """The classifier's square crop around `box`, resized to size x size; only real frame pixels."""
    x1, y1, x2, y2 = crop_square(box, margin, frame.shape[0], frame.shape[1])
    crop = frame[y1:y2, x1:x2]
    interp = cv2.INTER_AREA if crop.shape[0] > size else cv2.INTER_LINEAR
    return cv2.resize(crop, (size, size), interpolation=interp)
