"""Self-blended pseudo-fakes (Shiohara & Yamasaki, CVPR 2022, "Detecting Deepfakes with Self-Blended Images").

A real face is blended with a slightly altered copy of itself inside a soft face-shaped mask. The
result has the tell-tale traces of a face swap (blending boundary, colour / sharpness mismatch,
slight misalignment) without any identity change, which forces the detector to learn those
generic traces instead of the artefacts of one particular generator.

The original recipe builds its mask from 68/81 dlib landmarks. Given 68 points
(training/landmarks68.py, computed once per face and cached) so does this; given MTCNN's 5 points,
the mask is either a convex hull of those points extrapolated to forehead and chin, or an ellipse
fitted to the box. All randomness comes from the `numpy.random.Generator`
passed in, so a seeded generator reproduces the output exactly.

Pass a face crop (with some margin) rather than a whole video frame: every step runs on the whole
image, so a small input keeps this cheap.
"""
from __future__ import annotations

import cv2
import numpy as np

from deepfake_detect.training.face_hulls import hull_mask68

# SBI draws the blend ratio from this list: full-strength blends dominate, partial ones teach the
# model that a faint ghost of the source is also a fake.
BLEND_RATIOS = (0.25, 0.5, 0.75, 1.0, 1.0, 1.0)

# Hull template in a face-local frame: `a` is measured along the eye-to-eye vector (in units of the
# eye distance, eyes at a = -0.5 / +0.5), `b` along the eye-centre-to-mouth-centre vector (mouth at
# b = 1). Using the measured vectors as axes makes the template follow roll, and roughly yaw and
# pitch, of the head. Rows: a, b, which random scale applies ("top", "side" or "chin").
_HULL_TEMPLATE = (
    (-0.6, 0.8, "top"), (0.0, 1.0, "top"), (0.6, 0.8, "top"),      # forehead
    (-1.0, 0.0, "side"), (1.0, 0.0, "side"),                          # temples, at eye level
    (-0.95, 0.6, "side"), (0.95, 0.6, "side"),                        # cheeks
    (-0.75, 1.1, "side"), (0.75, 1.1, "side"),                        # jaw, below mouth corners
    (-0.45, 0.9, "chin"), (0.0, 1.0, "chin"), (0.45, 0.9, "chin"),    # chin
)


def _face_size(box: np.ndarray) -> float:
    """Mean side of the face box: the length scale every random amount is expressed in."""
    return max(1.0, float((box[2] - box[0]) + (box[3] - box[1])) / 2)


