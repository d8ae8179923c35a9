"""Face quality: how much fine detail each face crop holds. Batch in, batch out; OpenCV only.

Sharpness is the variance of the Laplacian of the grey crop, measured on the square the classifier
sees (the detect stage's crop, before resizing to the model's input). A small face blown up to the
crop size, motion blur or heavy compression all lower it. It is reported beside every face score
because a detector's scores can follow image quality instead of manipulation: `evaluate` scores this
number alone as a baseline, to show how far a labelled set can be told apart by quality.
"""
from __future__ import annotations

import cv2
import numpy as np


def sharpness(crops: np.ndarray) -> np.ndarray:
    """(N, S, S, 3) uint8 RGB crops -> (N,) float32 variance of the Laplacian of each grey crop."""
    out = np.empty(len(crops), np.float32)
    for i, crop in enumerate(crops):
        grey = cv2.cvtColor(crop, cv2.COLOR_RGB2GRAY)
        out[i] = cv2.Laplacian(grey, cv2.CV_32F).var()
    return out
