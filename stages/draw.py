"""Drawing the analysis onto RGB uint8 frames: boxes, labels, score colours, heatmaps, banner, timeline.

Pure numpy and OpenCV, no I/O and no torch: the video renderer calls these once per frame, and
the keyframe writer for still images. Heatmaps are in crop space (the square the classifier saw);
they are laid back over that same square, from `stages.crop.crop_square`.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import cast

import cv2
import numpy as np

from deepfake_detect.stages.crop import crop_square, crop_window

VERDICT_COLOURS = {"fake": (230, 40, 40), "real": (40, 200, 70), "inconclusive": (245, 170, 30),
                   "no_face": (200, 200, 200), "error": (200, 200, 200)}
_FONT = cv2.FONT_HERSHEY_SIMPLEX


@dataclass(frozen=True)
class OverlayStyle:
    crop_margin: float = 0.3      # the classifier's crop margin: heatmaps live in that square
    crop_policy: str = "square"   # ...cut this way (stages/crop.py): an imported detector's own cut
    crop_size: int = 224          # ...at this size
    heatmap_alpha: float = 0.45
    max_gap_s: float = 2.0        # boxes are interpolated across shorter gaps, dropped across longer
    threshold: float = 0.5        # drawn on the timeline


@dataclass
class FaceSample:
    """One analysed face of a track, in decoded-frame pixel coordinates."""

    frame_index: int
    box: np.ndarray               # (4,) x1, y1, x2, y2
    score: float
    heatmap: np.ndarray | None = None   # crop-space map, float [0, 1] or uint8 [0, 255], any size


@dataclass(frozen=True)
class Banner:
    text: str
    colour: tuple[int, int, int]


def score_colour(score: float) -> tuple[int, int, int]:
    """RGB from green (0, real) through yellow to red (1, fake)."""
    hue = int(round(60 * (1.0 - float(np.clip(score, 0, 1)))))  # OpenCV hue: 0 red, 60 green
    rgb = cv2.cvtColor(np.array([[[hue, 230, 240]]], dtype=np.uint8), cv2.COLOR_HSV2RGB)[0, 0]
    return int(rgb[0]), int(rgb[1]), int(rgb[2])


def verdict_banner(verdict: str, score: float | None, fake_percentage: float | None) -> Banner:
    """The one line a viewer reads first."""
    if verdict == "no_face":
        return Banner("NO FACE FOUND - nothing to judge", VERDICT_COLOURS["no_face"])
    text = verdict.upper()
    if score is not None:
        text += f"  score {score:.2f}"
    if fake_percentage is not None:
        text += f"  |  fake in {fake_percentage:.0f}% of analysed frames"
    return Banner(text, VERDICT_COLOURS.get(verdict, (255, 255, 255)))


def face_label(track_id: int, score: float) -> str:
    return f"#{track_id} p(fake) {score:.2f}"  # a score, not a verdict: the colour and banner say that


def _font(height: int) -> tuple[float, int]:
    """Font scale and stroke that stay legible from 240p to 4K."""
    return max(0.35, height / 900), max(1, round(height / 450))


def _label(frame: np.ndarray, text: str, org: tuple[int, int], colour: tuple[int, int, int],
           scale: float, thickness: int) -> None:
    """Text on a dark plate; `org` is the plate's top-left corner, kept inside the frame."""
    (tw, th), base = cv2.getTextSize(text, _FONT, scale, thickness)
    pad = max(2, th // 4)
    h, w = frame.shape[:2]
    x = int(np.clip(org[0], 0, max(0, w - tw - 2 * pad)))
    y = int(np.clip(org[1], 0, max(0, h - th - base - 2 * pad)))
    cv2.rectangle(frame, (x, y), (x + tw + 2 * pad, y + th + base + 2 * pad), (20, 20, 20), -1)
    cv2.putText(frame, text, (x + pad, y + pad + th), _FONT, scale, colour, thickness, cv2.LINE_AA)


def draw_banner(frame: np.ndarray, banner: Banner) -> None:
    """Shaded strip across the top with the text, shrunk to fit the width."""
    h, w = frame.shape[:2]
    scale, thickness = _font(h)
    scale *= 1.3
    while scale > 0.3 and cv2.getTextSize(banner.text, _FONT, scale, thickness)[0][0] > w - 16:
        scale *= 0.9
    (_, th), base = cv2.getTextSize(banner.text, _FONT, scale, thickness)
    bar = th + base + 16
    frame[:bar] = (frame[:bar] * 0.35).astype(np.uint8)
    cv2.putText(frame, banner.text, (8, 8 + th), _FONT, scale, banner.colour, thickness + 1, cv2.LINE_AA)


def blend_heatmap(frame: np.ndarray, heatmap: np.ndarray, square: np.ndarray, alpha: float) -> None:
    """Lay a crop-space heatmap over `square` (x1, y1, x2, y2, may leave the frame), in place.

    The opacity follows the map, so cold regions leave the face visible and hot ones stand out.
    """
    x1, y1, x2, y2 = (int(v) for v in square)
    side = x2 - x1
    h, w = frame.shape[:2]
    fx1, fy1, fx2, fy2 = max(0, x1), max(0, y1), min(w, x2), min(h, y2)
    if side < 2 or fx2 <= fx1 or fy2 <= fy1:
        return
    heat: np.ndarray = heatmap.astype(np.float32) / (255.0 if heatmap.dtype == np.uint8 else 1.0)
    heat = cv2.resize(heat, (side, y2 - y1), interpolation=cv2.INTER_LINEAR)[fy1 - y1:fy2 - y1, fx1 - x1:fx2 - x1]
    # numpy's stubs type np.uint8(array) as a scalar; on an array it returns an array
    colour = cv2.applyColorMap(cast(np.ndarray, np.uint8(np.clip(heat, 0, 1) * 255)), cv2.COLORMAP_JET)[..., ::-1]
    a = (alpha * np.clip(heat, 0, 1))[..., None]
    region = frame[fy1:fy2, fx1:fx2]
    frame[fy1:fy2, fx1:fx2] = (region * (1 - a) + colour * a).astype(np.uint8)


def overlay_heatmap(image: np.ndarray, heatmap: np.ndarray, alpha: float = 0.45) -> np.ndarray:
    """RGB uint8 image with a JET heatmap ([0, 1], any size: resized to the image) laid over it.

    Uniform opacity (unlike `blend_heatmap`): for the side-by-side strips, where the crop itself is
    shown beside. The arithmetic is pytorch-grad-cam's `show_cam_on_image`, step for step, so the
    pixels are the same without importing it (it pulls in torch).
    """
    h, w = image.shape[:2]
    if heatmap.shape[:2] != (h, w):
        heatmap = cv2.resize(heatmap.astype(np.float32), (w, h), interpolation=cv2.INTER_LINEAR)
    colour = cv2.cvtColor(cv2.applyColorMap(cast(np.ndarray, np.uint8(255 * np.clip(heatmap, 0, 1))), cv2.COLORMAP_JET),
                          cv2.COLOR_BGR2RGB)
    image_weight = 1.0 - alpha
    cam = (1 - image_weight) * (np.float32(colour) / 255) + image_weight * (image.astype(np.float32) / 255.0)
    return cast(np.ndarray, np.uint8(255 * (cam / np.max(cam))))  # stretched so the brightest pixel is white, as grad-cam does


def draw_face(frame: np.ndarray, box: np.ndarray, score: float, label: str, heatmap: np.ndarray | None,
              style: OverlayStyle) -> None:
    """Heatmap over the face's crop square, the box, and its label coloured by score."""
    if heatmap is not None and style.crop_policy == "square":  # over the very square the classifier saw
        blend_heatmap(frame, heatmap, crop_square(np.asarray(box, np.float64), style.crop_margin, *frame.shape[:2]),
                      style.heatmap_alpha)
    elif heatmap is not None:   # another cut: the map's part that shows frame pixels, over those pixels
        source, (tx1, ty1, tx2, ty2) = crop_window(style.crop_policy, np.asarray(box, np.float64), style.crop_margin,
                                                   frame.shape[0], frame.shape[1], style.crop_size)
        k = heatmap.shape[0] / style.crop_size
        part = heatmap[round(ty1 * k):round(ty2 * k), round(tx1 * k):round(tx2 * k)]
        if part.size:
            blend_heatmap(frame, part, np.asarray(source), style.heatmap_alpha)
    colour = score_colour(score)
    scale, thickness = _font(frame.shape[0])
    x1, y1, x2, y2 = (int(round(v)) for v in box)
    cv2.rectangle(frame, (x1, y1), (x2, y2), colour, thickness + 1, cv2.LINE_AA)
    th = cv2.getTextSize(label, _FONT, scale, thickness)[0][1]
    above = y1 - th - 2 * max(2, th // 4) - 6
    _label(frame, label, (x1, above if above >= 0 else y2 + 2), colour, scale, thickness)


def annotate_image(frame: np.ndarray, faces: Sequence[tuple[int, FaceSample]], banner: Banner | None,
                   style: OverlayStyle) -> np.ndarray:
    """A copy of `frame` with each (track id, face) drawn and the banner on top (photos, keyframes)."""
    out = np.ascontiguousarray(frame).copy()
    for track_id, face in faces:
        draw_face(out, face.box, face.score, face_label(track_id, face.score), face.heatmap, style)
    if banner is not None:
        draw_banner(out, banner)
    return out


def _caption(img: np.ndarray, text: str, height: int) -> np.ndarray:
    plate = np.full((height, img.shape[1], 3), 20, np.uint8)
    scale = 0.45
    while scale > 0.25 and cv2.getTextSize(text, _FONT, scale, 1)[0][0] > img.shape[1] - 6:
        scale *= 0.9
    cv2.putText(plate, text, (3, height - 7), _FONT, scale, (235, 235, 235), 1, cv2.LINE_AA)
    return np.concatenate([img, plate], axis=0)


def heatmap_strip(crop: np.ndarray, member_maps: np.ndarray, ensemble_map: np.ndarray, member_names: Sequence[str],
                  member_scores: Sequence[float], score: float, alpha: float = 0.45) -> np.ndarray:
    """Crop | each member's map | the ensemble map, side by side, each captioned with its score."""
    tiles = [_caption(crop, "face crop", 22)]
    for name, heat, s in zip(member_names, member_maps, member_scores):
        tiles.append(_caption(overlay_heatmap(crop, heat, alpha), f"{name} {s:.2f}", 22))
    tiles.append(_caption(overlay_heatmap(crop, ensemble_map, alpha), f"ensemble {score:.2f}", 22))
    gap = np.full((tiles[0].shape[0], 4, 3), 255, np.uint8)
    return np.concatenate([t for tile in tiles for t in (tile, gap)][:-1], axis=1)


class Timeline:
    """Score of every analysed frame across the whole video, drawn once; per frame only the marker moves."""

    def __init__(self, width: int, height: int, frame_count: int, samples: Sequence[tuple[int, float]],
                 analysed: Sequence[int], threshold: float) -> None:
        self.frame_count = max(1, frame_count)
        self.height = max(12, int(round(height * 0.07)))
        self.pad = max(4, width // 80)
        self.width = width
        strip = np.full((self.height, width, 3), 25, np.uint8)
        top, bottom = 3, self.height - 3
        for idx in analysed:  # analysed frames without a face: a short grey tick
            x = self.x(idx)
            cv2.line(strip, (x, bottom), (x, bottom - 2), (110, 110, 110), 1)
        bar_w = max(1, (width - 2 * self.pad) // max(len(samples), 1) - 1)
        for idx, score in sorted(samples, key=lambda s: s[1]):  # highest score drawn last, on top
            x = self.x(idx)
            y = int(round(bottom - (bottom - top) * float(np.clip(score, 0, 1))))
            cv2.rectangle(strip, (x - bar_w // 2, y), (x + (bar_w - 1) // 2, bottom), score_colour(score), -1)
        ty = int(round(bottom - (bottom - top) * threshold))
        for x in range(self.pad, width - self.pad, 8):  # dashed threshold line
            cv2.line(strip, (x, ty), (min(x + 3, width - self.pad), ty), (235, 235, 235), 1)
        self.strip = strip

    def x(self, frame_index: int) -> int:
        span = self.width - 2 * self.pad
        return self.pad + int(round(span * frame_index / max(self.frame_count - 1, 1)))

    def draw(self, frame: np.ndarray, frame_index: int) -> None:
        h = frame.shape[0]
        y0 = h - self.height
        frame[y0:] = (frame[y0:] * 0.25 + self.strip * 0.75).astype(np.uint8)
        x = self.x(min(frame_index, self.frame_count - 1))
        cv2.line(frame, (x, y0), (x, h - 1), (255, 255, 255), 2)
        cv2.fillConvexPoly(frame, np.array([[x - 5, y0], [x + 5, y0], [x, y0 + 6]], np.int32), (255, 255, 255))
