"""The no-loss check: ONNX Runtime and PyTorch analyse the same clips, and the bench reports how
far their faces, tracks and scores differ, and the warm analysis time of each (one run, so the
ONNX Runtime speed-up is a ratio measured under the same conditions)."""
from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from deepfake_detect.pipeline.bench.measure import timed_analysis

if TYPE_CHECKING:
    from deepfake_detect.pipeline.core.report import AnalysisReport
    from deepfake_detect.pipeline.core.runner import Analyzer
    from deepfake_detect.stages.aggregate import FaceScore


def _faces_by_frame(report: AnalysisReport) -> dict[int, list[FaceScore]]:
    from deepfake_detect.pipeline.core.outputs import all_faces

    faces: dict[int, list[FaceScore]] = defaultdict(list)
    for face in all_faces(report):
        faces[face.frame_index].append(face)
    return faces


def compare_reports(a: AnalysisReport, b: AnalysisReport) -> dict[str, Any]:
    """Faces matched by frame index and nearest box; the largest score and box differences of the
    matched faces, faces left unmatched, and the video scores' difference."""
    ours, theirs = _faces_by_frame(a), _faces_by_frame(b)
    score_diffs: list[float] = []
    box_diffs: list[float] = []
    unmatched = 0
    for frame in sorted(set(ours) | set(theirs)):
        candidates = list(theirs.get(frame, []))
        for face in ours.get(frame, []):
            if not candidates:
                unmatched += 1
                continue
            gaps = [float(np.abs(np.subtract(face.box, other.box)).max()) for other in candidates]
            nearest = int(np.argmin(gaps))
            other = candidates.pop(nearest)
            box_diffs.append(gaps[nearest])
            score_diffs.append(abs(face.score - other.score))
        unmatched += len(candidates)
    video = abs(a.score - b.score) if a.score is not None and b.score is not None else None
    return {"matched_faces": len(score_diffs), "unmatched_faces": unmatched,
            "max_face_score_diff": max(score_diffs, default=0.0), "max_box_diff_px": max(box_diffs, default=0.0),
            "video_score_diff": video, "same_verdict": a.verdict == b.verdict}


def compare_backends(onnx: Analyzer, torch: Analyzer, clips: list[Path]) -> dict[str, Any]:
    """Analyse every clip with both (warm) analyzers; the differences, and onnx_speedup =
    PyTorch's analysis time / ONNX Runtime's."""
    rows = []
    for clip in clips:
        times: dict[str, float] = {}
        reports: dict[str, AnalysisReport] = {}
        for name, analyzer in (("onnx", onnx), ("torch", torch)):
            times[name], reports[name] = timed_analysis(analyzer, clip)
        rows.append({
            "clip": clip.name,
            "faces": {name: sum(len(t.faces) for t in r.tracks) for name, r in reports.items()},
            "tracks": {name: len(r.tracks) for name, r in reports.items()},
            "video_score": {name: r.score for name, r in reports.items()},
            **compare_reports(reports["onnx"], reports["torch"]),
            "analyze_s": times, "onnx_speedup": times["torch"] / times["onnx"],
        })
    return {"clips": rows, "max_face_score_diff": max(r["max_face_score_diff"] for r in rows),
            "max_video_score_diff": max((r["video_score_diff"] or 0.0) for r in rows)}
