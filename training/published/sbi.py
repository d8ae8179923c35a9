"""mapooon/SelfBlendedImages (Shiohara & Yamasaki, "Detecting Deepfakes with Self-Blended Images",
CVPR 2022): EfficientNet-B4 (efficientnet_pytorch, advprop start) trained on self-blended FF++ reals.

Checkpoints `FFraw.tar` / `FFc23.tar` (Google Drive links in its README): {"model": state_dict,
"optimizer": ..., "epoch": ...} with the network under `net.` and a two-class head `net._fc`
(class 1 = fake). softmax(z)[1] = sigmoid(z1 - z0), so the head becomes one logit exactly:
w = w1 - w0, b = b1 - b0. Input 380 x 380 RGB scaled to [0, 1], no mean or std.
"""
from __future__ import annotations

import torch

from deepfake_detect.stages.ensemble import DetectorConfig
from deepfake_detect.training.published.checkpoint import CheckpointError, take

INFO = {
    "method": "SBI (Shiohara & Yamasaki, CVPR 2022): EfficientNet-B4 on self-blended images",
    "repository": "https://github.com/mapooon/SelfBlendedImages",
    "checkpoints": "FFraw.tar (raw FF++) and FFc23.tar (c23), Google Drive links in its README",
    "licence": "Yamasaki Lab's academic, non-commercial research licence: no redistribution, commercial use "
               "needs an agreement",
    "reported_auc": {"FF-raw": {"CDF": 0.9382, "DFD": 0.9787, "DFDC": 0.7301, "DFDCP": 0.8570, "FFIW": 0.8452},
                     "FF-c23": {"CDF": 0.9287, "DFD": 0.9816, "DFDC": 0.7196, "DFDCP": 0.8551, "FFIW": 0.8322}},
}


def convert(states: list[dict[str, torch.Tensor]], names: list[str]) -> tuple[DetectorConfig, dict[str, dict]]:
    (state,) = states
    net = take(state, "net.")
    if "_fc.weight" not in net or net["_fc.weight"].shape[0] != 2:
        raise CheckpointError(f"{names[0]}: no two-class net._fc: not an SBI checkpoint")
    member = {f"efficientnet.{key}": value for key, value in net.items() if not key.startswith("_fc.")}
    weight, bias = net["_fc.weight"].double(), net["_fc.bias"].double()
    member["classifier.weight"] = (weight[1] - weight[0]).unsqueeze(0).float()
    member["classifier.bias"] = (bias[1] - bias[0]).reshape(1).float()
    config = example_config(f"sbi-{names[0].rsplit('.', 1)[0]}")
    return config, {config.members[0]: member}


def example_config(detector_name: str = "sbi") -> DetectorConfig:
    """The detector.json an import writes (the bench times it with random weights)."""
    name = "sbi_efficientnet_b4"
    return DetectorConfig(members=[name], architectures={name: {"library": "efficientnet_pytorch",
                                                                  "model_name": "efficientnet-b4"}},
                          input_size=380, crop_margin=0.0, crop_policy="sbi", mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0),
                          threshold=0.5, name=detector_name, version="imported", trained=True, provenance=dict(INFO))
