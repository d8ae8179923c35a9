"""Detect stage: find faces in a batch of frames with MTCNN and cut square crops for the classifier.

MTCNN runs on a copy of the frames scaled so the long side is `detect_long_side` (its cost grows
with pixels: 5.1 s for 32 frames at 720p against 1.2 s at 640x360 on 2 CPU threads); boxes and
landmarks are mapped back to full-resolution coordinates and crops are cut from the full frame.

facenet-pytorch's MTCNN does the work; on CPU its three nets can be ONNX Runtime sessions
(`nets`), which give the same boxes (within 1e-4 px) in about two thirds of the time.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated

import cv2
import numpy as np
from annotated_types import Ge, Interval

from deepfake_detect.stages.crop import crop_face, crop_square, square_crop_box

# torch loads with the detector, not with the settings: the server's and the daemon's parent
# processes read the settings and never run a network.
if TYPE_CHECKING:
    import torch

__all__ = ["DEFAULT_CROP_MARGIN", "DetectSettings", "Face", "FaceDetector", "crop_face", "crop_square",
           "square_crop_box"]

# Context around the MTCNN box that the shipped members were trained with. A detector records its
# own margin in detector.json; the pipeline cuts crops with that one.
DEFAULT_CROP_MARGIN = 0.3


@dataclass(frozen=True)
class DetectSettings:
    detect_long_side: Annotated[int, Ge(0)] = 640   # 0 = detect at full resolution
    min_face_size: Annotated[int, Ge(4)] = 20       # pixels, in the downscaled frame MTCNN sees
    min_confidence: Annotated[float, Interval(ge=0, le=1)] = 0.95
    crop_margin: Annotated[float, Ge(0)] | None = None  # context around the box, as a share of its size; None: the classifier's
    crop_size: Annotated[int, Ge(16)] = 224


@dataclass
class Face:
    """One detected face in full-frame pixel coordinates."""

    box: np.ndarray          # (4,) float32 x1, y1, x2, y2
    confidence: float
    landmarks: np.ndarray    # (5, 2) float32: eyes, nose, mouth corners

    @property
    def size(self) -> float:
        return float(max(self.box[2] - self.box[0], self.box[3] - self.box[1]))


class FaceDetector:
    """Batched MTCNN face detection: frames (N, H, W, 3) uint8 RGB in, faces per frame out."""

    def __init__(self, settings: DetectSettings = DetectSettings(), device: str | torch.device = "cpu",
                 nets: dict | None = None):
        """`nets`: ONNX Runtime sessions for "pnet", "rnet" and "onet" to run instead of PyTorch."""
        from facenet_pytorch import MTCNN  # weights ship inside the wheel: nothing is downloaded

        from deepfake_detect.stages.onnx_models import OnnxNet

        crop_margin = DEFAULT_CROP_MARGIN if settings.crop_margin is None else settings.crop_margin
        if settings.crop_margin is None:
            settings = dataclasses.replace(settings, crop_margin=crop_margin)
        self.settings = settings
        self.crop_margin: float = crop_margin  # resolved: settings.crop_margin holds the same value
        self._mtcnn = MTCNN(keep_all=True, device=device, min_face_size=settings.min_face_size,
                            post_process=False, select_largest=False)
        for name, session in (nets or {}).items():
            setattr(self._mtcnn, name, OnnxNet(session))

    def detect(self, frames: np.ndarray) -> list[list[Face]]:
        """Faces in each frame, most confident first."""
        if len(frames) == 0:
            return []
        h, w = frames.shape[1:3]
        long_side = self.settings.detect_long_side
        scale = long_side / max(h, w) if long_side and max(h, w) > long_side else 1.0
        small = frames if scale == 1.0 else np.stack(
            [cv2.resize(f, (round(w * scale), round(h * scale)), interpolation=cv2.INTER_AREA) for f in frames])
        import torch

        # MTCNN permutes its (N, H, W, 3) input to (N, 3, H, W): handing it a view of a contiguous
        # (N, 3, H, W) float tensor makes that permute give contiguous memory, on which its image
        # pyramid (area resampling, the largest single cost) runs 1.5x faster; same values.
        planar = torch.from_numpy(np.ascontiguousarray(small)).permute(0, 3, 1, 2).to(
            torch.float32, memory_format=torch.contiguous_format)  # one pass: convert and reorder together
        with torch.inference_mode():
            boxes, probs, points = self._mtcnn.detect(planar.permute(0, 2, 3, 1), landmarks=True)
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
        crops = [crop_face(frame, face.box, self.crop_margin, s.crop_size)
                 for frame, frame_faces in zip(frames, faces) for face in frame_faces]
        if not crops:
            return np.zeros((0, s.crop_size, s.crop_size, 3), dtype=np.uint8)
        return np.stack(crops)
