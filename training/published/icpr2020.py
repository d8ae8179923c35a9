"""polimi-ispl/icpr2020dfdc (Bonettini et al., "Video Face Manipulation Detection Through Ensemble of
CNNs", ICPR 2020): EfficientNet-B4 variants on efficientnet_pytorch, one logit each.

Variants, told apart by their tensors: EfficientNetB4; EfficientNetAutoAttB4 (an attention map after
block 9, `efficientnet.attconv`); the siamese-tuned ...ST of each (the network under `feat_ext.`, a
BatchNorm1d + Linear head `classifier.0/1`). Published trained on DFDC and on FF++ (file names
`<Variant>_<DFDC|FFPP>_bestval-<sha256>.pth`): raw state_dicts; the training script's own
checkpoints nest them under "net", which the reader unwraps.
"""
from __future__ import annotations

import torch

from deepfake_detect.stages.ensemble import DetectorConfig
from deepfake_detect.training.published.checkpoint import IMAGENET_MEAN, IMAGENET_STD, CheckpointError, take

ATTENTION_BLOCK = 9
INFO = {
    "method": "ICPR 2020 (Bonettini et al.): EfficientNet-B4 variants",
    "repository": "https://github.com/polimi-ispl/icpr2020dfdc",
    "checkpoints": "architectures/weights.py lists the URLs (https://icpr2020.s3.amazonaws.com/...)",
    "licence": "GPL-3.0 (the repository's licence as GitHub shows it; check before redistributing the converted file)",
}


def convert(states: list[dict[str, torch.Tensor]], names: list[str]) -> tuple[DetectorConfig, dict[str, dict]]:
    (state,) = states
    siamese = any(key.startswith("feat_ext.") for key in state)
    net = take(state, "feat_ext.") if siamese else state
    attention = "efficientnet.attconv.weight" in net
    if not any(key.startswith("efficientnet._conv_stem.") for key in net):
        raise CheckpointError(f"{names[0]}: no efficientnet._conv_stem tensors: not an ICPR 2020 EfficientNet-B4 checkpoint")
    member = {key: value for key, value in net.items()
              if key.startswith("efficientnet.") and not key.startswith(("efficientnet.attconv.", "efficientnet._fc."))}
    member.update(take(net, "efficientnet.attconv.", "attconv."))
    member.update(take(state, "classifier.", "classifier."))   # ST: the siamese head (feat_ext's own is unused)
    trained_on = "DFDC" if "_DFDC_" in names[0] else "FF++" if "_FFPP_" in names[0] else "unknown (not in the file name)"
    config = example_config(attention, siamese, trained_on)
    return config, {config.members[0]: member}


def example_config(attention: bool = True, siamese: bool = False, trained_on: str = "") -> DetectorConfig:
    """The detector.json of a variant (the bench times it with random weights)."""
    variant = f"EfficientNet{'AutoAtt' if attention else ''}B4{'ST' if siamese else ''}"
    architecture = {"library": "efficientnet_pytorch", "model_name": "efficientnet-b4",
                    "attention_block": ATTENTION_BLOCK if attention else None,
                    "head": "bn_linear" if siamese else "linear"}
    name = f"icpr2020_{variant}"
    return DetectorConfig(members=[name], architectures={name: architecture}, input_size=224, crop_margin=0.0,
                          crop_policy="icpr2020", mean=IMAGENET_MEAN, std=IMAGENET_STD, threshold=0.5,
                          name=name, version="imported", trained=True,
                          provenance={**INFO, "variant": variant, "trained_on": trained_on})
