"""Output writers that run after the verdict: keyframe images and the annotated video (or photo).

Both re-read only the frames they need from the input (`context.reader.read`), cut the faces the
way the classifier saw them, and explain them with Grad-CAM. The Explainer is built once per
Analyzer and shared by the writers.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import cv2
import numpy as np

from pipeline.config import RenderSettings
from pipeline.runner import AnalysisContext, Analyzer, OutputWriter
from pipeline.writers import output_stem
from stages.aggregate import FaceScore
from stages.detect import crop_face
from stages.explain import Explainer, Explanation
from stages.render import (Banner, FaceSample, OverlayStyle, RenderStats, annotate_image, heatmap_strip,
                           render_annotated_video, verdict_banner)

HEATMAP_STORE_SIZE = 64  # maps come from a 7x7 grid: 64 px uint8 keeps them exact at 1/12 the memory


def write_png(path: Path, rgb: np.ndarray) -> None:
    """PNG via imencode + write_bytes, which (unlike cv2.imwrite) handles any path."""
    path.parent.mkdir(parents=True, exist_ok=True)
    ok, buf = cv2.imencode(".png", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    if not ok:
        raise RuntimeError(f"cannot encode {path.name}")
    path.write_bytes(buf.tobytes())


class ExplainerCache:
    """One Explainer per Analyzer (the model is loaded once; so is its Grad-CAM wrapper)."""

    def __init__(self) -> None:
        self._analyzer: Analyzer | None = None
        self._explainer: Explainer | None = None

    def get(self, analyzer: Analyzer) -> Explainer:
        if self._analyzer is not analyzer or self._explainer is None:
            self._explainer = Explainer(analyzer.model, analyzer.device, batch_size=min(analyzer.config.batch_size, 32))
            self._analyzer = analyzer
        return self._explainer


@dataclass
class ExplainedFace:
    face: FaceScore
    crop: np.ndarray          # (S, S, 3) uint8
    members: np.ndarray       # (M, S, S) float
    ensemble: np.ndarray      # (S, S) float
    frame: np.ndarray | None  # the full frame, only when asked for


def explain_faces(context: AnalysisContext, explainer: Explainer, faces: list[FaceScore],
                  keep_frames: bool = False, chunk_frames: int = 16) -> Iterator[ExplainedFace]:
    """Re-read the frames of `faces` a chunk at a time, crop as the classifier did, and explain.

    Only one chunk of frames and crops is alive at a time, so memory does not grow with the video.
    """
    detect = context.analyzer.face_detector.settings  # the margin actually used, resolved from the detector
    by_frame: dict[int, list[FaceScore]] = {}
    for face in faces:
        by_frame.setdefault(face.frame_index, []).append(face)
    order = sorted(by_frame)
    for start in range(0, len(order), chunk_frames):
        indices = order[start:start + chunk_frames]
        frames = context.reader.read(np.asarray(indices))
        pairs = [(frame, face) for idx, frame in zip(indices, frames) for face in by_frame[idx]]
        crops = np.stack([crop_face(frame, np.asarray(face.box, np.float32), detect.crop_margin, detect.crop_size)
                          for frame, face in pairs])
        maps: Explanation = explainer.explain(crops)
        for k, (frame, face) in enumerate(pairs):
            yield ExplainedFace(face, crops[k], maps.members[k], maps.ensemble[k], frame if keep_frames else None)


def _style(context: AnalysisContext, settings: RenderSettings) -> OverlayStyle:
    return OverlayStyle(crop_margin=context.analyzer.face_detector.settings.crop_margin, heatmap_alpha=settings.heatmap_alpha,
                        threshold=float(context.report.threshold if context.report.threshold is not None else 0.5))


def _banner(context: AnalysisContext) -> Banner:
    r = context.report
    return verdict_banner(r.verdict, r.score, r.fake_percentage)


def _all_faces(context: AnalysisContext) -> list[FaceScore]:
    return [f for track in context.report.tracks for f in track.faces]


def _small_map(heatmap: np.ndarray) -> np.ndarray:
    small = cv2.resize(heatmap, (HEATMAP_STORE_SIZE, HEATMAP_STORE_SIZE), interpolation=cv2.INTER_AREA)
    return np.uint8(np.clip(small, 0, 1) * 255)


class KeyframeImageWriter:
    """Per keyframe: the frame with boxes, heatmaps and scores, plus a crop | members | ensemble
    strip per face. With `explain_all_frames`, the same for every analysed frame with a face."""

    def __init__(self, settings: RenderSettings, explainers: ExplainerCache | None = None):
        self.settings = settings
        self.explainers = explainers or ExplainerCache()

    def write(self, context: AnalysisContext) -> dict[str, str]:
        report = context.report
        faces = _all_faces(context)
        keyframes = {k.frame_index: (n, k) for n, k in enumerate(report.keyframes)}
        wanted = faces if self.settings.explain_all_frames else [f for f in faces if f.frame_index in keyframes]
        if not wanted:
            return {}
        folder = context.out_dir / f"{output_stem(report.input.path)}.keyframes"
        style = _style(context, self.settings)
        names = list(context.analyzer.model.config.members)
        outputs: dict[str, str] = {}
        t0 = time.perf_counter()
        per_frame: dict[int, int] = {}
        for f in wanted:
            per_frame[f.frame_index] = per_frame.get(f.frame_index, 0) + 1
        pending: dict[int, list[ExplainedFace]] = {}
        for item in explain_faces(context, self.explainers.get(context.analyzer), wanted, keep_frames=True):
            pending.setdefault(item.face.frame_index, []).append(item)
            if len(pending[item.face.frame_index]) < per_frame[item.face.frame_index]:
                continue  # wait until every face of this frame is explained
            group = pending.pop(item.face.frame_index)
            outputs.update(self._write_frame(group, keyframes, folder, style, names))
        report.timings["explain_keyframes_s"] = time.perf_counter() - t0
        if self.settings.explain_all_frames:
            outputs["explained_frames"] = str(folder)
        return outputs

    def _write_frame(self, group: list[ExplainedFace], keyframes: dict, folder: Path, style: OverlayStyle,
                     names: list[str]) -> dict[str, str]:
        idx = group[0].face.frame_index
        is_key = idx in keyframes
        base = f"keyframe_{keyframes[idx][0]}" if is_key else f"frame_{idx:06d}"
        stem = f"{base}_frame{idx:06d}" if is_key else base
        t = group[0].face.time_s
        caption = Banner(f"{'keyframe ' + str(keyframes[idx][0] + 1) + ' - ' if is_key else ''}"
                         f"frame {idx}  {t:.2f} s", (255, 255, 255))
        drawn = [(e.face.track_id, FaceSample(idx, np.asarray(e.face.box), e.face.score, e.ensemble)) for e in group]
        path = folder / f"{stem}.png"
        write_png(path, annotate_image(group[0].frame, drawn, caption, style))
        out: dict[str, str] = {}
        if is_key:
            out[base] = str(path)
            keyframes[idx][1].image = str(path)
        for e in group:
            strip = heatmap_strip(e.crop, e.members, e.ensemble, names,
                                  [e.face.member_scores.get(n, float("nan")) for n in names], e.face.score,
                                  style.heatmap_alpha)
            strip_path = folder / f"{stem}_track{e.face.track_id}.png"
            write_png(strip_path, strip)
            if is_key:
                out[f"{base}_track{e.face.track_id}_heatmaps"] = str(strip_path)
        return out


class AnnotatedMediaWriter:
    """The annotated video (every frame, boxes, heatmaps, timeline, verdict, original audio), or the
    annotated PNG for a photo."""

    def __init__(self, settings: RenderSettings, explainers: ExplainerCache | None = None):
        self.settings = settings
        self.explainers = explainers or ExplainerCache()

    def write(self, context: AnalysisContext) -> dict[str, str]:
        name, stats = self.render(context)
        return {name: str(stats.path)}

    def render(self, context: AnalysisContext) -> tuple[str, RenderStats]:
        """Write the annotated file; returns its output name and how long drawing + encoding took."""
        report, info = context.report, context.reader.info
        stem = output_stem(report.input.path)
        style = _style(context, self.settings)
        t0 = time.perf_counter()
        tracks: dict[int, list[FaceSample]] = {}
        frame0 = None
        for e in explain_faces(context, self.explainers.get(context.analyzer), _all_faces(context),
                               keep_frames=info.kind == "image"):
            tracks.setdefault(e.face.track_id, []).append(
                FaceSample(e.face.frame_index, np.asarray(e.face.box, np.float64), e.face.score,
                           _small_map(e.ensemble)))
            frame0 = e.frame if e.frame is not None else frame0
        report.timings["explain_s"] = time.perf_counter() - t0
        if info.kind == "image":
            t1 = time.perf_counter()
            frame = frame0 if frame0 is not None else context.reader.read(np.array([0]))[0]
            faces = [(tid, s) for tid, samples in tracks.items() for s in samples]
            path = context.out_dir / f"{stem}.annotated.png"
            write_png(path, annotate_image(frame, faces, _banner(context), style))
            return "annotated_image", RenderStats(path, 1, time.perf_counter() - t1)
        context.out_dir.mkdir(parents=True, exist_ok=True)
        # boxes are in the decoded frames' pixels: take their size from a decoded frame rather than
        # from MediaInfo, which can disagree when the rotation metadata is read differently
        height, width = context.reader.read(np.array([0]))[0].shape[:2]
        stats = render_annotated_video(
            info.path, context.out_dir / f"{stem}.annotated.mp4", fps=info.fps, frame_count=info.frame_count,
            width=width, height=height, has_audio=info.has_audio, tracks=tracks, banner=_banner(context),
            analysed=context.reader.sample(context.analyzer.config.sampling).tolist(), style=style,
            scale=self.settings.scale)
        report.timings["render_s"] = stats.seconds
        return "annotated_video", stats


def render_input(context: AnalysisContext, settings: RenderSettings = RenderSettings()) -> RenderStats:
    """Render one analysed input (for the benchmark): `.frames / .seconds` is render frames/s,
    Grad-CAM time excluded (it is in `context.report.timings["explain_s"]`)."""
    return AnnotatedMediaWriter(settings).render(context)[1]


def build_output_writers(settings: RenderSettings, n_inputs: int) -> list[OutputWriter]:
    """Writers for `--out`. "off": none. Otherwise keyframe images when `settings.keyframe_images`,
    and the annotated video/photo when "on", or "auto" with a single input."""
    if settings.enabled not in ("auto", "on", "off"):
        raise ValueError(f"render.enabled must be auto, on or off, not {settings.enabled!r}")
    if settings.enabled == "off":
        return []
    # keyframe images cost a few Grad-CAM passes, so they come with batches too; the video only
    # for a single input unless asked for, since it decodes and encodes every frame
    render = settings.enabled == "on" or n_inputs == 1
    explainers = ExplainerCache()
    writers: list[OutputWriter] = []
    if settings.keyframe_images:
        writers.append(KeyframeImageWriter(settings, explainers))
    if render:
        writers.append(AnnotatedMediaWriter(settings, explainers))
    return writers
