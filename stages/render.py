"""Render stage: draw the analysis onto frames and write H.264 mp4 through the bundled ffmpeg.

Frames are piped raw to ffmpeg one at a time, so memory does not depend on the video's length.
The annotated video streams every frame of the source (not only the analysed ones) through a
second ffmpeg process that also rotates and scales them, draws with cv2, and muxes the original
audio back in.
"""
from __future__ import annotations

import bisect
import logging
import subprocess
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, Sequence

import cv2
import ffmpeg
import imageio_ffmpeg
import numpy as np



def ffmpeg_exe() -> str:
    """The static ffmpeg inside the imageio-ffmpeg wheel (with libx264 and aac): no system ffmpeg."""
    return imageio_ffmpeg.get_ffmpeg_exe()


class FrameEncoder:
    """Context manager: `write(frame)` RGB uint8 frames of one size; mux audio from `audio_from`.

    ffmpeg-python builds the argument list, so paths are never interpreted by a shell.
    """

    def __init__(self, path: str | Path, width: int, height: int, fps: float,
                 audio_from: str | Path | None = None, audio_lavfi: str | None = None, crf: int = 23,
                 shortest: bool = True):
        self.path = Path(path)
        self.size = (width, height)
        video = ffmpeg.input("pipe:", format="rawvideo", pix_fmt="rgb24", s=f"{width}x{height}", framerate=fps)
        streams = [video]
        if audio_from is not None:
            streams.append(ffmpeg.input(str(audio_from)).audio)
        elif audio_lavfi is not None:
            streams.append(ffmpeg.input(audio_lavfi, f="lavfi").audio)
        has_audio = len(streams) > 1
        # `shortest` suits a generated tone; a re-muxed original keeps its own lengths instead
        audio_args = {"acodec": "aac", **({"shortest": None} if shortest else {})} if has_audio else {}
        out = ffmpeg.output(*streams, str(self.path), vcodec="libx264", pix_fmt="yuv420p", crf=crf,
                            preset="veryfast", movflags="+faststart", **audio_args)
        args = out.overwrite_output().global_args("-loglevel", "error", "-nostdin").compile(cmd=ffmpeg_exe())
        self._proc = subprocess.Popen(args, stdin=subprocess.PIPE, stderr=subprocess.PIPE)
        self.frames_written = 0

    def write(self, frame: np.ndarray) -> None:
        if frame.shape[1::-1] != self.size:
            raise ValueError(f"frame is {frame.shape[1]}x{frame.shape[0]}, encoder expects {self.size[0]}x{self.size[1]}")
        self._proc.stdin.write(np.ascontiguousarray(frame, dtype=np.uint8).tobytes())
        self.frames_written += 1

    def close(self) -> None:
        if self._proc.stdin and not self._proc.stdin.closed:
            self._proc.stdin.close()
        stderr = self._proc.stderr.read().decode(errors="replace") if self._proc.stderr else ""
        if self._proc.wait() != 0:
            raise RuntimeError(f"ffmpeg failed writing {self.path.name}: {stderr.strip().splitlines()[-1:] or '?'}")

    def __enter__(self) -> "FrameEncoder":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self._proc.kill()
            self._proc.wait()


# -- drawing ------------------------------------------------------------------------------------

VERDICT_COLOURS = {"fake": (230, 40, 40), "real": (40, 200, 70), "inconclusive": (245, 170, 30),
                   "no_face": (200, 200, 200), "error": (200, 200, 200)}
_FONT = cv2.FONT_HERSHEY_SIMPLEX


@dataclass(frozen=True)
class OverlayStyle:
    crop_margin: float = 0.3      # the classifier's crop margin: heatmaps live in that square
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


@dataclass
class RenderStats:
    path: Path
    frames: int
    seconds: float

    @property
    def fps(self) -> float:
        return self.frames / self.seconds if self.seconds > 0 else 0.0


