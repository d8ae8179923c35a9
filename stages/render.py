"""Render stage: stream every frame of the source, draw the analysis on it, and encode it.

Only some frames were analysed, so each track's box is interpolated between its analysed frames
(`TrackPath`). ffmpeg decodes the source in its own process, applying the rotation metadata and
the output scale; frames go one at a time through the drawing code (`stages.draw`) into the
encoder (`stages.video_writer`), which muxes the original audio back in. Memory stays flat
whatever the video's length.
"""
from __future__ import annotations

import bisect
import logging
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import imageio_ffmpeg
import numpy as np

from deepfake_detect.stages.draw import Banner, FaceSample, OverlayStyle, Timeline, draw_banner, draw_face, face_label
from deepfake_detect.stages.video_writer import FrameEncoder, ffmpeg_exe

# FrameEncoder and ffmpeg_exe live in stages.video_writer; pipeline/core/samples.py and pipeline/bench/run.py
# still import them from here.
__all__ = ["FrameEncoder", "RenderStats", "TrackPath", "ffmpeg_exe", "render_annotated_video"]


@dataclass
class RenderStats:
    path: Path
    frames: int
    seconds: float

    @property
    def fps(self) -> float:
        return self.frames / self.seconds if self.seconds > 0 else 0.0


class TrackPath:
    """Where one track's box is on any frame: interpolated between analysed frames, held near the
    ends, absent across gaps longer than `max_gap_frames`; the heatmap is the nearest sample's."""

    def __init__(self, samples: Sequence[FaceSample], max_gap_frames: float) -> None:
        self.samples = sorted(samples, key=lambda s: s.frame_index)
        self.idx = [s.frame_index for s in self.samples]
        self.max_gap = max(1.0, max_gap_frames)

    def at(self, frame_index: int) -> FaceSample | None:
        j = bisect.bisect_right(self.idx, frame_index)
        prev = self.samples[j - 1] if j > 0 else None
        nxt = self.samples[j] if j < len(self.samples) else None
        if prev is not None and prev.frame_index == frame_index:
            return prev
        if prev is not None and nxt is not None and nxt.frame_index - prev.frame_index <= self.max_gap:
            t = (frame_index - prev.frame_index) / (nxt.frame_index - prev.frame_index)
            return FaceSample(frame_index, (1 - t) * np.asarray(prev.box) + t * np.asarray(nxt.box),
                              (1 - t) * prev.score + t * nxt.score, (prev if t < 0.5 else nxt).heatmap)
        near = min((s for s in (prev, nxt) if s is not None), key=lambda s: abs(s.frame_index - frame_index),
                   default=None)
        if near is not None and abs(near.frame_index - frame_index) <= self.max_gap / 2:
            return near  # held: near the ends, or beside a gap too long to bridge
        return None


def _even(v: float) -> int:
    return max(2, int(round(v)) // 2 * 2)  # yuv420p needs even sizes


@contextmanager
def _quiet_imageio() -> Iterator[None]:
    """imageio-ffmpeg warns whenever the output size differs from the coded size: here that is intended."""
    logger = logging.getLogger("imageio_ffmpeg")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


def _upright_size(source: str | Path) -> tuple[int, int]:
    """Frame size after ffmpeg applies the rotation metadata (what a player shows)."""
    frames = imageio_ffmpeg.read_frames(str(source))
    try:
        with _quiet_imageio():
            width, height = (int(v) for v in next(frames)["size"])
            return width, height
    finally:
        frames.close()


def render_annotated_video(source: str | Path, out_path: str | Path, *, fps: float, frame_count: int,
                           width: int, height: int, has_audio: bool, tracks: dict[int, Sequence[FaceSample]],
                           banner: Banner, analysed: Sequence[int], style: OverlayStyle = OverlayStyle(),
                           scale: float = 1.0) -> RenderStats:
    """Stream every frame of `source`, annotate it, and encode it with the source's audio.

    `width` x `height` are the size of the frames the boxes refer to (as the decode stage gave
    them: upright, possibly downscaled); the output is that size times `scale`. ffmpeg decodes,
    applies the rotation metadata and scales in its own process, and `-fps_mode passthrough`
    keeps its frames one-to-one with the analysed frame indices.
    """
    started = time.perf_counter()
    upright = _upright_size(source)
    if (upright[0] > upright[1]) != (width > height) and upright[0] != upright[1] and width != height:
        raise ValueError(f"ffmpeg shows {Path(source).name} as {upright[0]}x{upright[1]} but the analysis saw "
                         f"{width}x{height} frames: rotation metadata read differently; not rendering")
    out_w, out_h = _even(width * scale), _even(height * scale)
    sx, sy = out_w / width, out_h / height
    to_out = np.array([sx, sy, sx, sy])
    paths = {tid: TrackPath([FaceSample(s.frame_index, np.asarray(s.box, np.float64) * to_out, s.score, s.heatmap)
                             for s in samples], style.max_gap_s * fps)
             for tid, samples in tracks.items()}
    per_frame: dict[int, float] = {}  # the timeline shows the highest face score of each analysed frame
    for samples in tracks.values():
        for s in samples:
            per_frame[s.frame_index] = max(per_frame.get(s.frame_index, 0.0), s.score)
    timeline = Timeline(out_w, out_h, frame_count, sorted(per_frame.items()), analysed, style.threshold)
    frames = imageio_ffmpeg.read_frames(str(source), output_params=["-vf", f"scale={out_w}:{out_h}",
                                                                    "-fps_mode", "passthrough"])
    written = 0
    try:
        with _quiet_imageio():
            next(frames)  # metadata
        with FrameEncoder(out_path, out_w, out_h, fps, audio_from=source if has_audio else None,
                          shortest=False) as encoder:
            for i, raw in enumerate(frames):
                frame = np.frombuffer(raw, np.uint8).reshape(out_h, out_w, 3).copy()  # writable for cv2
                for tid, path in paths.items():
                    face = path.at(i)
                    if face is not None:
                        draw_face(frame, face.box, face.score, face_label(tid, face.score), face.heatmap, style)
                draw_banner(frame, banner)
                timeline.draw(frame, i)
                encoder.write(frame)
                written += 1
    finally:
        frames.close()
    return RenderStats(Path(out_path), written, time.perf_counter() - started)
