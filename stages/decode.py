"""Decode stage: open a video or photo, choose which frames to analyse, read them in chunks.

A photo is a one-frame video, so every later stage sees the same `FrameBatch` either way.
Only the sampled frames are decoded (decord's batched random access), in chunks of
`chunk_size`, so memory depends on the chunk, not on the length of the video.
"""
from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Literal

import cv2
import numpy as np

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".webp", ".bmp"})
VIDEO_SUFFIXES = frozenset({".mp4", ".mov", ".m4v", ".mkv", ".avi", ".webm", ".mpg", ".mpeg", ".wmv", ".flv", ".3gp", ".ts"})
MEDIA_SUFFIXES = IMAGE_SUFFIXES | VIDEO_SUFFIXES


class MediaError(Exception):
    """An input that cannot be analysed; the message is one line meant for the user."""


@dataclass(frozen=True)
class DecodeLimits:
    """Caps that keep one hostile or huge input from exhausting the machine."""

    max_file_bytes: int = 8 * 1024**3
    max_duration_s: float = 4 * 3600.0
    max_frames: int = 2000            # sampled frames per input
    max_source_pixels: int = 16384 * 16384  # refuse anything bigger outright
    max_decode_pixels: int = 1920 * 1080     # larger frames are decoded downscaled to fit


@dataclass(frozen=True)
class Sampling:
    """Which frames to analyse: `count` spread evenly, `fps` per second, or `every` n-th frame."""

    mode: Literal["count", "fps", "every"] = "count"
    value: float = 32


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


@dataclass
class FrameBatch:
    """A chunk of decoded frames: RGB uint8, shape (N, H, W, 3), with their indices and times."""

    indices: np.ndarray      # (N,) int64 frame numbers in the source
    timestamps: np.ndarray   # (N,) float64 seconds
    frames: np.ndarray       # (N, H, W, 3) uint8 RGB

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


