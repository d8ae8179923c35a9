"""Configuration: one dataclass composed of each stage's own settings, loaded from YAML.

Stages never read this module or any file: the pipeline builds their settings here and passes
them in. Precedence, lowest first: dataclass defaults, `configs/default.yaml`, `--config FILE`,
command-line options (dotted keys such as `sampling.value=64` for `--set`).
"""
from __future__ import annotations

import dataclasses
import re
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar

import yaml
from annotated_types import Ge, Interval

from stages.aggregate import AggregateSettings
from stages.decode import DecodeLimits, Sampling
from stages.detect import DetectSettings
from stages.track import TrackSettings

PROJECT_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_CONFIG = PROJECT_ROOT / "configs" / "default.yaml"
DEFAULT_WEIGHTS = PROJECT_ROOT / "weights"


class ConfigError(ValueError):
    """A configuration file or override is wrong; message is for the user."""


@dataclass(frozen=True)
class RenderSettings:
    enabled: Literal["auto", "on", "off"] = "auto"  # auto: render when one input is analysed
    scale: Annotated[float, Interval(gt=0, le=4)] = 1.0  # output size relative to the input
    keyframe_images: bool = True
    explain_all_frames: bool = False
    heatmap_alpha: Annotated[float, Interval(ge=0, le=1)] = 0.45


@dataclass(frozen=True)
class AnalysisConfig:
    sampling: Sampling = Sampling()
    limits: DecodeLimits = DecodeLimits()
    detect: DetectSettings = DetectSettings()
    track: TrackSettings = TrackSettings()
    aggregate: AggregateSettings = AggregateSettings()
    render: RenderSettings = RenderSettings()
    device: str = "auto"
    # auto: ONNX Runtime on CPU (same scores, about twice as fast), PyTorch on a GPU
    backend: Literal["auto", "onnx", "torch"] = "auto"
    threads: Annotated[int, Ge(1)] | None = None  # CPU threads per analysis; None: pipeline/threads.py decides
    batch_size: Annotated[int, Ge(1)] | None = None  # face crops per forward pass; None: the backend's best
    chunk_size: Annotated[int, Ge(1)] = 16   # frames decoded per chunk (memory is bounded by this)
    weights: str = str(DEFAULT_WEIGHTS)


# What may differ between two inputs analysed by one loaded model (`Analyzer.settings_for_input`);
# the rest (device, backend, threads, detector, batch size, face detection) is fixed when it loads.
PER_INPUT_SETTINGS = ("sampling", "limits", "track", "aggregate", "render", "chunk_size")


def check_per_input(base: AnalysisConfig, config: AnalysisConfig) -> None:
    """Raise ValueError when `config` differs from `base` in a setting fixed at model load."""
    fixed = [f.name for f in dataclasses.fields(AnalysisConfig)
             if f.name not in PER_INPUT_SETTINGS and getattr(config, f.name) != getattr(base, f.name)]
    if fixed:
        raise ValueError(f"settings {', '.join(fixed)} are fixed when the model loads; only "
                         f"{', '.join(PER_INPUT_SETTINGS)} may differ per input")


def _unknown_keys(cls: type, data: Any, where: str) -> None:
    """Refuse keys a settings dataclass does not have (pydantic ignores them on plain dataclasses)."""
    if not isinstance(data, dict):
        return
    fields = {f.name: f for f in dataclasses.fields(cls)}
    hints = typing.get_type_hints(cls)
    for key, value in data.items():
        if key not in fields:
            raise ConfigError(f"unknown setting {where + str(key)!r}; known: {', '.join(fields)}")
        hint = hints[key]
        if dataclasses.is_dataclass(hint):
            _unknown_keys(hint, value, f"{where}{key}.")  # type: ignore[arg-type]
        elif typing.get_origin(hint) is dict and isinstance(value, dict):
            inner = typing.get_args(hint)[1]
            if dataclasses.is_dataclass(inner):
                for name, item in value.items():
                    _unknown_keys(inner, item, f"{where}{key}.{name}.")  # type: ignore[arg-type]


T = TypeVar("T")


def load_settings(cls: type[T], data: dict[str, Any], what: str = "setting") -> T:
    """Build a (nested) settings dataclass from a mapping, checking every value's type, range and
    choices (pydantic, from the dataclasses' annotations); the first problem is one ConfigError line
    naming its key. The one loader for analysis settings and training recipes."""
    from pydantic import TypeAdapter, ValidationError

    if not isinstance(data, dict):
        raise ConfigError(f"{what}s must be a mapping, got {type(data).__name__}")
    _unknown_keys(cls, data, "")
    try:
        return TypeAdapter(cls).validate_python(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        key = ".".join(str(part) for part in first["loc"] if not str(part).startswith(("function-", "union[")))
        more = f" (and {exc.error_count() - 1} more)" if exc.error_count() > 1 else ""
        raise ConfigError(f"{what} {key or '(top level)'}: {first['msg']}, got {first.get('input')!r}{more}") from None


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


class _SettingsLoader(yaml.SafeLoader):
    """YAML with YAML 1.2's booleans: only true/false. PyYAML follows YAML 1.1, where a bare on, off,
    yes or no is a boolean too, so `render.enabled: off` (or `--set render.enabled=off`) would reach
    the settings as false. Boolean settings still take yes/no/on/off: pydantic reads those strings."""


_SettingsLoader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:bool"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()}
_SettingsLoader.add_implicit_resolver("tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"),
                                      list("tTfF"))


def _load_yaml(text: str) -> Any:
    return yaml.load(text, Loader=_SettingsLoader)  # a SafeLoader subclass: no arbitrary objects


def read_yaml(path: Path) -> dict:
    try:
        data = _load_yaml(Path(path).read_text()) or {}
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
    return load_settings(AnalysisConfig, data)


def parse_set_option(items: tuple[str, ...]) -> dict[str, Any]:
    """`--set key=value` pairs; values are parsed as YAML scalars (numbers, booleans, strings)."""
    out = {}
    for item in items:
        if "=" not in item:
            raise ConfigError(f"--set expects key=value, got {item!r}")
        key, raw = item.split("=", 1)
        out[key.strip()] = _load_yaml(raw)
    return out
