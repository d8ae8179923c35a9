"""Output writers that run after the verdict: keyframe images and the annotated video (or photo).

The runner explains every analysed face once (`explain_faces`, Grad-CAM) and hands all writers one
frozen `AnalysedInput`. Each writer re-reads the frames it draws on, writes its files and returns
{output name: path}; none of them touches the report. The runner alone records outputs, keyframe
images and timings, so writers cannot overwrite each other's entries or explain a face twice.
"""
from __future__ import annotations

import time
from collections.abc import Iterator, Mapping, Sequence, Set
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar, Protocol

import cv2
import numpy as np

from deepfake_detect.pipeline.core.config import RenderSettings
from deepfake_detect.pipeline.core.report import AnalysisReport
from deepfake_detect.pipeline.core.writers import output_stem
from deepfake_detect.stages.aggregate import FaceScore
from deepfake_detect.stages.crop import crop_window, cut_crop
from deepfake_detect.stages.decode import MediaReader
from deepfake_detect.stages.draw import Banner, FaceSample, OverlayStyle, annotate_image, heatmap_strip, verdict_banner
from deepfake_detect.stages.render import RenderStats, render_annotated_video

if TYPE_CHECKING:  # pytorch-grad-cam costs most of a second to import: only runs that explain pay it
    from deepfake_detect.stages.explain import Explainer

HEATMAP_STORE_SIZE = 64  # maps come from a 7x7 grid: 64 px uint8 keeps them exact at 1/12 the memory
CHUNK_FRAMES = 16        # frames re-read at once, so memory stays flat however long the video is

FaceKey = tuple[int, int]  # (frame index, track id): the tracker gives a track at most one face a frame


def face_key(face: FaceScore) -> FaceKey:
    return face.frame_index, face.track_id


def all_faces(report: AnalysisReport) -> list[FaceScore]:
    return [f for track in report.tracks for f in track.faces]


def keyframe_name(n: int) -> str:
    """The output name of keyframe n's image; the runner links `report.keyframes[n].image` to it."""
    return f"keyframe_{n}"