def _fit_pixels(width: int, height: int, max_pixels: int) -> tuple[int, int]:
    """Largest even size with the same aspect that has at most `max_pixels`."""
    if width * height <= max_pixels:
        return width, height
    scale = math.sqrt(max_pixels / (width * height))
    return max(2, int(width * scale) // 2 * 2), max(2, int(height * scale) // 2 * 2)


def _ffmpeg_reason(exc: Exception) -> str:
    """The one informative line of ffmpeg's stderr inside an imageio-ffmpeg error."""
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    useful = [ln for ln in lines if re.search(r"(invalid|not found|error|no such|denied|unsupported|could not)", ln, re.I)
              and not ln.startswith(("ffmpeg version", "configuration", "built with", "===", "Error opening input"))]
    reason = useful[-1] if useful else (lines[0] if lines else type(exc).__name__)
    return re.sub(r"^\[[^\]]*\]\s*", "", reason)[:200]


def _probe_video(path: Path) -> dict:
    """Container metadata via the bundled ffmpeg (also catches files decord would choke on)."""
    import imageio_ffmpeg

    try:
        gen = imageio_ffmpeg.read_frames(str(path))
        try:
            meta = next(gen)
        finally:
            gen.close()
    except (OSError, RuntimeError, StopIteration) as exc:
        raise MediaError(f"not a readable video ({_ffmpeg_reason(exc)})") from None
    if not meta.get("source_size") or not meta.get("fps"):
        raise MediaError("not a readable video (no video stream)")
    return meta


_DEMUXER_RE = re.compile(r"^Input #0, (.+?), from ", re.M)
_VIDEO_STREAM_RE = re.compile(r"^\s*Stream #0:\d+.*?: Video: ", re.M)
# ffmpeg 4-6 print "displaymatrix: rotation of -90.00 degrees", ffmpeg 7-9 "Display Matrix: rotation of ..."
_DISPLAY_MATRIX_RE = re.compile(r"display\s*matrix:?\s*rotation of\s*(-?\d+(?:\.\d+)?)\s*degrees", re.I)
_ROTATE_TAG_RE = re.compile(r"^\s*rotate\s*:\s*(-?\d+(?:\.\d+)?)\s*$", re.I | re.M)


def _ffmpeg_header(path: Path, timeout_s: float = 30.0) -> str:
    """The stream description ffmpeg prints for `path` (stderr of `ffmpeg -i`, which exits 1)."""
    import subprocess

    import imageio_ffmpeg

    try:
        proc = subprocess.run([imageio_ffmpeg.get_ffmpeg_exe(), "-hide_banner", "-nostdin", "-i", os.path.abspath(path)],
                              stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                              timeout=timeout_s, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return ""
    return proc.stderr.decode("utf-8", errors="replace")


def _video_rotations(header: str) -> tuple[int, int]:
    """(clockwise turn that makes the stored frames upright, clockwise turn decord 0.6 applies itself).

    Upright is what the bundled ffmpeg (and players) show: only the stream's display matrix counts;
    ffmpeg prints its counter-clockwise angle, so "rotation of -90.00 degrees" is a 90 degree
    clockwise turn. decord 0.6 (FFmpeg 4.1 inside) instead reads a legacy `rotate` tag first (ffmpeg
    9 ignores it) and sees the display matrix only in MP4/MOV; it turns frames only by 90, 180 or
    270 and then scales them to the width/height it was given.
    """
    stream = _VIDEO_STREAM_RE.search(header)
    if stream is None:
        return 0, 0
    block = header[stream.end():]  # this stream's side data and metadata, up to the next stream
    following = re.search(r"^\s*(Stream #|Input #|Output #)", block, re.M)
    block = block[: following.start()] if following else block
    upright = 0
    matrix = _DISPLAY_MATRIX_RE.search(block)
    if matrix:
        cw = -float(matrix.group(1)) % 360.0
        quarter = round(cw / 90.0)
        if abs(cw - 90.0 * quarter) < 1.0:  # other angles are left alone (a player would tilt the picture)
            upright = 90 * quarter % 360
    tag = _ROTATE_TAG_RE.search(block)
    tag_cw = float(tag.group(1)) % 360.0 if tag else 0.0
    demuxer = _DEMUXER_RE.search(header)
    if tag_cw:
        by_decord = int(tag_cw)
    elif matrix and demuxer and demuxer.group(1).split(",")[0] == "mov":
        by_decord = int(-float(matrix.group(1)) % 360.0)
    else:
        by_decord = 0
    return upright, by_decord if by_decord in (90, 180, 270) else 0


class MediaReader:
    """Reads sampled frames of one input; construct with `open_media`."""

    def __init__(self, info: MediaInfo, limits: DecodeLimits, num_threads: int = 0):
        self.info = info
        self._limits = limits
        self._num_threads = num_threads
        self._image: np.ndarray | None = None
        self._video = None
        self._extra_rotation = 0  # clockwise turn still due after decord (which may have turned already)

    # -- frames -------------------------------------------------------------------------
    def sample(self, sampling: Sampling) -> np.ndarray:
        return sample_indices(self.info.frame_count, self.info.fps, sampling, self._limits.max_frames)

    def batches(self, indices: np.ndarray, chunk_size: int = 16) -> Iterator[FrameBatch]:
        """Yield the frames at `indices` (sorted) in chunks of at most `chunk_size`."""
        indices = np.asarray(indices, dtype=np.int64)
        for start in range(0, len(indices), chunk_size):
            chunk = indices[start:start + chunk_size]
            frames = self._read(chunk)
            times = chunk / self.info.fps if self.info.fps > 0 else np.zeros(len(chunk))
            yield FrameBatch(indices=chunk, timestamps=times.astype(np.float64), frames=frames)

    def read(self, indices: np.ndarray) -> np.ndarray:
        """All frames at `indices` at once (for callers that need a handful of frames)."""
        return self._read(np.asarray(indices, dtype=np.int64))

    def _read(self, chunk: np.ndarray) -> np.ndarray:
        if self.info.kind == "image":
            assert self._image is not None
            return np.repeat(self._image[None], len(chunk), axis=0)
        try:
            frames = self._video.get_batch(chunk.tolist()).asnumpy()
            # decord's threaded decoder keeps decoding ahead after get_batch, buffering frames for as
            # long as the caller is busy (dmlc/decord#157, #208): GBs and stolen CPU while MTCNN runs.
            # Seeking to the start stops it (seeking to the next frame does not); the next get_batch
            # seeks to its own frames anyway. Cost: dense reading (every frame) decodes ~4x slower,
            # still faster than detection; memory stays flat (measured in the bench).
            self._video.seek(0)
        except Exception as exc:  # decord raises its own DECORDError for damaged streams
            raise MediaError(f"video stream is damaged near frame {int(chunk[0])} ({str(exc).splitlines()[0][:160]})") from None
        frames = _rotate(frames, self._extra_rotation)
        if frames.shape[1:3] != (self.info.height, self.info.width):
            raise MediaError(f"decoded frames are {frames.shape[2]}x{frames.shape[1]}, expected "
                             f"{self.info.width}x{self.info.height} (rotation metadata read differently)")
        return frames


def _rotate(frames: np.ndarray, degrees: int) -> np.ndarray:
    if degrees % 360 == 0:
        return frames
    # np.rot90 with k>0 turns counter-clockwise; rotation here is clockwise
    return np.ascontiguousarray(np.rot90(frames, k=-(degrees // 90) % 4, axes=(1, 2)))


def _open_image(path: Path, limits: DecodeLimits) -> MediaReader:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:  # reads the header only: size is known before decoding
            w, h = im.size
    except (UnidentifiedImageError, OSError) as exc:
        raise MediaError(f"not a readable image ({type(exc).__name__})") from None
    if w * h > limits.max_source_pixels:
        raise MediaError(f"image is {w}x{h}, over the {limits.max_source_pixels} pixel cap")
    reduce = 1
    while (w // reduce) * (h // reduce) > limits.max_decode_pixels and reduce < 8:
        reduce *= 2
    flag = {1: cv2.IMREAD_COLOR, 2: cv2.IMREAD_REDUCED_COLOR_2, 4: cv2.IMREAD_REDUCED_COLOR_4,
            8: cv2.IMREAD_REDUCED_COLOR_8}[reduce]
    # imdecode from bytes handles non-ASCII paths that cv2.imread cannot open
    bgr = cv2.imdecode(np.fromfile(str(path), dtype=np.uint8), flag)
    if bgr is None:
        raise MediaError("not a readable image (decoder failed)")
    rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
    dw, dh = _fit_pixels(rgb.shape[1], rgb.shape[0], limits.max_decode_pixels)
    if (dw, dh) != (rgb.shape[1], rgb.shape[0]):
        rgb = cv2.resize(rgb, (dw, dh), interpolation=cv2.INTER_AREA)
    info = MediaInfo(path=str(path), kind="image", fps=0.0, frame_count=1, duration_s=0.0,
                     width=rgb.shape[1], height=rgb.shape[0], source_width=w, source_height=h,
                     rotation=0, has_audio=False)
    reader = MediaReader(info, limits)
    reader._image = np.ascontiguousarray(rgb)
    return reader


def _open_video(path: Path, limits: DecodeLimits, num_threads: int) -> MediaReader:
    import decord

    meta = _probe_video(path)
    src_w, src_h = (int(v) for v in meta["source_size"])  # coded size, before any rotation
    if src_w * src_h > limits.max_source_pixels:
        raise MediaError(f"video frame is {src_w}x{src_h}, over the {limits.max_source_pixels} pixel cap")
    duration = float(meta.get("duration") or 0.0)
    if duration > limits.max_duration_s:
        raise MediaError(f"video lasts {duration:.0f} s, over the {limits.max_duration_s:.0f} s cap")
    rotation, by_decord = _video_rotations(_ffmpeg_header(path))
    dec_w, dec_h = _fit_pixels(src_w, src_h, limits.max_decode_pixels)  # coded orientation
    # decord turns first and scales after, so its width/height are in its own output orientation
    out_w, out_h = (dec_h, dec_w) if by_decord in (90, 270) else (dec_w, dec_h)
    try:
        kwargs = {} if (dec_w, dec_h) == (src_w, src_h) else {"width": out_w, "height": out_h}
        video = decord.VideoReader(str(path), ctx=decord.cpu(0), num_threads=num_threads, **kwargs)
        frame_count = len(video)
        fps = float(video.get_avg_fps() or meta["fps"])
    except Exception as exc:
        raise MediaError(f"not a readable video ({str(exc).splitlines()[-1][:160]})") from None
    if frame_count <= 0:
        raise MediaError("video has no frames")
    upright_w, upright_h = (dec_h, dec_w) if rotation in (90, 270) else (dec_w, dec_h)
    info = MediaInfo(path=str(path), kind="video", fps=fps, frame_count=frame_count,
                     duration_s=duration or frame_count / fps, width=upright_w, height=upright_h,
                     source_width=src_w, source_height=src_h, rotation=rotation,
                     has_audio=bool(meta.get("audio_codec")))
    reader = MediaReader(info, limits, num_threads)
    reader._video = video
    reader._extra_rotation = (rotation - by_decord) % 360
    return reader


def open_media(path: str | Path, limits: DecodeLimits = DecodeLimits(), num_threads: int = 0) -> MediaReader:
    """Open a video or photo for sampled reading. Raises `MediaError` with a one-line reason."""
    path = Path(path)
    try:
        size = path.stat().st_size
    except OSError as exc:
        raise MediaError(f"cannot read ({exc.strerror or type(exc).__name__})") from None
    if not path.is_file():
        raise MediaError("not a regular file")
    if size == 0:
        raise MediaError("file is empty (0 bytes)")
    if size > limits.max_file_bytes:
        raise MediaError(f"file is {size} bytes, over the {limits.max_file_bytes} byte cap")
    try:
        with open(path, "rb"):
            pass
    except OSError as exc:
        raise MediaError(f"cannot read ({exc.strerror or type(exc).__name__})") from None
    if path.suffix.lower() in IMAGE_SUFFIXES:
        return _open_image(path, limits)
    return _open_video(path, limits, num_threads)
