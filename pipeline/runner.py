"""The analyser: wires decode -> detect -> track -> classify -> aggregate for one input at a time.

Decoding runs in a producer thread that fills a bounded queue, so the CPU decodes the next chunk
while detection and classification work on the current one; the queue bound (and the chunk size)
keep memory flat however long the video is. The model loads once per `Analyzer`.
"""
from __future__ import annotations

import dataclasses
import logging
import queue
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator, Protocol

import torch

from pipeline import __version__
from pipeline.config import AnalysisConfig
from pipeline.report import AnalysisReport, InputInfo, ModelInfo
from stages.aggregate import FaceScore, aggregate
from stages.classify import CropClassifier, pick_device
from stages.decode import FrameBatch, MediaError, MediaReader, open_media, sample_indices
from stages.detect import FaceDetector
from stages.ensemble import DetectorError, EnsembleDetector, file_sha256, load_detector
from stages.track import FaceTracker

log = logging.getLogger(__name__)


@dataclass
class AnalysisContext:
    """What output writers (keyframe images, annotated video) get after the verdict is known."""

    report: AnalysisReport
    reader: MediaReader
    analyzer: "Analyzer"
    out_dir: Path


class OutputWriter(Protocol):
    def write(self, context: AnalysisContext) -> dict[str, str]:
        """Write files for one analysed input; return {output name: path}."""


@dataclass
class _Timer:
    totals: dict[str, float] = field(default_factory=dict)

    def add(self, name: str, seconds: float) -> None:
        self.totals[name] = self.totals.get(name, 0.0) + seconds


def _prefetch(batches: Iterator[FrameBatch], timer: _Timer, depth: int = 2) -> Iterator[FrameBatch]:
    """Run `batches` in a background thread, at most `depth` chunks ahead."""
    q: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()
    done = object()

    def produce() -> None:
        try:
            while not stop.is_set():
                t0 = time.perf_counter()
                batch = next(batches, done)
                timer.add("decode_s", time.perf_counter() - t0)
                q.put(batch)
                if batch is done:
                    return
        except BaseException as exc:  # handed to the consumer, which re-raises it
            q.put(exc)

    thread = threading.Thread(target=produce, name="decode", daemon=True)
    thread.start()
    try:
        while True:
            item = q.get()
            if item is done:
                return
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        while thread.is_alive():  # unblock a producer waiting on a full queue
            try:
                q.get_nowait()
            except queue.Empty:
                thread.join(timeout=0.05)