def score_colour(score: float) -> tuple[int, int, int]:
    """RGB from green (0, real) through yellow to red (1, fake)."""
    hue = int(round(60 * (1.0 - float(np.clip(score, 0, 1)))))  # OpenCV hue: 0 red, 60 green
    rgb = cv2.cvtColor(np.uint8([[[hue, 230, 240]]]), cv2.COLOR_HSV2RGB)[0, 0]
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
    (tw, th), base = cv2.getTextSize(banner.text, _FONT, scale, thickness)
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
    heat = heatmap.astype(np.float32) / (255.0 if heatmap.dtype == np.uint8 else 1.0)
    heat = cv2.resize(heat, (side, y2 - y1), interpolation=cv2.INTER_LINEAR)[fy1 - y1:fy2 - y1, fx1 - x1:fx2 - x1]
    colour = cv2.applyColorMap(np.uint8(np.clip(heat, 0, 1) * 255), cv2.COLORMAP_JET)[..., ::-1]
    a = (alpha * np.clip(heat, 0, 1))[..., None]
    region = frame[fy1:fy2, fx1:fx2]
    frame[fy1:fy2, fx1:fx2] = (region * (1 - a) + colour * a).astype(np.uint8)


def draw_face(frame: np.ndarray, box: np.ndarray, score: float, label: str, heatmap: np.ndarray | None,
              style: OverlayStyle) -> None:
    """Heatmap over the face's crop square, the box, and its label coloured by score."""
    from stages.detect import square_crop_box  # lazy: stages.detect loads torch, which encoding alone never needs

    if heatmap is not None:
        blend_heatmap(frame, heatmap, square_crop_box(np.asarray(box, np.float64), style.crop_margin),
                      style.heatmap_alpha)
    colour = score_colour(score)
    scale, thickness = _font(frame.shape[0])
    x1, y1, x2, y2 = (int(round(v)) for v in box)
    cv2.rectangle(frame, (x1, y1), (x2, y2), colour, thickness + 1, cv2.LINE_AA)
    th = cv2.getTextSize(label, _FONT, scale, thickness)[0][1]
    above = y1 - th - 2 * max(2, th // 4) - 6
    _label(frame, label, (x1, above if above >= 0 else y2 + 2), colour, scale, thickness)


def face_label(track_id: int, score: float) -> str:
    return f"#{track_id} p(fake) {score:.2f}"  # a score, not a verdict: the colour and banner say that


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
    from stages.explain import overlay_heatmap  # lazy: pytorch-grad-cam is heavy for encode-only users

    tiles = [_caption(crop, "face crop", 22)]
    for name, heat, s in zip(member_names, member_maps, member_scores):
        tiles.append(_caption(overlay_heatmap(crop, heat, alpha), f"{name} {s:.2f}", 22))
    tiles.append(_caption(overlay_heatmap(crop, ensemble_map, alpha), f"ensemble {score:.2f}", 22))
    gap = np.full((tiles[0].shape[0], 4, 3), 255, np.uint8)
    return np.concatenate([t for tile in tiles for t in (tile, gap)][:-1], axis=1)


class Timeline:
    """Score of every analysed frame across the whole video, drawn once; per frame only the marker moves."""

    def __init__(self, width: int, height: int, frame_count: int, samples: Sequence[tuple[int, float]],
                 analysed: Sequence[int], threshold: float):
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


class TrackPath:
    """Where one track's box is on any frame: interpolated between analysed frames, held near the
    ends, absent across gaps longer than `max_gap_frames`; the heatmap is the nearest sample's."""

    def __init__(self, samples: Sequence[FaceSample], max_gap_frames: float):
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
            return tuple(int(v) for v in next(frames)["size"])
    finally:
        frames.close()


def render_annotated_video(source: str | Path, out_path: str | Path, *, fps: float, frame_count: int,
                           width: int, height: int, has_audio: bool, tracks: dict[int, Sequence[FaceSample]],
                           banner: Banner, analysed: Sequence[int], style: OverlayStyle = OverlayStyle(),
                           scale: float = 1.0, progress: Callable[[int], None] | None = None) -> RenderStats:
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
    per_frame: dict[int, float] = {}
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
                frame = np.frombuffer(raw, np.uint8).reshape(out_h, out_w, 3).copy()
                for tid, path in paths.items():
                    face = path.at(i)
                    if face is not None:
                        draw_face(frame, face.box, face.score, face_label(tid, face.score), face.heatmap, style)
                draw_banner(frame, banner)
                timeline.draw(frame, i)
                encoder.write(frame)
                written += 1
                if progress:
                    progress(1)
    finally:
        frames.close()
    return RenderStats(Path(out_path), written, time.perf_counter() - started)
