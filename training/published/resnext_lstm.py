"""abhijitjadhav1998/Deepfake_detection_using_deep_learning: ResNeXt50-32x4d features + LSTM over a window
of face crops (112 x 112), two classes (index 0 FAKE, index 1 REAL).

Checkpoints `model_<acc>_acc_<frames>_frames_final_data.pt` (10 to 100 frames; a Google Drive folder
linked from its README): a raw state_dict: `model.<i>` the ResNeXt children without pooling and fc,
`lstm.weight_ih_l0` / `weight_hh_l0` (no biases: its LSTM was built with bias=False), `linear1`.
As published, its score of a window is its score of the window's last crop (stages/members.py says
why), so it runs as a per-crop member; the window length is kept as provenance.
"""
from __future__ import annotations

import re

import torch

from deepfake_detect.stages.ensemble import DetectorConfig
from deepfake_detect.training.published.checkpoint import IMAGENET_MEAN, IMAGENET_STD, CheckpointError, take

INFO = {
    "method": "ResNeXt50-32x4d + LSTM (abhijitjadhav1998/Deepfake_detection_using_deep_learning)",
    "repository": "https://github.com/abhijitjadhav1998/Deepfake_detection_using_deep_learning",
    "checkpoints": "model_84_acc_10_frames_final_data.pt ... model_93_acc_100_frames_final_data.pt (Google Drive, "
                   "linked from its README)",
    "licence": "GPL-3.0 (its README's badge)",
    "reported_accuracy": {"10": 0.8421, "20": 0.8779, "40": 0.8935, "60": 0.9059, "80": 0.9150, "100": 0.9359},
}


def convert(states: list[dict[str, torch.Tensor]], names: list[str]) -> tuple[DetectorConfig, dict[str, dict]]:
    (state,) = states
    if "lstm.weight_ih_l0" not in state or "linear1.weight" not in state or "model.0.weight" not in state:
        raise CheckpointError(f"{names[0]}: no model.0 / lstm / linear1 tensors: not a ResNeXt-LSTM checkpoint")
    member = take(state, "model.", "model.")
    member.update(take(state, "lstm.", "lstm."))
    weight, bias = state["linear1.weight"].double(), state["linear1.bias"].double()
    member["classifier.weight"] = (weight[0] - weight[1]).unsqueeze(0).float()   # class 0 is FAKE
    member["classifier.bias"] = (bias[0] - bias[1]).reshape(1).float()
    frames = re.search(r"_(\d+)_frames", names[0])
    config = example_config(int(frames.group(1)) if frames else None, lstm_bias="lstm.bias_ih_l0" in state)
    return config, {config.members[0]: member}


def example_config(window_frames: int | None = None, lstm_bias: bool = False) -> DetectorConfig:
    """The detector.json an import writes (the bench times it with random weights)."""
    name = "resnext50_lstm"
    return DetectorConfig(members=[name], architectures={name: {"library": "resnext_lstm", "lstm_bias": lstm_bias}},
                          input_size=112, crop_margin=0.0, crop_policy="resnext-lstm", channels="bgr",
                          mean=IMAGENET_MEAN, std=IMAGENET_STD, threshold=0.5, drop_rate=0.0,
                          name=f"resnext-lstm-{window_frames or 'n'}-frames", version="imported", trained=True,
                          provenance={**INFO, "window_frames": window_frames})