def _hull_points(landmarks: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Polygon around the face extrapolated from the 5 MTCNN landmarks, with random extent."""
    left_eye, right_eye, _nose, mouth_left, mouth_right = landmarks.astype(np.float64)
    eye_centre = (left_eye + right_eye) / 2
    across = right_eye - left_eye                           # eye to eye
    down = (mouth_left + mouth_right) / 2 - eye_centre      # eye centre to mouth centre
    # Random extents: a low forehead reproduces SBI's 68-point hull (eyebrows up), a high one its
    # 81-point hull (forehead included); side and chin scales vary how much cheek/jaw is swapped.
    scale = {"top": -rng.uniform(0.35, 1.0), "side": rng.uniform(0.8, 1.05), "chin": rng.uniform(1.4, 1.75)}
    points = []
    for a, b, kind in _HULL_TEMPLATE:
        if kind == "side":
            a *= scale["side"]
        else:
            b *= scale[kind]
        a, b = np.array([a, b]) + rng.normal(0.0, 0.04, size=2)  # irregular outline, not a template
        points.append(eye_centre + a * across + b * down)
    return np.vstack([np.array(points), landmarks.astype(np.float64)])


def _hull_mask(shape: tuple[int, int], landmarks: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Binary uint8 mask: convex hull of the extrapolated landmark polygon."""
    mask = np.zeros(shape, dtype=np.uint8)
    hull = cv2.convexHull(np.round(_hull_points(landmarks, rng)).astype(np.int32))
    cv2.fillConvexPoly(mask, hull, 1)
    return mask


def _ellipse_mask(shape: tuple[int, int], box: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Binary uint8 mask: ellipse inscribed in the face box with jittered centre, axes and angle."""
    size = _face_size(box)
    centre = np.array([(box[0] + box[2]) / 2, (box[1] + box[3]) / 2]) + rng.uniform(-0.05, 0.05, 2) * size
    axes = (max(1, round((box[2] - box[0]) / 2 * rng.uniform(0.8, 1.05))),
            max(1, round((box[3] - box[1]) / 2 * rng.uniform(0.85, 1.1))))
    mask = np.zeros(shape, dtype=np.uint8)
    cv2.ellipse(mask, (round(centre[0]), round(centre[1])), axes, rng.uniform(-15, 15), 0, 360, 1, thickness=-1)
    return mask


def _deform(mask: np.ndarray, size: float, rng: np.random.Generator) -> np.ndarray:
    """Warp the mask outline with a smooth random displacement field (SBI's elastic transform).

    The field is drawn on a coarse grid (cells a fraction of the face) and upsampled bicubically,
    which gives smooth wobbles at face scale without a per-pixel noise + blur pass.
    """
    h, w = mask.shape
    cell = size / rng.uniform(3.0, 8.0)
    grid_h, grid_w = int(np.ceil(h / cell)) + 2, int(np.ceil(w / cell)) + 2
    amplitude = size * rng.uniform(0.01, 0.04)
    dx, dy = (cv2.resize(rng.standard_normal((grid_h, grid_w)).astype(np.float32), (w, h),
                         interpolation=cv2.INTER_CUBIC) * amplitude for _ in range(2))
    xs, ys = np.meshgrid(np.arange(w, dtype=np.float32), np.arange(h, dtype=np.float32))
    warped = cv2.remap(mask.astype(np.float32), xs + dx, ys + dy, cv2.INTER_LINEAR,
                       borderMode=cv2.BORDER_CONSTANT, borderValue=0)
    return (warped > 0.5).astype(np.uint8)


def _erode_or_dilate(mask: np.ndarray, size: float, rng: np.random.Generator) -> np.ndarray:
    """Shrink or grow the mask by up to ~6 % of the face, so the boundary is not always at the hull."""
    radius = int(round(size * rng.uniform(0.0, 0.06)))
    op = cv2.erode if rng.random() < 0.5 else cv2.dilate
    if radius < 1:
        return mask
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * radius + 1, 2 * radius + 1))
    out = op(mask, kernel)
    # An erosion that wipes out a tiny face would leave nothing to blend: keep the unshrunk mask.
    return out if out.any() else mask


def _soften(mask: np.ndarray, size: float, rng: np.random.Generator) -> np.ndarray:
    """Gaussian-blur the edge with a random width, then renormalise so the core is exactly 1."""
    sigma = max(0.5, size * rng.uniform(0.015, 0.08))
    soft = cv2.GaussianBlur(mask.astype(np.float32), (0, 0), sigmaX=sigma, sigmaY=sigma)
    peak = float(soft.max())
    # Renormalising matters for small masks whose centre the blur pulls below 1: the blend ratio
    # should alone decide how strong the blend is at the core.
    return np.clip(soft / peak, 0.0, 1.0) if peak > 0 else soft


def face_mask(shape: tuple[int, int], box: np.ndarray, landmarks: np.ndarray | None,
              rng: np.random.Generator) -> np.ndarray:
    """Random soft face mask (float32 HxW in [0, 1]) for self-blending.

    `box` is x1, y1, x2, y2; `landmarks` the (5, 2) MTCNN points (left eye, right eye, nose, mouth
    left, mouth right), dlib's (68, 2) points, or None. With 68 points the base shape is one of SBI's
    four landmark hulls (training/face_hulls.py); with 5 it is, at random, a convex hull of the
    points extended to forehead and chin, or an ellipse fitted to the box (always the ellipse without
    landmarks). It is then deformed, eroded or dilated, and given a blurred edge of random width.
    """
    box = np.asarray(box, dtype=np.float64)
    size = _face_size(box)
    if landmarks is not None and len(landmarks) == 68:  # as SBI: always a landmark hull, of a random shape
        mask = hull_mask68(shape, landmarks, rng)
    else:
        use_hull = landmarks is not None and rng.random() < 0.5
        mask = _hull_mask(shape, np.asarray(landmarks), rng) if use_hull else _ellipse_mask(shape, box, rng)
    if not mask.any():  # box entirely outside the image: nothing to blend
        return mask.astype(np.float32)
    deformed = _deform(mask, size, rng)
    mask = deformed if deformed.any() else mask
    mask = _erode_or_dilate(mask, size, rng)
    return _soften(mask, size, rng).astype(np.float32)


def _shift_colours(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Colour mismatch of SBI's source: per-channel shift, hue/saturation/value, brightness/contrast."""
    out = image.astype(np.float32)
    if rng.random() < 0.3:
        # SBI shifts each channel by up to +-20; opposite shifts of that size on R and G turn skin
        # green, so we stay at +-12.
        out += rng.uniform(-12, 12, size=3).astype(np.float32)
    if rng.random() < 0.5:
        hsv = cv2.cvtColor(np.clip(out, 0, 255).astype(np.uint8), cv2.COLOR_RGB2HSV).astype(np.float32)
        # Small hue steps only (OpenCV hue is 0..179 for uint8, so 2 = 4 degrees): skin turns
        # visibly green/purple beyond that, which would be an easier cue than real swaps give.
        hsv[..., 0] = (hsv[..., 0] + rng.uniform(-2, 2)) % 180
        hsv[..., 1] *= rng.uniform(0.9, 1.1)
        hsv[..., 2] *= rng.uniform(0.9, 1.1)
        out = cv2.cvtColor(np.clip(hsv, 0, 255).astype(np.uint8), cv2.COLOR_HSV2RGB).astype(np.float32)
    contrast, brightness = rng.uniform(0.9, 1.1), rng.uniform(-0.1, 0.1) * 255
    mean = out.mean()
    out = (out - mean) * contrast + mean + brightness  # contrast about the mean keeps the overall level
    return np.clip(out, 0, 255).astype(np.uint8)


def _downscale_upscale(image: np.ndarray, size: float, rng: np.random.Generator) -> np.ndarray:
    """Blur-like resolution loss as in SBI: nearest-neighbour down by 2-4x, bilinear back up.

    SBI's 2-4x assumes faces of a few hundred pixels; the factor is capped so the face keeps at
    least ~40 px, otherwise small faces turn into an obvious smudge rather than a subtle mismatch.
    """
    h, w = image.shape[:2]
    factor = min(rng.uniform(2.0, 4.0), max(1.25, size / 40))
    small = cv2.resize(image, (max(1, round(w / factor)), max(1, round(h / factor))),
                       interpolation=cv2.INTER_NEAREST)
    return cv2.resize(small, (w, h), interpolation=cv2.INTER_LINEAR)


def _sharpen(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """3x3 sharpening with random strength (the alternative to downscaling).

    Same kernel as albumentations' Sharpen used by SBI, but rescaled to sum to 1: the original also
    darkens by up to 25 %, which on top of the colour shifts makes the face implausibly dark.
    """
    alpha, lightness = rng.uniform(0.2, 0.5), rng.uniform(0.5, 1.0)
    identity = np.zeros((3, 3), np.float32)
    identity[1, 1] = 1
    laplacian_boost = np.full((3, 3), -1, np.float32)
    laplacian_boost[1, 1] = 8 + lightness
    kernel = (1 - alpha) * identity + alpha * laplacian_boost
    kernel /= kernel.sum()
    return cv2.filter2D(image, -1, kernel, borderType=cv2.BORDER_REFLECT)


def _pixel_transform(image: np.ndarray, size: float, rng: np.random.Generator) -> np.ndarray:
    """SBI source transform: colour shifts, then either a resolution drop or a sharpening."""
    image = _shift_colours(image, rng)
    return _downscale_upscale(image, size, rng) if rng.random() < 0.5 else _sharpen(image, rng)


def _random_affine(box: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """2x3 matrix: scale 0.95-1.05 about the face centre plus a shift of a few % of the face.

    SBI shifts +-3 % horizontally but only +-1.5 % vertically; we keep that asymmetry.
    """
    scale = rng.uniform(0.95, 1 / 0.95)
    cx, cy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
    tx = rng.uniform(-0.03, 0.03) * (box[2] - box[0])
    ty = rng.uniform(-0.015, 0.015) * (box[3] - box[1])
    return np.array([[scale, 0, (1 - scale) * cx + tx], [0, scale, (1 - scale) * cy + ty]], dtype=np.float64)


def _blend(source: np.ndarray, target: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Alpha blend source over target with a per-pixel weight, rounded back to uint8."""
    m = mask[..., None]
    out = source.astype(np.float32) * m + target.astype(np.float32) * (1 - m)
    return np.clip(np.round(out), 0, 255).astype(np.uint8)


def _make_fake(image: np.ndarray, box: np.ndarray, landmarks: np.ndarray | None,
               rng: np.random.Generator, transform_target: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Shared SBI core: returns (target, fake, blend mask)."""
    box = np.asarray(box, dtype=np.float64)
    h, w = image.shape[:2]
    mask = face_mask((h, w), box, landmarks, rng)
    transformed = _pixel_transform(image, _face_size(box), rng)
    source, target = (image, transformed) if transform_target else (transformed, image)
    # The misalignment moves source and mask together (as in SBI), so the mask keeps covering the
    # shifted face; reflected borders avoid black edges sneaking into the blend.
    matrix = _random_affine(box, rng)
    source = cv2.warpAffine(source, matrix, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
    mask = cv2.warpAffine(mask, matrix, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT)
    mask = (np.clip(mask, 0, 1) * BLEND_RATIOS[rng.integers(len(BLEND_RATIOS))]).astype(np.float32)
    return target, _blend(source, target, mask), mask


def self_blend(image: np.ndarray, box: np.ndarray, landmarks: np.ndarray | None,
               rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Self-blended fake of an RGB uint8 image: returns (fake uint8 HxWx3, blend mask float32 HxW).

    The source is a colour-shifted, resampled or sharpened, slightly moved and rescaled copy of the
    image; the target is the image itself, so `fake` equals `image` wherever the mask is 0 and the
    untouched image is the matching real sample. The returned mask already includes the blend
    ratio, i.e. fake = source * mask + image * (1 - mask).

    SBI also, half the time, applies the pixel transform to the target instead; that changes the
    whole image, so it is only done by `self_blend_pair`, which returns the matching real sample.
    """
    _, fake, mask = _make_fake(image, box, landmarks, rng, transform_target=False)
    return fake, mask


def self_blend_pair(image: np.ndarray, box: np.ndarray, landmarks: np.ndarray | None,
                    rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Full SBI recipe: returns (real, fake, mask) with the source/target roles randomly swapped.

    With probability 0.5 the pixel transform goes to the target (the background of the fake)
    instead of the source, so the model cannot learn "the face is the blurrier / sharper part".
    `real` is the target actually used -- the image itself or its transformed copy -- and must be
    the real sample paired with `fake`: otherwise the global transform alone would separate them.
    """
    transform_target = bool(rng.random() < 0.5)
    return _make_fake(image, box, landmarks, rng, transform_target=transform_target)
