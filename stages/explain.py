"""Explain stage: Grad-CAM heatmaps of face crops, per ensemble member and for the ensemble.

Grad-CAM (pytorch-grad-cam) runs on each member's last convolutional block — for the timm
EfficientNet family (MobileNetV2 included) that is `bn2`, the activated output of `conv_head` that
global pooling averages. There Grad-CAM's channel weights are the classifier's weights, so the map
is exactly where the pooled evidence for "fake" comes from (the class activation map). `conv_head`
and `blocks[-1]` give one and the same map (a 1x1 convolution is linear per pixel), which differs
from bn2's only through the head's BatchNorm and activation; on the face-fitted model of
tests/test_explain.py bn2 put less heat on the crop border for mobilenetv2 (0.86 of a uniform
map's share against 0.99) and the same for tf_efficientnetv2_b0 (0.45).

The ensemble map combines the member maps with the weights the combiner gives them:
- "mean" averages member probabilities, so every member counts equally: equal weights. (Weighting
  by d prob / d logit was rejected: it fades out exactly the members that are most confident.)
- "stacking" is sigmoid(w . logits + b); the shared sigmoid slope cancels when the weights are
  normalised, leaving w. Only the positive part counts: a member with a negative weight votes
  against "fake", so the regions it finds fake-looking are not evidence for the verdict.
"""
from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import cv2
import numpy as np
import torch
from pytorch_grad_cam import GradCAM
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget
from torch import nn

from deepfake_detect.stages.classify import group_inputs, input_of_groups
from deepfake_detect.stages.ensemble import EnsembleDetector


@dataclass
class Explanation:
    """Heatmaps in crop space, each normalised to [0, 1] (1 = strongest evidence for "fake")."""

    members: np.ndarray    # (N, M, S, S) float32, member order as in the detector config
    ensemble: np.ndarray   # (N, S, S) float32

    def __len__(self) -> int:
        return len(self.ensemble)


def target_layer(member: nn.Module) -> nn.Module:
    """The last convolutional block of a member (see the module docstring for the choice): the one it
    names itself (`grad_cam_layer`, stages/members.py), else a timm model's."""
    for name in ("grad_cam_layer", "bn2", "conv_head"):
        layer = getattr(member, name, None)
        if isinstance(layer, nn.Module):
            return layer
    blocks = getattr(member, "blocks", None)
    if blocks is not None:
        return blocks[-1]
    raise ValueError(f"no convolutional head found on {type(member).__name__}")


def member_weights(model: EnsembleDetector) -> np.ndarray:
    """How much each member's map counts in the ensemble map, summing to 1."""
    n = len(model.members)
    if model.config.combiner == "stacking":
        w = model.stacker.weight.detach().float().cpu().numpy().reshape(-1).clip(min=0)
        if w.sum() > 0:
            return (w / w.sum()).astype(np.float32)
    return np.full(n, 1.0 / n, dtype=np.float32)


@contextmanager
def _head_only_gradients(member: nn.Module, layer: nn.Module) -> Iterator[None]:
    """Backpropagate only from the logit down to `layer`, not through the whole backbone.

    Grad-CAM needs the gradient at the target layer and nothing below it; freezing the parameters
    and making the layer's output the leaf that requires grad keeps backward as cheap as the head.
    The parameters' flags are restored afterwards (the detector is shared with the classifier).
    """
    flags = [p.requires_grad for p in member.parameters()]
    for p in member.parameters():
        p.requires_grad_(False)
    # registered before GradCAM's own hooks, so it runs first and they see a tensor that needs grad
    handle = layer.register_forward_hook(lambda _m, _i, out: out.detach().requires_grad_(True))
    try:
        with torch.enable_grad():  # callers may sit inside no_grad; Grad-CAM cannot
            yield
    finally:
        handle.remove()
        for p, flag in zip(member.parameters(), flags):
            p.requires_grad_(flag)


class Explainer:
    """Face crops (N, S, S, 3) uint8 RGB in, `Explanation` out; batched, on the detector's device."""

    def __init__(self, model: EnsembleDetector, device: torch.device | str = "cpu", batch_size: int = 32):
        self.model = model
        self.device = torch.device(device)
        self.batch_size = batch_size
        self.member_names = list(model.config.members)
        self.weights = member_weights(model)
        self.groups = input_of_groups(model.config)

    def explain(self, crops: np.ndarray, group_crops: Sequence[np.ndarray] | None = None,
                to_primary: Sequence[np.ndarray | None] | None = None) -> Explanation:
        """Maps of every member on `crops` (N, S, S, 3). A combined detector's members that cut their own
        crops see them (`group_crops`, one array per input group), and their maps are carried into
        `crops`' frame by `to_primary` (per group: (N, 2, 3) affine maps from its crop to `crops`, or None
        where the group's crops are `crops`)."""
        n, size = len(crops), (crops.shape[1] if crops.ndim == 4 else self.model.config.input_size)
        members = np.zeros((n, len(self.member_names), size, size), np.float32)
        groups = list(group_crops) if group_crops is not None else [crops]
        warps = list(to_primary) if to_primary is not None else [None] * len(groups)
        for start in range(0, n, self.batch_size):
            stop = min(n, start + self.batch_size)
            xs = group_inputs([g[start:stop] for g in groups], self.groups, self.device)
            for j, name in enumerate(self.member_names):
                g = self.model.group_of_member[j]
                cam = self._member_cam(self.model.members[name], xs[g])
                own = groups[g].shape[1]   # maps come at the member's input size; its crops may differ
                if cam.shape[-1] != own:
                    cam = np.stack([cv2.resize(c, (own, own), interpolation=cv2.INTER_LINEAR) for c in cam])
                warp = warps[g]
                if warp is not None:   # another cut: into the primary crop's pixels (outside its window: 0)
                    cam = np.stack([cv2.warpAffine(c, warp[start + k], (size, size), flags=cv2.INTER_LINEAR)
                                    for k, c in enumerate(cam)])
                elif cam.shape[-1] != size:
                    cam = np.stack([cv2.resize(c, (size, size), interpolation=cv2.INTER_LINEAR) for c in cam])
                members[start:stop, j] = cam
        ensemble = np.einsum("nmhw,m->nhw", members, self.weights)
        # rescale so the strongest region reads as 1 whichever members agree
        peak = ensemble.reshape(n, -1).max(axis=1, initial=0.0).reshape(n, 1, 1)
        ensemble = np.where(peak > 0, ensemble / np.maximum(peak, 1e-7), 0.0).astype(np.float32)
        return Explanation(members=members, ensemble=ensemble)

    def _member_cam(self, member: nn.Module, x: torch.Tensor) -> np.ndarray:
        layer = target_layer(member)
        was_training = member.training
        with _head_only_gradients(member, layer), GradCAM(model=member, target_layers=[layer]) as cam:
            # one logit per member: target 0 is the "fake" logit itself, not a softmax of it
            maps = cam(input_tensor=x, targets=[ClassifierOutputTarget(0)] * len(x))
        member.train(was_training)  # GradCAM switches the model to eval; keep the caller's mode
        return np.nan_to_num(maps.astype(np.float32), nan=0.0).clip(0, 1)

