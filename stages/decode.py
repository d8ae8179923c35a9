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

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from deepfake_detect.stages import decoder_log
from deepfake_detect.stages.media import (
    ANIMATION_SUFFIXES,
    AUDIO_ONLY,
    IMAGE_SUFFIXES,
    MEDIA_SUFFIXES,
    MIN_MEDIA_BYTES,
    VIDEO_SUFFIXES,
    DamagedError,
    DecodeLimits,
    EmptyMediaError,
    FrameBatch,
    MediaError,
    MediaInfo,
    MediaReader,
    NotMediaError,
    NoVideoStreamError,
    OverCapError,
    Sampling,
    StillReader,
    TruncatedError,
    UnsupportedCodecError,
    clean_reason,
    fit_pixels,
    sample_indices,
)
from deepfake_detect.stages.media_sniff import Sniffed, sniff
from deepfake_detect.stages.video_probe import (
    DEMUXER_RE,
    ffmpeg_header,
    iso_missing_bytes,
    probe_video,
    refuse_unopened,
    stream_list,
    video_rotations,
)

# the stage's interface: open_media, and what it hands on and refuses with (stages.media)
__all__ = [
    "open_media",
    "AUDIO_ONLY",
    "ANIMATION_SUFFIXES",
    "IMAGE_SUFFIXES",
    "MEDIA_SUFFIXES",
    "MIN_MEDIA_BYTES",
    "VIDEO_SUFFIXES",
    "DamagedError",
    "DecodeLimits",
    "EmptyMediaError",
    "FrameBatch",
    "MediaError",
    "MediaInfo",
    "MediaReader",
    "NoVideoStreamError",
    "NotMediaError",
    "OverCapError",
    "Sampling",
    "StillReader",
    "TruncatedError",
    "UnsupportedCodecError",
    "clean_reason",
    "fit_pixels",
    "sample_indices",
]

if TYPE_CHECKING:
    from decord import VideoReader


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
        from deepfake_detect.stages.video_damage import damaged_frames

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
        from deepfake_detect.stages.video_damage import clean_frames

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
        missing = iso_missing_bytes(path, size)
        if missing > size:  # more than the whole file again: a damaged size field, not a cut
            raise DamagedError(f"video is damaged: its MP4 structure claims {missing} bytes past the end of the file")
        if missing:
            raise TruncatedError(f"video is truncated: at least {_bytes(missing)} missing from the end of the file")
    header = ffmpeg_header(path)
    if not DEMUXER_RE.search(header):
        raise refuse_unopened(header, sniffed)
    streams = stream_list(header)
    videos = [s for s in streams if s.type == "Video" and not s.picture]
    if not videos:
        if any(s.type == "Audio" for s in streams):
            raise NoVideoStreamError(AUDIO_ONLY)
        raise NoVideoStreamError("no video stream: nothing to analyse")
    codec = videos[0].codec
    if codec in ("none", "unknown"):
        raise UnsupportedCodecError("unsupported video codec (unknown to ffmpeg)")
    meta = probe_video(path)
    src_w, src_h = (int(v) for v in meta["source_size"])  # coded size, before any rotation
    if src_w * src_h > limits.max_source_pixels:
        raise OverCapError(f"video frame is {src_w}x{src_h}, over the {limits.max_source_pixels} pixel cap")
    duration = float(meta.get("duration") or 0.0)
    if duration > limits.max_duration_s:
        raise OverCapError(f"video lasts {duration:.0f} s, over the {limits.max_duration_s:.0f} s cap")
    rotation, by_decord = video_rotations(header)
    dec_w, dec_h = fit_pixels(src_w, src_h, limits.max_decode_pixels)  # coded orientation
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
                     has_audio=any(s.type == "Audio" for s in streams) or bool(meta.get("audio_codec")),
                     container=header)
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
        from deepfake_detect.stages.decode_images import open_image

        return open_image(path, limits, sniffed)
    if size < MIN_MEDIA_BYTES and sniffed.kind in ("text", "unknown"):
        raise NotMediaError(f"not a media file: {_bytes(size)} is too small for an image or video")
    if sniffed.kind in ("text", "audio"):
        raise _describe_not_media(path, sniffed)
    return _open_video(path, limits, num_threads, sniffed, size)
