"""Synthetic sample media with real faces, made on the spot (no download, no shared data).

The face is the astronaut portrait that scikit-image ships (public domain, NASA), moved and scaled
over a textured background. Tests, the benchmark and the README demo all use these clips.
"""
from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import cv2
import numpy as np

from deepfake_detect.stages.render import FrameEncoder

# Head region of skimage.data.astronaut() (MTCNN finds the face at about x 181-268, y 62-172).
_HEAD = (slice(10, 250), slice(115, 335))


def _face_sprite(variant: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(RGB sprite, soft alpha) of the astronaut's head; variant 1 is mirrored and re-tinted,
    so two people in one clip look different to the tracker."""
    from skimage import data

    head = data.astronaut()[_HEAD].copy()
    if variant:
        head = head[:, ::-1].copy()
        hsv = cv2.cvtColor(head, cv2.COLOR_RGB2HSV)
        hsv[..., 0] = (hsv[..., 0].astype(int) + 8 * variant) % 180
        hsv[..., 2] = (hsv[..., 2] * 0.75).astype(np.uint8)
        head = cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)
    h, w = head.shape[:2]
    alpha = np.zeros((h, w), np.float32)
    cv2.ellipse(alpha, (w // 2, h // 2), (int(w * 0.46), int(h * 0.48)), 0, 0, 360, 1.0, -1)
    alpha = cv2.GaussianBlur(alpha, (0, 0), sigmaX=w * 0.04)
    return head, alpha


@lru_cache(maxsize=4)
def _base_background(width: int, height: int) -> np.ndarray:
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    r = 90 + 40 * np.sin(x / 57.0)
    g = 110 + 30 * np.cos(y / 43.0)
    b = 140 + 35 * np.sin((x + y) / 91.0)
    return np.clip(np.dstack([r, g, b]), 0, 255).astype(np.uint8)


def _background(width: int, height: int, t: float) -> np.ndarray:
    # computed once per size and slid sideways: a moving background costs a copy per frame
    return np.roll(_base_background(width, height), int(t * 20) % width, axis=1)


def _paste(frame: np.ndarray, sprite: np.ndarray, alpha: np.ndarray, cx: float, cy: float, height: float) -> None:
    scale = height / sprite.shape[0]
    sw, sh = max(2, int(sprite.shape[1] * scale)), max(2, int(sprite.shape[0] * scale))
    spr = cv2.resize(sprite, (sw, sh), interpolation=cv2.INTER_AREA).astype(np.float32)
    alp = cv2.resize(alpha, (sw, sh), interpolation=cv2.INTER_AREA)[..., None]
    x0, y0 = int(cx - sw / 2), int(cy - sh / 2)
    fx0, fy0 = max(0, x0), max(0, y0)
    fx1, fy1 = min(frame.shape[1], x0 + sw), min(frame.shape[0], y0 + sh)
    if fx1 <= fx0 or fy1 <= fy0:
        return
    region = frame[fy0:fy1, fx0:fx1].astype(np.float32)
    s = spr[fy0 - y0:fy1 - y0, fx0 - x0:fx1 - x0]
    a = alp[fy0 - y0:fy1 - y0, fx0 - x0:fx1 - x0]
    frame[fy0:fy1, fx0:fx1] = (s * a + region * (1 - a)).astype(np.uint8)


def render_sample_frame(width: int, height: int, t: float, duration: float, faces: int) -> np.ndarray:
    """One frame at time t: `faces` heads (0, 1 or 2) moving across and changing size."""
    frame = _background(width, height, t)
    phase = t / max(duration, 1e-6)
    head_h = 0.55 * height * (1 + 0.2 * np.sin(2 * np.pi * phase))
    if faces >= 1:
        cx = width * (0.3 + 0.2 * phase) if faces == 2 else width * (0.3 + 0.4 * phase)
        sprite, alpha = _face_sprite(0)
        _paste(frame, sprite, alpha, cx, height * (0.5 + 0.05 * np.sin(4 * np.pi * phase)), head_h)
    if faces >= 2:
        sprite, alpha = _face_sprite(1)
        _paste(frame, sprite, alpha, width * (0.75 - 0.05 * phase), height * 0.5, head_h * 0.9)
    return frame


def make_sample_video(path: str | Path, seconds: float = 2.0, fps: float = 25.0, size: tuple[int, int] = (640, 360),
                      faces: int = 1, audio: bool = False) -> Path:
    """Encode a synthetic clip (H.264, optional 440 Hz tone) and return its path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    width, height = size
    n = max(1, int(round(seconds * fps)))
    tone = f"sine=frequency=440:sample_rate=44100:duration={seconds}" if audio else None
    with FrameEncoder(path, width, height, fps, audio_lavfi=tone) as enc:
        for i in range(n):
            enc.write(render_sample_frame(width, height, i / fps, seconds, faces))
    return path


def make_sample_photo(path: str | Path, size: tuple[int, int] = (640, 480), faces: int = 1) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    frame = render_sample_frame(size[0], size[1], 0.5, 1.0, faces)
    ok, buf = cv2.imencode(path.suffix or ".png", cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
    if not ok:
        raise ValueError(f"cannot encode an image as {path.suffix}")
    path.write_bytes(buf.tobytes())
    return path
