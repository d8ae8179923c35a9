"""Detect stage: find faces in a batch of frames and cut square crops for the classifier.

This module is the face-detector seam: `FaceDetector` is the base class (frames in; boxes, five
landmarks and confidences out), `FACE_DETECTORS` names every implementation, and
`create_face_detector` builds the one the settings name (`detect.detector`), for analysis and
training alike. Adding a detector is one module with a `FaceDetector` subclass and one line in
`FACE_DETECTORS`. MTCNN (`stages/mtcnn.py`) is the one there is.

A detector runs on a copy of the frames scaled so the long side is `detect_long_side` (MTCNN's cost
grows with pixels: 5.1 s for 32 frames at 720p against 1.2 s at 640x360 on 2 CPU threads); boxes and
landmarks are mapped back to full-resolution coordinates here, and crops are cut from the full frame.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from importlib import import_module
from typing import TYPE_CHECKING, Annotated, Any, ClassVar

import cv2
import numpy as np
from annotated_types import Ge, Interval
from pydantic import AfterValidator

from deepfake_detect.stages.crop import crop_face, crop_square, cut_crop, known_crop_policy, square_crop_box
from deepfake_detect.stages.settings import one_of

# torch loads with the detector, not with the settings: the server's and the daemon's parent
# processes read the settings and never run a network.
if TYPE_CHECKING:
    import torch

__all__ = ["DEFAULT_CROP_MARGIN", "FACE_DETECTORS", "DetectSettings", "Face", "FaceDetector", "create_face_detector",
           "crop_face", "crop_square", "face_detector_class", "square_crop_box"]

# Context around the MTCNN box that the shipped members were trained with. A detector records its
# own margin in detector.json; the pipeline cuts crops with that one.
DEFAULT_CROP_MARGIN = 0.3
DEFAULT_CROP_SIZE = 224   # the shipped members' input size

# Every face detector, by the name the settings use: "module:class", imported only when built, so that
# reading the settings loads no network library.
FACE_DETECTORS = {
    "mtcnn": "deepfake_detect.stages.mtcnn:MtcnnDetector",
}


_known_detector = one_of(FACE_DETECTORS, "face detector")


@dataclass(frozen=True)
class DetectSettings:
    detector: Annotated[str, AfterValidator(_known_detector)] = "mtcnn"  # a name in FACE_DETECTORS
    detect_long_side: Annotated[int, Ge(0)] = 640   # 0 = detect at full resolution
    min_face_size: Annotated[int, Ge(4)] = 20       # pixels, in the downscaled frame MTCNN sees
    min_confidence: Annotated[float, Interval(ge=0, le=1)] = 0.95
    crop_margin: Annotated[float, Ge(0)] | None = None  # context around the box, as a share of its size; None: the classifier's
    crop_size: Annotated[int, Ge(16)] | None = None  # pixels; None: the classifier's input size
    crop_policy: Annotated[str, AfterValidator(known_crop_policy)] | None = None  # CROP_POLICIES; None: the classifier's


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
    """Batched face detection: frames (N, H, W, 3) uint8 RGB in, faces per frame out.

    A subclass implements `find` on the downscaled frames; this class scales, maps back, clips,
    filters by `min_confidence` and cuts the crops. `onnx_exports` names the networks a subclass
    can run on ONNX Runtime (the pipeline builds and caches them, then passes their sessions in).
    """

    name: ClassVar[str] = ""

    def __init__(self, settings: DetectSettings = DetectSettings(), device: str | torch.device = "cpu",
                 sessions: dict[str, Any] | None = None):
        crop_margin = DEFAULT_CROP_MARGIN if settings.crop_margin is None else settings.crop_margin
        settings = dataclasses.replace(settings, crop_margin=crop_margin,
                                       crop_size=settings.crop_size or DEFAULT_CROP_SIZE,
                                       crop_policy=settings.crop_policy or "square")
        self.settings = settings
        self.crop_margin: float = crop_margin  # resolved: settings.crop_margin holds the same value
        self.crop_size: int = settings.crop_size or DEFAULT_CROP_SIZE
        self.crop_policy: str = settings.crop_policy or "square"

    @classmethod
    def onnx_exports(cls) -> dict[str, tuple[str, Callable[[], bytes]]]:
        """Network name -> (cache file name, a function giving its ONNX bytes); none by default."""
        return {}

    def find(self, frames: np.ndarray) -> list[list[tuple[np.ndarray, float, np.ndarray]]]:
        """(box x1 y1 x2 y2, confidence, (5, 2) landmarks) of each face in each frame, in the
        frames' own pixels, any confidence."""
        raise NotImplementedError

    def detect(self, frames: np.ndarray) -> list[list[Face]]:
        """Faces in each frame, most confident first."""
        if len(frames) == 0:
            return []
        h, w = frames.shape[1:3]
        long_side = self.settings.detect_long_side
        scale = long_side / max(h, w) if long_side and max(h, w) > long_side else 1.0
        small = frames if scale == 1.0 else np.stack(
            [cv2.resize(f, (round(w * scale), round(h * scale)), interpolation=cv2.INTER_AREA) for f in frames])
        out: list[list[Face]] = []
        for found in self.find(small):
            faces = []
            for box, prob, pts in found:
                if prob is None or prob < self.settings.min_confidence:
                    continue
                box = np.asarray(box, dtype=np.float32) / scale
                box[[0, 2]] = box[[0, 2]].clip(0, w)
                box[[1, 3]] = box[[1, 3]].clip(0, h)
                if box[2] - box[0] < 2 or box[3] - box[1] < 2:
                    continue
                faces.append(Face(box=box, confidence=float(prob), landmarks=np.asarray(pts, dtype=np.float32) / scale))
            faces.sort(key=lambda f: -f.confidence)
            out.append(faces)
        return out

    def crops(self, frames: np.ndarray, faces: list[list[Face]], cut: tuple[str, float, int] | None = None) -> np.ndarray:
        """All face crops of the batch, frame by frame, as (M, S, S, 3) uint8: cut as the settings say, or
        as `cut` (policy, margin, size) says (a combined detector's other input groups)."""
        policy, margin, size = cut or (self.crop_policy, self.crop_margin, self.crop_size)
        crops = [cut_crop(frame, face.box, policy, margin, size)
                 for frame, frame_faces in zip(frames, faces) for face in frame_faces]
        if not crops:
            return np.zeros((0, size, size, 3), dtype=np.uint8)
        return np.stack(crops)


def face_detector_class(name: str) -> type[FaceDetector]:
    """The FaceDetector subclass registered as `name` in FACE_DETECTORS."""
    module, cls = FACE_DETECTORS[_known_detector(name)].split(":")
    found = getattr(import_module(module), cls)
    assert issubclass(found, FaceDetector), f"{FACE_DETECTORS[name]} is not a FaceDetector"
    return found


def create_face_detector(settings: DetectSettings = DetectSettings(), device: str | torch.device = "cpu",
                         sessions: dict[str, Any] | None = None) -> FaceDetector:
    """The face detector the settings name: the one way analysis and training build it."""
    return face_detector_class(settings.detector)(settings, device, sessions)
