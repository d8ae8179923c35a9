"""Decode stage: open a video or photo, choose which frames to analyse, read them in chunks.

A photo is a one-frame video, so every later stage sees the same `FrameBatch` either way.
Only the sampled frames are decoded (decord's batched random access), in chunks of
`chunk_size`, so memory depends on the chunk, not on the length of the video.

What a file is comes from its content (`stages.media_sniff`), not its name:
- photos (JPEG, PNG, WebP, BMP, TIFF, HEIF/HEIC, AVIF) and animations (GIF, animated PNG/WebP/AVIF)
  are read by Pillow (`stages.decode_images`); an animation is a video with the file's own timing;
- everything else goes to ffmpeg for a description of its streams, then to decord for frames.

Every refusal is a `MediaError` subclass with a one-line reason meant for the user, never a
library's internals. A sampled frame that cannot be decoded, or that the decoder reports as
damaged (it conceals the damage and still returns a picture), is left out of its `FrameBatch`
and listed in `FrameBatch.dropped`; the runner counts them. FFmpeg's own messages go to the
debug log (`stages.decoder_log`), not the terminal.
"""
from __future__ import annotations

import logging
import math
import os
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Literal

import numpy as np
from annotated_types import Gt

from stages import decoder_log
from stages.media_sniff import Sniffed, sniff

if TYPE_CHECKING:
    from decord import VideoReader

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


def _fit_pixels(width: int, height: int, max_pixels: int) -> tuple[int, int]:
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


_FFMPEG_GENERIC = ("ffmpeg version", "configuration", "built with", "===", "Error opening input", "Terminating thread",
                   "Task finished", "Error number", "Conversion failed", "Error while filtering", "Nothing was written")


def _ffmpeg_reason(exc: Exception) -> str:
    """The one informative line of ffmpeg's stderr inside an imageio-ffmpeg error ("" if none)."""
    lines = [re.sub(r"^(\[[^\]]*\]\s*)+", "", ln.strip()) for ln in str(exc).splitlines() if ln.strip()]
    useful = [ln for ln in lines if re.search(r"(invalid|not found|error|no such|denied|unsupported|could not)", ln, re.I)
              and not ln.startswith(_FFMPEG_GENERIC)]
    return clean_reason(useful[-1]) if useful else ""


def _probe_video(path: Path) -> dict:
    """Container metadata via the bundled ffmpeg (also catches files decord would choke on)."""
    import imageio_ffmpeg

    # imageio-ffmpeg warns through logging when ffmpeg's rotation changes the frame size (every
    # portrait phone clip): expected here, and not for the user's terminal
    logger = logging.getLogger("imageio_ffmpeg")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        gen = imageio_ffmpeg.read_frames(str(path))
        try:
            meta = next(gen)
        finally:
            gen.close()
    except (OSError, RuntimeError, StopIteration) as exc:
        reason = _ffmpeg_reason(exc)
        if re.search(r"decoder .*not found|unsupported codec|no decoder", reason, re.I):
            raise UnsupportedCodecError(f"unsupported video codec ({reason})") from None
        raise DamagedError("video is damaged: ffmpeg cannot decode it" + (f" ({reason})" if reason else "")) from None
    finally:
        logger.setLevel(level)
    if not meta.get("source_size") or not meta.get("fps"):
        raise NoVideoStreamError("no video stream: nothing to analyse") from None
    return meta


_DEMUXER_RE = re.compile(r"^Input #0, (.+?), from ", re.M)
_VIDEO_STREAM_RE = re.compile(r"^\s*Stream #0:\d+.*?: Video: ", re.M)
_STREAM_RE = re.compile(r"^\s*Stream #0:\d+\S*: (Video|Audio|Subtitle|Data|Attachment): (\S+)(.*)$", re.M)
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


@dataclass(frozen=True)
class _Stream:
    type: str     # Video, Audio, Subtitle, Data, Attachment
    codec: str
    picture: bool  # a cover image (attached picture), not a moving video


def _streams(header: str) -> list[_Stream]:
    return [_Stream(m.group(1), m.group(2).rstrip(","), "(attached pic)" in m.group(3))
            for m in _STREAM_RE.finditer(header)]


def _refuse_unopened(header: str, sniffed: Sniffed) -> MediaError:
    """Why ffmpeg could not open a file at all, as the user should read it."""
    lines = [ln.strip() for ln in header.splitlines() if ln.strip()]
    reason = clean_reason(re.sub(r"^Error opening input files?:\s*", "", lines[-1])) if lines else "ffmpeg gave no reason"
    if sniffed.kind == "unknown":  # ffmpeg guessed a format from the name and failed: not media at all
        return NotMediaError("not a media file: the content is not a known image or video format")
    if "moov atom not found" in header:
        return TruncatedError("video is truncated or incomplete: its index (the MP4 'moov' box) is missing")
    if "Not yet implemented" in reason:
        return UnsupportedCodecError(f"unsupported video format: the {sniffed.format} file uses a feature ffmpeg "
                                     "does not implement")
    return DamagedError(f"video is damaged: the {sniffed.format} container cannot be read ({reason})")


