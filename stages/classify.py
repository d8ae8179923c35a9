"""Classify stage: score face crops with the ensemble, batched: PyTorch on a GPU, ONNX Runtime on CPU.

Both classifiers take the same crops and give the same `CropScores` (within 1e-4, checked in the
tests and the bench); which one runs is the pipeline's choice (`backend` in the settings).
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from deepfake_detect.stages.ensemble import DetectorConfig, EnsembleDetector, MemberInput


def pick_device(requested: str | None = "auto") -> torch.device:
    """`auto` picks CUDA, then Apple MPS, then CPU; anything else is passed to torch as is."""
    if requested in (None, "", "auto"):
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    device = torch.device(requested)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError("--device cuda was asked for, but no CUDA GPU is available")
    return device


@dataclass
class CropScores:
    ensemble: np.ndarray   # (N,) fake probability
    members: np.ndarray    # (N, M) each member's fake probability


def shrink_detail(x: torch.Tensor, detail_size: int | None) -> torch.Tensor:
    """Images (N, C, S, S) shrunk to detail_size and back to S (DetectorConfig.detail_size); as they are
    when detail_size is None or not below S."""
    size = x.shape[-1]
    if detail_size is None or detail_size >= size:
        return x
    x = torch.nn.functional.interpolate(x, size=(detail_size, detail_size), mode="bilinear", align_corners=False,
                                        antialias=True)
    return torch.nn.functional.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)


def to_model_input(crops: np.ndarray, mean, std, size: int, device: torch.device,
                   detail_size: int | None = None) -> torch.Tensor:
    """uint8 (N, H, W, 3) RGB crops to a normalised float tensor (N, 3, size, size); with `detail_size`,
    shrunk to that many pixels and back first (DetectorConfig.detail_size)."""
    x = torch.from_numpy(np.ascontiguousarray(crops)).to(device).permute(0, 3, 1, 2).float().div_(255)
    if x.shape[-1] != size or x.shape[-2] != size:
        x = torch.nn.functional.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
    x = shrink_detail(x, detail_size)
    mean_t = torch.tensor(mean, device=device).view(1, 3, 1, 1)
    std_t = torch.tensor(std, device=device).view(1, 3, 1, 1)
    return (x - mean_t) / std_t


def detector_input(crops: np.ndarray, config: DetectorConfig, device: torch.device) -> torch.Tensor:
    """RGB crops to what `config`'s members take: channel order, input size, detail ceiling, normalisation."""
    if config.channels == "bgr":
        crops = crops[..., ::-1]
    return to_model_input(crops, config.mean, config.std, config.input_size, device, config.detail_size)


def input_of_groups(config: DetectorConfig) -> list[MemberInput]:
    """What each input group of `config` takes, in order (fixed once a detector is loaded)."""
    return [member_input for member_input, _ in config.input_groups()]


def group_inputs(crops_by_group: Sequence[np.ndarray], groups: Sequence[MemberInput],
                 device: torch.device) -> list[torch.Tensor]:
    """RGB crops of each input group (cut as each group's members cut them) to what those members take."""
    inputs = []
    for member_input, crops in zip(groups, crops_by_group, strict=True):
        if member_input.channels == "bgr":
            crops = crops[..., ::-1]
        inputs.append(to_model_input(crops, member_input.mean, member_input.std, member_input.input_size, device,
                                     member_input.detail_size))
    return inputs


def as_groups(crops: np.ndarray | Sequence[np.ndarray]) -> list[np.ndarray]:
    """One crop array (every member takes the same input) or one per input group, as a list."""
    return [crops] if isinstance(crops, np.ndarray) else list(crops)


class CropClassifier:
    """Crops (N, H, W, 3) uint8 in, `CropScores` out; mixed precision on CUDA."""

    def __init__(self, model: EnsembleDetector, device: torch.device, batch_size: int = 64):
        self.model = model.to(device).eval()
        self.device = device
        self.batch_size = batch_size
        self.member_names = list(model.config.members)
        self.half = device.type == "cuda"   # fp16 autocast on CUDA; False scores in fp32 (to measure the difference)
        self.groups = input_of_groups(model.config)

    def score(self, crops: np.ndarray | Sequence[np.ndarray]) -> CropScores:
        """Scores of N faces: their crops, or one crop array per input group (a combined detector)."""
        n_members = len(self.member_names)
        groups = as_groups(crops)
        if len(groups[0]) == 0:
            return CropScores(np.zeros(0, np.float32), np.zeros((0, n_members), np.float32))
        ens, mem = [], []
        for start in range(0, len(groups[0]), self.batch_size):
            xs = group_inputs([g[start:start + self.batch_size] for g in groups], self.groups, self.device)
            with torch.inference_mode(), torch.autocast(self.device.type, dtype=torch.float16, enabled=self.half):
                prob, member_prob = self.model(*xs)
            ens.append(prob.float().cpu().numpy())
            mem.append(member_prob.float().cpu().numpy())
        return CropScores(np.concatenate(ens), np.concatenate(mem))


class OnnxCropClassifier:
    """The same interface as `CropClassifier`, running the exported ensemble (members, combiner and
    calibration in one graph) in an ONNX Runtime session (stages/onnx_models.py)."""

    def __init__(self, session, config: DetectorConfig, batch_size: int = 32):
        self.session = session
        self.config = config
        self.batch_size = batch_size
        self.member_names = list(config.members)
        self._inputs = [i.name for i in session.get_inputs()]   # one per input group, in order
        self.groups = input_of_groups(config)

    def score(self, crops: np.ndarray | Sequence[np.ndarray]) -> CropScores:
        groups = as_groups(crops)
        if len(groups[0]) == 0:
            return CropScores(np.zeros(0, np.float32), np.zeros((0, len(self.member_names)), np.float32))
        ens, mem = [], []
        cpu = torch.device("cpu")
        for start in range(0, len(groups[0]), self.batch_size):
            xs = group_inputs([g[start:start + self.batch_size] for g in groups], self.groups, cpu)
            prob, member_prob = self.session.run(None, {name: x.numpy() for name, x in zip(self._inputs, xs, strict=True)})
            ens.append(prob.astype(np.float32))
            mem.append(member_prob.astype(np.float32))
        return CropScores(np.concatenate(ens), np.concatenate(mem))
