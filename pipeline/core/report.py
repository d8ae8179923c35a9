"""The analysis report: dataclasses, their JSON form, and the JSON Schema that describes it.

`report_to_dict` is the only way a report becomes JSON; `pipeline.core.writers` is the only place
that writes it to disk. REPORT_SCHEMA is generated from the dataclasses (pydantic), so it
changes with them. Bump SCHEMA_VERSION when a field changes meaning or disappears.
"""
from __future__ import annotations

import dataclasses
import datetime as _dt
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal

from annotated_types import Ge
from pydantic import ConfigDict, TypeAdapter, with_config

from deepfake_detect.stages.aggregate import FaceScore, Keyframe, TrackSummary, Verdict
from deepfake_detect.stages.provenance import C2paAction, C2paIngredient, Metadata, Provenance

# A Literal so that the schema pins the version (const); mypy checks that the two agree.
# 1.1 added input.decode_errors; 1.2 tracks[].faces[].sharpness; 1.3 provenance, verdict_basis, detector_verdict.
SchemaVersion = Literal["1.3"]
SCHEMA_VERSION: SchemaVersion = "1.3"
# The aggregate stage's verdicts, and "error" for an input that could not be analysed.
ReportVerdict = Literal[Verdict, "error"]

# Every field of the report's own dataclasses is always written (dataclasses.asdict), null when
# unknown: the schema says so (serialization mode with this setting lists fields with defaults
# as required too), so a reader can rely on every key being there.
_ALL_KEYS = ConfigDict(json_schema_serialization_defaults_required=True)


def now_iso() -> str:
    """The current UTC time as the reports write it."""
    return _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds")


@with_config(_ALL_KEYS)
@dataclass
class InputInfo:
    path: str
    kind: Literal["video", "image"] | None = None
    sha256: str | None = None
    size_bytes: int | None = None
    fps: float | None = None
    frame_count: int | None = None
    duration_s: float | None = None
    width: int | None = None
    height: int | None = None
    rotation: int | None = None
    has_audio: bool | None = None
    # sampled frames that could not be decoded or came out damaged, left out of the analysis
    decode_errors: Annotated[int, Ge(0)] | None = None


@with_config(_ALL_KEYS)
@dataclass
class ModelInfo:
    name: str
    version: str
    sha256: str | None
    members: list[str]
    combiner: str
    device: str


@with_config(_ALL_KEYS)
@dataclass
class AnalysisReport:
    input: InputInfo
    verdict: ReportVerdict
    score: float | None = None
    threshold: float | None = None
    fake_percentage: float | None = None
    frames_analysed: Annotated[int, Ge(0)] = 0
    frames_with_faces: Annotated[int, Ge(0)] = 0
    sampling: dict[str, Any] = field(default_factory=dict)
    tracks: list[TrackSummary] = field(default_factory=list)
    keyframes: list[Keyframe] = field(default_factory=list)
    model: ModelInfo | None = None
    timings: dict[str, float] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    outputs: dict[str, str] = field(default_factory=dict)   # name -> file path
    # what the file says about its origin (stages/provenance.py); None where it was not read
    provenance: Provenance | None = None
    # "provenance": an intact content credential declares the content generated, and made the verdict
    # "fake"; `detector_verdict` is what the detector alone said
    verdict_basis: Literal["detector", "provenance"] = "detector"
    detector_verdict: ReportVerdict | None = None
    schema_version: SchemaVersion = SCHEMA_VERSION
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
    if data.get("provenance"):
        found = dict(data["provenance"])
        found["actions"] = [_known_fields(C2paAction, a) for a in found.get("actions", [])]
        found["ingredients"] = [_known_fields(C2paIngredient, i) for i in found.get("ingredients", [])]
        found["metadata"] = _known_fields(Metadata, found.get("metadata") or {})
        data["provenance"] = _known_fields(Provenance, found)
    return _known_fields(AnalysisReport, data)


def load_report(path: str | Path) -> AnalysisReport:
    return report_from_dict(json.loads(Path(path).read_text(encoding="utf-8")))


def _report_schema() -> dict[str, Any]:
    """JSON Schema (draft 2020-12) of `report_to_dict`'s output, generated from the dataclasses."""
    schema = TypeAdapter(AnalysisReport).json_schema(mode="serialization")
    # FaceScore belongs to stages.aggregate and carries no range annotations (yet): these are the
    # two constraints the hand-kept schema had on it. Indexing (not .get) makes a renamed field an
    # import-time error here rather than a constraint silently dropped.
    face = schema["$defs"]["FaceScore"]["properties"]
    face["box"].update(minItems=4, maxItems=4)          # x1, y1, x2, y2
    face["score"].update(minimum=0, maximum=1)          # a probability
    return {"$schema": "https://json-schema.org/draft/2020-12/schema", **schema,
            "title": "deepfake-detect analysis report"}


REPORT_SCHEMA: dict[str, Any] = _report_schema()
