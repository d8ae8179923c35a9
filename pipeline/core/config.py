"""Configuration: one dataclass composed of each stage's own settings, loaded from YAML.

Stages never read this module or any file: the pipeline builds their settings here and passes
them in. Precedence, lowest first: dataclass defaults, `configs/default.yaml`, `--config FILE`,
command-line options (dotted keys such as `sampling.value=64` for `--set`).
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from importlib.resources import files
from pathlib import Path
from typing import Annotated, Any, Literal

from annotated_types import Ge, Interval

from deepfake_detect.stages.aggregate import AggregateSettings
from deepfake_detect.stages.decode import DecodeLimits, Sampling
from deepfake_detect.stages.detect import DetectSettings
from deepfake_detect.stages.provenance import ProvenanceSettings
from deepfake_detect.stages.settings import ConfigError, load_settings, parse_yaml, read_yaml
from deepfake_detect.stages.track import TrackSettings

# package data (configs/ and weights/ in the repository), wherever the package is installed
DEFAULT_CONFIG = Path(str(files("deepfake_detect.configs") / "default.yaml"))
DEFAULT_WEIGHTS = Path(str(files("deepfake_detect.weights")))


@dataclass(frozen=True)
class RenderSettings:
    enabled: Literal["auto", "on", "off"] = "auto"  # auto: render when one input is analysed
    scale: Annotated[float, Interval(gt=0, le=4)] = 1.0  # output size relative to the input
    keyframe_images: bool = True
    explain_all_frames: bool = False
    heatmap_alpha: Annotated[float, Interval(ge=0, le=1)] = 0.45
    html: bool = False   # also a self-contained <name>.html per input beside its JSON report (core/html_report.py)


@dataclass(frozen=True)
class AnalysisConfig:
    sampling: Sampling = Sampling()
    limits: DecodeLimits = DecodeLimits()
    detect: DetectSettings = DetectSettings()
    track: TrackSettings = TrackSettings()
    aggregate: AggregateSettings = AggregateSettings()
    render: RenderSettings = RenderSettings()
    provenance: ProvenanceSettings = ProvenanceSettings()
    device: str = "auto"
    # auto: ONNX Runtime on CPU (same scores, about twice as fast), PyTorch on a GPU
    backend: Literal["auto", "onnx", "torch"] = "auto"
    threads: Annotated[int, Ge(1)] | None = None  # CPU threads per analysis; None: pipeline/core/threads.py decides
    batch_size: Annotated[int, Ge(1)] | None = None  # face crops per forward pass; None: the backend's best
    chunk_size: Annotated[int, Ge(1)] = 16   # frames decoded per chunk (memory is bounded by this)
    weights: str = str(DEFAULT_WEIGHTS)


# What may differ between two inputs analysed by one loaded model (`Analyzer.settings_for_input`);
# the rest (device, backend, threads, detector, batch size, face detection) is fixed when it loads.
PER_INPUT_SETTINGS = ("sampling", "limits", "track", "aggregate", "render", "provenance", "chunk_size")


def check_per_input(base: AnalysisConfig, config: AnalysisConfig) -> None:
    """Raise ValueError when `config` differs from `base` in a setting fixed at model load."""
    fixed = [f.name for f in dataclasses.fields(AnalysisConfig)
             if f.name not in PER_INPUT_SETTINGS and getattr(config, f.name) != getattr(base, f.name)]
    if fixed:
        raise ValueError(f"settings {', '.join(fixed)} are fixed when the model loads; only "
                         f"{', '.join(PER_INPUT_SETTINGS)} may differ per input")


def _merge(base: dict, update: dict) -> dict:
    out = dict(base)
    for key, value in update.items():
        out[key] = _merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def _dotted(overrides: dict[str, Any]) -> dict:
    nested: dict = {}
    for dotted_key, value in overrides.items():
        node = nested
        *parents, leaf = dotted_key.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    return nested


def load_config(path: str | Path | None = None, overrides: dict[str, Any] | None = None) -> AnalysisConfig:
    """Defaults < configs/default.yaml < `path` < `overrides` (dotted keys, None values skipped)."""
    data: dict = read_yaml(DEFAULT_CONFIG) if DEFAULT_CONFIG.is_file() else {}
    if path is not None:
        data = _merge(data, read_yaml(Path(path)))
    if overrides:
        data = _merge(data, _dotted({k: v for k, v in overrides.items() if v is not None}))
    return load_settings(AnalysisConfig, data)


def with_overrides(config: AnalysisConfig, overrides: dict[str, Any]) -> AnalysisConfig:
    """`config` with `overrides` (dotted keys) applied and the whole checked again by the one loader, as
    if they had been given at start-up: how a server job's own sampling, threshold or rendering is set."""
    return load_settings(AnalysisConfig, _merge(dataclasses.asdict(config), _dotted(overrides)))


def parse_set_option(items: tuple[str, ...]) -> dict[str, Any]:
    """`--set key=value` pairs; values are parsed as YAML scalars (numbers, booleans, strings)."""
    out = {}
    for item in items:
        if "=" not in item:
            raise ConfigError(f"--set expects key=value, got {item!r}")
        key, raw = item.split("=", 1)
        out[key.strip()] = parse_yaml(raw)
    return out
