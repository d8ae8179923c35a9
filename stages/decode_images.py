"""Photos and animations through Pillow (and the pillow-heif plugin for HEIF/HEIC).

- A photo is decoded once, turned upright by its EXIF orientation (any format that carries one:
  JPEG, PNG, WebP, TIFF, AVIF; HEIF's own transforms are applied by pillow-heif), converted to
  8-bit RGB whatever its mode (RGBA, grayscale, 16-bit, CMYK, palette), and downscaled to fit
  `max_decode_pixels` (JPEGs are decoded at 1/2, 1/4 or 1/8 size directly where that fits).
- An animation (GIF, animated PNG, animated WebP or AVIF) is a video: its frames keep the file's
  own timing (frame durations), and go through the same sampling, caps and report as any video.
  Its frames can only be decoded in order, so opening one decodes it once to learn the durations
  and `max_animation_pixels` caps frames x pixels.

Pillow's own decompression-bomb check is replaced by the caps here (it raised an exception for
large images instead of the cap's message). Any failure inside Pillow on a malformed file becomes
a one-line `MediaError`.
"""
from __future__ import annotations

import logging
import re
import threading
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

import cv2
import numpy as np

from deepfake_detect.stages.media import (
    DamagedError,
    DecodeLimits,
    EmptyMediaError,
    MediaError,
    MediaInfo,
    MediaReader,
    OverCapError,
    StillReader,
    TruncatedError,
    UnsupportedCodecError,
    clean_reason,
    fit_pixels,
)
from deepfake_detect.stages.media_sniff import Sniffed

if TYPE_CHECKING:
    from PIL import Image as PILImage

log = logging.getLogger(__name__)

ANIMATED_FORMATS = frozenset({"GIF", "PNG", "WEBP", "AVIF"})
# GIF delays of 0 or 1 centisecond are shown at 10 frames/s by browsers; other formats likewise
MIN_FRAME_DURATION_MS = 20
DEFAULT_FRAME_DURATION_MS = 100
_ORIENTATION_TAG = 0x0112
_CLOCKWISE = {3: 180, 4: 180, 5: 90, 6: 90, 7: 270, 8: 270}   # EXIF orientation -> clockwise turn

_setup_lock = threading.Lock()
_ready = False
_PIXELS_RE = re.compile(r"\((\d+) pixels\)")


