"""The analysis report: dataclasses, their JSON form, and the JSON Schema that describes it.

`report_to_dict` is the only way a report becomes JSON; `pipeline.writers` is the only place
that writes it to disk. Bump SCHEMA_VERSION when a field changes meaning or disappears.
"""
from __future__ import annotations

import dataclasses
import datetime as _dt
from dataclasses import dataclass, field
from typing import Any

from stages.aggregate import Keyframe, TrackSummary

SCHEMA_VERSION = "1.0"
VERDICTS = ("fake", "real", "inconclusive", "no_face", "error")


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
    created: str = field(default_factory=lambda: _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"))

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
