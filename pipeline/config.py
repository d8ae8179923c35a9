"""Configuration: one dataclass composed of each stage's own settings, loaded from YAML.

Stages never read this module or any file: the pipeline builds their settings here and passes
them in. Precedence, lowest first: dataclass defaults, `configs/default.yaml`, `--config FILE`,
command-line options (dotted keys such as `sampling.value=64` for `--set`).
"""
from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from stages.aggregate import AggregateSettings
from stages.decode import DecodeLimits, Sampling
from stages.detect import DetectSettings
from stages.track import TrackSettings

PROJECT_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_CONFIG = PROJECT_ROOT / "configs" / "default.yaml"
DEFAULT_WEIGHTS = PROJECT_ROOT / "weights"


class ConfigError(Exception):
    """A configuration file or override is wrong; message is for the user."""


@dataclass(frozen=True)
class RenderSettings:
    enabled: str = "auto"        # auto: render when one input is analysed; "on" / "off"
    scale: float = 1.0           # output size relative to the input
    keyframe_images: bool = True
    explain_all_frames: bool = False
    heatmap_alpha: float = 0.45


@dataclass(frozen=True)
class AnalysisConfig:
    sampling: Sampling = Sampling()
    limits: DecodeLimits = DecodeLimits()
    detect: DetectSettings = DetectSettings()
    track: TrackSettings = TrackSettings()
    aggregate: AggregateSettings = AggregateSettings()
    render: RenderSettings = RenderSettings()
    device: str = "auto"
    batch_size: int = 64         # face crops per forward pass
    chunk_size: int = 16         # frames decoded per chunk (memory is bounded by this)
    weights: str = str(DEFAULT_WEIGHTS)


def _build(cls: type, data: dict[str, Any], where: str) -> Any:
    """Instantiate a (nested) dataclass from a mapping, rejecting unknown keys."""
    if not isinstance(data, dict):
        raise ConfigError(f"{where or 'config'}: expected a mapping, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for key, value in data.items():
        if key not in hints:
            raise ConfigError(f"unknown setting {where + key!r}; known: {', '.join(hints)}")
        hint = hints[key]
        if dataclasses.is_dataclass(hint):
            kwargs[key] = _build(hint, value, f"{where}{key}.")
        else:
            kwargs[key] = tuple(value) if isinstance(value, list) else value
    try:
        return cls(**kwargs)
    except TypeError as exc:
        raise ConfigError(f"{where or 'config'}: {exc}") from None


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


def read_yaml(path: Path) -> dict:
    try:
        data = yaml.safe_load(Path(path).read_text()) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"cannot read config {path}: {str(exc).splitlines()[0]}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"config {path} must be a mapping")
    return data


def load_config(path: str | Path | None = None, overrides: dict[str, Any] | None = None) -> AnalysisConfig:
    """Defaults < configs/default.yaml < `path` < `overrides` (dotted keys, None values skipped)."""
    data: dict = read_yaml(DEFAULT_CONFIG) if DEFAULT_CONFIG.is_file() else {}
    if path is not None:
        data = _merge(data, read_yaml(Path(path)))
    if overrides:
        data = _merge(data, _dotted({k: v for k, v in overrides.items() if v is not None}))
    return _build(AnalysisConfig, data, "")


def parse_set_option(items: tuple[str, ...]) -> dict[str, Any]:
    """`--set key=value` pairs; values are parsed as YAML scalars (numbers, booleans, strings)."""
    out = {}
    for item in items:
        if "=" not in item:
            raise ConfigError(f"--set expects key=value, got {item!r}")
        key, raw = item.split("=", 1)
        out[key.strip()] = yaml.safe_load(raw)
    return out


def config_as_dict(config: AnalysisConfig) -> dict:
    return dataclasses.asdict(config)
