"""Published detectors, imported: a checkpoint file its authors publish -> a detector folder like `weights/`.

One module per format, each with `FORMAT` facts (where the checkpoints come from, licence, the
paper's figures) and `convert(state_dicts) -> (DetectorConfig, member tensors)`. The conversion
maps the authors' tensor names onto a member this pipeline builds (timm or efficientnet_pytorch, as
the authors did) and records the method's own preprocessing (crop cut, input size, normalisation)
in detector.json, so `analyze --weights DIR` scores a face as the method itself would.

Nothing is downloaded: the user fetches the official file. Its pickle is read once, here, with
`torch.load(weights_only=True)` (tensors and plain containers only); the folder written holds
safetensors, which is all the pipeline ever loads.
"""
from __future__ import annotations

from importlib import import_module
from pathlib import Path
from typing import TYPE_CHECKING

from deepfake_detect.training.published.checkpoint import CheckpointError, read_state_dict

if TYPE_CHECKING:
    from types import ModuleType

__all__ = ["FORMATS", "CheckpointError", "format_module", "import_detector"]

# format name -> module of this package
FORMATS = {
    "icpr2020": "icpr2020",
    "sbi": "sbi",
    "dfdc-winner": "dfdc_winner",
    "resnext-lstm": "resnext_lstm",
}


def format_module(name: str) -> ModuleType:
    if name not in FORMATS:
        raise CheckpointError(f"unknown format {name!r}; known: {', '.join(FORMATS)}")
    return import_module(f"{__name__}.{FORMATS[name]}")


def import_detector(format_name: str, checkpoints: list[Path], out: Path) -> Path:
    """Convert `checkpoints` (files of `format_name`) into a detector folder `out`; returns it."""
    import torch

    from deepfake_detect.stages.ensemble import EnsembleDetector, file_sha256, save_detector

    module = format_module(format_name)
    if not checkpoints:
        raise CheckpointError("no checkpoint given")
    if len(checkpoints) > 1 and not getattr(module, "MANY", False):
        raise CheckpointError(f"{format_name} imports one checkpoint at a time")
    states = [read_state_dict(path) for path in checkpoints]
    config, members = module.convert(states, [path.name for path in checkpoints])
    config.provenance = {**config.provenance, "format": format_name,
                         "sources": [{"file": path.name, "sha256": file_sha256(path)} for path in checkpoints]}
    model = EnsembleDetector(config)
    tensors = {f"members.{name}.{key}": value for name, state in members.items() for key, value in state.items()}
    tensors.update({key: value for key, value in model.state_dict().items() if key.startswith("stacker.")})
    try:
        model.load_state_dict(tensors, strict=True)
    except RuntimeError as exc:
        raise CheckpointError(f"the checkpoint does not fit {format_name}'s architecture: "
                           f"{str(exc).splitlines()[0]}") from None
    with torch.no_grad():
        return save_detector(model.eval(), out)
