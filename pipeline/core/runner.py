"""The analyser: wires decode -> detect -> track -> classify -> aggregate for one input at a time.

Decoding runs in a producer thread that fills a bounded queue, so the CPU decodes the next chunk
while detection and classification work on the current one; the queue bound (and the chunk size)
keep memory flat however long the video is. The model loads once per `Analyzer`.

On CPU the networks run in ONNX Runtime (`backend: auto` or `onnx`), exported once from the
detector's safetensors and cached (`pipeline/core/model_cache.py`); the PyTorch detector is then
loaded only when Grad-CAM needs it, so a `--no-render` run never imports timm.
"""
from __future__ import annotations

import contextlib
import dataclasses
import logging
import queue
import threading
import time
from collections.abc import Callable, Iterator, Set
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING

import numpy as np
import torch

from deepfake_detect.pipeline import __version__
from deepfake_detect.pipeline.core.config import AnalysisConfig, check_per_input
from deepfake_detect.pipeline.core.outputs import AnalysedInput, OutputWriter, all_faces, explain_faces, keyframe_name
from deepfake_detect.pipeline.core.report import AnalysisReport, InputInfo, ModelInfo
from deepfake_detect.pipeline.core.threads import ThreadPolicy, apply_thread_policy, thread_policy
from deepfake_detect.stages.aggregate import FaceScore, aggregate, provenance_decides
from deepfake_detect.stages.classify import CropClassifier, OnnxCropClassifier, pick_device
from deepfake_detect.stages.crop import crop_region
from deepfake_detect.stages.decode import DamagedError, FrameBatch, MediaError, MediaReader, open_media, sample_indices
from deepfake_detect.stages.detect import Face, create_face_detector, face_detector_class
from deepfake_detect.stages.ensemble import (
    DetectorConfig,
    DetectorError,
    EnsembleDetector,
    file_sha256,
    load_detector,
    load_verified_config,
    tensors_digest,
)
from deepfake_detect.stages.face_quality import sharpness
from deepfake_detect.stages.provenance import read_provenance
from deepfake_detect.stages.track import FaceTracker

if TYPE_CHECKING:  # imported on first use: pytorch-grad-cam is slow to import
    from deepfake_detect.stages.explain import Explainer

log = logging.getLogger(__name__)

Progress = Callable[[int, int], None]   # (sampled frames done, sampled frames in all)

# Face crops per forward pass when the settings leave it open: what each backend is fastest at on
# 2 CPU cores (bench: PyTorch 27 crops/s at 16 vs 19 at 64 on CPU; a GPU wants large batches).
TORCH_BATCH, ONNX_BATCH = 64, 32


