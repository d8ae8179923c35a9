"""The analysis report: dataclasses, their JSON form, and the JSON Schema that describes it.

`report_to_dict` is the only way a report becomes JSON; `pipeline.writers` is the only place
that writes it to disk. Bump SCHEMA_VERSION when a field changes meaning or disappears.
"""
from __future__ import annotations

import dataclasses
import datetime as _dt
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from stages.aggregate import FaceScore, Keyframe, TrackSummary

SCHEMA_VERSION = "1.0"
VERDICTS = ("fake", "real", "inconclusive", "no_face", "error")


def now_iso() -> str:
    """The current UTC time as the reports write it."""
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


@dataclass
class InputInfo:
    path: str
    kind: str | None = None          # "video" | "image"
    sha256: str | None = None
    size_bytes: int | None = None
    fps: float | None = None
    frame_count: int | None = None
    duration_s: float | None = None
    width: int | None = None
    height: int | None = None
    rotation: int | None = None
    has_audio: bool | None = None


@dataclass
class ModelInfo:
    name: str
    version: str
    sha256: str | None
    members: list[str]
    combiner: str
    device: str


@dataclass
class AnalysisReport:
    input: InputInfo
    verdict: str
    score: float | None = None
    threshold: float | None = None
    fake_percentage: float | None = None
    frames_analysed: int = 0
    frames_with_faces: int = 0
    sampling: dict[str, Any] = field(default_factory=dict)
    tracks: list[TrackSummary] = field(default_factory=list)
    keyframes: list[Keyframe] = field(default_factory=list)
    model: ModelInfo | None = None
    timings: dict[str, float] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    outputs: dict[str, str] = field(default_factory=dict)   # name -> file path
    schema_version: str = SCHEMA_VERSION
    tool_version: str = ""
    created: str = field(default_factory=now_iso)

    @property
    def failed(self) -> bool:
        return self.verdict == "error"


def _rounded(value: Any) -> Any:
    if isinstance(value, float):
        return round(value, 5)
    if isinstance(value, dict):
        return {k: _rounded(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_rounded(v) for v in value]
    return value


def report_to_dict(report: AnalysisReport) -> dict[str, Any]:
    data = dataclasses.asdict(report)
    # per-face fields carry the report's bulk; rounding keeps files readable without losing meaning
    return _rounded(data)


def _known_fields(cls, data: dict) -> Any:
    names = {f.name for f in dataclasses.fields(cls)}
    return cls(**{k: v for k, v in data.items() if k in names})


def report_from_dict(data: dict) -> AnalysisReport:
    """Rebuild an AnalysisReport from its JSON form (to reuse or re-log a report written earlier)."""
    data = dict(data)
    data["input"] = _known_fields(InputInfo, data.get("input") or {"path": ""})
    data["model"] = _known_fields(ModelInfo, data["model"]) if data.get("model") else None
    data["tracks"] = [_known_fields(TrackSummary, {**t, "faces": [_known_fields(FaceScore, f) for f in t.get("faces", [])]})
                      for t in data.get("tracks", [])]
    data["keyframes"] = [_known_fields(Keyframe, k) for k in data.get("keyframes", [])]
    return _known_fields(AnalysisReport, data)


def load_report(path: str | Path) -> AnalysisReport:
    return report_from_dict(json.loads(Path(path).read_text(encoding="utf-8")))


_NUM = {"type": "number"}
_NUM_OR_NULL = {"type": ["number", "null"]}
_FACE = {
    "type": "object",
    "required": ["frame_index", "time_s", "track_id", "box", "confidence", "score", "member_scores"],
    "properties": {
        "frame_index": {"type": "integer"}, "time_s": _NUM, "track_id": {"type": "integer"},
        "box": {"type": "array", "items": _NUM, "minItems": 4, "maxItems": 4},
        "confidence": _NUM, "score": {"type": "number", "minimum": 0, "maximum": 1},
        "member_scores": {"type": "object", "additionalProperties": _NUM},
    },
}

REPORT_SCHEMA: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "title": "deepfake-detect analysis report",
    "type": "object",
    "required": ["schema_version", "input", "verdict", "score", "threshold", "fake_percentage",
                 "frames_analysed", "tracks", "keyframes", "model", "timings", "errors", "outputs"],
    "properties": {
        "schema_version": {"const": SCHEMA_VERSION},
        "tool_version": {"type": "string"},
        "created": {"type": "string"},
        "input": {
            "type": "object", "required": ["path"],
            "properties": {
                "path": {"type": "string"}, "kind": {"enum": ["video", "image", None]},
                "sha256": {"type": ["string", "null"]}, "size_bytes": {"type": ["integer", "null"]},
                "fps": _NUM_OR_NULL, "frame_count": {"type": ["integer", "null"]}, "duration_s": _NUM_OR_NULL,
                "width": {"type": ["integer", "null"]}, "height": {"type": ["integer", "null"]},
                "rotation": {"type": ["integer", "null"]}, "has_audio": {"type": ["boolean", "null"]},
            },
        },
        "verdict": {"enum": list(VERDICTS)},
        "score": _NUM_OR_NULL,
        "threshold": _NUM_OR_NULL,
        "fake_percentage": _NUM_OR_NULL,
        "frames_analysed": {"type": "integer", "minimum": 0},
        "frames_with_faces": {"type": "integer", "minimum": 0},
        "sampling": {"type": "object"},
        "tracks": {"type": "array", "items": {
            "type": "object", "required": ["id", "score", "verdict", "counted", "faces"],
            "properties": {"id": {"type": "integer"}, "score": _NUM, "verdict": {"enum": list(VERDICTS)},
                           "counted": {"type": "boolean"}, "faces": {"type": "array", "items": _FACE}},
        }},
        "keyframes": {"type": "array", "items": {
            "type": "object", "required": ["frame_index", "time_s", "score", "track_id"],
            "properties": {"frame_index": {"type": "integer"}, "time_s": _NUM, "score": _NUM,
                           "track_id": {"type": "integer"}, "image": {"type": ["string", "null"]}},
        }},
        "model": {"type": ["object", "null"]},
        "timings": {"type": "object", "additionalProperties": _NUM},
        "errors": {"type": "array", "items": {"type": "string"}},
        "warnings": {"type": "array", "items": {"type": "string"}},
        "outputs": {"type": "object", "additionalProperties": {"type": "string"}},
    },
}
