"""What every command of the CLI shares: exit codes, the error type, and the analysis options.

Command modules import this module and nothing else of the CLI; `pipeline.cli` imports the
command modules and registers them (PySceneDetect's `_cli` layout). Keep imports here light: the
whole CLI loads this to print `--help`.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

import click

from deepfake_detect.pipeline.core.errors import CommandError

if TYPE_CHECKING:
    from deepfake_detect.pipeline.core.config import AnalysisConfig
    from deepfake_detect.pipeline.core.runner import Analyzer

F = TypeVar("F", bound=Callable[..., Any])
S = TypeVar("S")


def analysis_options(func: F) -> F:
    """Options shared by every command that analyses media (analyze, watch, evaluate, bench)."""
    options = [
        click.option("--config", "config_file", type=click.Path(dir_okay=False),
                     help="YAML settings (see configs/default.yaml)."),
        click.option("--set", "sets", multiple=True, metavar="KEY=VALUE",
                     help="Override one setting, e.g. --set detect.min_confidence=0.9."),
        click.option("--frames", type=int, help="Analyse N frames spread over each video (default 32)."),
        click.option("--fps", type=float, help="Analyse F frames per second instead."),
        click.option("--every", type=int, help="Analyse every N-th frame instead."),
        click.option("--threshold", type=float, help="Fake threshold (default: the detector's own)."),
        click.option("--device", help="auto (default), cpu, cuda, cuda:N or mps."),
        click.option("--weights", type=click.Path(file_okay=False), help="Detector folder (default: weights/)."),
        click.option("--batch-size", type=int, help="Face crops per forward pass (default: the backend's best)."),
        click.option("--backend", type=click.Choice(["auto", "onnx", "torch"]),
                     help="auto (default): ONNX Runtime on CPU, PyTorch on a GPU."),
        click.option("--threads", type=int, help="CPU threads per analysis (default: the cores, shared among workers)."),
        click.option("--trust-anchors", type=click.Path(dir_okay=False),
                     help="PEM file of trusted C2PA signer roots (without: intact content credentials are 'untrusted')."),
    ]
    for option in reversed(options):
        func = option(func)
    return func


def _sampling_overrides(frames: int | None, fps: float | None, every: int | None) -> dict[str, Any]:
    chosen = [(m, v) for m, v in (("count", frames), ("fps", fps), ("every", every)) if v is not None]
    if len(chosen) > 1:
        raise CommandError("use only one of --frames, --fps, --every")
    if not chosen:
        return {}
    mode, value = chosen[0]
    if value <= 0:
        raise CommandError(f"--{ {'count': 'frames'}.get(mode, mode)} must be positive")
    return {"sampling.mode": mode, "sampling.value": value}


def config_from_options(config_file: str | None, sets: tuple[str, ...], frames: int | None, fps: float | None,
                        every: int | None, threshold: float | None, device: str | None, weights: str | None,
                        batch_size: int | None, backend: str | None = None, threads: int | None = None,
                        trust_anchors: str | None = None, **extra: Any) -> AnalysisConfig:
    """The analysis settings from `analysis_options` (plus dotted `extra` keys), checked whole
    before anything heavy loads: a wrong setting is one line naming its key."""
    from deepfake_detect.pipeline.core.config import ConfigError, load_config, parse_set_option

    overrides = {"aggregate.threshold": threshold, "device": device, "weights": weights, "batch_size": batch_size,
                 "backend": backend, "threads": threads, "provenance.trust_anchors": trust_anchors,
                 **_sampling_overrides(frames, fps, every), **extra}
    try:
        values = parse_set_option(sets)
        values.update({k: v for k, v in overrides.items() if v is not None})
        return load_config(config_file, values)
    except ConfigError as exc:
        raise CommandError(str(exc)) from None


def make_analyzer(config: AnalysisConfig) -> Analyzer:
    """Load the detector once for a command; a missing, damaged or untrained one is a CommandError."""
    from deepfake_detect.pipeline.core.runner import Analyzer
    from deepfake_detect.stages.ensemble import DetectorError

    try:
        return Analyzer(config)
    except (DetectorError, ValueError) as exc:
        raise CommandError(str(exc)) from None


def checked_settings(cls: type[S], values: dict[str, Any], what: str) -> S:
    """A job's settings (watch, serve, archive) from its options, checked by the one settings loader
    (stages/settings.py) like every other setting: a bad value is one line naming it, exit 2."""
    from deepfake_detect.stages.settings import ConfigError, load_settings

    try:
        return load_settings(cls, values, what)
    except ConfigError as exc:
        raise CommandError(str(exc)) from None
