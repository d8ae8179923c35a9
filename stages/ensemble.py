"""The detector model: an ensemble of timm CNNs, its config, and its safetensors save/load.

A detector on disk is two files in one folder, as timm ships pretrained weights:
`detector.safetensors` (tensors only: no pickle, nothing executes on load) and `detector.json`
(architectures, input size, normalisation, combiner, threshold, sha256 of the tensors file).
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Literal

import timm
import torch
from safetensors.torch import load_file, save_file
from torch import nn

from stages.detect import DEFAULT_CROP_MARGIN

WEIGHTS_FILE = "detector.safetensors"
CONFIG_FILE = "detector.json"
FORMAT_VERSION = 1

# Members the design allows, with the timm arguments each needs. mobilenetv2_100 uses TF "same"
# padding because its ImageNet initialisation was converted from TensorFlow.
MEMBER_REGISTRY: dict[str, dict] = {
    "mobilenetv2_100": {"arch": "mobilenetv2_100", "kwargs": {"pad_type": "same"}},
    "tf_efficientnetv2_b0": {"arch": "tf_efficientnetv2_b0", "kwargs": {}},
    "tf_efficientnet_lite0": {"arch": "tf_efficientnet_lite0", "kwargs": {}},
}


class DetectorError(Exception):
    """The detector weights are missing, damaged or inconsistent; message is for the user."""


@dataclass
class DetectorConfig:
    members: list[str] = field(default_factory=lambda: ["mobilenetv2_100", "tf_efficientnetv2_b0"])
    combiner: Literal["mean", "stacking"] = "mean"
    input_size: int = 224
    crop_margin: float = DEFAULT_CROP_MARGIN  # context around the face box the members were trained with
    mean: tuple[float, float, float] = (0.5, 0.5, 0.5)
    std: tuple[float, float, float] = (0.5, 0.5, 0.5)
    threshold: float = 0.5
    drop_rate: float = 0.2
    name: str = "deepfake-ensemble"
    version: str = "0.0.0"
    trained: bool = False     # only a detector trained by `training/` may give verdicts
    sha256: str | None = None  # of detector.safetensors, filled in by save_detector
    training: dict = field(default_factory=dict)  # provenance: data, recipe, metrics

    @classmethod
    def from_dict(cls, data: dict) -> "DetectorConfig":
        known = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        for key in ("mean", "std"):
            if key in known:
                known[key] = tuple(known[key])
        return cls(**known)


def create_member(name: str, drop_rate: float = 0.2) -> nn.Module:
    """One ensemble member: timm backbone, global average pooling, dropout, one logit."""
    if name not in MEMBER_REGISTRY:
        raise DetectorError(f"unknown member {name!r}; known: {', '.join(MEMBER_REGISTRY)}")
    spec = MEMBER_REGISTRY[name]
    return timm.create_model(spec["arch"], pretrained=False, num_classes=1, drop_rate=drop_rate,
                             global_pool="avg", **spec["kwargs"])


class EnsembleDetector(nn.Module):
    """Images (N, 3, S, S), normalised, in; fake probability (N,) and member probabilities (N, M) out."""

    def __init__(self, config: DetectorConfig):
        super().__init__()
        self.config = config
        self.members = nn.ModuleDict({name: create_member(name, config.drop_rate) for name in config.members})
        # The stacking layer sees member logits; initialised to the plain mean of logits.
        self.stacker = nn.Linear(len(config.members), 1)
        nn.init.constant_(self.stacker.weight, 1.0 / len(config.members))
        nn.init.zeros_(self.stacker.bias)

    def member_logits(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([m(x).float() for m in self.members.values()], dim=1)

    def combine(self, logits: torch.Tensor) -> torch.Tensor:
        if self.config.combiner == "stacking":
            return torch.sigmoid(self.stacker(logits)).squeeze(1)
        return torch.sigmoid(logits).mean(dim=1)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        logits = self.member_logits(x)
        return self.combine(logits), torch.sigmoid(logits)


def create_detector(config: DetectorConfig | None = None, **overrides) -> EnsembleDetector:
    """Factory in the spirit of timm.create_model: a config (or defaults) plus keyword overrides."""
    config = config or DetectorConfig()
    if overrides:
        config = DetectorConfig.from_dict({**asdict(config), **overrides})
    return EnsembleDetector(config)


def file_sha256(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def save_detector(model: EnsembleDetector, folder: str | Path) -> Path:
    """Write detector.safetensors and detector.json (with the tensors' sha256) into `folder`."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    save_file(tensors, str(folder / WEIGHTS_FILE), metadata={"format": str(FORMAT_VERSION)})
    model.config.sha256 = file_sha256(folder / WEIGHTS_FILE)
    config = {"format": FORMAT_VERSION, **asdict(model.config)}
    (folder / CONFIG_FILE).write_text(json.dumps(config, indent=2) + "\n")
    return folder


def load_detector_config(folder: str | Path) -> DetectorConfig:
    path = Path(folder) / CONFIG_FILE
    if not path.is_file():
        raise DetectorError(f"no detector config at {path}")
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise DetectorError(f"detector config {path} is unreadable ({exc})") from None
    if data.get("format") != FORMAT_VERSION:
        raise DetectorError(f"detector config {path} has format {data.get('format')}, expected {FORMAT_VERSION}")
    return DetectorConfig.from_dict(data)


def load_detector(folder: str | Path, device: str | torch.device = "cpu") -> EnsembleDetector:
    """Load a saved detector, verifying the tensors file against the sha256 in its config."""
    folder = Path(folder)
    config = load_detector_config(folder)
    weights = folder / WEIGHTS_FILE
    if not weights.is_file():
        raise DetectorError(f"no detector weights at {weights}")
    actual = file_sha256(weights)
    if config.sha256 != actual:
        raise DetectorError(f"{weights} sha256 {actual[:12]}… does not match its config ({str(config.sha256)[:12]}…)")
    model = EnsembleDetector(config)
    try:
        model.load_state_dict(load_file(str(weights)), strict=True)
    except RuntimeError as exc:
        raise DetectorError(f"{weights} does not fit its config: {str(exc).splitlines()[0]}") from None
    return model.to(device).eval()
