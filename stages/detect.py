"""Detect stage: find faces in a batch of frames with MTCNN and cut square crops for the classifier.

MTCNN runs on a copy of the frames scaled so the long side is `detect_long_side` (its cost grows
with pixels: 5.1 s for 32 frames at 720p against 1.2 s at 640x360 on 2 CPU threads); boxes and
landmarks are mapped back to full-resolution coordinates and crops are cut from the full frame.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import cv2
import numpy as np
import torch


# Context around the MTCNN box that the shipped members were trained with. A detector records its
# own margin in detector.json; the pipeline cuts crops with that one.
DEFAULT_CROP_MARGIN = 0.3


@dataclass(frozen=True)
class DetectSettings:
    detect_long_side: int = 640   # 0 = detect at full resolution
    min_face_size: int = 20       # pixels, in the downscaled frame MTCNN sees
    min_confidence: float = 0.95
    crop_margin: float | None = None  # context around the box, as a share of its size; None: the classifier's
    crop_size: int = 224


@dataclass
class Face:
    """One detected face in full-frame pixel coordinates."""

    box: np.ndarray          # (4,) float32 x1, y1, x2, y2
    confidence: float
    landmarks: np.ndarray    # (5, 2) float32: eyes, nose, mouth corners

    @property
    def size(self) -> float:
        return float(max(self.box[2] - self.box[0], self.box[3] - self.box[1]))


def square_crop_box(box: np.ndarray, margin: float) -> np.ndarray:
    """Square box around a face box, enlarged by `margin` (integer pixel coordinates)."""
    cx, cy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
    side = max(box[2] - box[0], box[3] - box[1]) * (1 + margin)
    half = side / 2
    return np.round([cx - half, cy - half, cx + half, cy + half]).astype(np.int64)


def crop_face(frame: np.ndarray, box: np.ndarray, margin: float, size: int) -> np.ndarray:
    """Square crop around `box`, padded by edge replication where it leaves the frame."""
    x1, y1, x2, y2 = square_crop_box(box, margin)
    h, w = frame.shape[:2]
    pad = max(0, -x1, -y1, x2 - w, y2 - h)
    if pad:
        frame = cv2.copyMakeBorder(frame, pad, pad, pad, pad, cv2.BORDER_REPLICATE)
        x1, y1, x2, y2 = x1 + pad, y1 + pad, x2 + pad, y2 + pad
    crop = frame[y1:y2, x1:x2]
    interp = cv2.INTER_AREA if crop.shape[0] > size else cv2.INTER_LINEAR
    return cv2.resize(crop, (size, size), interpolation=interp)


class FaceDetector:
    """Batched MTCNN face detection: frames (N, H, W, 3) uint8 RGB in, faces per frame out."""

    def __init__(self, settings: DetectSettings = DetectSettings(), device: str | torch.device = "cpu"):
        from facenet_pytorch import MTCNN  # weights ship inside the wheel: nothing is downloaded

        if settings.crop_margin is None:
            settings = dataclasses.replace(settings, crop_margin=DEFAULT_CROP_MARGIN)
        self.settings = settings
        self._mtcnn = MTCNN(keep_all=True, device=device, min_face_size=settings.min_face_size,
                            post_process=False, select_largest=False)

    def detect(self, frames: np.ndarray) -> list[list[Face]]:
        """Faces in each frame, most confident first."""
        if len(frames) == 0:
            return []
        h, w = frames.shape[1:3]
        long_side = self.settings.detect_long_side
        scale = long_side / max(h, w) if long_side and max(h, w) > long_side else 1.0
        small = frames if scale == 1.0 else np.stack(
            [cv2.resize(f, (round(w * scale), round(h * scale)), interpolation=cv2.INTER_AREA) for f in frames])
        with torch.inference_mode():
            boxes, probs, points = self._mtcnn.detect(small, landmarks=True)
        out: list[list[Face]] = []
        for frame_boxes, frame_probs, frame_points in zip(boxes, probs, points):
            faces = []
            if frame_boxes is not None:
                for box, prob, pts in zip(frame_boxes, frame_probs, frame_points):
                    if prob is None or prob < self.settings.min_confidence:
                        continue
                    box = np.asarray(box, dtype=np.float32) / scale
                    box[[0, 2]] = box[[0, 2]].clip(0, w)
                    box[[1, 3]] = box[[1, 3]].clip(0, h)
                    if box[2] - box[0] < 2 or box[3] - box[1] < 2:
                        continue
                    faces.append(Face(box=box, confidence=float(prob),
                                      landmarks=np.asarray(pts, dtype=np.float32) / scale))
            faces.sort(key=lambda f: -f.confidence)
            out.append(faces)
        return out

    def crops(self, frames: np.ndarray, faces: list[list[Face]]) -> np.ndarray:
        """All face crops of the batch, frame by frame, as (M, S, S, 3) uint8."""
        s = self.settings
        crops = [crop_face(frame, face.box, s.crop_margin, s.crop_size)
                 for frame, frame_faces in zip(frames, faces) for face in frame_faces]
        if not crops:
            return np.zeros((0, s.crop_size, s.crop_size, 3), dtype=np.uint8)
        return np.stack(crops)
