"""The naive reference loop: what a first version of this project would write, timed on the
pipeline's own clip and frame indices so the pipeline's speed-up is a ratio from one run.

Every step is the obvious one: OpenCV seeks to each sampled frame and reads it, MTCNN looks at
the full-resolution frame alone, and each face crop gets its own forward pass through the
PyTorch ensemble. The crop geometry and normalisation are the pipeline's (`cut_crop`,
`detector_input`), so the two loops do the same work and differ only in how they do it.
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from deepfake_detect.pipeline.bench.measure import BenchError

if TYPE_CHECKING:
    from deepfake_detect.pipeline.core.runner import Analyzer


def naive_loop(analyzer: Analyzer, path: Path, indices: np.ndarray) -> dict[str, Any]:
    """Time the naive loop over `indices` of `path` with `analyzer`'s PyTorch detector."""
    import cv2
    import torch
    from facenet_pytorch import MTCNN

    from deepfake_detect.stages.classify import detector_input
    from deepfake_detect.stages.crop import cut_crop

    model = analyzer.model.eval()
    cfg = model.config
    device = analyzer.device
    settings = analyzer.face_detector.settings
    margin, size = analyzer.face_detector.crop_margin, analyzer.face_detector.crop_size
    policy = analyzer.face_detector.crop_policy
    mtcnn = MTCNN(keep_all=True, min_face_size=20, post_process=False, device=device)

    def read(cap: cv2.VideoCapture, index: int) -> np.ndarray | None:
        cap.set(cv2.CAP_PROP_POS_FRAMES, index)
        ok, bgr = cap.read()
        return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB) if ok else None

    # Model loading is outside the pipeline's warm analysis too: build MTCNN and run both networks
    # once before the clock starts, so neither loop pays first-call costs in the timing (with ONNX
    # Runtime scoring, the PyTorch ensemble has not run before).
    cap = cv2.VideoCapture(str(path))
    first = read(cap, int(indices[0]))
    cap.release()
    if first is None:
        raise BenchError(f"OpenCV cannot read {path.name}")
    with torch.inference_mode():
        mtcnn.detect(first)
        model(detector_input(np.zeros((1, size, size, 3), np.uint8), cfg, device))

    scores: list[float] = []
    frames_read = 0
    t0 = time.perf_counter()
    cap = cv2.VideoCapture(str(path))
    try:
        for index in indices:
            frame = read(cap, int(index))
            if frame is None:
                continue
            frames_read += 1
            with torch.inference_mode():
                boxes, probs = mtcnn.detect(frame)
            if boxes is None:
                continue
            for box, prob in zip(boxes, probs):
                # the pipeline's confidence cut, so both loops score the same faces
                if prob is None or prob < settings.min_confidence:
                    continue
                crop = cut_crop(frame, np.asarray(box, np.float32), policy, margin, size)
                x = detector_input(crop[None], cfg, device)
                with torch.inference_mode():
                    prob_fake, _ = model(x)
                scores.append(float(prob_fake[0]))
    finally:
        cap.release()
    seconds = time.perf_counter() - t0
    return {"clip": path.name, "frames": frames_read, "faces": len(scores), "naive_s": seconds,
            "frames_per_s": frames_read / seconds, "video_score": float(np.mean(scores)) if scores else None}