def _pillow(limits: DecodeLimits | None = None) -> Any:
    """PIL.Image, set up once (the HEIF plugin, quiet bomb warnings) and, given `limits`, with
    Pillow's decompression-bomb check set to raise exactly above `max_source_pixels`.

    Pillow checks every size it is about to allocate, also sizes a file declares only mid-way (a
    GIF frame that grows the canvas), so its check stays on, at our cap: it raises for more than
    twice MAX_IMAGE_PIXELS. Setting it is process-wide; analyses in one process run one at a time."""
    global _ready
    from PIL import Image

    with _setup_lock:
        if not _ready:
            warnings.filterwarnings("ignore", category=Image.DecompressionBombWarning)
            try:
                from pillow_heif import register_heif_opener

                register_heif_opener()
            except ImportError:  # without the plugin HEIF files are refused as unsupported
                log.debug("pillow-heif is not installed: HEIF/HEIC photos cannot be read")
            _ready = True
        if limits is not None:
            Image.MAX_IMAGE_PIXELS = max(1, limits.max_source_pixels // 2)
    return Image


def _heif_available() -> bool:
    import importlib.util

    return importlib.util.find_spec("pillow_heif") is not None


def _declared_size(path: Path) -> tuple[int, int] | None:
    """The size an image's header declares, read with Pillow's bomb check off (the header only)."""
    from PIL import Image

    with _setup_lock:
        saved, Image.MAX_IMAGE_PIXELS = Image.MAX_IMAGE_PIXELS, None
        try:
            with Image.open(path) as im:
                return im.size
        except Exception:
            return None
        finally:
            Image.MAX_IMAGE_PIXELS = saved


def _pillow_failure(exc: BaseException, what: str = "image", limits: DecodeLimits | None = None) -> MediaError:
    """A Pillow exception on a malformed file, as one line for the user."""
    from PIL import Image

    text = str(exc)
    log.debug("Pillow failed on an %s", what, exc_info=exc)
    if isinstance(exc, Image.DecompressionBombError):
        pixels = _PIXELS_RE.search(text)
        cap = f" {limits.max_source_pixels}" if limits is not None else ""
        needs = f" (a frame of {pixels.group(1)} pixels)" if pixels else ""
        return OverCapError(f"{what} is over the{cap} pixel cap{needs}")
    if isinstance(exc, EOFError) or "truncated" in text.lower() or "ended prematurely" in text:
        return TruncatedError(f"{what} is truncated")
    if isinstance(exc, MemoryError):
        return DamagedError(f"{what} is damaged: its header asks for more memory than there is")
    reason = clean_reason(text.splitlines()[0] if text else type(exc).__name__, 80)
    return DamagedError(f"{what} is damaged: it cannot be decoded ({reason})" if reason else f"{what} is damaged")


def _to_rgb(im: PILImage.Image) -> np.ndarray:
    """Any Pillow mode as (H, W, 3) uint8 RGB; 16- and 32-bit grayscale are scaled, not clipped."""
    mode = im.mode
    if mode.startswith("I;16") or mode in ("I", "F"):
        a = np.asarray(im, dtype=np.float32)
        if mode.startswith("I;16"):
            a = a / 257.0
        elif mode == "F" and a.size and float(np.nanmax(a)) <= 1.0:
            a = a * 255.0
        elif a.size and float(a.max()) > 255:
            a = a / 257.0
        gray = np.clip(np.nan_to_num(a), 0, 255).round().astype(np.uint8)
        return np.repeat(gray[..., None], 3, axis=2)
    if mode != "RGB":
        try:
            im = im.convert("RGB")
        except ValueError:  # e.g. LAB without a colour profile
            raise UnsupportedCodecError(f"image colour mode {mode} is not supported") from None
    return np.asarray(im, dtype=np.uint8)


def _fit(rgb: np.ndarray, max_pixels: int) -> np.ndarray:
    h, w = rgb.shape[:2]
    dw, dh = fit_pixels(w, h, max_pixels)
    if (dw, dh) == (w, h):
        return rgb
    return cv2.resize(rgb, (dw, dh), interpolation=cv2.INTER_AREA)


def _orientation(im: PILImage.Image) -> int:
    try:
        value = im.getexif().get(_ORIENTATION_TAG, 1)
        return int(value) if int(value) in range(1, 9) else 1
    except Exception:  # a damaged EXIF block: the picture itself may still be fine
        return 1


def _upright(im: PILImage.Image, orientation: int) -> PILImage.Image:
    """The picture turned/flipped as its EXIF orientation says (Pillow's ImageOps.exif_transpose)."""
    if orientation == 1:
        return im
    from PIL import ImageOps

    return ImageOps.exif_transpose(im)


def open_image(path: Path, limits: DecodeLimits, sniffed: Sniffed) -> MediaReader:
    """A photo or an animation, as its content says."""
    Image = _pillow(limits)
    from PIL import UnidentifiedImageError

    try:
        im = Image.open(path)  # reads the header only: size is known before decoding
    except Image.DecompressionBombError:
        size = _declared_size(path)
        if size is None:
            raise OverCapError(f"image is over the {limits.max_source_pixels} pixel cap") from None
        raise OverCapError(f"image is {size[0]}x{size[1]}, over the {limits.max_source_pixels} pixel cap") from None
    except UnidentifiedImageError:
        if sniffed.format == "HEIF" and not _heif_available():
            raise UnsupportedCodecError("HEIF/HEIC photos cannot be read: the pillow-heif plugin is not installed") from None
        raise DamagedError(f"image is damaged: not a readable {sniffed.format} file") from None
    except Exception as exc:  # Pillow raises many types on malformed headers
        raise _pillow_failure(exc, "image", limits) from None
    try:
        w, h = im.size
        if w <= 0 or h <= 0:
            raise EmptyMediaError(f"image is {w}x{h}: it has no pixels")
        if w * h > limits.max_source_pixels:
            raise OverCapError(f"image is {w}x{h}, over the {limits.max_source_pixels} pixel cap")
        try:
            frames = int(getattr(im, "n_frames", 1))
        except Exception as exc:
            raise _pillow_failure(exc, "image", limits) from None
        if im.format in ANIMATED_FORMATS and frames > 1:
            return AnimationReader(path, limits, frames)
        return _open_still(im, path, limits)
    finally:
        im.close()


def _open_still(im: PILImage.Image, path: Path, limits: DecodeLimits) -> StillReader:
    w, h = im.size
    orientation = _orientation(im)
    try:
        if im.format == "JPEG":  # decode at 1/2, 1/4 or 1/8 size where that still covers the target
            im.draft(None, fit_pixels(w, h, limits.max_decode_pixels))
        im.load()
        rgb = _to_rgb(_upright(im, orientation))
    except MediaError:
        raise
    except Exception as exc:
        raise _pillow_failure(exc, "image", limits) from None
    rgb = _fit(rgb, limits.max_decode_pixels)
    info = MediaInfo(path=str(path), kind="image", fps=0.0, frame_count=1, duration_s=0.0,
                     width=rgb.shape[1], height=rgb.shape[0], source_width=w, source_height=h,
                     rotation=_CLOCKWISE.get(_stored_orientation(im, orientation), 0), has_audio=False)
    return StillReader(info, limits, rgb)


def _stored_orientation(im: PILImage.Image, orientation: int) -> int:
    """The orientation the file asked for: pillow-heif turns HEIF photos itself while decoding and
    keeps the original value aside (its EXIF then says 1)."""
    original = im.info.get("original_orientation")
    return int(original) if orientation == 1 and isinstance(original, int) and original in range(1, 9) else orientation


class AnimationReader(MediaReader):
    """An animated GIF / PNG / WebP / AVIF read as a video, frame by frame in order."""

    def __init__(self, path: Path, limits: DecodeLimits, frame_count: int):
        Image = _pillow(limits)
        self._limits = limits
        self._path = path
        self._im: PILImage.Image | None = None
        self._position = -1
        self._broken_from = frame_count   # frames from here on cannot be decoded
        with Image.open(path) as im:
            w, h = im.size
            total = frame_count * w * h
            if total > limits.max_animation_pixels:
                raise OverCapError(f"animation is {frame_count} frames of {w}x{h} ({total} pixels to decode), "
                                   f"over the {limits.max_animation_pixels} pixel cap")
            self._orientation = _orientation(im)
            durations = self._durations(im, frame_count)
        starts = np.concatenate([[0.0], np.cumsum(durations)[:-1]]) / 1000.0
        total_s = float(np.sum(durations)) / 1000.0
        if total_s > limits.max_duration_s:
            raise OverCapError(f"animation lasts {total_s:.0f} s, over the {limits.max_duration_s:.0f} s cap")
        self._starts = starts
        turned = self._orientation in (5, 6, 7, 8)
        up_w, up_h = (h, w) if turned else (w, h)
        dec_w, dec_h = fit_pixels(up_w, up_h, limits.max_decode_pixels)
        info = MediaInfo(path=str(path), kind="video", fps=frame_count / total_s, frame_count=frame_count,
                         duration_s=total_s, width=dec_w, height=dec_h, source_width=w, source_height=h,
                         rotation=_CLOCKWISE.get(self._orientation, 0), has_audio=False)
        super().__init__(info, limits)

    def _durations(self, im: PILImage.Image, frame_count: int) -> np.ndarray:
        """Each frame's duration in ms; decoding every frame once also finds where a damaged one is."""
        from PIL import Image

        durations = np.full(frame_count, float(DEFAULT_FRAME_DURATION_MS))
        cap = self._limits.max_animation_pixels
        for i in range(frame_count):
            try:
                im.seek(i)
                w, h = im.size  # a frame may grow the canvas (GIF): the budget counts the largest
                if frame_count * w * h > cap:
                    raise OverCapError(f"animation is {frame_count} frames of up to {w}x{h} ({frame_count * w * h} "
                                       f"pixels to decode), over the {cap} pixel cap")
                im.load()
            except OverCapError:
                raise
            except Exception as exc:
                if i == 0 or isinstance(exc, Image.DecompressionBombError):
                    raise _pillow_failure(exc, "animation", self._limits) from None
                log.debug("animation %s: frame %d cannot be decoded", self._path, i, exc_info=True)
                self._broken_from = i
                break
            value = im.info.get("duration")
            if isinstance(value, int | float) and value >= MIN_FRAME_DURATION_MS:
                durations[i] = float(value)
        if self._broken_from < frame_count:  # unknown timing past the damage: the mean of the rest
            durations[self._broken_from:] = durations[:self._broken_from].mean()
        return durations

    def times(self, indices: np.ndarray) -> np.ndarray:
        return self._starts[np.asarray(indices, dtype=np.int64)].astype(np.float64)

    def _frame(self, index: int) -> np.ndarray:
        Image = _pillow(self._limits)
        if self._im is None or index < self._position:
            if self._im is not None:
                self._im.close()
            self._im = Image.open(self._path)
            self._position = -1
        im = self._im
        im.seek(index)
        im.load()
        self._position = index
        return _fit(_to_rgb(_upright(im, self._orientation)), self._limits.max_decode_pixels)

    def _read_chunk(self, chunk: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        ok = np.zeros(len(chunk), dtype=bool)
        frames = []
        for k, index in enumerate(chunk.tolist()):
            if index >= self._broken_from:
                continue
            try:
                frame = self._frame(index)
            except Exception:
                log.debug("animation %s: frame %d cannot be decoded", self._path, index, exc_info=True)
                self._broken_from = index
                continue
            if frame.shape[:2] != (self.info.height, self.info.width):  # a frame of another size: fit it
                frame = cv2.resize(frame, (self.info.width, self.info.height), interpolation=cv2.INTER_AREA)
            frames.append(frame)
            ok[k] = True
        if not frames:
            return np.zeros((0, self.info.height, self.info.width, 3), dtype=np.uint8), ok
        return np.stack(frames), ok

    def _read(self, indices: np.ndarray) -> np.ndarray:
        frames, ok = self._read_chunk(indices)
        if not ok.all():
            raise DamagedError(f"animation is damaged: frame {int(indices[~ok][0])} cannot be decoded")
        return frames

    def close(self) -> None:
        if self._im is not None:
            self._im.close()
            self._im = None

    def __del__(self) -> None:
        self.close()
