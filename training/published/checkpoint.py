"""Reading a published checkpoint: the pickle once, safely, and the nesting and prefixes authors add."""
from __future__ import annotations

from pathlib import Path

import torch


class CheckpointError(Exception):
    """The checkpoint is not what the format says (a one-line reason for the user)."""


# the ImageNet normalisation (on 0-1 pixels) that most published detectors kept from their backbone
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
NESTING_KEYS = ("state_dict", "model", "net", "model_state_dict")


def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """The tensors of a checkpoint file: unpickled with weights_only=True (no code runs), unwrapped
    from {"state_dict": ...} / {"model": ...} / {"net": ...}, `module.` (DataParallel) stripped."""
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise CheckpointError(f"{path}: no such file") from None
    except Exception as exc:  # noqa: BLE001 - any unpickling failure is the same news for the user
        raise CheckpointError(f"{path}: not a PyTorch checkpoint of tensors ({type(exc).__name__}: "
                           f"{str(exc).splitlines()[0] if str(exc) else ''})") from None
    while isinstance(data, dict) and not any(isinstance(v, torch.Tensor) for v in data.values()):
        inner = next((data[k] for k in NESTING_KEYS if isinstance(data.get(k), dict)), None)
        if inner is None:
            raise CheckpointError(f"{path}: no tensors found (top-level keys: {', '.join(map(str, list(data)[:8]))})")
        data = inner
    if not isinstance(data, dict):
        raise CheckpointError(f"{path}: expected a dict of tensors, found {type(data).__name__}")
    return {_strip(key): value for key, value in data.items() if isinstance(value, torch.Tensor)}


def _strip(key: str) -> str:
    return key[len("module."):] if key.startswith("module.") else key


def take(state: dict[str, torch.Tensor], prefix: str, into: str = "") -> dict[str, torch.Tensor]:
    """The tensors under `prefix`, renamed to start with `into` instead."""
    return {into + key[len(prefix):]: value for key, value in state.items() if key.startswith(prefix)}
