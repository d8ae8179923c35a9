"""What the decode stage hands on and refuses with: media suffixes, limits, sampling, the frame batch,
the errors (one-line reasons for the user) and the reader base class that photos, animations
(`stages.decode_images`) and videos (`stages.decode`) share."""
from __future__ import annotations

import math
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Annotated, Literal

import numpy as np
from annotated_types import Gt

if TYPE_CHECKING:
    pass


IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff", ".heic", ".heif", ".avif"})
ANIMATION_SUFFIXES = frozenset({".gif", ".apng"})   # .png, .webp and .avif may be animated too: the content decides
VIDEO_SUFFIXES = frozenset({".mp4", ".mov", ".m4v", ".mkv", ".avi", ".webm", ".mpg", ".mpeg", ".wmv", ".flv", ".3gp", ".ts",
                            ".m2ts", ".mts", ".mxf", ".ogv", ".vob", ".3g2", ".f4v", ".asf"})
MEDIA_SUFFIXES = IMAGE_SUFFIXES | ANIMATION_SUFFIXES | VIDEO_SUFFIXES

AUDIO_ONLY = "no video stream: audio-only files are not analysed"
MIN_MEDIA_BYTES = 16   # no image or video format fits in fewer (the smallest valid GIF is 26 bytes)


class MediaError(Exception):
    """An input that cannot be analysed; the message is one line meant for the user."""

    reason = "unreadable"


class EmptyMediaError(MediaError):
    reason = "empty"


class NotMediaError(MediaError):
    reason = "not_media"


class NoVideoStreamError(MediaError):
    reason = "no_video_stream"


class UnsupportedCodecError(MediaError):
    reason = "unsupported_codec"


class OverCapError(MediaError):
    reason = "over_cap"


class TruncatedError(MediaError):
    reason = "truncated"


class DamagedError(MediaError):
    reason = "damaged"


@dataclass(frozen=True)
class DecodeLimits:
    """Caps that keep one hostile or huge input from exhausting the machine."""

    max_file_bytes: Annotated[int, Gt(0)] = 8 * 1024**3
    max_duration_s: Annotated[float, Gt(0)] = 4 * 3600.0
    max_frames: Annotated[int, Gt(0)] = 2000            # sampled frames per input
    max_source_pixels: Annotated[int, Gt(0)] = 16384 * 16384  # refuse anything bigger outright
    max_decode_pixels: Annotated[int, Gt(0)] = 1920 * 1080     # larger frames are decoded downscaled to fit
    # an animation (GIF, APNG, WebP) can only be decoded frame after frame: frames x pixels, all of them
    max_animation_pixels: Annotated[int, Gt(0)] = 2_000_000_000


@dataclass(frozen=True)
class Sampling:
    """Which frames to analyse: `count` spread evenly, `fps` per second, or `every` n-th frame."""

    mode: Literal["count", "fps", "every"] = "count"
    value: Annotated[float, Gt(0)] = 32


@dataclass(frozen=True)
class MediaInfo:
    path: str
    kind: Literal["video", "image"]
    fps: float
    frame_count: int
    duration_s: float
    width: int           # of the decoded (upright, possibly downscaled) frames
    height: int
    source_width: int    # as stored in the file
    source_height: int
    rotation: int        # degrees clockwise applied to make frames upright
    has_audio: bool
    container: str = ""  # a video's description by ffmpeg (its metadata lines: encoder, creation time, ...)


def _no_frames() -> np.ndarray:
    return np.zeros(0, dtype=np.int64)


@dataclass
class FrameBatch:
    """A chunk of decoded frames: RGB uint8, shape (N, H, W, 3), with their indices and times.

    `dropped` lists the sampled frames of this chunk that could not be decoded or came out
    damaged: they are not in `frames`."""

    indices: np.ndarray      # (N,) int64 frame numbers in the source
    timestamps: np.ndarray   # (N,) float64 seconds
    frames: np.ndarray       # (N, H, W, 3) uint8 RGB
    dropped: np.ndarray = field(default_factory=_no_frames)  # (M,) int64 frame numbers left out

    def __len__(self) -> int:
        return len(self.indices)