def _iso_missing_bytes(path: Path, size: int, max_boxes: int = 100_000) -> int:
    """For MP4/MOV: how many bytes the top-level boxes claim beyond the end of the file (0: none)."""
    pos = 0
    with open(path, "rb") as fh:
        for _ in range(max_boxes):
            if pos + 8 > size:
                return 0
            fh.seek(pos)
            head = fh.read(16)
            box = int.from_bytes(head[:4], "big")
            if box == 1 and len(head) >= 16:
                box = int.from_bytes(head[8:16], "big")
            if box == 0:      # runs to the end of the file by definition
                return 0
            if box < 8:       # not a box structure: leave the judgement to the decoders
                return 0
            if pos + box > size:
                return pos + box - size
            pos += box
    return 0


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


class _VideoReader(MediaReader):
    """A video through decord, with damaged or undecodable sampled frames found and left out."""

    def __init__(self, info: MediaInfo, limits: DecodeLimits, video: VideoReader, extra_rotation: int,
                 reopen: Callable[[], VideoReader]):
        super().__init__(info, limits)
        self._video = video
        self._extra_rotation = extra_rotation  # clockwise turn still due after decord (which may have turned already)
        self._reopen = reopen                  # the same video through a single-threaded decoder
        self._careful: VideoReader | None = None
        self._keyframes: np.ndarray | None = None
        self._last_wanted = 0
        self._damage: np.ndarray | None = None  # per frame: damaged (ffmpeg's map), once errors were seen
        self._no_damage_map = False
        self._starts: np.ndarray | None = None  # per frame: start time in seconds (decord's), with the map

    def _finish(self, frames: np.ndarray) -> np.ndarray:
        frames = _rotate(frames, self._extra_rotation)
        if frames.shape[1:3] != (self.info.height, self.info.width):
            raise DamagedError(f"decoded frames are {frames.shape[2]}x{frames.shape[1]}, expected "
                               f"{self.info.width}x{self.info.height} (rotation metadata read differently)")
        return frames

    @staticmethod
    def _rewind(video: VideoReader) -> None:
        # decord's threaded decoder keeps decoding ahead after get_batch, buffering frames for as
        # long as the caller is busy (dmlc/decord#157, #208): GBs and stolen CPU while MTCNN runs.
        # Seeking to the start stops it (seeking to the next frame does not); the next get_batch
        # seeks to its own frames anyway. Cost: dense reading (every frame) decodes ~4x slower,
        # still faster than detection; memory stays flat (measured in the bench).
        try:
            video.seek(0)
        except Exception:  # decord's DECORDError on a damaged start: the next read seeks anyway
            pass

    def _read(self, indices: np.ndarray) -> np.ndarray:
        try:
            frames = self._video.get_batch(indices.tolist()).asnumpy()
        except Exception:  # decord raises its own DECORDError for damaged streams
            raise DamagedError(f"video stream is damaged near frame {int(indices[0]) if len(indices) else 0} "
                               "(the decoder cannot read it)") from None
        finally:
            self._rewind(self._video)
        return self._finish(frames)

    def batches(self, indices: np.ndarray, chunk_size: int = 16) -> Iterator[FrameBatch]:
        indices = np.asarray(indices, dtype=np.int64)
        self._last_wanted = int(indices.max()) if len(indices) else 0
        yield from super().batches(indices, chunk_size)

    def _read_chunk(self, chunk: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        if self._damage is not None and int(chunk.max()) < len(self._damage):
            return self._read_around_damage(chunk)
        before = decoder_log.errors()
        try:
            frames = self._video.get_batch(chunk.tolist()).asnumpy()
        except Exception:  # one bad frame fails the whole batch: find which
            frames = None
        self._rewind(self._video)
        if frames is not None and decoder_log.errors() == before:
            return self._finish(frames), np.ones(len(chunk), dtype=bool)
        if not self._no_damage_map:  # the decoder complained: ask ffmpeg which frames (once per read-through)
            self._damage = self._map_damage(max(self._last_wanted, int(chunk.max())))
            self._no_damage_map = self._damage is None
            if self._damage is not None:
                return self._read_around_damage(chunk)
        return self._read_one_by_one(chunk)

    def _map_damage(self, last: int) -> np.ndarray | None:
        from stages.video_damage import damaged_frames

        try:
            self._starts = np.asarray(self._video.get_frame_timestamp(range(len(self._video))), dtype=np.float64)[:, 0]
        except Exception:
            return None
        return damaged_frames(Path(self.info.path), self._starts, self._gop_starts(), last, self._ffmpeg_timeout_s())

    def _ffmpeg_timeout_s(self) -> float:
        return 120.0 + self.info.duration_s / 4  # decoding runs several times faster than real time

    def _read_around_damage(self, chunk: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Frames ffmpeg found damaged are left out unread; the others are read by decord, or, where
        decord fails on them, by ffmpeg, and any neither can decode are left out too."""
        assert self._damage is not None
        damage = self._damage
        ok = np.array([i < len(damage) and not damage[i] for i in chunk.tolist()], dtype=bool)
        wanted = chunk[ok]
        if not len(wanted):
            return np.zeros((0, self.info.height, self.info.width, 3), dtype=np.uint8), ok
        try:
            frames = self._video.get_batch(wanted.tolist()).asnumpy()
            self._rewind(self._video)
            return self._finish(frames), ok
        except Exception:  # it decoded ahead into the damage: ffmpeg decodes the clean frames in order
            self._rewind(self._video)
        from stages.video_damage import clean_frames

        assert self._starts is not None  # set with the damage map
        decoded = clean_frames(Path(self.info.path), self._starts, wanted, self.info.width, self.info.height,
                               self._ffmpeg_timeout_s())
        ok &= np.array([int(i) in decoded for i in chunk.tolist()], dtype=bool)
        if not ok.any():
            return np.zeros((0, self.info.height, self.info.width, 3), dtype=np.uint8), ok
        return np.stack([decoded[int(i)] for i in chunk[ok].tolist()]), ok  # upright already: ffmpeg turns it

    def _gop_starts(self) -> np.ndarray:
        if self._keyframes is None:
            try:
                keys = np.asarray(self._video.get_key_indices(), dtype=np.int64)
            except Exception:
                keys = np.zeros(0, dtype=np.int64)
            self._keyframes = np.unique(np.concatenate([[0], keys]))
        return self._keyframes

    def _read_one_by_one(self, chunk: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Where ffmpeg could not map the damage: read a chunk that logged decoder errors again, one
        frame at a time, to find the damaged ones (approximate: decord still reads a little ahead).

        Each frame is decoded on its own (from its keyframe, then rewound) by a single-threaded
        decoder, so every error logged meanwhile belongs to that frame or the pictures it is built
        on; the multi-threaded one decodes ahead and would blame the wrong frames. A picture after
        damage in its group of pictures (keyframe to keyframe) is built on damaged references, so
        the rest of that group counts as damaged too and is not decoded at all."""
        if self._careful is None:
            try:
                self._careful = self._reopen()
            except Exception:  # it opened a moment ago: should it not now, nothing here can be trusted
                return np.zeros((0, self.info.height, self.info.width, 3), dtype=np.uint8), np.zeros(len(chunk), bool)
        video = self._careful
        decoder_log.settle()  # the threaded decoder's last messages, still arriving, are not these frames'
        gops = np.searchsorted(self._gop_starts(), chunk, side="right") - 1
        ok = np.zeros(len(chunk), dtype=bool)
        frames: list[np.ndarray] = []
        damaged_gop = -1
        for k, (index, gop) in enumerate(zip(chunk.tolist(), gops.tolist())):
            if gop == damaged_gop:
                continue
            mark = decoder_log.errors()
            try:
                frame = video.get_batch([index]).asnumpy()
                clean = decoder_log.errors() == mark
            except Exception:
                clean = False
            self._rewind(video)
            decoder_log.settle()
            if not clean:
                damaged_gop = gop
                continue
            frames.append(frame[0])
            ok[k] = True
        if not frames:
            return np.zeros((0, self.info.height, self.info.width, 3), dtype=np.uint8), ok
        return self._finish(np.stack(frames)), ok


def _rotate(frames: np.ndarray, degrees: int) -> np.ndarray:
    if degrees % 360 == 0:
        return frames
    # np.rot90 with k>0 turns counter-clockwise; rotation here is clockwise
    return np.ascontiguousarray(np.rot90(frames, k=-(degrees // 90) % 4, axes=(1, 2)))


def _open_video(path: Path, limits: DecodeLimits, num_threads: int, sniffed: Sniffed, size: int) -> MediaReader:
    if sniffed.format in ("MP4", "QuickTime"):
        missing = _iso_missing_bytes(path, size)
        if missing > size:  # more than the whole file again: a damaged size field, not a cut
            raise DamagedError(f"video is damaged: its MP4 structure claims {missing} bytes past the end of the file")
        if missing:
            raise TruncatedError(f"video is truncated: at least {_bytes(missing)} missing from the end of the file")
    header = _ffmpeg_header(path)
    if not _DEMUXER_RE.search(header):
        raise _refuse_unopened(header, sniffed)
    streams = _streams(header)
    videos = [s for s in streams if s.type == "Video" and not s.picture]
    if not videos:
        if any(s.type == "Audio" for s in streams):
            raise NoVideoStreamError(AUDIO_ONLY)
        raise NoVideoStreamError("no video stream: nothing to analyse")
    codec = videos[0].codec
    if codec in ("none", "unknown"):
        raise UnsupportedCodecError("unsupported video codec (unknown to ffmpeg)")
    meta = _probe_video(path)
    src_w, src_h = (int(v) for v in meta["source_size"])  # coded size, before any rotation
    if src_w * src_h > limits.max_source_pixels:
        raise OverCapError(f"video frame is {src_w}x{src_h}, over the {limits.max_source_pixels} pixel cap")
    duration = float(meta.get("duration") or 0.0)
    if duration > limits.max_duration_s:
        raise OverCapError(f"video lasts {duration:.0f} s, over the {limits.max_duration_s:.0f} s cap")
    rotation, by_decord = _video_rotations(header)
    dec_w, dec_h = _fit_pixels(src_w, src_h, limits.max_decode_pixels)  # coded orientation
    # decord turns first and scales after, so its width/height are in its own output orientation
    out_w, out_h = (dec_h, dec_w) if by_decord in (90, 270) else (dec_w, dec_h)
    import decord

    decoder_log.install()  # before the first decord call: its FFmpeg messages go to the debug log
    errors_before = decoder_log.errors()
    try:
        kwargs = {} if (dec_w, dec_h) == (src_w, src_h) else {"width": out_w, "height": out_h}
        with decoder_log.stderr_to_log("decord"):
            video = decord.VideoReader(str(path), ctx=decord.cpu(0), num_threads=num_threads, **kwargs)
        frame_count = len(video)
        fps = float(video.get_avg_fps() or meta["fps"])
    except Exception as exc:
        text = str(exc)
        if "-1128613112" in text or "cannot find video stream" in text:  # AVERROR_DECODER_NOT_FOUND
            raise UnsupportedCodecError(f"unsupported video codec: {codec} (re-encode it as H.264, HEVC or VP9 "
                                        "to analyse it)") from None
        if "Cannot allocate memory" in text:
            raise DamagedError("video is damaged: its index asks for more memory than there is") from None
        if "partial file" in decoder_log.last_error() and decoder_log.errors() != errors_before:
            raise TruncatedError("video is truncated: its data ends before the frames it lists") from None
        raise DamagedError("video is damaged: the frame decoder cannot open it") from None
    if frame_count <= 0:
        raise EmptyMediaError("video has no frames")
    upright_w, upright_h = (dec_h, dec_w) if rotation in (90, 270) else (dec_w, dec_h)
    info = MediaInfo(path=str(path), kind="video", fps=fps, frame_count=frame_count,
                     duration_s=duration or frame_count / fps, width=upright_w, height=upright_h,
                     source_width=src_w, source_height=src_h, rotation=rotation,
                     has_audio=any(s.type == "Audio" for s in streams) or bool(meta.get("audio_codec")))
    def reopen() -> VideoReader:
        with decoder_log.stderr_to_log("decord"):
            return decord.VideoReader(str(path), ctx=decord.cpu(0), num_threads=1, **kwargs)

    return _VideoReader(info, limits, video, (rotation - by_decord) % 360, reopen)


def _bytes(n: int) -> str:
    return f"{n} byte" if n == 1 else f"{n} bytes"


def _describe_not_media(path: Path, sniffed: Sniffed) -> MediaError:
    if sniffed.kind == "audio":
        return NoVideoStreamError(AUDIO_ONLY)
    with open(path, "rb") as fh:
        head = fh.read(512).lstrip().lower()
    if b"<svg" in head:
        return NotMediaError("not a media file: an SVG drawing (vector graphics) has no pixels to analyse")
    return NotMediaError("not a media file: the content is text")


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
        raise EmptyMediaError("file is empty (0 bytes)")
    if size > limits.max_file_bytes:
        raise OverCapError(f"file is {size} bytes, over the {limits.max_file_bytes} byte cap")
    try:
        sniffed = sniff(path)
    except OSError as exc:
        raise MediaError(f"cannot read ({exc.strerror or type(exc).__name__})") from None
    if sniffed.kind == "image":
        from stages.decode_images import open_image

        return open_image(path, limits, sniffed)
    if size < MIN_MEDIA_BYTES and sniffed.kind in ("text", "unknown"):
        raise NotMediaError(f"not a media file: {_bytes(size)} is too small for an image or video")
    if sniffed.kind in ("text", "audio"):
        raise _describe_not_media(path, sniffed)
    return _open_video(path, limits, num_threads, sniffed, size)
