"""68-point face landmarks for self-blending masks (training only), from dlib's shape predictor.

SBI (Shiohara & Yamasaki, CVPR 2022) draws its blend masks from 68 landmarks: the jaw line, eyebrows,
nose, eyes and mouth outline the face far better than the 5 points MTCNN gives. dlib's predictor
ships in the `face-recognition-models` wheel; its training data (iBUG 300-W) forbids commercial use,
so it is used here, to make training masks, and never at analysis.

The predictor is placed by the face box MTCNN found, so no second face detector runs. Batch in
(context crops and their boxes), batch out ((K, 68, 2) points in crop pixels).
"""
from __future__ import annotations

import functools
import importlib.util
from pathlib import Path
from typing import Any

import numpy as np

PREDICTOR_FILE = "shape_predictor_68_face_landmarks.dat"
INSTALL_HINT = "68-point landmarks need the training extras: pip install -e '.[train]' (dlib-bin, face-recognition-models)"


def predictor_path() -> Path:
    """The predictor file inside the face-recognition-models wheel.

    Found with find_spec, without importing the package: its __init__ needs pkg_resources, which
    current setuptools no longer provides."""
    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError(INSTALL_HINT)
    path = Path(list(spec.submodule_search_locations)[0]) / "models" / PREDICTOR_FILE
    if not path.is_file():
        raise RuntimeError(f"{path} is missing; {INSTALL_HINT}")
    return path


@functools.lru_cache(maxsize=1)
def _predictor() -> tuple[Any, Any]:  # (the dlib module, its shape predictor): dlib has no type hints
    try:
        import dlib
    except ImportError:
        raise RuntimeError(INSTALL_HINT) from None
    return dlib, dlib.shape_predictor(str(predictor_path()))


def landmarks68(images: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """(K, 68, 2) float32 landmarks of the face in `boxes` (K, 4: x1, y1, x2, y2) of each RGB uint8 image."""
    dlib, predictor = _predictor()
    out = np.zeros((len(images), 68, 2), np.float32)
    for k, (image, box) in enumerate(zip(images, boxes)):
        x1, y1, x2, y2 = (int(round(float(v))) for v in box)
        shape = predictor(np.ascontiguousarray(image), dlib.rectangle(x1, y1, x2, y2))
        out[k] = [(p.x, p.y) for p in shape.parts()]
    return out