def sample_indices(frame_count: int, fps: float, sampling: Sampling, max_frames: int) -> np.ndarray:
    """Sorted unique frame indices to analyse, never more than `max_frames`."""
    if frame_count <= 0:
        return np.zeros(0, dtype=np.int64)
    if sampling.mode == "count":
        n = max(1, min(int(sampling.value), frame_count))
        # centre of n equal segments: avoids the often-black first and last frames
        idx = ((np.arange(n) + 0.5) * frame_count / n).astype(np.int64)
    elif sampling.mode == "fps":
        step = max(1.0, (fps or 1.0) / max(sampling.value, 1e-6))
        idx = np.arange(0, frame_count, step).astype(np.int64)
    elif sampling.mode == "every":
        idx = np.arange(0, frame_count, max(1, int(sampling.value)), dtype=np.int64)
    else:
        raise ValueError(f"unknown sampling mode {sampling.mode!r}")
    idx = np.unique(np.clip(idx, 0, frame_count - 1))
    if len(idx) > max_frames:  # thin evenly rather than cutting the end off
        idx = idx[np.linspace(0, len(idx) - 1, max_frames).round().astype(np.int64)]
    return idx


def fit_pixels(width: int, height: int, max_pixels: int) -> tuple[int, int]:
    """Largest even size with the same aspect that has at most `max_pixels`."""
    if width * height <= max_pixels:
        return width, height
    scale = math.sqrt(max_pixels / (width * height))
    return max(2, int(width * scale) // 2 * 2), max(2, int(height * scale) // 2 * 2)


_INTERNALS_RE = [
    re.compile(r"\[\d\d:\d\d:\d\d\]\s*"),                                  # decord's log timestamps
    re.compile(r"\S*\.(?:cc|cpp|cxx|c|h|hpp|py|pyx)(?::\d+)+:?\s*"),        # source files and lines
    re.compile(r"\[[^\]]*@\s*0x[0-9a-fA-F]+\]\s*"),                         # ffmpeg's "[h264 @ 0x55..]"
    re.compile(r"(?:/[\w.+-]+){2,}/?"),                                     # file system paths
    re.compile(r"0x[0-9a-fA-F]{6,}"),                                       # addresses
    re.compile(r"\(?\s*chunk\s+b(['\"]).*?\1\s*\)?"),                      # Python bytes literals
    re.compile(r"\bb(['\"])(?:\\.|(?!\1).)*\1"),
]


def clean_reason(text: str, limit: int = 120) -> str:
    """One line of a library's message without its internals (source files, paths, addresses)."""
    for pattern in _INTERNALS_RE:
        text = pattern.sub("", text)
    text = " ".join(text.split()).strip(" :;,.-")
    return text[:limit]



class MediaReader:
    """Reads sampled frames of one input; construct with `open_media`."""

    def __init__(self, info: MediaInfo, limits: DecodeLimits):
        self.info = info
        self._limits = limits

    # -- frames -------------------------------------------------------------------------
    def sample(self, sampling: Sampling) -> np.ndarray:
        return sample_indices(self.info.frame_count, self.info.fps, sampling, self._limits.max_frames)

    def times(self, indices: np.ndarray) -> np.ndarray:
        """Seconds from the start of each frame in `indices`."""
        fps = self.info.fps
        return (indices / fps if fps > 0 else np.zeros(len(indices))).astype(np.float64)

    def batches(self, indices: np.ndarray, chunk_size: int = 16) -> Iterator[FrameBatch]:
        """Yield the frames at `indices` (sorted) in chunks of at most `chunk_size`; frames that could
        not be decoded or came out damaged are left out and listed in each batch's `dropped`."""
        indices = np.asarray(indices, dtype=np.int64)
        for start in range(0, len(indices), chunk_size):
            chunk = indices[start:start + chunk_size]
            frames, ok = self._read_chunk(chunk)
            kept = chunk[ok]
            yield FrameBatch(indices=kept, timestamps=self.times(kept), frames=frames, dropped=chunk[~ok])

    def read(self, indices: np.ndarray) -> np.ndarray:
        """All frames at `indices` at once (for callers that need a handful of frames); a frame that
        cannot be decoded raises MediaError."""
        return self._read(np.asarray(indices, dtype=np.int64))

    def _read(self, indices: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def _read_chunk(self, chunk: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(frames that decoded cleanly, mask over `chunk` of which those are)."""
        return self._read(chunk), np.ones(len(chunk), dtype=bool)


class StillReader(MediaReader):
    """A photo: the same decoded picture for any frame index."""

    def __init__(self, info: MediaInfo, limits: DecodeLimits, image: np.ndarray):
        super().__init__(info, limits)
        self._image = np.ascontiguousarray(image)

    def _read(self, indices: np.ndarray) -> np.ndarray:
        return np.repeat(self._image[None], len(indices), axis=0)