@dataclass(frozen=True)
class FaceExplanation:
    """Grad-CAM of one analysed face.

    Every face keeps the small ensemble map, which is all the video draws (4 KiB). Only faces that a
    writer shows in full (keyframe images) keep the crop and full-size maps (~0.75 MiB at 224 px
    with two members), so a long video does not hold a full explanation per analysed frame.
    """

    heatmap: np.ndarray                 # (64, 64) uint8 ensemble map
    crop: np.ndarray | None = None      # (S, S, 3) uint8: the classifier's crop
    members: np.ndarray | None = None   # (M, S, S) float32 [0, 1], in `AnalysedInput.member_names` order
    ensemble: np.ndarray | None = None  # (S, S) float32 [0, 1]

    def full(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(crop, member maps, ensemble map), for faces explained in full."""
        if self.crop is None or self.members is None or self.ensemble is None:
            raise ValueError("face explained with the small map only: it was not in any writer's detailed_frames")
        return self.crop, self.members, self.ensemble


@dataclass(frozen=True)
class AnalysedInput:
    """All an output writer gets for one analysed input. Writers read it and return what they wrote;
    they must not change it, nor the report inside it."""

    report: AnalysisReport
    reader: MediaReader                  # to re-read the frames a writer draws on
    crop_margin: float                   # the crop actually used, as resolved by the face detector:
    crop_size: int                       # heatmaps are laid back over that same square
    crop_policy: str                     # ...cut this way (stages/crop.py)
    member_names: tuple[str, ...]        # the detector's members, in the order of the member maps
    member_architectures: tuple[str, ...]  # each member's timm model name (replicas of a seed ensemble share one)
    sampled: tuple[int, ...]             # the analysed frame indices (the video's timeline marks them)
    out_dir: Path
    explanations: Mapping[FaceKey, FaceExplanation]  # one per face of `report.tracks`

    def explanation(self, face: FaceScore) -> FaceExplanation:
        return self.explanations[face_key(face)]


class OutputWriter(Protocol):
    timing_key: ClassVar[str]  # the report's `timings` key for this writer: fixed, not a class name

    def detailed_frames(self, report: AnalysisReport) -> frozenset[int]:
        """Frames whose faces this writer shows in full (crop and full-size maps)."""

    def write(self, analysed: AnalysedInput) -> dict[str, str]:
        """Write files for one analysed input; return {output name: path}."""


def write_png(path: Path, rgb: np.ndarray) -> None:
    """PNG via imencode + write_bytes, which (unlike cv2.imwrite) handles any path."""
    path.parent.mkdir(parents=True, exist_ok=True)
    ok, buf = cv2.imencode(".png", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    if not ok:
        raise RuntimeError(f"cannot encode {path.name}")
    path.write_bytes(buf.tobytes())


def _frames_in_chunks(reader: MediaReader, indices: Sequence[int]) -> Iterator[tuple[int, np.ndarray]]:
    """(index, frame) for sorted `indices`, read CHUNK_FRAMES at a time."""
    for start in range(0, len(indices), CHUNK_FRAMES):
        chunk = list(indices[start:start + CHUNK_FRAMES])
        yield from zip(chunk, reader.read(np.asarray(chunk)))


def _small_map(heatmap: np.ndarray) -> np.ndarray:
    small = cv2.resize(heatmap, (HEATMAP_STORE_SIZE, HEATMAP_STORE_SIZE), interpolation=cv2.INTER_AREA)
    return (np.clip(small, 0, 1) * 255).astype(np.uint8)


def explain_faces(explainer: Explainer, reader: MediaReader, faces: Sequence[FaceScore], crop_margin: float,
                  crop_size: int, detailed_frames: Set[int] = frozenset(),
                  crop_policy: str = "square") -> dict[FaceKey, FaceExplanation]:
    """Grad-CAM for every face, once: re-read its frame, crop it as the classifier did, explain.

    Crops are explained a chunk of frames at a time. Faces in `detailed_frames` keep their crop and
    full-size maps, copied out of the chunk's arrays so that those can go with the chunk.
    """
    by_frame: dict[int, list[FaceScore]] = {}
    for face in faces:
        by_frame.setdefault(face.frame_index, []).append(face)
    order = sorted(by_frame)
    out: dict[FaceKey, FaceExplanation] = {}
    for start in range(0, len(order), CHUNK_FRAMES):
        pairs = [(frame, face) for idx, frame in _frames_in_chunks(reader, order[start:start + CHUNK_FRAMES])
                 for face in by_frame[idx]]
        crops = np.stack([cut_crop(frame, np.asarray(face.box, np.float32), crop_policy, crop_margin, crop_size)
                          for frame, face in pairs])
        group_crops, warps = _other_cuts(explainer, pairs, crops, (crop_policy, crop_margin, crop_size))
        maps = explainer.explain(crops) if group_crops is None else explainer.explain(crops, group_crops, warps)
        for k, (_, face) in enumerate(pairs):
            small = _small_map(maps.ensemble[k])
            if face.frame_index in detailed_frames:
                out[face_key(face)] = FaceExplanation(small, crops[k].copy(), maps.members[k].copy(),
                                                      maps.ensemble[k].copy())
            else:
                out[face_key(face)] = FaceExplanation(small)
    return out


def _other_cuts(explainer: Explainer, pairs: list[tuple[np.ndarray, FaceScore]], crops: np.ndarray,
                primary: tuple[str, float, int]) -> tuple[list[np.ndarray] | None, list[np.ndarray | None] | None]:
    """A combined detector's members that cut their own crops: those crops per input group, and for each
    face the affine map from that group's crop to the primary crop (through the frame), so every member's
    map lands on the face where the others' do. (None, None) for every other detector."""
    cuts = [member_input.cut for member_input in explainer.groups]
    if len(cuts) == 1:
        return None, None
    group_crops: list[np.ndarray] = []
    warps: list[np.ndarray | None] = []
    for cut in cuts:
        if cut == primary:
            group_crops.append(crops)
            warps.append(None)
            continue
        policy, margin, size = cut
        group_crops.append(np.stack([cut_crop(frame, np.asarray(face.box, np.float32), policy, margin, size)
                                     for frame, face in pairs]))
        warps.append(np.stack([_crop_to_crop(frame.shape[:2], np.asarray(face.box, np.float64), cut, primary)
                               for frame, face in pairs]))
    return group_crops, warps


def _crop_to_crop(shape: tuple[int, ...], box: np.ndarray, cut: tuple[str, float, int],
                  primary: tuple[str, float, int]) -> np.ndarray:
    """The 2x3 affine map from a crop cut as `cut` to one cut as `primary`, of the same face."""
    (sx1, sy1, sx2, sy2), (tx1, ty1, tx2, ty2) = crop_window(cut[0], box, cut[1], shape[0], shape[1], cut[2])
    (px1, py1, px2, py2), (qx1, qy1, qx2, qy2) = crop_window(primary[0], box, primary[1], shape[0], shape[1], primary[2])
    # crop -> frame: x_f = sx1 + (x - tx1) * (sx2 - sx1) / (tx2 - tx1); frame -> primary: x_p = qx1 + (x_f - px1) * k
    kx, ky = (sx2 - sx1) / max(tx2 - tx1, 1), (sy2 - sy1) / max(ty2 - ty1, 1)
    px, py = (qx2 - qx1) / max(px2 - px1, 1), (qy2 - qy1) / max(py2 - py1, 1)
    return np.array([[kx * px, 0.0, qx1 + (sx1 - tx1 * kx - px1) * px],
                     [0.0, ky * py, qy1 + (sy1 - ty1 * ky - py1) * py]], np.float32)


def _style(analysed: AnalysedInput, settings: RenderSettings) -> OverlayStyle:
    threshold = analysed.report.threshold
    return OverlayStyle(crop_margin=analysed.crop_margin, crop_policy=analysed.crop_policy, crop_size=analysed.crop_size,
                        heatmap_alpha=settings.heatmap_alpha,
                        threshold=float(threshold if threshold is not None else 0.5))


def _banner(report: AnalysisReport) -> Banner:
    return verdict_banner(report.verdict, report.score, report.fake_percentage)


def tiles_by_architecture(names: Sequence[str], architectures: Sequence[str], maps: np.ndarray,
                          scores: Sequence[float]) -> tuple[list[str], np.ndarray, list[float]]:
    """The member tiles of a heatmap strip: one per network. The replicas of a seed ensemble (members
    of one architecture) are shown as their mean map and mean score, "mobilenetv2_100 x3", so the
    strip stays readable whatever the number of seeds; other members are shown as they are."""
    groups: dict[str, list[int]] = {}
    for j, arch in enumerate(architectures):
        groups.setdefault(arch, []).append(j)
    labels, tiles, means = [], [], []
    for arch, idx in groups.items():
        if len(idx) == 1:
            labels.append(names[idx[0]])
            tiles.append(maps[idx[0]])
        else:
            labels.append(f"{arch} x{len(idx)}")
            heat = maps[idx].mean(axis=0)
            tiles.append(heat / heat.max() if heat.max() > 0 else heat)  # the strongest region reads as 1, as in each map
        means.append(float(np.mean([scores[j] for j in idx])))
    return labels, np.stack(tiles).astype(np.float32), means


class KeyframeImageWriter:
    """Per keyframe: the frame with boxes, heatmaps and scores, plus a crop | members | ensemble
    strip per face. With `explain_all_frames`, the same for every analysed frame with a face."""

    timing_key: ClassVar[str] = "keyframes_s"

    def __init__(self, settings: RenderSettings = RenderSettings()) -> None:
        self.settings = settings

    def detailed_frames(self, report: AnalysisReport) -> frozenset[int]:
        if self.settings.explain_all_frames:
            return frozenset(f.frame_index for f in all_faces(report))
        return frozenset(k.frame_index for k in report.keyframes)

    def write(self, analysed: AnalysedInput) -> dict[str, str]:
        report = analysed.report
        shown = self.detailed_frames(report)
        by_frame: dict[int, list[FaceScore]] = {}
        for face in all_faces(report):
            if face.frame_index in shown:
                by_frame.setdefault(face.frame_index, []).append(face)
        if not by_frame:
            return {}
        folder = analysed.out_dir / f"{output_stem(report.input.path)}.keyframes"
        keyframes = {k.frame_index: n for n, k in enumerate(report.keyframes)}
        style = _style(analysed, self.settings)
        outputs: dict[str, str] = {}
        for idx, frame in _frames_in_chunks(analysed.reader, sorted(by_frame)):
            outputs.update(self._write_frame(analysed, frame, by_frame[idx], keyframes.get(idx), folder, style))
        if self.settings.explain_all_frames:
            outputs["explained_frames"] = str(folder)
        return outputs

    def _write_frame(self, analysed: AnalysedInput, frame: np.ndarray, faces: list[FaceScore], keyframe: int | None,
                     folder: Path, style: OverlayStyle) -> dict[str, str]:
        """The annotated frame and one strip per face; returns the keyframe's outputs (none for other frames)."""
        idx = faces[0].frame_index
        base = keyframe_name(keyframe) if keyframe is not None else f"frame_{idx:06d}"
        stem = f"{base}_frame{idx:06d}" if keyframe is not None else base
        title = f"keyframe {keyframe + 1} - " if keyframe is not None else ""
        caption = Banner(f"{title}frame {idx}  {faces[0].time_s:.2f} s", (255, 255, 255))
        maps = [analysed.explanation(f).full() for f in faces]
        drawn = [(f.track_id, FaceSample(idx, np.asarray(f.box), f.score, ensemble))
                 for f, (_, _, ensemble) in zip(faces, maps)]
        path = folder / f"{stem}.png"
        write_png(path, annotate_image(frame, drawn, caption, style))
        out = {base: str(path)} if keyframe is not None else {}
        names = list(analysed.member_names)
        for f, (crop, members, ensemble) in zip(faces, maps):
            labels, tiles, scores = tiles_by_architecture(
                names, analysed.member_architectures, members, [f.member_scores.get(n, float("nan")) for n in names])
            strip = heatmap_strip(crop, tiles, ensemble, labels, scores, f.score, style.heatmap_alpha)
            strip_path = folder / f"{stem}_track{f.track_id}.png"
            write_png(strip_path, strip)
            if keyframe is not None:
                out[f"{base}_track{f.track_id}_heatmaps"] = str(strip_path)
        return out


class AnnotatedMediaWriter:
    """The annotated video (every frame, boxes, heatmaps, timeline, verdict, original audio), or the
    annotated PNG for a photo."""

    timing_key: ClassVar[str] = "render_s"

    def __init__(self, settings: RenderSettings = RenderSettings()) -> None:
        self.settings = settings

    def detailed_frames(self, report: AnalysisReport) -> frozenset[int]:
        return frozenset()  # the small maps are all that a video frame or the photo draws

    def write(self, analysed: AnalysedInput) -> dict[str, str]:
        name, stats = self.render(analysed)
        return {name: str(stats.path)}

    def render(self, analysed: AnalysedInput) -> tuple[str, RenderStats]:
        """Write the annotated file; returns its output name and how long drawing + encoding took."""
        report, reader = analysed.report, analysed.reader
        stem = output_stem(report.input.path)
        style = _style(analysed, self.settings)
        samples: dict[int, list[FaceSample]] = {}
        for face in all_faces(report):
            samples.setdefault(face.track_id, []).append(FaceSample(
                face.frame_index, np.asarray(face.box, np.float64), face.score, analysed.explanation(face).heatmap))
        tracks: dict[int, Sequence[FaceSample]] = {tid: s for tid, s in samples.items()}
        # boxes are in the decoded frames' pixels: take the size from a decoded frame rather than
        # from MediaInfo, which can disagree when the rotation metadata is read differently
        first = reader.read(np.array([0]))[0]
        if reader.info.kind == "image":
            t0 = time.perf_counter()
            path = analysed.out_dir / f"{stem}.annotated.png"
            faces = [(tid, s) for tid, samples in tracks.items() for s in samples]
            write_png(path, annotate_image(first, faces, _banner(report), style))
            return "annotated_image", RenderStats(path, 1, time.perf_counter() - t0)
        analysed.out_dir.mkdir(parents=True, exist_ok=True)
        info = reader.info
        stats = render_annotated_video(
            info.path, analysed.out_dir / f"{stem}.annotated.mp4", fps=info.fps, frame_count=info.frame_count,
            width=first.shape[1], height=first.shape[0], has_audio=info.has_audio, tracks=tracks,
            banner=_banner(report), analysed=list(analysed.sampled), style=style, scale=self.settings.scale)
        return "annotated_video", stats


def render_input(analysed: AnalysedInput, settings: RenderSettings = RenderSettings()) -> RenderStats:
    """Render one analysed input (for the benchmark): `.frames / .seconds` is render frames/s.
    Grad-CAM is not in it: it ran when `analysed` was made (`Analyzer.analysed_input`)."""
    return AnnotatedMediaWriter(settings).render(analysed)[1]


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
    writers: list[OutputWriter] = []
    if settings.keyframe_images:
        writers.append(KeyframeImageWriter(settings))
    if render:
        writers.append(AnnotatedMediaWriter(settings))
    return writers
