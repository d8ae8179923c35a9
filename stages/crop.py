"""Face-crop geometry: which square of the frame the classifier sees. numpy and OpenCV, no torch.

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

from deepfake_detect.stages.settings import one_of

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


# -- the face-crop policies of published detectors ------------------------------------------------
# Each method trained its network on crops cut its own way; an imported detector is only as good
# as a faithful copy of that cut (a broken preprocessing chain is the most common complaint about
# these models). A policy gives, for a face box, the frame pixels used (`source`) and where they
# land in the size x size crop (`target`); what is outside `target` is zero padding. The same
# window cuts the crop, and lays a heatmap computed on the crop back over the frame.
CROP_POLICIES = ("square", "sbi", "icpr2020", "dfdc-winner", "resnext-lstm")


known_crop_policy = one_of(CROP_POLICIES, "crop policy")   # the settings' check


def _clip(x1: float, y1: float, x2: float, y2: float, height: int, width: int) -> tuple[int, int, int, int]:
    return max(int(x1), 0), max(int(y1), 0), min(int(x2), width), min(int(y2), height)


def crop_window(policy: str, box: np.ndarray, margin: float, height: int, width: int,
                size: int) -> tuple[tuple[int, int, int, int], tuple[int, int, int, int]]:
    """(source x1 y1 x2 y2 in the frame, target x1 y1 x2 y2 in the crop) of one face under `policy`.

    - square: this project's (`crop_square`), the whole crop;
    - sbi (Shiohara & Yamasaki 2022, test phase): the box widened by w/8 and h/8 on each side,
      clipped, stretched to the crop;
    - icpr2020 (Bonettini et al. 2020, BlazeFace extractor): offset = round(0.2 * box height) on
      each side and twice that above, clipped; zero-padded to `size` where smaller, then stretched;
    - dfdc-winner (Seferbekov 2020): the box widened by w//3 and h//3 on each side, clipped,
      its long side resized to `size`, centred on a zero canvas;
    - resnext-lstm (abhijitjadhav1998): the box itself, no margin, stretched to the crop (Pillow's
      bilinear resize, as torchvision's Resize on a PIL image).
    """
    x1, y1, x2, y2 = (float(v) for v in box)
    w, h = x2 - x1, y2 - y1
    if policy == "square":
        sx1, sy1, sx2, sy2 = (int(v) for v in crop_square(box, margin, height, width))
        return (sx1, sy1, sx2, sy2), (0, 0, size, size)
    if policy == "sbi":
        dx, dy = w / 8, h / 8
        source = (max(int(x1 - dx), 0), max(int(y1 - dy), 0), min(int(x2 + dx) + 1, width), min(int(y2 + dy) + 1, height))
        return source, (0, 0, size, size)
    if policy == "icpr2020":
        offset = round(0.2 * h)
        source = _clip(x1 - offset, y1 - 2 * offset, x2 + offset, y2 + offset, height, width)
        cw, ch = source[2] - source[0], source[3] - source[1]
        pw, ph = max(size, cw), max(size, ch)          # albumentations PadIfNeeded: pad to at least size
        left, top = (pw - cw) // 2, (ph - ch) // 2
        return source, (round(left * size / pw), round(top * size / ph),
                        round((left + cw) * size / pw), round((top + ch) * size / ph))
    if policy == "resnext-lstm":
        return _clip(x1, y1, x2, y2, height, width), (0, 0, size, size)
    if policy == "dfdc-winner":
        ix1, iy1, ix2, iy2 = int(x1), int(y1), int(x2), int(y2)
        pw, ph = (ix2 - ix1) // 3, (iy2 - iy1) // 3
        source = _clip(ix1 - pw, iy1 - ph, ix2 + pw, iy2 + ph, height, width)
        cw, ch = source[2] - source[0], source[3] - source[1]
        # the long side becomes exactly `size`, the other is truncated as the method does
        tw, th = (size, int(ch * (size / cw))) if cw > ch else (int(cw * (size / ch)), size)   # scale first, as it does
        left, top = (size - tw) // 2, (size - th) // 2
        return source, (left, top, left + tw, top + th)
    known_crop_policy(policy)
    raise AssertionError(f"crop policy {policy!r} has no window")


def cut_crop(frame: np.ndarray, box: np.ndarray, policy: str, margin: float, size: int) -> np.ndarray:
    """The size x size crop of one face as `policy` cuts it (`crop_window`), uint8 RGB."""
    if policy == "square":
        return crop_face(frame, box, margin, size)
    (sx1, sy1, sx2, sy2), (tx1, ty1, tx2, ty2) = crop_window(policy, box, margin, frame.shape[0], frame.shape[1], size)
    source = frame[sy1:max(sy2, sy1 + 1), sx1:max(sx2, sx1 + 1)]
    if policy == "icpr2020":   # pad to at least size with zeros, then stretch the padded image (as the method does)
        ph, pw = max(size, source.shape[0]), max(size, source.shape[1])
        top, left = (ph - source.shape[0]) // 2, (pw - source.shape[1]) // 2
        padded = np.zeros((ph, pw, 3), np.uint8)
        padded[top:top + source.shape[0], left:left + source.shape[1]] = source
        return cv2.resize(padded, (size, size), interpolation=cv2.INTER_LINEAR)
    if policy == "sbi":
        return cv2.resize(source, (size, size), interpolation=cv2.INTER_LINEAR)
    if policy == "resnext-lstm":
        from PIL import Image

        return np.asarray(Image.fromarray(np.ascontiguousarray(source)).resize((size, size), Image.Resampling.BILINEAR))
    # dfdc-winner: isotropic, area when shrinking and cubic when enlarging, centred on zeros
    if max(source.shape[:2]) == size:
        resized = source
    else:
        interp = cv2.INTER_CUBIC if size > max(source.shape[:2]) else cv2.INTER_AREA
        resized = cv2.resize(source, (tx2 - tx1, ty2 - ty1), interpolation=interp)
    canvas = np.zeros((size, size, 3), np.uint8)
    canvas[ty1:ty2, tx1:tx2] = resized
    return canvas
