"""selimsef/dfdc_deepfake_challenge (Seferbekov, first place of the Deepfake Detection Challenge 2020):
`DeepFakeClassifier` = timm tf_efficientnet_b7 (NoisyStudent start) features, average pooling,
dropout, Linear(2560, 1).

Seven checkpoints (`final_<seed>_DeepFakeClassifier_tf_efficientnet_b7_ns_<fold>_<epoch>`, from the
repository's GitHub release 0.0.1): {"state_dict": ...} with `module.` (DataParallel) prefixes,
`encoder.` the timm network, `fc.` the head. Several files make one detector whose members are
averaged (mean of their fake probabilities per face, as the winner averaged its models).
"""
from __future__ import annotations

import torch

from deepfake_detect.stages.ensemble import DetectorConfig
from deepfake_detect.training.published.checkpoint import IMAGENET_MEAN, IMAGENET_STD, CheckpointError, take

MANY = True
INFO = {
    "method": "DFDC winner (Seferbekov 2020): EfficientNet-B7 NoisyStudent",
    "repository": "https://github.com/selimsef/dfdc_deepfake_challenge",
    "checkpoints": "download_weights.sh: seven files of the repository's release 0.0.1",
    "licence": "MIT",
}


def convert(states: list[dict[str, torch.Tensor]], names: list[str]) -> tuple[DetectorConfig, dict[str, dict]]:
    members: dict[str, dict] = {}
    for index, (state, file) in enumerate(zip(states, names), 1):
        if "fc.weight" not in state or not any(key.startswith("encoder.conv_stem.") for key in state):
            raise CheckpointError(f"{file}: no encoder.conv_stem / fc tensors: not a DeepFakeClassifier checkpoint")
        member = take(state, "encoder.")
        member = {key: value for key, value in member.items() if not key.startswith("classifier.")}
        member.update(take(state, "fc.", "classifier."))
        members[f"dfdc_b7_{index}" if len(states) > 1 else "dfdc_b7"] = member
    return example_config(list(members)), members


def example_config(members: list[str] | None = None) -> DetectorConfig:
    """The detector.json an import of these members writes (the bench times one with random weights)."""
    names = members or ["dfdc_b7"]
    return DetectorConfig(members=names, architectures={n: {"model_name": "tf_efficientnet_b7"} for n in names},
                          input_size=380, crop_margin=0.0, crop_policy="dfdc-winner", mean=IMAGENET_MEAN,
                          std=IMAGENET_STD, threshold=0.5, drop_rate=0.0, combiner="mean",
                          name="dfdc-winner-b7" + (f"-x{len(names)}" if len(names) > 1 else ""),
                          version="imported", trained=True, provenance=dict(INFO))