def resolve_backend(backend: str, device: torch.device) -> str:
    """"onnx" (ONNX Runtime) or "torch" for `backend` on `device`; auto: ONNX Runtime on CPU."""
    if backend == "onnx" and device.type != "cpu":
        raise ValueError(f"backend onnx runs on the CPU only; use --backend torch with --device {device}")
    if backend == "torch" or device.type != "cpu":
        return "torch"
    try:
        import onnxruntime  # noqa: F401
    except ImportError:
        if backend == "onnx":
            raise ValueError("backend onnx needs the onnxruntime package (pip install onnxruntime)") from None
        log.info("onnxruntime is not installed: scoring with PyTorch")
        return "torch"
    return "onnx"


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

    def __init__(self, config: AnalysisConfig, model: EnsembleDetector | None = None,
                 threads: ThreadPolicy | None = None):
        """`model`: an already loaded detector (tests, the bench); default: the one in config.weights.
        `threads`: this analysis's share of the CPU (pipeline/core/threads.py), applied to the whole
        process: one Analyzer per process (default: all cores, or config.threads)."""
        self.config = config
        self.device = pick_device(config.device)
        self.backend = resolve_backend(config.backend, self.device)
        self.threads = threads or thread_policy(threads=config.threads)
        apply_thread_policy(self.threads)
        if model is not None:
            self.detector_config: DetectorConfig = model.config
            self._weights_digest = model.config.sha256 or tensors_digest(model)
        else:
            self.detector_config = load_verified_config(config.weights)
            self._weights_digest = str(self.detector_config.sha256)
        if not self.detector_config.trained:
            raise DetectorError(
                f"the detector in {config.weights} is not trained; refusing to report verdicts from an "
                "untrained network (train one with `deepfake-detect train`, or pass --weights DIR)")
        self._model = model
        self.classifier: CropClassifier | OnnxCropClassifier
        nets = None
        if self.backend == "onnx":
            from deepfake_detect.pipeline.core.model_cache import detector_onnx, face_detector_onnx
            from deepfake_detect.stages.onnx_models import make_session

            onnx_path = detector_onnx(self.detector_config, self._weights_digest, lambda: self.model)
            self.classifier = OnnxCropClassifier(make_session(onnx_path, self.threads.compute), self.detector_config,
                                                 config.batch_size or ONNX_BATCH)
            detector_class = face_detector_class(config.detect.detector)
            nets = {name: make_session(path, self.threads.compute) for name, path in face_detector_onnx(detector_class).items()}
        else:
            self.classifier = CropClassifier(self.model, self.device, config.batch_size or TORCH_BATCH)
        detect = config.detect
        # cut crops as the members saw them in training: their margin, size and the cut itself
        detect = dataclasses.replace(
            detect, crop_margin=self.detector_config.crop_margin if detect.crop_margin is None else detect.crop_margin,
            crop_size=detect.crop_size or self.detector_config.input_size,
            crop_policy=detect.crop_policy or self.detector_config.crop_policy)
        self.face_detector = create_face_detector(detect, self.device, sessions=nets)
        # each input group's crop cut (one for every detector but a combined one), fixed with the detector
        self.input_cuts = [member_input.cut for member_input, _ in self.detector_config.input_groups()]
        threshold = config.aggregate.threshold
        self.aggregate_settings = dataclasses.replace(
            config.aggregate, threshold=self.detector_config.threshold if threshold is None else threshold)
        self.outputs: list[OutputWriter] = []
        self._explainer: Explainer | None = None

    @property
    def model(self) -> EnsembleDetector:
        """The PyTorch detector: loaded on first use when ONNX Runtime scores (Grad-CAM needs it)."""
        if self._model is None:
            self._model = load_detector(self.config.weights, self.device)
        return self._model

    @property
    def member_names(self) -> list[str]:
        return list(self.detector_config.members)

    @property
    def explainer(self) -> Explainer:
        """Grad-CAM on this Analyzer's detector, built on first use and kept for later inputs."""
        if self._explainer is None:
            from deepfake_detect.stages.explain import Explainer

            self._explainer = Explainer(self.model, self.device, batch_size=min(self.config.batch_size or 32, 32))
        return self._explainer

    @property
    def model_info(self) -> ModelInfo:
        c = self.detector_config
        return ModelInfo(c.name, c.version, c.sha256, list(c.members), c.combiner, str(self.device))

    @contextlib.contextmanager
    def settings_for_input(self, config: AnalysisConfig | None) -> Iterator[None]:
        """Analyse the inputs of this block with `config` (its own sampling, threshold, rendering,
        caps), then go back to the Analyzer's. Only settings that do not change the loaded model may
        differ (PER_INPUT_SETTINGS); the threshold and the output writers are resolved here again."""
        if config is None:
            yield
            return
        check_per_input(self.config, config)
        from deepfake_detect.pipeline.core.outputs import build_output_writers

        saved = self.config, self.aggregate_settings, self.outputs
        threshold = config.aggregate.threshold
        self.config = config
        self.aggregate_settings = dataclasses.replace(
            config.aggregate, threshold=self.detector_config.threshold if threshold is None else threshold)
        self.outputs = build_output_writers(config.render, n_inputs=1)
        try:
            yield
        finally:
            self.config, self.aggregate_settings, self.outputs = saved

    def analyze(self, path: str | Path, out_dir: Path | None = None,
                progress: Progress | None = None, region: str = "") -> AnalysisReport:
        """Analyse one file; failures become a report with verdict "error" and a one-line reason.

        `progress(done, total)` is called with the sampled frames done and in all: (0, total) once
        the input is open, then after each chunk.

        `region` ("left_half" / "right_half") analyses only that half of every frame: the labelled
        side of a side-by-side file, as evaluation needs it.
        """
        path = Path(path)
        started = time.perf_counter()
        report = AnalysisReport(input=InputInfo(path=str(path)), verdict="error", model=self.model_info,
                                threshold=self.aggregate_settings.threshold, tool_version=__version__,
                                sampling=dataclasses.asdict(self.config.sampling))
        try:
            reader = open_media(path, self.config.limits, self.threads.decode)
            self._describe_input(report, path, reader)
            if self.config.provenance.enabled:
                t0 = time.perf_counter()
                report.provenance = read_provenance(path, self.config.provenance, reader.info.container)
                report.timings["provenance_s"] = time.perf_counter() - t0
            left_out = self._analyze_frames(report, reader, progress, region)
            report.timings["total_s"] = time.perf_counter() - started
            if out_dir is not None and self.outputs:
                self._write_outputs(report, reader, out_dir, left_out)
        except MediaError as exc:
            report.errors.append(str(exc))
        except torch.cuda.OutOfMemoryError:
            report.errors.append("out of GPU memory; retry with a smaller --batch-size or --device cpu")
        except Exception as exc:  # a bug must not end a batch: report it on the input and go on
            # a bug: the user sees one line; the log gets the traceback, visible without --debug
            log.warning("internal error on %s", path, exc_info=True)
            report.errors.append(f"internal error: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}")
        if report.errors:
            report.verdict = "error"
        report.detector_verdict = report.verdict
        if report.provenance is not None:
            if provenance_decides(report.verdict, report.provenance.declares_generated):
                report.verdict, report.verdict_basis = "fake", "provenance"
            if report.provenance.c2pa == "invalid":
                report.warnings.append(f"content credentials invalid ({', '.join(report.provenance.validation_codes)}): "
                                       "the file changed after signing, or they were forged")
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
                        progress: Progress | None, region: str = "") -> frozenset[int]:
        """Fill in the report's verdict; returns the sampled frames left out as damaged."""
        timer = _Timer()
        indices = reader.sample(self.config.sampling)
        done = 0
        if progress:
            progress(0, len(indices))
        tracker = FaceTracker(self.config.track)
        faces: list[FaceScore] = []
        dropped = 0          # sampled frames that could not be decoded or came out damaged
        left_out: set[int] = set()
        too_small = ""       # set when the frames cannot hold a face MTCNN could find
        for batch in _prefetch(reader.batches(indices, self.config.chunk_size), timer):
            dropped += len(batch.dropped)
            left_out.update(int(i) for i in batch.dropped)
            if len(batch):
                if region:
                    batch = dataclasses.replace(batch, frames=np.stack([crop_region(f, region) for f in batch.frames]))
                too_small = too_small or self._too_small_for_faces(batch.frames.shape[1:3])
                if not too_small:
                    faces.extend(self.score_batch(batch, tracker, timer))
            done += len(batch) + len(batch.dropped)
            if progress:
                progress(done, len(indices))
        decoded = len(indices) - dropped
        report.input.decode_errors = dropped
        if len(indices) and not decoded:
            raise DamagedError(f"video is damaged: none of the {len(indices)} sampled frames could be decoded")
        t0 = time.perf_counter()
        verdict = aggregate(faces, decoded, self.aggregate_settings, frames_sampled=len(indices))
        timer.add("aggregate_s", time.perf_counter() - t0)
        report.verdict = verdict.verdict
        report.score = verdict.score
        report.fake_percentage = verdict.fake_percentage
        report.frames_analysed = verdict.frames_analysed
        report.frames_with_faces = verdict.frames_with_faces
        report.tracks = verdict.tracks
        report.keyframes = verdict.keyframes
        report.timings.update(timer.totals)
        if too_small:
            report.warnings.append(too_small)
        if dropped:
            report.warnings.append(f"{dropped} of {len(indices)} sampled frames were damaged or could not be decoded "
                                   "and were left out")
        if verdict.downgraded:
            report.warnings.append(f"verdict inconclusive: {verdict.downgraded}")
        if len(indices) < self._requested_frames(reader):
            report.warnings.append(f"sampled frames capped at {self.config.limits.max_frames}")
        return frozenset(left_out)

    def _too_small_for_faces(self, frame_shape: tuple[int, ...]) -> str:
        """A warning when frames of this (height, width) are too small for MTCNN to find any face
        (its smallest face is `min_face_size` pixels in the copy it sees); "" otherwise."""
        settings = self.face_detector.settings
        h, w = int(frame_shape[0]), int(frame_shape[1])
        long_side = settings.detect_long_side
        scale = long_side / max(h, w) if long_side and max(h, w) > long_side else 1.0
        if min(round(h * scale), round(w * scale)) >= settings.min_face_size:
            return ""
        return (f"frames are {w}x{h} pixels, too small to hold a face the detector can find "
                f"(at least {settings.min_face_size} pixels)")

    def _requested_frames(self, reader: MediaReader) -> int:
        """How many frames the sampling asks for before the max_frames cap."""
        info = reader.info
        return len(sample_indices(info.frame_count, info.fps, self.config.sampling, max_frames=info.frame_count))

    def group_crops(self, frames: np.ndarray, faces: list[list[Face]], crops: np.ndarray) -> np.ndarray | list[np.ndarray]:
        """The crops each input group of the detector takes: `crops` (cut as the face detector's settings
        say) for every detector but a combined one, whose other groups cut their own."""
        cuts = self.input_cuts
        if len(cuts) == 1:
            return crops
        primary = (self.face_detector.crop_policy, self.face_detector.crop_margin, self.face_detector.crop_size)
        return [crops if cut == primary else self.face_detector.crops(frames, faces, cut) for cut in cuts]

    def score_batch(self, batch: FrameBatch, tracker: FaceTracker, timer: _Timer | None = None) -> list[FaceScore]:
        """Detect, track and score every face of one chunk of frames (crops batched across frames)."""
        timer = timer or _Timer()
        t0 = time.perf_counter()
        frame_faces = self.face_detector.detect(batch.frames)
        crops = self.face_detector.crops(batch.frames, frame_faces)
        crop_sharpness = sharpness(crops)
        t1 = time.perf_counter()
        scores = self.classifier.score(self.group_crops(batch.frames, frame_faces, crops))
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
                    member_scores={m: float(scores.members[k, i]) for i, m in enumerate(members)},
                    sharpness=float(crop_sharpness[k])))
                k += 1
        timer.add("track_s", time.perf_counter() - t2)
        return out

    def analysed_input(self, report: AnalysisReport, reader: MediaReader, out_dir: Path,
                       detailed_frames: Set[int] = frozenset(), left_out: Set[int] = frozenset()) -> AnalysedInput:
        """What the output writers get for one analysed input. Grad-CAM runs here, once per face;
        faces in `detailed_frames` keep full-size maps, the others only the small map."""
        detect = self.face_detector.settings  # the margin and size actually used, resolved from the detector
        assert detect.crop_margin is not None  # FaceDetector replaces None with a margin
        margin, size, policy = float(detect.crop_margin), self.face_detector.crop_size, self.face_detector.crop_policy
        explanations = explain_faces(self.explainer, reader, all_faces(report), margin, size, detailed_frames, policy)
        return AnalysedInput(
            report=report, reader=reader, crop_margin=margin, crop_size=size, crop_policy=policy,
            member_names=tuple(self.detector_config.members),
            member_architectures=tuple(str(self.detector_config.architectures[n]["model_name"])
                                       for n in self.detector_config.members),
            # the frames actually analysed: damaged ones were left out and are not marked as analysed
            sampled=tuple(int(i) for i in reader.sample(self.config.sampling) if int(i) not in left_out),
            out_dir=Path(out_dir),
            explanations=MappingProxyType(explanations))  # read-only: writers share it

    def _write_outputs(self, report: AnalysisReport, reader: MediaReader, out_dir: Path,
                       left_out: Set[int] = frozenset()) -> None:
        """Explain the faces once, run every writer on that one frozen result, and record what they
        wrote: the report changes here only, never inside a writer."""
        t0 = time.perf_counter()
        try:
            detailed = frozenset().union(*(writer.detailed_frames(report) for writer in self.outputs))
            analysed = self.analysed_input(report, reader, out_dir, detailed, left_out)
        except Exception as exc:  # without heatmaps no writer can draw; the verdict still stands
            log.warning("explaining the faces of %s failed", report.input.path, exc_info=True)
            report.warnings.append(f"explain failed: {exc}")
            return
        finally:
            report.timings["explain_s"] = time.perf_counter() - t0
        for writer in self.outputs:
            t0 = time.perf_counter()
            try:
                report.outputs.update(writer.write(analysed))
            except Exception as exc:  # a failed render must not cost the user the verdict
                log.warning("output writer %s failed on %s", type(writer).__name__, report.input.path, exc_info=True)
                report.warnings.append(f"{type(writer).__name__} failed: {exc}")
            report.timings[writer.timing_key] = time.perf_counter() - t0
        for n, keyframe in enumerate(report.keyframes):
            keyframe.image = report.outputs.get(keyframe_name(n), keyframe.image)