class Analyzer:
    """Analyse media files with one loaded detector. `analyze` never raises for a bad input."""

    def __init__(self, config: AnalysisConfig, model: EnsembleDetector | None = None):
        self.config = config
        self.device = pick_device(config.device)
        if model is None:
            model = load_detector(config.weights, self.device)
        if not model.config.trained:
            raise DetectorError(
                f"the detector in {config.weights} is not trained; refusing to report verdicts from an "
                "untrained network (train one with `deepfake-detect train`, or pass --weights DIR)")
        self.model = model
        self.classifier = CropClassifier(model, self.device, config.batch_size)
        detect = config.detect
        if detect.crop_margin is None:  # cut crops as the members saw them in training
            detect = dataclasses.replace(detect, crop_margin=model.config.crop_margin)
        self.face_detector = FaceDetector(detect, self.device)
        threshold = config.aggregate.threshold
        self.aggregate_settings = dataclasses.replace(
            config.aggregate, threshold=model.config.threshold if threshold is None else threshold)
        self.outputs: list[OutputWriter] = []

    @property
    def model_info(self) -> ModelInfo:
        c = self.model.config
        return ModelInfo(c.name, c.version, c.sha256, list(c.members), c.combiner, str(self.device))

    def analyze(self, path: str | Path, out_dir: Path | None = None,
                progress: Callable[[int], None] | None = None) -> AnalysisReport:
        """Analyse one file; failures become a report with verdict "error" and a one-line reason."""
        path = Path(path)
        started = time.perf_counter()
        report = AnalysisReport(input=InputInfo(path=str(path)), verdict="error", model=self.model_info,
                                threshold=self.aggregate_settings.threshold, tool_version=__version__,
                                sampling=dataclasses.asdict(self.config.sampling))
        try:
            reader = open_media(path, self.config.limits)
            self._describe_input(report, path, reader)
            self._analyze_frames(report, reader, progress)
            report.timings["total_s"] = time.perf_counter() - started
            if out_dir is not None and self.outputs:
                self._write_outputs(report, reader, out_dir)
        except MediaError as exc:
            report.errors.append(str(exc))
        except torch.cuda.OutOfMemoryError:
            report.errors.append("out of GPU memory; retry with a smaller --batch-size or --device cpu")
        except Exception as exc:  # a bug must not end a batch: report it on the input and go on
            log.debug("unexpected failure on %s", path, exc_info=True)
            report.errors.append(f"internal error: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}")
        if report.errors:
            report.verdict = "error"
        report.timings["total_s"] = time.perf_counter() - started
        return report

    def _describe_input(self, report: AnalysisReport, path: Path, reader: MediaReader) -> None:
        info = reader.info
        report.input = InputInfo(
            path=str(path), kind=info.kind, sha256=file_sha256(path), size_bytes=path.stat().st_size,
            fps=info.fps or None, frame_count=info.frame_count, duration_s=info.duration_s,
            width=info.width, height=info.height, rotation=info.rotation, has_audio=info.has_audio)
        if (info.width, info.height) != (info.source_width, info.source_height) and info.rotation in (0, 180):
            report.warnings.append(f"frames decoded at {info.width}x{info.height} "
                                   f"(source {info.source_width}x{info.source_height}, over the pixel cap)")

    def _analyze_frames(self, report: AnalysisReport, reader: MediaReader,
                        progress: Callable[[int], None] | None) -> None:
        timer = _Timer()
        indices = reader.sample(self.config.sampling)
        tracker = FaceTracker(self.config.track)
        faces: list[FaceScore] = []
        for batch in _prefetch(reader.batches(indices, self.config.chunk_size), timer):
            faces.extend(self.score_batch(batch, tracker, timer))
            if progress:
                progress(len(batch))
        t0 = time.perf_counter()
        verdict = aggregate(faces, len(indices), self.aggregate_settings)
        timer.add("aggregate_s", time.perf_counter() - t0)
        report.verdict = verdict.verdict
        report.score = verdict.score
        report.fake_percentage = verdict.fake_percentage
        report.frames_analysed = verdict.frames_analysed
        report.frames_with_faces = verdict.frames_with_faces
        report.tracks = verdict.tracks
        report.keyframes = verdict.keyframes
        report.timings.update(timer.totals)
        if len(indices) < self._requested_frames(reader):
            report.warnings.append(f"sampled frames capped at {self.config.limits.max_frames}")

    def _requested_frames(self, reader: MediaReader) -> int:
        """How many frames the sampling asks for before the max_frames cap."""
        info = reader.info
        return len(sample_indices(info.frame_count, info.fps, self.config.sampling, max_frames=info.frame_count))

    def score_batch(self, batch: FrameBatch, tracker: FaceTracker, timer: _Timer | None = None) -> list[FaceScore]:
        """Detect, track and score every face of one chunk of frames (crops batched across frames)."""
        timer = timer or _Timer()
        t0 = time.perf_counter()
        frame_faces = self.face_detector.detect(batch.frames)
        crops = self.face_detector.crops(batch.frames, frame_faces)
        t1 = time.perf_counter()
        scores = self.classifier.score(crops)
        t2 = time.perf_counter()
        timer.add("detect_s", t1 - t0)
        timer.add("classify_s", t2 - t1)
        out: list[FaceScore] = []
        k = 0
        members = self.classifier.member_names
        for frame_index, time_s, faces in zip(batch.indices, batch.timestamps, frame_faces):
            ids = tracker.update(float(time_s), faces, crops[k:k + len(faces)])
            for face, track_id in zip(faces, ids):
                out.append(FaceScore(
                    frame_index=int(frame_index), time_s=float(time_s), track_id=track_id,
                    box=[float(v) for v in face.box], confidence=face.confidence,
                    score=float(scores.ensemble[k]),
                    member_scores={m: float(scores.members[k, i]) for i, m in enumerate(members)}))
                k += 1
        timer.add("track_s", time.perf_counter() - t2)
        return out

    def _write_outputs(self, report: AnalysisReport, reader: MediaReader, out_dir: Path) -> None:
        context = AnalysisContext(report, reader, self, Path(out_dir))
        for writer in self.outputs:
            t0 = time.perf_counter()
            try:
                report.outputs.update(writer.write(context))
            except Exception as exc:  # a failed render must not cost the user the verdict
                log.debug("output writer %s failed", type(writer).__name__, exc_info=True)
                report.warnings.append(f"{type(writer).__name__} failed: {exc}")
            report.timings[f"{type(writer).__name__}_s"] = time.perf_counter() - t0
